//! `GET /api/audit`: audit events of a time range, with optional model and decision filters.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use mcpsec_policy::keys::parse_timestamp;
use serde_json::json;
use time::OffsetDateTime;

use super::admin::admin_rejection;
use super::reply::{ApiError, bad_request};
use crate::audit::{AuditEvent, Outcome};
use crate::state::AppState;

/// Events returned when the query sets no `limit`.
const DEFAULT_LIMIT: usize = 100;

/// Maximum `limit`.
const MAX_LIMIT: usize = 5_000;

/// Maximum number of events read to apply the `model` and `decision` filters.
const MAX_FILTER_SCAN: usize = 20_000;

/// Range searched when the query sets no `since`: the last 24 hours.
const DEFAULT_RANGE: time::Duration = time::Duration::days(1);

/// Query of `GET /api/audit`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    model: Option<String>,
    decision: Option<String>,
}

/// Event filters shared by the audit and session listings.
#[derive(Debug, Clone, Default)]
pub(super) struct EventFilter {
    /// Keep only events of this model.
    pub(super) model: Option<String>,
    /// Keep only events with this decision.
    pub(super) decision: Option<Outcome>,
}

impl EventFilter {
    /// Returns whether no filter is set.
    pub(super) fn is_empty(&self) -> bool {
        self.model.is_none() && self.decision.is_none()
    }

    /// Returns whether `event` passes every filter that is set.
    pub(super) fn matches(&self, event: &AuditEvent) -> bool {
        self.model.as_ref().is_none_or(|model| *model == event.model_id)
            && self.decision.is_none_or(|decision| decision == event.decision)
    }
}

/// `GET /api/audit?since=&until=&limit=&model=&decision=`: the newest `limit` events of the
/// range that pass the filters, oldest first. `since` defaults to 24 hours ago and `until`
/// to now.
pub(super) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let query = match super::reply::query(query) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    match list_events(&state, query).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn list_events(state: &AppState, query: AuditQuery) -> Result<Response, ApiError> {
    let until = parse_instant(query.until.as_deref(), "until")?.unwrap_or_else(OffsetDateTime::now_utc);
    let since =
        parse_instant(query.since.as_deref(), "since")?.unwrap_or(until.checked_sub(DEFAULT_RANGE).unwrap_or(until));
    check_range(since, until)?;
    let limit = check_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let filter = EventFilter { model: query.model, decision: parse_decision(query.decision.as_deref())? };

    // NOTE: with a filter, only the newest MAX_FILTER_SCAN events of the range are searched,
    // so a rare match older than them is missing. The reply then sets `truncated`.
    let scan = if filter.is_empty() { limit } else { MAX_FILTER_SCAN };
    let read = state.audit().events_between(since, until, scan).await.map_err(|error| ApiError::store(&error))?;
    let truncated = !filter.is_empty() && read.len() >= scan;

    let mut selected: Vec<AuditEvent> = read.into_iter().filter(|event| filter.matches(event)).collect();
    let excess = selected.len().saturating_sub(limit);
    selected.drain(..excess);
    Ok(Json(json!({"count": selected.len(), "truncated": truncated, "events": selected})).into_response())
}

/// Query of `GET /api/alerts`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertsQuery {
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

/// Range searched for alerts when the query sets no `since`: the last 7 days.
const DEFAULT_ALERTS_RANGE: time::Duration = time::Duration::days(7);

/// `GET /api/alerts?since=&until=&limit=`: the newest `limit` anomaly events of the range,
/// newest first. `since` defaults to 7 days ago and `until` to now.
pub(super) async fn alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AlertsQuery>, QueryRejection>,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let query = match super::reply::query(query) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    match list_alerts(&state, query).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn list_alerts(state: &AppState, query: AlertsQuery) -> Result<Response, ApiError> {
    let until = parse_instant(query.until.as_deref(), "until")?.unwrap_or_else(OffsetDateTime::now_utc);
    let since = parse_instant(query.since.as_deref(), "since")?
        .unwrap_or(until.checked_sub(DEFAULT_ALERTS_RANGE).unwrap_or(until));
    check_range(since, until)?;
    let limit = check_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let alerts = state.audit().alerts(since, until, limit).await.map_err(|error| ApiError::store(&error))?;
    Ok(Json(json!({"count": alerts.len(), "alerts": alerts})).into_response())
}

/// Parses an optional RFC 3339 query value; the error names the parameter.
pub(super) fn parse_instant(text: Option<&str>, name: &str) -> Result<Option<OffsetDateTime>, ApiError> {
    text.map(|text| parse_timestamp(text).map_err(|reason| bad_request(&format!("invalid `{name}`: {reason}"))))
        .transpose()
}

/// Rejects a range whose end is not after its start.
pub(super) fn check_range(since: OffsetDateTime, until: OffsetDateTime) -> Result<(), ApiError> {
    if since >= until {
        return Err(bad_request("invalid range: `since` must be before `until`"));
    }
    Ok(())
}

/// Returns `limit`, or `default` when unset; rejects 0 and values over `max`.
pub(super) fn check_limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(bad_request(&format!("invalid `limit` {limit}: use 1 to {max}"))),
    }
}

/// Parses a `decision` query value.
pub(super) fn parse_decision(text: Option<&str>) -> Result<Option<Outcome>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    match text {
        "allow" => Ok(Some(Outcome::Allow)),
        "deny" => Ok(Some(Outcome::Deny)),
        "unauthorized" => Ok(Some(Outcome::Unauthorized)),
        "error" => Ok(Some(Outcome::Error)),
        other => Err(bad_request(&format!(
            "invalid `decision` `{}`: use `allow`, `deny`, `unauthorized` or `error`",
            other.escape_debug()
        ))),
    }
}
