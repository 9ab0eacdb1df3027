//! The versioned routes of Azure SignalR's REST API (`/api/hubs/{hub}/…`, api-version
//! 2022-06-01 to 2024-12-01), with the specs' status codes: closing a hub's, group's or
//! user's connections, existence checks, group membership (of a connection, and of a
//! user, which lasts for its future connections with Azure's ttl semantics) and client
//! tokens. Their sends are the v1 handlers of
//! [`super::send`], routed at both paths.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::query::ApiQuery;
use super::{connection, group, hub_index, user, ApiPath};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::node::Audience;

/// Closes the audience's connections but the excluded ones: 204 once the message is on
/// its channel (each node closes its own).
async fn close(
    state: &AppState,
    hub: usize,
    audience: Audience,
    query: &ApiQuery,
) -> Result<Response, ApiError> {
    let excluded = query.excluded()?;
    state
        .node
        .close_audience(hub, &audience, &excluded, query.reason().as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn close_hub(
    State(state): State<AppState>,
    ApiPath(hub): ApiPath<String>,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    // Only a hub that allows broadcast has a channel every node with its connections is
    // on, as for a broadcast send.
    if !state.node.hubs()[index].spec.allow_broadcast {
        return Err(ApiError::BroadcastNotAllowed(hub));
    }
    close(&state, index, Audience::Hub, &query).await
}

pub(super) async fn close_group(
    State(state): State<AppState>,
    ApiPath((hub, g)): ApiPath<(String, String)>,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    close(&state, index, Audience::Group(group(&g)?), &query).await
}

pub(super) async fn close_user(
    State(state): State<AppState>,
    ApiPath((hub, u)): ApiPath<(String, String)>,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    close(&state, index, Audience::User(user(&u)?), &query).await
}

pub(super) async fn close_connection(
    state: State<AppState>,
    path: ApiPath<(String, String)>,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    super::members::close_one(state, path, query, StatusCode::OK).await
}

/// 200 or 404, without a body (the answer to a HEAD).
fn exists(yes: bool) -> Response {
    if yes {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
    .into_response()
}

pub(super) async fn connection_exists(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let Some(id) = crate::ids::ConnectionId::parse(&id) else {
        return Ok(exists(false));
    };
    Ok(exists(state.node.has_connection(index, &id).await?))
}

pub(super) async fn group_exists(
    State(state): State<AppState>,
    ApiPath((hub, g)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    Ok(exists(state.node.group_exists(index, &group(&g)?).await?))
}

pub(super) async fn user_exists(
    State(state): State<AppState>,
    ApiPath((hub, u)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    Ok(exists(state.node.user_connected(index, &user(&u)?).await?))
}

pub(super) async fn remove_from_all_groups(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let id = connection(&id)?;
    state.node.remove_from_all_groups(index, &id).await?;
    Ok(
        Json(serde_json::json!({ "hub": hub, "connectionId": id.as_str(), "groups": 0 }))
            .into_response(),
    )
}

/// `POST /api/hubs/{hub}/:generateToken`: a client token signed with this node's token
/// key, as `hubcast token` mints it.
pub(super) async fn generate_token(
    State(state): State<AppState>,
    ApiPath(hub): ApiPath<String>,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let minutes = query.minutes_to_expire()?;
    let spec = &state.node.hubs()[index].spec;
    let token = crate::mint::api_token(spec, state.gate.token_key(), query.user_id(), minutes)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(serde_json::json!({ "token": token })).into_response())
}

/// Adds the user to a group with the query's `ttl` (its current connections, and its
/// future ones unless `ttl=0`), answering `status`.
async fn add_user(
    state: &AppState,
    hub: &str,
    u: &str,
    g: &str,
    query: &ApiQuery,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let index = hub_index(state, hub)?;
    let (u, g) = (user(u)?, group(g)?);
    let lifetime = query.ttl()?;
    state
        .node
        .add_user_to_group(index, &u, &g, lifetime)
        .await?;
    Ok(status.into_response())
}

/// Takes the user out of a group (`None`: every group), answering `status`.
async fn remove_user(
    state: &AppState,
    hub: &str,
    u: &str,
    g: Option<&str>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let index = hub_index(state, hub)?;
    let u = user(u)?;
    let g = g.map(group).transpose()?;
    state
        .node
        .remove_user_from_group(index, &u, g.as_ref())
        .await?;
    Ok(status.into_response())
}

/// 200 when the user is in the group (by its record, or a connection in it), else 404.
async fn user_in_group(
    state: &AppState,
    hub: &str,
    u: &str,
    g: &str,
) -> Result<Response, ApiError> {
    let index = hub_index(state, hub)?;
    let (u, g) = (user(u)?, group(g)?);
    Ok(exists(state.node.user_in_group(index, &u, &g).await?))
}

pub(super) async fn add_user_to_group(
    State(state): State<AppState>,
    ApiPath((hub, u, g)): ApiPath<(String, String, String)>,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    add_user(&state, &hub, &u, &g, &query, StatusCode::OK).await
}

pub(super) async fn remove_user_from_group(
    State(state): State<AppState>,
    ApiPath((hub, u, g)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    remove_user(&state, &hub, &u, Some(&g), StatusCode::NO_CONTENT).await
}

pub(super) async fn remove_user_from_all_groups(
    State(state): State<AppState>,
    ApiPath((hub, u)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    remove_user(&state, &hub, &u, None, StatusCode::NO_CONTENT).await
}

pub(super) async fn user_in_group_exists(
    State(state): State<AppState>,
    ApiPath((hub, u, g)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    user_in_group(&state, &hub, &u, &g).await
}

pub(super) async fn v1_add_user_to_group(
    State(state): State<AppState>,
    ApiPath((hub, g, u)): ApiPath<(String, String, String)>,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    add_user(&state, &hub, &u, &g, &query, StatusCode::ACCEPTED).await
}

pub(super) async fn v1_remove_user_from_group(
    State(state): State<AppState>,
    ApiPath((hub, g, u)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    remove_user(&state, &hub, &u, Some(&g), StatusCode::ACCEPTED).await
}

pub(super) async fn v1_remove_user_from_all_groups(
    State(state): State<AppState>,
    ApiPath((hub, u)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    remove_user(&state, &hub, &u, None, StatusCode::OK).await
}

pub(super) async fn v1_user_in_group_exists(
    State(state): State<AppState>,
    ApiPath((hub, g, u)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    user_in_group(&state, &hub, &u, &g).await
}
