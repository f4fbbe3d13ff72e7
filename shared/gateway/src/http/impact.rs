//! `POST /api/policy/impact`: replays recorded tool calls against a candidate policy and the
//! policy in force, and lists the calls whose decision would change.
//!
//! Each replayed call is decided with the model's current scope, at the time it was made, and
//! with no earlier calls counted, so limits never deny it. Calls recorded without their input
//! (`AUDIT_TOOL_INPUT=drop`) are decided with the input `{}`, and the reply counts them.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpsec_policy::{Decision, KeySet, NoCalls, Policy, Principal, Request, authorize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::admin::admin_rejection;
use super::keys_admin::read_request;
use super::reply::{ApiError, bad_request, invalid_document};
use crate::audit::{AuditEvent, Outcome};
use crate::state::AppState;

/// Calls replayed when the request sets no `limit`.
const DEFAULT_LIMIT: usize = 500;

/// Maximum `limit`.
const MAX_LIMIT: usize = 5_000;

/// How far back recorded calls are read.
const LOOKBACK: time::Duration = time::Duration::days(30);

/// Body of `POST /api/policy/impact`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImpactRequest {
    policy_yaml: String,
    limit: Option<usize>,
}

/// A replayed call whose decision changes.
#[derive(Debug, serde::Serialize)]
struct Change {
    event_id: String,
    model_id: String,
    tool_name: String,
    from: &'static str,
    to: &'static str,
    /// Rules that matched under one policy and not the other, or the deciding rule
    /// (`default` for the policy's default) when the same rules matched.
    rules: Vec<String>,
}

/// Changes per rule.
#[derive(Debug, Default, serde::Serialize)]
struct RuleCounts {
    allow_to_deny: u64,
    deny_to_allow: u64,
}

/// `POST /api/policy/impact` with `{policy_yaml, limit?}`.
pub(super) async fn preview(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    match run_preview(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run_preview(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let request: ImpactRequest = read_request(state, headers, body, false).await?;
    let limit = match request.limit {
        None => DEFAULT_LIMIT,
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(limit) => return Err(bad_request(&format!("invalid `limit` {limit}: use 1 to {MAX_LIMIT}"))),
    };
    let candidate = match Policy::from_yaml("policy_yaml", &request.policy_yaml) {
        Ok(policy) => policy,
        Err(error) => return Ok(invalid_document(&error, "invalid_policy")),
    };

    let unavailable = |reason: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &reason);
    let current = state.policy().await.map_err(unavailable)?;
    let keys = state.keys().await.map_err(unavailable)?;
    let now = OffsetDateTime::now_utc();
    let since = now.checked_sub(LOOKBACK).unwrap_or(now);
    let events = state.audit().events_between(since, now, limit).await.map_err(|error| ApiError::store(&error))?;

    Ok(Json(compare(&keys, &current, &candidate, &events)).into_response())
}

/// Replays `events` against both policies and returns the reply body.
fn compare(keys: &KeySet, current: &Policy, candidate: &Policy, events: &[AuditEvent]) -> Value {
    let empty = Value::Object(serde_json::Map::new());
    let mut evaluated = 0_u64;
    let mut without_input = 0_u64;
    let mut changed = Vec::new();
    let mut by_rule: BTreeMap<String, RuleCounts> = BTreeMap::new();

    for event in events.iter().filter(|event| matches!(event.decision, Outcome::Allow | Outcome::Deny)) {
        let Some(entry) = keys.get(&event.model_id) else { continue };
        let Some(credential) = entry.credentials.first() else { continue };
        let principal = Principal { entry, credential };
        let input = event.input.as_ref().unwrap_or(&empty);
        evaluated += 1;
        without_input += u64::from(event.input.is_none());

        let request = Request {
            model_id: &event.model_id,
            session_id: &event.session_id,
            tool_name: &event.tool_name,
            input,
            calls: &NoCalls,
        };
        let before = authorize(&principal, current, &request, event.time);
        let after = authorize(&principal, candidate, &request, event.time);
        if before.is_allowed() == after.is_allowed() {
            continue;
        }

        let change = describe_change(event, &before, &after);
        for rule in &change.rules {
            let counts = by_rule.entry(rule.clone()).or_default();
            if after.is_allowed() {
                counts.deny_to_allow += 1;
            } else {
                counts.allow_to_deny += 1;
            }
        }
        changed.push(change);
    }

    json!({
        "evaluated": evaluated,
        "evaluated_without_input": without_input,
        "skipped": events.len() as u64 - evaluated,
        "changed": changed,
        "by_rule": by_rule,
        "note": "calls are replayed with each model's current scope and no limits counted; \
                 calls recorded without input (AUDIT_TOOL_INPUT=drop) are replayed with the input {}",
    })
}

fn describe_change(event: &AuditEvent, before: &Decision, after: &Decision) -> Change {
    let before_ids: BTreeSet<&str> = before.matched_ids().into_iter().collect();
    let after_ids: BTreeSet<&str> = after.matched_ids().into_iter().collect();
    let mut rules: Vec<String> = before_ids.symmetric_difference(&after_ids).map(|id| (*id).to_owned()).collect();
    if rules.is_empty() {
        let deciding = after.verdict.rule.clone().or_else(|| before.verdict.rule.clone());
        rules.push(deciding.unwrap_or_else(|| "default".to_owned()));
    }

    Change {
        event_id: event.event_id.clone(),
        model_id: event.model_id.clone(),
        tool_name: event.tool_name.clone(),
        from: effect_name(before),
        to: effect_name(after),
        rules,
    }
}

fn effect_name(decision: &Decision) -> &'static str {
    if decision.is_allowed() { "allow" } else { "deny" }
}
