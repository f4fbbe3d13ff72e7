//! Admin routes for model keys: list, create, rotate, revoke, update and import.
//!
//! A key's plaintext is returned once, by the route that creates it, and is never stored or
//! logged: the store keeps its SHA-256, and listings show only its public id. Every change
//! calls [`AppState::invalidate`], so it applies at once in this process.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpsec_policy::keys::{hash_key, parse_timestamp};
use mcpsec_policy::{Credential, KeySet, ModelEntry, Scope};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::admin::{admin_key_id, admin_rejection};
use super::body::{read_json, require_json};
use super::reply::{ApiError, bad_request, invalid_document};
use crate::state::AppState;

/// Grace period of the old keys after a rotation when the request sets none, in seconds.
const DEFAULT_GRACE_SECONDS: u64 = 3600;

/// Longest accepted grace period, in seconds: 30 days.
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// Prefix of generated keys, so that a leaked key is recognizable in logs and scanners.
const KEY_PREFIX: &str = "mk_";

/// `GET /api/keys`: every model with its key ids, never a hash or a key.
pub(super) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    match state.stores().keys.load_models().await {
        Ok(mut models) => {
            models.sort_by(|left, right| left.model_id.cmp(&right.model_id));
            let listed: Vec<Value> = models.iter().map(model_json).collect();
            Json(json!({"models": listed})).into_response()
        }
        Err(error) => ApiError::store(&error).into_response(),
    }
}

/// Body of `POST /api/keys`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    model_id: String,
    tools: Vec<String>,
    expires: Option<String>,
}

/// `POST /api/keys`: creates a model with a new key, and returns the key once.
pub(super) async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    match create_model(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn create_model(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let request: CreateRequest = read_request(state, headers, body, false).await?;
    check_model_id(&request.model_id)?;
    let scope = check_tools(&request.tools)?;
    let expires = check_expires(request.expires.as_deref())?;

    let models = state.stores().keys.load_models().await.map_err(|error| ApiError::store(&error))?;
    if models.iter().any(|model| model.model_id == request.model_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            &format!("model `{}` already exists; rotate its key or update it instead", request.model_id),
        ));
    }

    // NOTE: the check above and the write below are not one transaction, so two admins
    // creating the same model at the same moment both succeed and the later write wins.
    let (key, credential) = new_credential(expires);
    let entry = ModelEntry {
        model_id: request.model_id,
        credentials: vec![credential],
        scope,
        revoked: false,
        quarantined_until: None,
    };
    let key_id = entry.credentials.last().map(Credential::key_id);
    store_model(state, headers, &entry, key_id.as_deref(), "model created").await?;
    Ok((StatusCode::CREATED, Json(with_key(&entry, &key))).into_response())
}

/// Body of `POST /api/keys/{model_id}/rotate`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    grace_seconds: Option<u64>,
    expires: Option<String>,
}

/// `POST /api/keys/{model_id}/rotate`: adds a new key and lets the old ones expire after a
/// grace period, so callers can switch without an outage. Returns the new key once.
pub(super) async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let model_id = match super::reply::path(path) {
        Ok(model_id) => model_id,
        Err(error) => return error.into_response(),
    };
    match rotate_key(&state, &headers, &model_id, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn rotate_key(state: &AppState, headers: &HeaderMap, model_id: &str, body: Body) -> Result<Response, ApiError> {
    let request: RotateRequest = read_request(state, headers, body, true).await?;
    let grace = check_grace(request.grace_seconds)?;
    let expires = check_expires(request.expires.as_deref())?;
    let mut entry = find_model(state, model_id).await?;
    if entry.revoked {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            &format!("model `{model_id}` is revoked; import or create it again to give it a key"),
        ));
    }

    let grace_end = OffsetDateTime::now_utc() + grace;
    for credential in &mut entry.credentials {
        credential.expires = Some(credential.expires.map_or(grace_end, |current| current.min(grace_end)));
    }
    let (key, credential) = new_credential(expires);
    entry.credentials.push(credential);

    let key_id = entry.credentials.last().map(Credential::key_id);
    store_model(state, headers, &entry, key_id.as_deref(), "model key rotated").await?;
    Ok(Json(with_key(&entry, &key)).into_response())
}

/// Body of `POST /api/keys/{model_id}/revoke`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    key_id: Option<String>,
}

/// `POST /api/keys/{model_id}/revoke`: revokes one key (`key_id`), or the whole model when
/// the body names no key.
pub(super) async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let model_id = match super::reply::path(path) {
        Ok(model_id) => model_id,
        Err(error) => return error.into_response(),
    };
    match revoke_key(&state, &headers, &model_id, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn revoke_key(state: &AppState, headers: &HeaderMap, model_id: &str, body: Body) -> Result<Response, ApiError> {
    let request: RevokeRequest = read_request(state, headers, body, true).await?;
    let mut entry = find_model(state, model_id).await?;

    match request.key_id.as_deref() {
        None => entry.revoked = true,
        Some(key_id) => {
            let matching = entry.credentials.iter_mut().filter(|credential| credential.key_id() == key_id);
            let mut found = false;
            for credential in matching {
                credential.revoked = true;
                found = true;
            }
            if !found {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!(
                        "model `{model_id}` has no key `{}`; list its keys with GET /api/keys",
                        key_id.escape_debug()
                    ),
                ));
            }
        }
    }
    store_model(state, headers, &entry, request.key_id.as_deref(), "model key revoked").await?;
    Ok(Json(model_json(&entry)).into_response())
}

/// `DELETE /api/keys/{model_id}/quarantine`: lifts the model's quarantine at once.
pub(super) async fn lift_quarantine(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let model_id = match super::reply::path(path) {
        Ok(model_id) => model_id,
        Err(error) => return error.into_response(),
    };
    match state.stores().keys.set_quarantine(&model_id, None).await {
        Ok(true) => {
            state.invalidate().await;
            tracing::info!(model.id = %model_id, admin.key_id = %admin_key_id(&headers), "model quarantine lifted");
            match find_model(&state, &model_id).await {
                Ok(entry) => Json(model_json(&entry)).into_response(),
                Err(error) => error.into_response(),
            }
        }
        Ok(false) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("model `{}` not found; list the models with GET /api/keys", model_id.escape_debug()),
        )
        .into_response(),
        Err(error) => ApiError::store(&error).into_response(),
    }
}

/// `PATCH /api/keys/{model_id}`: replaces the tools, or sets the expiry of every key
/// (`expires: null` removes it).
pub(super) async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    let model_id = match super::reply::path(path) {
        Ok(model_id) => model_id,
        Err(error) => return error.into_response(),
    };
    match update_model(&state, &headers, &model_id, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn update_model(state: &AppState, headers: &HeaderMap, model_id: &str, body: Body) -> Result<Response, ApiError> {
    let request = read_object(state, headers, body).await?;
    if let Some(field) = request.keys().find(|field| *field != "tools" && *field != "expires") {
        return Err(bad_request(&format!("unknown field `{}`; send `tools` or `expires`", field.escape_debug())));
    }
    if request.is_empty() {
        return Err(bad_request("the body changes nothing; send `tools`, `expires` or both"));
    }
    let scope = match request.get("tools") {
        Some(tools) => Some(check_tools(&parse_field::<Vec<String>>(tools, "tools")?)?),
        None => None,
    };
    let expires = match request.get("expires") {
        Some(expires) => Some(check_expires(parse_field::<Option<String>>(expires, "expires")?.as_deref())?),
        None => None,
    };

    let mut entry = find_model(state, model_id).await?;
    if let Some(scope) = scope {
        entry.scope = scope;
    }
    if let Some(expires) = expires {
        set_expiry(&mut entry.credentials, expires);
    }
    store_model(state, headers, &entry, None, "model updated").await?;
    Ok(Json(model_json(&entry)).into_response())
}

/// Sets the expiry of the newest key, which rotation appends last. An older key, one that a
/// rotation phased out, can only get an earlier expiry: extending it would bring back a key
/// that was rotated because it leaked.
fn set_expiry(credentials: &mut [Credential], expires: Option<OffsetDateTime>) {
    let Some((newest, older)) = credentials.split_last_mut() else { return };
    newest.expires = expires;
    for credential in older {
        credential.expires = match (credential.expires, expires) {
            (Some(current), Some(requested)) => Some(current.min(requested)),
            (current, None) => current,
            (None, requested) => requested,
        };
    }
}

/// Body of `POST /api/keys/import`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    model_keys_yaml: String,
}

/// `POST /api/keys/import`: validates a whole `model_keys.yaml` and, only when every entry is
/// valid, stores each model, replacing a stored one with the same id.
pub(super) async fn import(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Some(rejection) = admin_rejection(&state, &headers) {
        return rejection;
    }
    match import_models(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn import_models(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let request: ImportRequest = read_request(state, headers, body, false).await?;
    let keys = match KeySet::from_yaml("model_keys_yaml", &request.model_keys_yaml) {
        Ok(keys) => keys,
        Err(error) => return Ok(invalid_document(&error, "invalid_keys")),
    };

    let mut entries: Vec<&ModelEntry> = keys.entries().collect();
    entries.sort_by(|left, right| left.model_id.cmp(&right.model_id));
    for entry in &entries {
        check_model_id(&entry.model_id)?;
    }
    check_keys_not_shared(state, &entries).await?;
    // NOTE: models are written one at a time, so a store failure part way leaves the models
    // before it imported. Sending the import again is safe, because each write replaces.
    for entry in &entries {
        let key_id = entry.credentials.first().map(Credential::key_id);
        store_model(state, headers, entry, key_id.as_deref(), "model imported").await?;
    }
    let imported: Vec<&str> = entries.iter().map(|entry| entry.model_id.as_str()).collect();
    Ok(Json(json!({"imported": imported.len(), "models": imported})).into_response())
}

/// Rejects an import that gives a model the key of a stored model that the import does not
/// replace. On `POST /mcp` the key alone names the model, so a key shared by two models
/// would leave the caller's identity undecided; the loader already rejects a key shared
/// within one file.
async fn check_keys_not_shared(state: &AppState, entries: &[&ModelEntry]) -> Result<(), ApiError> {
    let stored = state.stores().keys.load_models().await.map_err(|error| ApiError::store(&error))?;
    let imported: HashSet<&str> = entries.iter().map(|entry| entry.model_id.as_str()).collect();
    let kept = stored.iter().filter(|model| !imported.contains(model.model_id.as_str()));
    let owners: HashMap<_, &str> = kept
        .flat_map(|model| model.credentials.iter().map(|credential| (credential.hash, model.model_id.as_str())))
        .collect();
    for entry in entries {
        let shared = entry.credentials.iter().find_map(|credential| owners.get(&credential.hash));
        if let Some(owner) = shared {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                &format!(
                    "model `{}` has the same key as the stored model `{owner}`; give each model its own key, or rotate the key of `{owner}` first",
                    entry.model_id
                ),
            ));
        }
    }
    Ok(())
}

/// Generates a key from 32 random bytes (two UUID v4, which draw on the operating system's
/// random source) and returns it with its credential.
fn new_credential(expires: Option<OffsetDateTime>) -> (String, Credential) {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let key = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let credential = Credential { hash: hash_key(&key), expires, revoked: false };
    (key, credential)
}

async fn find_model(state: &AppState, model_id: &str) -> Result<ModelEntry, ApiError> {
    let models = state.stores().keys.load_models().await.map_err(|error| ApiError::store(&error))?;
    models.into_iter().find(|model| model.model_id == model_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("model `{}` not found; list the models with GET /api/keys", model_id.escape_debug()),
        )
    })
}

/// Stores `entry`, drops the cached keys and logs the change with the key it concerns, if
/// one key.
async fn store_model(
    state: &AppState,
    headers: &HeaderMap,
    entry: &ModelEntry,
    key_id: Option<&str>,
    change: &str,
) -> Result<(), ApiError> {
    state.stores().keys.put_model(entry).await.map_err(|error| ApiError::store(&error))?;
    state.invalidate().await;
    tracing::info!(
        model.id = %entry.model_id,
        key.id = key_id,
        admin.key_id = %admin_key_id(headers),
        change,
        "model keys changed"
    );
    Ok(())
}

/// Checks a model id against [`mcpsec_policy::names`], which the keys file uses too.
fn check_model_id(model_id: &str) -> Result<(), ApiError> {
    if let Err(error) = mcpsec_policy::names::check_model_id(model_id) {
        return Err(bad_request(&format!("invalid `model_id`: {error}")));
    }
    if model_id == "import" {
        return Err(bad_request("invalid `model_id` `import`: the name is taken by the route `/api/keys/import`"));
    }
    Ok(())
}

fn check_tools(tools: &[String]) -> Result<Scope, ApiError> {
    Scope::parse(tools).map_err(|reason| bad_request(&format!("invalid `tools`: {reason}")))
}

/// Parses an optional RFC 3339 expiry, which must lie in the future.
fn check_expires(expires: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    let Some(text) = expires else {
        return Ok(None);
    };
    let instant = parse_timestamp(text).map_err(|reason| bad_request(&format!("invalid `expires`: {reason}")))?;
    if instant <= OffsetDateTime::now_utc() {
        return Err(bad_request(&format!(
            "invalid `expires`: `{text}` is in the past; revoke the key instead of backdating it"
        )));
    }
    Ok(Some(instant))
}

fn check_grace(grace_seconds: Option<u64>) -> Result<time::Duration, ApiError> {
    let seconds = grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if seconds > MAX_GRACE_SECONDS {
        return Err(bad_request(&format!(
            "invalid `grace_seconds` {seconds}: the maximum is {MAX_GRACE_SECONDS} (30 days)"
        )));
    }
    Ok(time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX)))
}

fn model_json(entry: &ModelEntry) -> Value {
    let keys: Vec<Value> = entry
        .credentials
        .iter()
        .map(|credential| {
            json!({
                "key_id": credential.key_id(),
                "expires": credential.expires.and_then(|expires| expires.format(&Rfc3339).ok()),
                "revoked": credential.revoked,
            })
        })
        .collect();
    let quarantined_until = entry.quarantined_until.and_then(|until| until.format(&Rfc3339).ok());
    json!({
        "model_id": entry.model_id,
        "tools": entry.scope.patterns(),
        "revoked": entry.revoked,
        "quarantined_until": quarantined_until,
        "keys": keys,
    })
}

/// Returns the model's JSON with the new key, its id and a reminder that it is shown only once.
fn with_key(entry: &ModelEntry, key: &str) -> Value {
    let mut value = model_json(entry);
    if let Some(object) = value.as_object_mut() {
        object.insert("key".to_owned(), Value::String(key.to_owned()));
        object.insert("key_id".to_owned(), Value::String(mcpsec_policy::keys::key_id(&hash_key(key))));
        object.insert("note".to_owned(), Value::String("store this key now; it is not shown again".to_owned()));
    }
    value
}

/// Reads the body as a JSON object and decodes it into `T`. With `optional`, a request
/// without a body decodes as `T::default()`.
pub(super) async fn read_request<T: DeserializeOwned + Default>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    optional: bool,
) -> Result<T, ApiError> {
    let has_body = headers.get(axum::http::header::CONTENT_LENGTH).is_none_or(|length| length != "0")
        && headers.contains_key(axum::http::header::CONTENT_TYPE);
    if optional && !has_body {
        return Ok(T::default());
    }
    let object = read_object(state, headers, body).await?;
    serde_json::from_value(Value::Object(object))
        .map_err(|error| bad_request(&format!("invalid request body: {error}")))
}

/// Reads the body as a JSON object.
pub(super) async fn read_object(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    if let Err(error) = require_json(headers) {
        return Err(ApiError::new(error.status, "invalid_request", &error.reason));
    }
    match read_json(body, state.options().max_body_bytes).await {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(bad_request("the body must be a JSON object")),
        Err(error) => Err(ApiError::new(error.status, "invalid_request", &error.reason)),
    }
}

fn parse_field<T: DeserializeOwned>(value: &Value, field: &str) -> Result<T, ApiError> {
    serde_json::from_value(value.clone()).map_err(|error| bad_request(&format!("invalid `{field}`: {error}")))
}
