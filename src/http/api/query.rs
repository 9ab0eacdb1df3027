//! The query parameters of Azure SignalR's REST API: `excluded` (repeated), `reason`,
//! `userId`, `minutesToExpire`, `ttl`, the listing's `maxpagesize`, `top` and
//! `continuationToken`, and `api-version`, checked on every versioned route.

use axum::extract::{FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::envelope::MAX_LISTED_IDS;
use crate::http::error::ApiError;
use crate::ids::ConnectionId;
use crate::node::{Lifetime, MAX_TTL};

/// Members per listed page when `maxpagesize` is absent, and the most it may ask for.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The most members one listed page holds.
pub const MAX_PAGE_SIZE: usize = 200;

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

    /// The `ttl` of adding a user to a group: absent, a year and for the user's future
    /// connections; `0`, its current connections only; else that many seconds (more
    /// than a year is kept a year).
    ///
    /// # Errors
    /// Not a whole number of seconds from 0.
    pub fn ttl(&self) -> Result<Lifetime, ApiError> {
        let Some(raw) = self.first("ttl") else {
            return Ok(Lifetime::Lasting);
        };
        match raw.parse::<u64>() {
            Ok(0) => Ok(Lifetime::Current),
            Ok(secs) => Ok(Lifetime::For(
                std::time::Duration::from_secs(secs).min(MAX_TTL),
            )),
            Err(_) => Err(ApiError::BadRequest(
                "invalid ttl: a whole number of seconds from 0 expected".into(),
            )),
        }
    }

    /// `maxpagesize`: members per page, 1 to 200 (100 when absent).
    ///
    /// # Errors
    /// Out of range, or not a number.
    pub fn max_page_size(&self) -> Result<usize, ApiError> {
        match self.first("maxpagesize") {
            None => Ok(DEFAULT_PAGE_SIZE),
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "invalid maxpagesize: a whole number from 1 to {MAX_PAGE_SIZE} expected"
                    ))
                }),
        }
    }

    /// `top`: the most members listed over all pages (`None`: all of them).
    ///
    /// # Errors
    /// Not a whole number from 1.
    pub fn top(&self) -> Result<Option<u64>, ApiError> {
        self.first("top")
            .map(|raw| {
                raw.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::BadRequest("invalid top: a whole number from 1 expected".into())
                })
            })
            .transpose()
    }

    /// `continuationToken`, as a previous page's `nextLink` carried it.
    pub fn continuation_token(&self) -> Option<&str> {
        self.first("continuationToken").filter(|t| !t.is_empty())
    }

    /// `api-version`, if given.
    pub fn api_version(&self) -> Option<&str> {
        self.first("api-version")
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
