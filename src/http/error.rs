//! Errors of the HTTP boundary and their single mapping to responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::backplane::BackplaneError;
use crate::ids::NameError;
use crate::node::NodeError;

/// What a 503 says about the request: whether it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not applied; a retry is safe.
    NotSent,
    /// Sent, but no answer came: it may have been applied. A retry with the same
    /// `Idempotency-Key` is applied at most once.
    Unknown,
}

impl Outcome {
    /// The `outcome` field of the 503 body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotSent => "not_sent",
            Self::Unknown => "unknown",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::NotSent => "the backplane is unavailable; nothing was sent; retry later",
            Self::Unknown => "the backplane did not answer in time; the request may have been applied; retry with the same Idempotency-Key to apply it once",
        }
    }
}

/// Everything an HTTP route can refuse with. 4xx carry a message for the caller; 503
/// carries `Retry-After`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No hub of that name.
    #[error("unknown hub '{0}'")]
    UnknownHub(String),
    /// No connection of that id on this hub.
    #[error("connection '{0}' is not connected to this hub")]
    UnknownConnection(String),
    /// No such route.
    #[error("no route for {0}")]
    NoRoute(String),
    /// A path segment is not a valid name.
    #[error("invalid {what}: {source}")]
    InvalidName {
        /// Which segment.
        what: &'static str,
        /// Why.
        source: NameError,
    },
    /// The body or a header is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Broadcast is not allowed on this hub.
    #[error("broadcast to every connection of hub '{0}' is not allowed; publish to a group (set allow_broadcast on the hub to enable it)")]
    BroadcastNotAllowed(String),
    /// The connection is in as many groups as allowed.
    #[error("connection is already in {0} groups, the most allowed")]
    TooManyGroups(usize),
    /// The backplane cannot take the request now.
    #[error("{}", .0.message())]
    Unavailable(Outcome),
    /// An `Idempotency-Key` came back with another request.
    #[error(
        "this Idempotency-Key was used with a different request; use a new key for a new request"
    )]
    IdempotencyConflict,
    /// The node is shutting down.
    #[error("this node is shutting down")]
    Draining,
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownHub(_) | Self::UnknownConnection(_) | Self::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            Self::InvalidName { .. } | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BroadcastNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::TooManyGroups(_) => StatusCode::CONFLICT,
            Self::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::UnknownConnection(id) => Self::UnknownConnection(id),
            NodeError::TooManyGroups(n) => Self::TooManyGroups(n),
            NodeError::DuplicateConnection(id) => {
                Self::BadRequest(format!("connection '{id}' is already connected"))
            }
            NodeError::OwnerTimeout => {
                tracing::warn!("the node holding a connection did not acknowledge a group change");
                Self::Unavailable(Outcome::Unknown)
            }
            NodeError::IdempotencyConflict => Self::IdempotencyConflict,
            NodeError::Backplane(inner) => {
                tracing::warn!(error = %inner, "backplane refused a request");
                Self::Unavailable(match inner {
                    BackplaneError::Unknown(_) => Outcome::Unknown,
                    BackplaneError::Unavailable(_) | BackplaneError::Disconnected => {
                        Outcome::NotSent
                    }
                })
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let Self::Unavailable(outcome) = &self {
            body["outcome"] = outcome.as_str().into();
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
