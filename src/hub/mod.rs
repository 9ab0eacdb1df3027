//! Hub definitions: the paths clients connect to and the methods they may call.
//!
//! A hub method is data, not code: it names the groups it joins or leaves (templates over
//! its arguments and the caller's claims), an event it replies with, or a soft error. The
//! seven hubs of the gateway are defined this way in [`default_hubs`], and a config file
//! can add more in the same shape. Clients can call only these methods; nothing a client
//! sends can publish to a group.

mod defaults;
mod methods;
mod templates;
mod webhook;

use serde::{Deserialize, Serialize};

use crate::auth::{matches_any, AuthMode};
use crate::ids::{ConnectionId, UserId};

pub use defaults::default_hubs;
pub use methods::{Action, Method, MethodSpec};
pub use templates::Template;
pub use webhook::{webhook_group, WebhookStyle};

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

fn keep_history() -> bool {
    true
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
    /// Keep each channel's recent messages, so a node that missed some delivers them
    /// late instead of counting them lost. Default: true.
    #[serde(default = "keep_history")]
    pub history: bool,
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
    /// The method's group is named after a claim the connection does not carry
    /// (`vkey` or `user`), as happens in development mode, which connects without one.
    #[error("this method's group needs the connection's '{0}' claim, and the connection has none (development mode connects without claims: connect with a token that carries it)")]
    MissingClaim(&'static str),
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
            Self::MissingClaim(_) => format!(
                "An unexpected error occurred invoking '{method}' on the server. HubException: {self}"
            ),
            Self::InvalidGroup(_) | Self::TooManyGroups(_) | Self::RateLimited | Self::Unavailable => format!(
                "An unexpected error occurred invoking '{method}' on the server. HubException: {self}"
            ),
        }
    }
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
        let auto_join = Template::parse_all(&spec.auto_join)
            .map_err(|e| format!("hub '{}': auto_join: {e}", spec.name))?;
        let allow = Template::parse_all(&spec.allow)
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

#[cfg(test)]
mod tests {
    use super::defaults::{hub, join};
    use super::*;

    pub(super) fn caller() -> Caller {
        Caller {
            connection_id: ConnectionId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap(),
            user: None,
            virtual_key: Some("7".into()),
            granted: vec!["task-9".into()],
        }
    }

    pub(super) fn hub_named(name: &str) -> Hub {
        let spec = default_hubs().into_iter().find(|h| h.name == name).unwrap();
        Hub::new(spec).unwrap()
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
