//! `GET /api/hubs/{hub}/groups/{group}/connections`: a group's members, page by page,
//! as Azure's `GroupMemberPagedValues` (`value`, and `nextLink` while more remain).

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::query::ApiQuery;
use super::{group, hub_index, ApiPath};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::node::PageToken;

/// Longest `continuationToken` taken, in bytes (a connection id and two numbers).
const MAX_TOKEN_BYTES: usize = 256;

/// `{cursor}:{remaining}:{after}`, base64url: opaque to callers, and safe in a URL.
fn encode(t: &PageToken) -> String {
    let remaining = t.remaining.map(|r| r.to_string()).unwrap_or_default();
    let raw = format!(
        "{}:{remaining}:{}",
        t.cursor,
        t.after.as_deref().unwrap_or("")
    );
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode(token: &str) -> Result<PageToken, ApiError> {
    let bad = || {
        ApiError::BadRequest("invalid continuationToken: pass the one a nextLink carried".into())
    };
    if token.len() > MAX_TOKEN_BYTES {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, ':');
    let (Some(cursor), Some(remaining), Some(after)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(PageToken {
        cursor: cursor.parse().map_err(|_| bad())?,
        remaining: if remaining.is_empty() {
            None
        } else {
            Some(remaining.parse().map_err(|_| bad())?)
        },
        after: (!after.is_empty()).then(|| after.to_owned()),
    })
}

/// The absolute URL of the next page: this request's, with the token of where it goes
/// on (and its `api-version` and `maxpagesize`; `top` travels in the token).
fn next_link(headers: &HeaderMap, uri: &Uri, query: &ApiQuery, page: usize, token: &str) -> String {
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let mut link = format!("{scheme}://{host}{}?", uri.path());
    if let Some(v) = query.api_version() {
        link.push_str(&format!("api-version={v}&"));
    }
    link.push_str(&format!("maxpagesize={page}&continuationToken={token}"));
    link
}

pub(super) async fn list_group_connections(
    State(state): State<AppState>,
    ApiPath((hub, g)): ApiPath<(String, String)>,
    query: ApiQuery,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let g = group(&g)?;
    let page = query.max_page_size()?;
    let top = query.top()?;
    let from = query.continuation_token().map(decode).transpose()?;
    let listing = state.node.group_members(index, &g, page, from, top).await?;
    let value: Vec<serde_json::Value> = listing
        .members
        .iter()
        .map(|(id, user)| match user {
            Some(u) => serde_json::json!({ "connectionId": id, "userId": u }),
            None => serde_json::json!({ "connectionId": id }),
        })
        .collect();
    let mut body = serde_json::json!({ "value": value });
    if let Some(next) = &listing.next {
        body["nextLink"] = next_link(&headers, &uri, &query, page, &encode(next)).into();
    }
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_written_and_garbage_is_refused() {
        for t in [
            PageToken {
                cursor: 0,
                after: Some("abc-DEF_123".into()),
                remaining: Some(7),
            },
            PageToken {
                cursor: 123_456,
                after: None,
                remaining: None,
            },
        ] {
            assert_eq!(decode(&encode(&t)).unwrap(), t);
        }
        for bad in ["%%%", "bm9wZQ", &"A".repeat(400)] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
