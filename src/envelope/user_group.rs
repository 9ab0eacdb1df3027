//! The bodies of the messages about a user's groups: a change to apply to the user's
//! connections, and the question whether any of them is in a group, with its answer.

/// Body of [`super::Kind::UserGroup`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserGroupChange {
    /// Hub API name.
    pub hub: String,
    /// Group name (empty when `all`).
    pub group: String,
    /// Join, else leave.
    pub join: bool,
    /// Leave every group.
    pub all: bool,
    /// The node that sent it, which applied it to its own connections already.
    pub origin: String,
    /// The user (empty from nodes that predate it).
    #[serde(default)]
    pub user: String,
    /// When a timed join ends (Unix ms): each node then takes its connections of the
    /// user out of the group again, unless the user's record was renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at_ms: Option<u64>,
}

/// Body of [`super::Kind::UserInGroup`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserInGroupQuery {
    /// Hub API name.
    pub hub: String,
    /// Group name.
    pub group: String,
    /// Node waiting for the answers.
    pub reply_to: String,
    /// Matches the answers to the question.
    pub nonce: u64,
}

/// Body of [`super::Kind::UserInGroupReply`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserInGroupReply {
    /// The question's nonce.
    pub nonce: u64,
    /// A connection of the user on the answering node is in the group.
    pub member: bool,
}
