//! The membership and connection routes: group member counts, adding and removing a
//! connection, and asking whether a connection exists or closing it (with a `reason`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::query::ApiQuery;
use super::{connection, group, hub_index, ApiPath};
use crate::http::error::ApiError;
use crate::http::AppState;

pub(super) async fn group_info(
    State(state): State<AppState>,
    ApiPath((hub, g)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let g = group(&g)?;
    let members = state.node.group_size(index, &g).await?;
    // A group without members does not exist (v1's 404), and its count is still told.
    let status = if members == 0 {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::json!({ "hub": hub, "group": g.as_str(), "members": members })),
    )
        .into_response())
}

pub(super) async fn add_to_group(
    State(state): State<AppState>,
    ApiPath((hub, g, id)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let g = group(&g)?;
    let id = connection(&id)?;
    state.node.add_to_group(index, &id, &g).await?;
    Ok(Json(serde_json::json!({ "hub": hub, "group": g.as_str(), "connectionId": id.as_str(), "member": true })).into_response())
}

pub(super) async fn remove_from_group(
    State(state): State<AppState>,
    ApiPath((hub, g, id)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let g = group(&g)?;
    let id = connection(&id)?;
    let was_member = state.node.remove_from_group(index, &id, &g).await?;
    Ok(Json(serde_json::json!({ "hub": hub, "group": g.as_str(), "connectionId": id.as_str(), "member": false, "wasMember": was_member })).into_response())
}

pub(super) async fn connection_exists(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let id = connection(&id)?;
    if state.node.has_connection(index, &id).await? {
        Ok(
            Json(serde_json::json!({ "hub": hub, "connectionId": id.as_str(), "connected": true }))
                .into_response(),
        )
    } else {
        Err(ApiError::UnknownConnection(id.to_string()))
    }
}

pub(super) async fn close_connection(
    state: State<AppState>,
    path: ApiPath<(String, String)>,
    query: ApiQuery,
) -> Result<Response, ApiError> {
    close_one(state, path, query, StatusCode::ACCEPTED).await
}

/// Closes one connection, wherever it is, with the query's `reason`; answers `status`
/// (v1 202, the versioned API 200) with what is closing.
pub(super) async fn close_one(
    State(state): State<AppState>,
    ApiPath((hub, id)): ApiPath<(String, String)>,
    query: ApiQuery,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let index = hub_index(&state, &hub)?;
    let id = connection(&id)?;
    state
        .node
        .close_connection_with(index, &id, query.reason().as_deref())
        .await?;
    Ok((
        status,
        Json(serde_json::json!({ "hub": hub, "connectionId": id.as_str(), "closing": true })),
    )
        .into_response())
}
