//! The query parameters of Azure SignalR's REST API: `excluded` (repeated), `reason`,
//! `userId`, `minutesToExpire`, and `api-version`, checked on every versioned route.

use axum::extract::{FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::envelope::MAX_LISTED_IDS;
use crate::http::error::ApiError;
use crate::ids::ConnectionId;

/// The `api-version`s whose operations the `/api/hubs/…` routes serve.
pub const API_VERSIONS: [&str; 6] = [
    "2022-06-01",
    "2022-11-01",
    "2023-07-01",
    "2024-01-01",
    "2024-08-01",
    "2024-12-01",
];

/// Longest `reason` passed on to clients, in characters.
const MAX_REASON_CHARS: usize = 512;

/// A request's query parameters, in order, repeated ones kept.
pub struct ApiQuery(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Self(pairs))
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
    }
}

impl ApiQuery {
    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `excluded` connection ids. One that is not a connection id names no
    /// connection, so there is nothing to skip for it.
    ///
    /// # Errors
    /// More than [`MAX_LISTED_IDS`] of them.
    pub fn excluded(&self) -> Result<Vec<ConnectionId>, ApiError> {
        let ids: Vec<ConnectionId> = self
            .0
            .iter()
            .filter(|(k, _)| k == "excluded")
            .filter_map(|(_, v)| ConnectionId::parse(v))
            .collect();
        if ids.len() > MAX_LISTED_IDS {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_LISTED_IDS} excluded connection ids are accepted"
            )));
        }
        Ok(ids)
    }

    /// The `reason`, cut to 512 characters; `None` when absent or empty.
    pub fn reason(&self) -> Option<String> {
        self.first("reason")
            .filter(|r| !r.is_empty())
            .map(|r| r.chars().take(MAX_REASON_CHARS).collect())
    }

    /// The `userId`, if given and not empty.
    pub fn user_id(&self) -> Option<&str> {
        self.first("userId").filter(|u| !u.is_empty())
    }

    /// `minutesToExpire`: 60 when absent.
    ///
    /// # Errors
    /// Not a whole number from 1 to 525 600 (a year).
    pub fn minutes_to_expire(&self) -> Result<u64, ApiError> {
        match self.first("minutesToExpire") {
            None => Ok(60),
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|m| (1..=525_600).contains(m))
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "invalid minutesToExpire: a whole number of minutes from 1 to 525600 expected"
                            .into(),
                    )
                }),
        }
    }
}

/// Refuses an `api-version` this node does not serve, in the specs' error shape
/// (`ErrorDetail`, with `x-ms-error-code`). Without one the request is served as the
/// newest version.
pub async fn check_api_version(query: ApiQuery, req: Request, next: Next) -> Response {
    let Some(version) = query.first("api-version") else {
        return next.run(req).await;
    };
    if API_VERSIONS.contains(&version) {
        return next.run(req).await;
    }
    let message = format!(
        "api-version '{}' is not supported; use one of {}",
        version.chars().take(64).collect::<String>(),
        API_VERSIONS.join(", ")
    );
    let mut resp = (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({
            "code": "InvalidApiVersion",
            "message": message,
            "target": "api-version",
            "error": message,
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        "x-ms-error-code",
        HeaderValue::from_static("InvalidApiVersion"),
    );
    resp
}
