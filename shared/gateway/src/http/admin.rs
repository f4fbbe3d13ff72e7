//! Admin routes for sessions. Every one requires `X-Admin-Key`.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::audit_admin::{check_limit, check_range, parse_decision, parse_instant};
use super::reply::ApiError;
use crate::audit::Outcome;
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
pub(super) async fn session(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(response) = admin_rejection(&state, &headers) {
        return response;
    }
    let id = match super::reply::path(path) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
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
#[serde(deny_unknown_fields)]
pub(super) struct SessionsQuery {
    limit: Option<usize>,
    model: Option<String>,
    decision: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// Maximum number of sessions read from the store before filtering.
const MAX_SESSION_SCAN: usize = 1_000;

/// Maximum number of session traces read for the `decision` filter.
const MAX_TRACE_SCAN: usize = 200;

/// `GET /api/sessions?model=&decision=&since=&until=&limit=`: the most recently active
/// sessions, newest first. `since` and `until` keep sessions active at some time in the
/// range, and `decision` keeps sessions with at least one call of that decision.
pub(super) async fn sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SessionsQuery>, QueryRejection>,
) -> Response {
    if let Some(response) = admin_rejection(&state, &headers) {
        return response;
    }
    let query = match super::reply::query(query) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    match list_sessions(&state, query).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn list_sessions(state: &AppState, query: SessionsQuery) -> Result<Response, ApiError> {
    let limit = check_limit(query.limit, 50, 1000)?;
    let since = parse_instant(query.since.as_deref(), "since")?;
    let until = parse_instant(query.until.as_deref(), "until")?;
    if let (Some(since), Some(until)) = (since, until) {
        check_range(since, until)?;
    }
    let decision = parse_decision(query.decision.as_deref())?;
    let filtered = query.model.is_some() || decision.is_some() || since.is_some() || until.is_some();

    let scan = if filtered { MAX_SESSION_SCAN } else { limit };
    let listed = state.audit().recent_sessions(scan).await.map_err(|error| ApiError::store(&error))?;
    let mut truncated = filtered && listed.len() >= scan;
    let candidates = listed.into_iter().filter(|session| {
        query.model.as_ref().is_none_or(|model| *model == session.model_id)
            && since.is_none_or(|since| session.last_seen >= since)
            && until.is_none_or(|until| session.first_seen < until)
    });

    let mut selected = Vec::new();
    let mut traces_read = 0;
    for session in candidates {
        if selected.len() >= limit {
            break;
        }
        if let Some(decision) = decision {
            // NOTE: the decision filter reads one trace per session, so it stops after
            // MAX_TRACE_SCAN sessions and reports `truncated`.
            if traces_read >= MAX_TRACE_SCAN {
                truncated = true;
                break;
            }
            traces_read += 1;
            if !has_decision(state, &session.session_id, decision).await? {
                continue;
            }
        }
        selected.push(session);
    }
    Ok(Json(json!({"sessions": selected, "truncated": truncated})).into_response())
}

/// Returns whether a session has a call with `decision`.
async fn has_decision(state: &AppState, session_id: &str, decision: Outcome) -> Result<bool, ApiError> {
    let trace = state.audit().session_trace(session_id).await.map_err(|error| ApiError::store(&error))?;
    Ok(trace.iter().any(|event| event.decision == decision))
}

fn reply(status: StatusCode, label: &str, reason: &str) -> Response {
    (status, Json(json!({"status": label, "reason": reason}))).into_response()
}
