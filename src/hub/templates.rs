//! Group and reply templates: parsed once from configuration, rendered per call from the
//! call's arguments and the caller's claims.

use std::fmt::Write as _;

use serde_json::Value;

use super::webhook::{webhook_group, WebhookStyle};
use super::{CallError, Caller};

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Arg(usize, Option<WebhookStyle>),
    VirtualKey,
    User,
    Connection,
}

/// A parsed group or reply template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Segment>);

impl Template {
    /// The template that is argument `index` itself, as the built-in group methods use.
    pub(super) fn argument(index: usize) -> Self {
        Self(vec![Segment::Arg(index, None)])
    }

    /// Parses a list of templates, stopping at the first bad one.
    pub(super) fn parse_all(texts: &[String]) -> Result<Vec<Self>, String> {
        texts.iter().map(|t| Self::parse(t)).collect()
    }

    /// Parses a template.
    ///
    /// # Errors
    /// An unknown placeholder or an unclosed brace, described for the config error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in template '{text}'"))?
                + open;
            let inner = &rest[open + 1..close];
            let (name, modifier) = inner
                .split_once(':')
                .map_or((inner, None), |(n, m)| (n, Some(m)));
            let seg = match (name, modifier) {
                ("vkey", None) => Segment::VirtualKey,
                ("user", None) => Segment::User,
                ("connectionId", None) => Segment::Connection,
                (n, m) => {
                    let idx: usize = n.parse().map_err(|_| {
                        format!("unknown placeholder '{{{inner}}}' in template '{text}'")
                    })?;
                    let style = match m {
                        None => None,
                        Some("webhook") => Some(WebhookStyle::Hyphen),
                        Some("webhook_underscore") => Some(WebhookStyle::Underscore),
                        Some(other) => {
                            return Err(format!("unknown modifier '{other}' in template '{text}'"))
                        }
                    };
                    Segment::Arg(idx, style)
                }
            };
            segments.push(seg);
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Self(segments))
    }

    /// Whether `group` is what this pattern admits for `caller`: its rendering exactly, or
    /// any group starting with it when the pattern's own text ends in `*`.
    pub(super) fn matches_literally(&self, group: &str, caller: &Caller) -> bool {
        let wildcard = matches!(self.0.last(), Some(Segment::Literal(l)) if l.ends_with('*'));
        let Ok(rendered) = self.render(&[], caller) else {
            return false;
        };
        if wildcard {
            group.starts_with(&rendered[..rendered.len() - 1])
        } else {
            group == rendered
        }
    }

    pub(super) fn max_arg(&self) -> Option<usize> {
        self.0
            .iter()
            .filter_map(|s| match s {
                Segment::Arg(i, _) => Some(*i),
                _ => None,
            })
            .max()
    }

    /// Renders the template for one call.
    ///
    /// # Errors
    /// The text shown to the caller when an argument has the wrong type or a claim is
    /// missing.
    pub fn render(&self, args: &[Value], caller: &Caller) -> Result<String, CallError> {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Arg(i, style) => {
                    let text = match args.get(*i) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                        _ => return Err(CallError::Binding),
                    };
                    match style {
                        None => out.push_str(&text),
                        Some(style) => {
                            out.push_str(&webhook_group(&text, *style).ok_or(CallError::Binding)?)
                        }
                    }
                }
                Segment::VirtualKey => out.push_str(
                    caller
                        .virtual_key
                        .as_deref()
                        .ok_or(CallError::MissingClaim("vkey"))?,
                ),
                Segment::User => out.push_str(
                    caller
                        .user
                        .as_ref()
                        .ok_or(CallError::MissingClaim("user"))?
                        .as_str(),
                ),
                Segment::Connection => {
                    let _ = write!(out, "{}", caller.connection_id);
                }
            }
        }
        Ok(out)
    }
}
