//! Admin routes for sessions. Every one requires `X-Admin-Key`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// Checks the admin key and returns the rejection to send, or `None` when the key is right.
/// The rejection is 503 when no admin key is configured, and 401 when the key is missing or wrong.
pub(super) fn admin_rejection(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let presented = headers.get("x-admin-key").and_then(|value| value.to_str().ok());
    match state.check_admin_key(presented) {
        Some(true) => None,
        Some(false) => Some(reply(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong `X-Admin-Key` header")),
        None => Some(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "admin routes are disabled because ADMIN_KEY is not set; set it and restart the gateway",
        )),
    }
}

/// Returns the public id of the admin key presented with a request, for recording who made a
/// change. The key itself is never stored.
pub(super) fn admin_key_id(headers: &HeaderMap) -> String {
    let presented = headers.get("x-admin-key").and_then(|value| value.to_str().ok()).unwrap_or_default();
    format!("admin:{}", mcpsec_policy::keys::key_id(&mcpsec_policy::keys::hash_key(presented)))
}

/// `GET /api/session/{id}`: one session's full trace, oldest call first.
pub(super) async fn session(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(response) = admin_rejection(&state, &headers) {
        return response;
    }
    match state.audit().session_trace(&id).await {
        Ok(events) if events.is_empty() => {
            reply(StatusCode::NOT_FOUND, "not_found", &format!("no calls recorded for session `{}`", id.escape_debug()))
        }
        Ok(events) => Json(json!({"session_id": id, "calls": events.len(), "events": events})).into_response(),
        Err(error) => reply(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &error.to_string()),
    }
}

/// Query of `GET /api/sessions`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct SessionsQuery {
    limit: Option<usize>,
}

/// `GET /api/sessions`: the most recently active sessions.
pub(super) async fn sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SessionsQuery>,
) -> Response {
    if let Some(response) = admin_rejection(&state, &headers) {
        return response;
    }
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    match state.audit().recent_sessions(limit).await {
        Ok(sessions) => Json(json!({"sessions": sessions})).into_response(),
        Err(error) => reply(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &error.to_string()),
    }
}

fn reply(status: StatusCode, label: &str, reason: &str) -> Response {
    (status, Json(json!({"status": label, "reason": reason}))).into_response()
}
