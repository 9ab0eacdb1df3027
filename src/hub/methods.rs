//! Client-callable methods: their configured shape, and how a call resolves into joins,
//! leaves and replies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::templates::Template;
use super::{CallError, Caller};
use crate::ids::GroupName;

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
    pub(super) fn builtin(name: &str, join: bool) -> Self {
        let t = Template::argument(0);
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

    pub(super) fn from_spec(spec: &MethodSpec) -> Result<Self, String> {
        let parse = |t: &Option<String>| t.as_deref().map(Template::parse).transpose();
        let join = parse(&spec.join)?;
        let leave = parse(&spec.leave)?;
        let reply_args = spec
            .reply_args
            .as_deref()
            .map(Template::parse_all)
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hub::tests::{caller, hub_named};

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
    fn a_claim_placeholder_without_the_claim_says_which_claim_is_missing() {
        let hub = hub_named("tasks");
        let mut c = caller();
        c.virtual_key = None;
        assert_eq!(
            hub.method("SubscribeToTaskType")
                .unwrap()
                .resolve(&[json!("video")], &c),
            Err(CallError::MissingClaim("vkey"))
        );
    }
}
