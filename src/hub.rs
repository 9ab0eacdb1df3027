//! Hub definitions: the paths clients connect to and the methods they may call.
//!
//! A hub method is data, not code: it names the groups it joins or leaves (templates over
//! its arguments and the caller's claims), an event it replies with, or a soft error. The
//! seven hubs of the gateway are defined this way in [`default_hubs`], and a config file
//! can add more in the same shape. Clients can call only these methods; nothing a client
//! sends can publish to a group.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{matches_any, AuthMode};
use crate::ids::{ConnectionId, GroupName, UserId};

/// What to do with a publish that does not match its event contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchemaCheck {
    /// No check.
    Off,
    /// Send it, and log and count the mismatch.
    #[default]
    Warn,
    /// Refuse it with 400, naming the field.
    Reject,
}

fn default_auth() -> AuthMode {
    AuthMode::Token
}

/// A hub as written in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpec {
    /// The hub's name in the publish API (`/api/v1/hubs/{name}/…`); letters, digits, `-`, `_`.
    pub name: String,
    /// The URL path clients connect to, e.g. `/hubs/spend`.
    pub path: String,
    /// Further paths serving the same hub (old client generations). Default: none.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Whether `POST /api/v1/hubs/{hub}` may broadcast to every connection of the hub.
    /// Default: false (always publish to groups).
    #[serde(default)]
    pub allow_broadcast: bool,
    /// Groups every connection joins on connect (templates). Default: none.
    #[serde(default)]
    pub auto_join: Vec<String>,
    /// What the publish API does when a publish's arguments do not match the event's
    /// contract (`off`, `warn`, `reject`). Default: `warn`.
    #[serde(default)]
    pub schema_check: SchemaCheck,
    /// How clients authenticate. Default: `token`.
    #[serde(default = "default_auth")]
    pub auth: AuthMode,
    /// Groups a client may join by itself (`JoinGroup` and methods that join), besides
    /// those its credential grants: names or prefixes ending in `*`, with `{vkey}` and
    /// `{user}` filled from the credential. Default: none (only granted groups).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Client-callable methods besides `JoinGroup` and `LeaveGroup`. Default: none.
    #[serde(default)]
    pub methods: Vec<MethodSpec>,
}

/// A client-callable hub method as written in configuration.
///
/// Templates: `{0}`, `{1}`… insert an argument (a string, or an integer in decimal);
/// `{0:webhook}` and `{0:webhook_underscore}` turn a URL argument into the gateway's webhook
/// group name; `{vkey}`, `{user}` and `{connectionId}` insert the caller's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    /// The method name (matched case-insensitively, as ASP.NET does).
    pub name: String,
    /// How many arguments the method takes. Default: one more than the highest `{n}` used.
    #[serde(default)]
    pub args: Option<usize>,
    /// Group to join (template).
    #[serde(default)]
    pub join: Option<String>,
    /// Group to leave (template).
    #[serde(default)]
    pub leave: Option<String>,
    /// The first argument is an array; `join`/`leave` apply to each element as `{0}`.
    #[serde(default)]
    pub each: bool,
    /// Event sent back to the caller after the method succeeded.
    #[serde(default)]
    pub reply: Option<String>,
    /// Arguments of the reply (templates). Default: the call's own arguments.
    #[serde(default)]
    pub reply_args: Option<Vec<String>>,
    /// Instead of acting, send the caller an `Error` event `{message}` (deprecated methods).
    #[serde(default)]
    pub error: Option<String>,
}

/// How a webhook URL becomes a group name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStyle {
    /// `webhook-{host '.'→'-'}-{path '/'→'-'}` (current gateway).
    Hyphen,
    /// `webhook_{host '.'→'_'}_{path '/'→'_'}` (older gateway).
    Underscore,
}

/// The gateway's group name for a webhook URL. Port, query and fragment are ignored; the
/// host is lower-cased. `None` when the text is not an absolute URL with a host.
pub fn webhook_group(url: &str, style: WebhookStyle) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(stripped) = host_port.strip_prefix('[') {
        stripped.split_once(']').map(|(h, _)| h)?
    } else {
        host_port.split_once(':').map_or(host_port, |(h, _)| h)
    };
    if host.is_empty() {
        return None;
    }
    let after = &rest[end..];
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    let path = if after[..path_end].is_empty() {
        "/"
    } else {
        &after[..path_end]
    };
    let host = host.to_ascii_lowercase();
    Some(match style {
        WebhookStyle::Hyphen => format!(
            "webhook-{}-{}",
            host.replace('.', "-"),
            path.replace('/', "-")
        ),
        WebhookStyle::Underscore => {
            format!(
                "webhook_{}_{}",
                host.replace('.', "_"),
                path.replace('/', "_")
            )
        }
    })
}

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
    fn matches_literally(&self, group: &str, caller: &Caller) -> bool {
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

    fn max_arg(&self) -> Option<usize> {
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
                        .ok_or(CallError::Unauthorized)?,
                ),
                Segment::User => out.push_str(
                    caller
                        .user
                        .as_ref()
                        .ok_or(CallError::Unauthorized)?
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

/// Who is calling: the connection and the identity its credential gave it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The connection's id.
    pub connection_id: ConnectionId,
    /// The user id, when the credential named one.
    pub user: Option<UserId>,
    /// The virtual key id, when the credential named one.
    pub virtual_key: Option<String>,
    /// Groups the credential grants (names, or prefixes ending in `*`).
    pub granted: Vec<String>,
}

/// Why a hub method call failed; maps to ASP.NET's Completion error texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No such method on this hub.
    #[error("unknown method")]
    UnknownMethod,
    /// Wrong number of arguments.
    #[error("Invocation provides {given} argument(s) but target expects {expected}.")]
    ArgumentCount {
        /// Arguments sent.
        given: usize,
        /// Arguments expected.
        expected: usize,
    },
    /// An argument of the wrong type.
    #[error("Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.")]
    Binding,
    /// The caller's credential does not allow this.
    #[error("unauthorized")]
    Unauthorized,
    /// The group name produced is not valid.
    #[error("{0}")]
    InvalidGroup(String),
    /// The connection is in as many groups as allowed.
    #[error("This connection is already in {0} groups, the most allowed.")]
    TooManyGroups(usize),
    /// The connection called methods faster than allowed.
    #[error("Rate limit exceeded. Please try again later.")]
    RateLimited,
    /// The backplane could not take the change; the caller may retry.
    #[error("The group change could not be applied; please try again.")]
    Unavailable,
}

impl CallError {
    /// The Completion error text, in ASP.NET's format.
    pub fn completion_text(&self, method: &str) -> String {
        match self {
            Self::UnknownMethod => format!("Unknown hub method '{method}'"),
            Self::ArgumentCount { .. } | Self::Binding => format!(
                "Failed to invoke '{method}' due to an error on the server. InvalidDataException: {self}"
            ),
            Self::Unauthorized => format!("Failed to invoke '{method}' because user is unauthorized"),
            Self::InvalidGroup(_) | Self::TooManyGroups(_) | Self::RateLimited | Self::Unavailable => format!(
                "An unexpected error occurred invoking '{method}' on the server. HubException: {self}"
            ),
        }
    }
}

/// One effect of a hub method call.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Join the caller to a group.
    Join(GroupName),
    /// Remove the caller from a group.
    Leave(GroupName),
    /// Send the caller an event.
    Reply {
        /// Event name.
        target: String,
        /// Its arguments.
        arguments: Vec<Value>,
    },
}

/// A method ready to be called: templates parsed, argument count known.
#[derive(Debug, Clone)]
pub struct Method {
    /// Name as configured (exact casing).
    pub name: String,
    args: usize,
    each: bool,
    join: Option<Template>,
    leave: Option<Template>,
    reply: Option<(String, Option<Vec<Template>>)>,
    error: Option<String>,
}

impl Method {
    fn builtin(name: &str, join: bool) -> Self {
        let t = Template(vec![Segment::Arg(0, None)]);
        Self {
            name: name.into(),
            args: 1,
            each: false,
            join: join.then(|| t.clone()),
            leave: (!join).then_some(t),
            reply: None,
            error: None,
        }
    }

    fn from_spec(spec: &MethodSpec) -> Result<Self, String> {
        let parse = |t: &Option<String>| t.as_deref().map(Template::parse).transpose();
        let join = parse(&spec.join)?;
        let leave = parse(&spec.leave)?;
        let reply_args = spec
            .reply_args
            .as_ref()
            .map(|v| {
                v.iter()
                    .map(|t| Template::parse(t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let used = [&join, &leave]
            .into_iter()
            .flatten()
            .chain(reply_args.iter().flatten())
            .filter_map(Template::max_arg)
            .max()
            .map_or(0, |m| m + 1);
        let args = spec.args.unwrap_or(used);
        if args < used {
            return Err(format!(
                "method '{}' uses argument {{{}}} but takes {args}",
                spec.name,
                used - 1
            ));
        }
        if spec.each && args != 1 {
            return Err(format!(
                "method '{}' has each = true and so takes exactly one argument",
                spec.name
            ));
        }
        Ok(Self {
            name: spec.name.clone(),
            args,
            each: spec.each,
            join,
            leave,
            reply: spec.reply.clone().map(|r| (r, reply_args)),
            error: spec.error.clone(),
        })
    }

    /// Resolves a call into its actions, checking arguments.
    ///
    /// # Errors
    /// See [`CallError`].
    pub fn resolve(&self, args: &[Value], caller: &Caller) -> Result<Vec<Action>, CallError> {
        // A deprecated method answers with a soft error whatever it was given, as the
        // gateway does.
        if let Some(message) = &self.error {
            return Ok(vec![Action::Reply {
                target: "Error".into(),
                arguments: vec![serde_json::json!({ "message": message })],
            }]);
        }
        if args.len() != self.args {
            return Err(CallError::ArgumentCount {
                given: args.len(),
                expected: self.args,
            });
        }
        let mut actions = Vec::new();
        let per_call: Vec<Vec<Value>> = if self.each {
            match &args[0] {
                Value::Array(items) => items.iter().map(|i| vec![i.clone()]).collect(),
                _ => return Err(CallError::Binding),
            }
        } else {
            vec![args.to_vec()]
        };
        for call_args in &per_call {
            if let Some(t) = &self.join {
                actions.push(Action::Join(group(t.render(call_args, caller)?)?));
            }
            if let Some(t) = &self.leave {
                actions.push(Action::Leave(group(t.render(call_args, caller)?)?));
            }
        }
        if let Some((target, reply_args)) = &self.reply {
            let arguments = match reply_args {
                None => args.to_vec(),
                Some(ts) => ts
                    .iter()
                    .map(|t| t.render(args, caller).map(Value::from))
                    .collect::<Result<_, _>>()?,
            };
            actions.push(Action::Reply {
                target: target.clone(),
                arguments,
            });
        }
        Ok(actions)
    }
}

fn group(name: String) -> Result<GroupName, CallError> {
    GroupName::parse(&name).map_err(|e| CallError::InvalidGroup(e.to_string()))
}

/// A hub ready to serve: spec validated, methods indexed.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The validated spec.
    pub spec: HubSpec,
    /// Templates of the groups joined on connect.
    pub auto_join: Vec<Template>,
    /// Templates of the groups clients may join by themselves.
    allow: Vec<Template>,
    methods: Vec<Method>,
}

impl Hub {
    /// Validates a spec.
    ///
    /// # Errors
    /// A message naming the hub and what is wrong with it.
    pub fn new(spec: HubSpec) -> Result<Self, String> {
        let name_ok = !spec.name.is_empty()
            && spec.name.len() <= 64
            && spec.name.starts_with(|c: char| c.is_ascii_alphabetic())
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        // `node` would collide with the node control channels `{p}:node:{n}`.
        if !name_ok || spec.name == "node" {
            return Err(format!(
                "hub name '{}' must start with a letter and hold only letters, digits, '-' and '_' (at most 64)",
                spec.name
            ));
        }
        for path in std::iter::once(&spec.path).chain(&spec.aliases) {
            let ok = path.starts_with('/')
                && path.len() > 1
                && !path.ends_with('/')
                && !path.starts_with("/api/")
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
                && !path.contains("//")
                && !path.contains('{');
            if !ok {
                return Err(format!(
                    "hub '{}': path '{path}' must start with '/', not end with '/', not be under /api/, and hold only letters, digits, '-', '_', '.', '/'",
                    spec.name
                ));
            }
        }
        let mut methods = vec![
            Method::builtin("JoinGroup", true),
            Method::builtin("LeaveGroup", false),
        ];
        for m in &spec.methods {
            if methods.iter().any(|x| x.name.eq_ignore_ascii_case(&m.name)) {
                return Err(format!(
                    "hub '{}': method '{}' is defined twice",
                    spec.name, m.name
                ));
            }
            methods.push(Method::from_spec(m).map_err(|e| format!("hub '{}': {e}", spec.name))?);
        }
        let auto_join = spec
            .auto_join
            .iter()
            .map(|t| Template::parse(t))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("hub '{}': auto_join: {e}", spec.name))?;
        let allow = spec
            .allow
            .iter()
            .map(|t| Template::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("hub '{}': allow: {e}", spec.name))?;
        if allow.iter().any(|t| t.max_arg().is_some()) {
            return Err(format!(
                "hub '{}': allow patterns may use {{vkey}} and {{user}}, not arguments",
                spec.name
            ));
        }
        Ok(Self {
            spec,
            auto_join,
            allow,
            methods,
        })
    }

    /// Whether a client may join `group` by itself: granted by its credential, or allowed
    /// by the hub's policy (a pattern whose claim the caller lacks allows nothing).
    pub fn may_join(&self, group: &str, caller: &Caller) -> bool {
        if self.spec.auth == AuthMode::None && self.spec.allow.is_empty() {
            return true;
        }
        if matches_any(group, &caller.granted) {
            return true;
        }
        // Claims are inserted literally: a `*` inside a user id must not become a wildcard.
        self.allow
            .iter()
            .any(|t| t.matches_literally(group, caller))
    }

    /// The hub's API name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Finds a method, case-insensitively.
    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
    }

    /// Names of every client-callable method.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().map(|m| m.name.as_str())
    }
}

fn method(name: &str) -> MethodSpec {
    MethodSpec {
        name: name.into(),
        args: None,
        join: None,
        leave: None,
        each: false,
        reply: None,
        reply_args: None,
        error: None,
    }
}

fn join(name: &str, group: &str) -> MethodSpec {
    MethodSpec {
        join: Some(group.into()),
        ..method(name)
    }
}

fn leave(name: &str, group: &str) -> MethodSpec {
    MethodSpec {
        leave: Some(group.into()),
        ..method(name)
    }
}

fn hub(name: &str, methods: Vec<MethodSpec>) -> HubSpec {
    HubSpec {
        name: name.into(),
        path: format!("/hubs/{name}"),
        aliases: Vec::new(),
        allow_broadcast: false,
        auto_join: Vec::new(),
        schema_check: SchemaCheck::Warn,
        auth: AuthMode::Token,
        allow: Vec::new(),
        methods,
    }
}

/// The gateway's seven hubs at their real paths, with the client methods its clients call
/// (see the hub table in the project docs). Server-side "send" helpers that the gateway
/// leaked as invocable methods are deliberately absent.
pub fn default_hubs() -> Vec<HubSpec> {
    let task_methods = |prefix: &str| {
        vec![
            join("SubscribeToTask", &format!("{prefix}-{{0}}")),
            leave("UnsubscribeFromTask", &format!("{prefix}-{{0}}")),
        ]
    };
    let mut video = task_methods("video");
    video.push(join("SubscribeToRequest", "video-{0}"));
    video.push(leave("UnsubscribeFromRequest", "video-{0}"));

    let mut tasks = task_methods("task");
    tasks.push(join("SubscribeToTaskType", "vkey-{vkey}-{0}"));
    tasks.push(leave("UnsubscribeFromTaskType", "vkey-{vkey}-{0}"));

    let webhooks = vec![
        MethodSpec {
            each: true,
            ..join("SubscribeToWebhooks", "{0:webhook}")
        },
        MethodSpec {
            each: true,
            ..leave("UnsubscribeFromWebhooks", "{0:webhook}")
        },
        MethodSpec {
            args: Some(0),
            reply: Some("StatisticsRequested".into()),
            reply_args: Some(vec!["{connectionId}".into()]),
            ..method("RequestStatistics")
        },
    ];

    let notifications = vec![MethodSpec {
        args: Some(1),
        reply: Some("PreferencesUpdated".into()),
        ..method("UpdatePreferences")
    }];

    let with_reply = |m: MethodSpec, reply: &str| MethodSpec {
        reply: Some(reply.into()),
        ..m
    };
    let deprecated = |name: &str, args: usize| MethodSpec {
        args: Some(args),
        error: Some(format!("{name} is no longer supported.")),
        ..method(name)
    };
    let admin = vec![
        with_reply(
            join("SubscribeToVirtualKey", "admin-vkey-{0}"),
            "SubscribedToVirtualKey",
        ),
        with_reply(
            leave("UnsubscribeFromVirtualKey", "admin-vkey-{0}"),
            "UnsubscribedFromVirtualKey",
        ),
        with_reply(
            join("SubscribeToProvider", "admin-provider-{0}"),
            "SubscribedToProvider",
        ),
        with_reply(
            leave("UnsubscribeFromProvider", "admin-provider-{0}"),
            "UnsubscribedFromProvider",
        ),
        deprecated("SubscribeToProviderByName", 1),
        deprecated("UnsubscribeFromProviderByName", 1),
        deprecated("RefreshProviderHealth", 0),
    ];

    // Spend is scoped to the connection's own virtual key: it joins vkey-{vkey} on
    // connect and may join nothing else.
    let mut spend = hub("spend", Vec::new());
    spend.aliases.push("/hubs/spend-notifications".into());
    spend.auto_join.push("vkey-{vkey}".into());
    spend.allow.push("vkey-{vkey}".into());
    // Task-type groups of the caller's own key; tasks themselves only when granted.
    let mut tasks_hub = hub("tasks", tasks);
    tasks_hub.allow.push("vkey-{vkey}-*".into());
    let mut notifications_hub = hub("notifications", notifications);
    notifications_hub.auto_join.push("vkey-{vkey}".into());
    notifications_hub
        .allow
        .extend(["vkey-{vkey}".into(), "vkey-{vkey}-*".into()]);
    let mut admin_hub = hub("admin-notifications", admin);
    admin_hub.auth = AuthMode::MasterKey;
    admin_hub.auto_join.push("admin".into());
    admin_hub.allow.extend(["admin".into(), "admin-*".into()]);

    vec![
        spend,
        tasks_hub,
        hub("video-generation", video),
        hub("image-generation", task_methods("image")),
        hub("webhooks", webhooks),
        notifications_hub,
        admin_hub,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller() -> Caller {
        Caller {
            connection_id: ConnectionId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap(),
            user: None,
            virtual_key: Some("7".into()),
            granted: vec!["task-9".into()],
        }
    }

    fn hub_named(name: &str) -> Hub {
        let spec = default_hubs().into_iter().find(|h| h.name == name).unwrap();
        Hub::new(spec).unwrap()
    }

    #[test]
    fn every_default_hub_is_valid_and_has_join_and_leave() {
        for spec in default_hubs() {
            let hub = Hub::new(spec).unwrap();
            assert!(hub.method("joingroup").is_some());
            assert!(hub.method("LEAVEGROUP").is_some());
        }
    }

    #[test]
    fn webhook_urls_become_the_gateways_group_names() {
        assert_eq!(
            webhook_group("https://api.example.com/hooks/x", WebhookStyle::Hyphen).as_deref(),
            Some("webhook-api-example-com--hooks-x")
        );
        assert_eq!(
            webhook_group(
                "https://API.Example.com:8443/hooks/x?sig=1#f",
                WebhookStyle::Underscore
            )
            .as_deref(),
            Some("webhook_api_example_com__hooks_x")
        );
        assert_eq!(
            webhook_group("http://user:pw@h.io", WebhookStyle::Hyphen).as_deref(),
            Some("webhook-h-io--")
        );
        assert_eq!(webhook_group("not a url", WebhookStyle::Hyphen), None);
    }

    #[test]
    fn subscribe_to_task_joins_the_prefixed_group_with_string_or_integer_ids() {
        let hub = hub_named("video-generation");
        let m = hub.method("subscribetotask").unwrap();
        assert_eq!(
            m.resolve(&[json!("t1")], &caller()).unwrap(),
            vec![Action::Join(GroupName::parse("video-t1").unwrap())]
        );
        assert_eq!(
            m.resolve(&[json!(42)], &caller()).unwrap(),
            vec![Action::Join(GroupName::parse("video-42").unwrap())]
        );
        assert_eq!(
            m.resolve(&[json!({"a":1})], &caller()),
            Err(CallError::Binding)
        );
        assert_eq!(
            m.resolve(&[], &caller()),
            Err(CallError::ArgumentCount {
                given: 0,
                expected: 1
            })
        );
    }

    #[test]
    fn subscribe_to_webhooks_joins_one_group_per_url() {
        let hub = hub_named("webhooks");
        let m = hub.method("SubscribeToWebhooks").unwrap();
        let actions = m
            .resolve(&[json!(["https://a.io/x", "https://b.io/y"])], &caller())
            .unwrap();
        assert_eq!(
            actions,
            vec![
                Action::Join(GroupName::parse("webhook-a-io--x").unwrap()),
                Action::Join(GroupName::parse("webhook-b-io--y").unwrap())
            ]
        );
    }

    #[test]
    fn admin_subscriptions_reply_with_the_id() {
        let hub = hub_named("admin-notifications");
        let actions = hub
            .method("SubscribeToVirtualKey")
            .unwrap()
            .resolve(&[json!(7)], &caller())
            .unwrap();
        assert_eq!(
            actions[1],
            Action::Reply {
                target: "SubscribedToVirtualKey".into(),
                arguments: vec![json!(7)]
            }
        );
        let soft = hub
            .method("RefreshProviderHealth")
            .unwrap()
            .resolve(&[], &caller())
            .unwrap();
        assert!(matches!(&soft[0], Action::Reply { target, .. } if target == "Error"));
    }

    #[test]
    fn a_claim_placeholder_without_the_claim_is_unauthorized() {
        let hub = hub_named("tasks");
        let mut c = caller();
        c.virtual_key = None;
        assert_eq!(
            hub.method("SubscribeToTaskType")
                .unwrap()
                .resolve(&[json!("video")], &c),
            Err(CallError::Unauthorized)
        );
    }

    #[test]
    fn bad_specs_are_refused_with_the_hub_named() {
        let mut spec = hub("x y", vec![]);
        assert!(Hub::new(spec.clone()).unwrap_err().contains("x y"));
        spec.name = "ok".into();
        spec.path = "hubs/ok".into();
        assert!(Hub::new(spec.clone()).is_err());
        spec.path = "/hubs/ok".into();
        spec.methods = vec![join("Sub", "g-{oops}")];
        assert!(Hub::new(spec.clone()).unwrap_err().contains("oops"));
        spec.methods = vec![join("joingroup", "g")];
        assert!(Hub::new(spec).unwrap_err().contains("twice"));
    }

    #[test]
    fn join_policy_follows_the_gateways_scoping() {
        let c = caller();
        let spend = hub_named("spend");
        assert!(spend.may_join("vkey-7", &c));
        assert!(!spend.may_join("vkey-8", &c), "another key's group");
        let tasks = hub_named("tasks");
        assert!(tasks.may_join("task-9", &c), "granted by the credential");
        assert!(!tasks.may_join("task-10", &c));
        assert!(tasks.may_join("vkey-7-video", &c));
        assert!(!tasks.may_join("vkey-8-video", &c));
        let admin = hub_named("admin-notifications");
        assert!(admin.may_join("admin-vkey-3", &c));
        assert!(!hub_named("video-generation").may_join("admin-x", &c));
        let mut sneaky = c.clone();
        sneaky.user = Some(UserId::parse("*").unwrap());
        let mut chat = hub("chat", vec![]);
        chat.allow = vec!["user-{user}".into(), "room-*".into()];
        let chat = Hub::new(chat).unwrap();
        assert!(
            !chat.may_join("user-bob", &sneaky),
            "a claim's * is not a wildcard"
        );
        assert!(chat.may_join("user-*", &sneaky));
        assert!(chat.may_join("room-blue", &sneaky));
        let mut keyless = c.clone();
        keyless.virtual_key = None;
        assert!(
            !spend.may_join("vkey-", &keyless),
            "a pattern whose claim is missing allows nothing"
        );
    }

    #[test]
    fn completion_texts_follow_asp_net() {
        assert_eq!(
            CallError::UnknownMethod.completion_text("Nope"),
            "Unknown hub method 'Nope'"
        );
        assert!(CallError::ArgumentCount {
            given: 2,
            expected: 1
        }
        .completion_text("JoinGroup")
        .starts_with("Failed to invoke 'JoinGroup' due to an error on the server."));
    }
}
