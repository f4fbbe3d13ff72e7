//! Admin routes for the policy: read, validate, save, list versions, diff and roll back.
//!
//! A save is a compare-and-set: it names the version it was edited from, and the store
//! rejects it when another save came first, so two admins never overwrite each other. Version
//! ids from URLs are passed to the store only as opaque values, never built into a file path
//! or an object key.
//!
//! A rejected policy changes nothing: validation runs before the store is touched, so the
//! version in force stays in force. A valid policy whose rules cannot take effect as written
//! is saved, and the reply lists [`Warning`]s. Examples are a condition on an input field that
//! none of its tools declares, or a default of deny with no allow rule. These are not errors,
//! because the tools and keys change without the policy changing.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpsec_policy::{Policy, Warning};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::admin::{admin_key_id, admin_rejection};
use super::body::{read_json, require_json};
use super::reply::{ApiError, invalid_document};
use crate::state::AppState;
use crate::store::{PolicyVersion, StoreError};

/// Longest accepted version id or timestamp from a URL.
const MAX_VERSION_TEXT: usize = 256;

/// Maximum wait for the upstreams' tool lists while validating a policy. A slow upstream
/// delays the reply by at most this, and the warnings that need the tools are then left out.
const TOOL_LIST_WAIT: Duration = Duration::from_secs(5);

/// `GET /api/config`: the policy in force.
pub(super) async fn get_config(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    match state.stores().policy.current().await {
        Ok(Some(current)) => Json(version_json(&current, true)).into_response(),
        Ok(None) => reply(StatusCode::NOT_FOUND, "not_found", "no policy is stored yet; save one with PUT /api/config"),
        Err(error) => store_failure(&error),
    }
}

/// `PUT /api/config` (and `POST`): validate, then save if `base_version` is still the newest.
pub(super) async fn put_config(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let (request, yaml) = match read_policy_request(&state, &headers, body).await {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    let yaml = yaml.as_str();
    let base = match optional_text(&request, "base_version") {
        Ok(base) => base,
        Err(error) => return error.into_response(),
    };
    let comment = match optional_text(&request, "comment") {
        Ok(comment) => comment,
        Err(error) => return error.into_response(),
    };

    let policy = match Policy::from_yaml("policy_yaml", yaml) {
        Ok(policy) => policy,
        Err(error) => return invalid_document(&error, "invalid_policy"),
    };
    let checked = check_effects(&state, &policy).await;
    save(&state, &headers, yaml, base, comment, Some(checked)).await
}

/// `POST /api/policy/validate`: validate without saving.
pub(super) async fn validate(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let yaml = match read_policy_request(&state, &headers, body).await {
        Ok((_, yaml)) => yaml,
        Err(error) => return error.into_response(),
    };
    let policy = match Policy::from_yaml("policy_yaml", &yaml) {
        Ok(policy) => policy,
        Err(error) => return invalid_document(&error, "invalid_policy"),
    };
    let checked = check_effects(&state, &policy).await;
    Json(json!({
        "valid": true,
        "rules": policy.rule_count(),
        "limits": policy.limit_count(),
        "default": policy.default_effect().as_str(),
        "rule_ids": policy.rule_ids(),
        "warnings": checked.warnings,
        "tools_checked": checked.tools_checked,
    }))
    .into_response()
}

/// The warnings about a valid policy, and whether the upstreams' tools were known.
struct CheckedEffects {
    warnings: Vec<Warning>,
    tools_checked: bool,
}

/// Checks `policy` against the tools the upstreams list now and the keys in force.
async fn check_effects(state: &AppState, policy: &Policy) -> CheckedEffects {
    let tools = if state.upstreams().is_empty() {
        None
    } else {
        tokio::time::timeout(TOOL_LIST_WAIT, state.upstreams().known_tools()).await.ok()
    };
    let tools = tools.filter(|tools| !tools.is_empty());
    let keys = state.keys().await.ok();
    let warnings = policy.warnings(tools.as_deref(), keys.as_deref());
    CheckedEffects { warnings, tools_checked: tools.is_some() }
}

/// `GET /api/policy/versions`: every version, newest first, without their text.
pub(super) async fn versions(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    match state.stores().policy.versions().await {
        Ok(versions) => {
            let listed: Vec<Value> = versions.iter().map(|version| version_json(version, false)).collect();
            Json(json!({"versions": listed})).into_response()
        }
        Err(error) => store_failure(&error),
    }
}

/// `GET /api/policy/versions/{id}`: one version with its text.
pub(super) async fn version(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let id = match super::reply::path(path) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    match find_version(&state, &id).await {
        Ok(version) => Json(version_json(&version, true)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Query of `GET /api/policy/diff`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct DiffQuery {
    from: String,
    to: String,
}

/// `GET /api/policy/diff?from=A&to=B`: a unified diff between two versions.
pub(super) async fn diff(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let query = match super::reply::query(query) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    let from = match find_version(&state, &query.from).await {
        Ok(version) => version,
        Err(error) => return error.into_response(),
    };
    let to = match find_version(&state, &query.to).await {
        Ok(version) => version,
        Err(error) => return error.into_response(),
    };
    let text = similar::TextDiff::from_lines(&from.yaml, &to.yaml)
        .unified_diff()
        .context_radius(3)
        .header(&from.version, &to.version)
        .to_string();
    Json(json!({"from": from.version, "to": to.version, "diff": text})).into_response()
}

/// `POST /api/policy/rollback/{version}`: saves an old version's text as the newest version.
///
/// `{version}` is a version id, or an RFC 3339 timestamp that selects the version in force at
/// that instant. The body may hold `base_version` (the newest version the admin saw; the
/// rollback fails with 409 when another save came since) and `comment`.
pub(super) async fn rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let target = match super::reply::path(path) {
        Ok(target) => target,
        Err(error) => return error.into_response(),
    };
    let request = match read_optional_object(&state, &headers, body).await {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let old = match resolve_target(&state, &target).await {
        Ok(version) => version,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = Policy::from_yaml(&format!("version {}", old.version), &old.yaml) {
        return invalid_document(&error, "invalid_policy");
    }

    let base = match optional_text(&request, "base_version") {
        Ok(Some(base)) => Some(base),
        Ok(None) => match state.stores().policy.current().await {
            Ok(current) => current.map(|current| current.version),
            Err(error) => return store_failure(&error),
        },
        Err(error) => return error.into_response(),
    };
    let comment = match optional_text(&request, "comment") {
        Ok(comment) => comment.unwrap_or_else(|| format!("rollback to {}", old.version)),
        Err(error) => return error.into_response(),
    };
    save(&state, &headers, &old.yaml, base, Some(comment), None).await
}

/// Saves `yaml` as the newest version. With `checked`, the reply lists its warnings.
async fn save(
    state: &AppState,
    headers: &HeaderMap,
    yaml: &str,
    base: Option<String>,
    comment: Option<String>,
    checked: Option<CheckedEffects>,
) -> Response {
    let author = admin_key_id(headers);
    let saved = state.stores().policy.save(yaml, base.as_deref(), &author, comment.as_deref()).await;
    match saved {
        Ok(saved) => {
            state.invalidate().await;
            let warnings = checked.as_ref().map_or(0, |checked| checked.warnings.len());
            tracing::info!(policy.version = %saved.version, admin.key_id = %author, warnings, "policy saved");
            let mut body = version_json(&saved, false);
            if let (Some(checked), Some(object)) = (checked, body.as_object_mut()) {
                object.insert("warnings".to_owned(), json!(checked.warnings));
                object.insert("tools_checked".to_owned(), Value::Bool(checked.tools_checked));
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(StoreError::Conflict(detail)) => reply(
            StatusCode::CONFLICT,
            "conflict",
            &format!(
                "the policy changed since version {}: {detail}; reload it, merge your edits and save again",
                base.as_deref().unwrap_or("none")
            ),
        ),
        Err(error) => store_failure(&error),
    }
}

/// Finds the version a rollback names: by id, or the one in force at an RFC 3339 instant.
async fn resolve_target(state: &AppState, target: &str) -> Result<PolicyVersion, ApiError> {
    let Ok(instant) = OffsetDateTime::parse(target, &time::format_description::well_known::Rfc3339) else {
        return find_version(state, target).await;
    };
    let versions = state.stores().policy.versions().await.map_err(|error| ApiError::store(&error))?;
    let in_force =
        versions.into_iter().filter(|version| version.saved_at <= instant).max_by_key(|version| version.saved_at);
    match in_force {
        Some(version) => find_version(state, &version.version).await,
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no policy version was in force at {target}"),
        )),
    }
}

async fn find_version(state: &AppState, id: &str) -> Result<PolicyVersion, ApiError> {
    let not_found = || {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", &format!("policy version `{}` not found", id.escape_debug()))
    };
    if id.is_empty() || id.len() > MAX_VERSION_TEXT || id.chars().any(char::is_control) {
        return Err(not_found());
    }
    match state.stores().policy.version(id).await {
        Ok(version) => Ok(version),
        Err(StoreError::NotFound(_)) => Err(not_found()),
        Err(error) => Err(ApiError::store(&error)),
    }
}

/// Reads a JSON object body with a string field `policy_yaml`, returning both.
async fn read_policy_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(serde_json::Map<String, Value>, String), ApiError> {
    let request = read_object(state, headers, body).await?;
    match request.get("policy_yaml") {
        Some(Value::String(yaml)) => {
            let yaml = yaml.clone();
            Ok((request, yaml))
        }
        _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "missing string field `policy_yaml`")),
    }
}

async fn read_object(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    if let Err(error) = require_json(headers) {
        return Err(ApiError::new(error.status, "invalid_request", &error.reason));
    }
    match read_json(body, state.options().max_body_bytes).await {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a JSON object")),
        Err(error) => Err(ApiError::new(error.status, "invalid_request", &error.reason)),
    }
}

/// Reads a JSON object body, or an empty one when the request has no body.
async fn read_optional_object(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let has_body = headers.get(axum::http::header::CONTENT_LENGTH).is_none_or(|length| length != "0")
        && headers.contains_key(axum::http::header::CONTENT_TYPE);
    if !has_body {
        return Ok(serde_json::Map::new());
    }
    read_object(state, headers, body).await
}

fn optional_text(request: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", &format!("field `{field}` must be a string")))
        }
    }
}

fn version_json(version: &PolicyVersion, with_yaml: bool) -> Value {
    let saved_at = version.saved_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let mut value = json!({
        "version": version.version,
        "saved_at": saved_at,
        "author": version.author,
        "comment": version.comment,
        "size": version.size,
    });
    if with_yaml && let Some(object) = value.as_object_mut() {
        object.insert("policy_yaml".to_owned(), Value::String(version.yaml.clone()));
    }
    value
}

fn store_failure(error: &StoreError) -> Response {
    ApiError::store(error).into_response()
}

fn reply(status: StatusCode, label: &str, reason: &str) -> Response {
    (status, Json(json!({"status": label, "reason": reason}))).into_response()
}
