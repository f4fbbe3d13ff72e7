//! Reading request bodies with clear errors: size, content type and JSON position.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

/// A rejected body: the status to return and the reason.
#[derive(Debug)]
pub(super) struct BodyError {
    pub status: StatusCode,
    pub reason: String,
}

/// Checks that the content type is JSON, with any parameters and in any case.
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), BodyError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    let shown = if content_type.is_empty() { "none".to_owned() } else { format!("`{content_type}`") };
    Err(BodyError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        reason: format!("unsupported content type {shown}; send `Content-Type: application/json`"),
    })
}

/// Reads at most `limit` bytes and parses them as JSON.
pub(super) async fn read_json(body: Body, limit: usize) -> Result<Value, BodyError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| BodyError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        reason: format!("request body is larger than the limit of {limit} bytes"),
    })?;
    parse_json(&bytes)
}

/// Parses a whole request body as JSON, naming the line and column of a syntax error.
pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, BodyError> {
    serde_json::from_slice(bytes).map_err(|error| BodyError {
        status: StatusCode::BAD_REQUEST,
        reason: format!("invalid JSON at line {} column {}: {}", error.line(), error.column(), json_error_text(&error)),
    })
}

/// Returns the serde_json message without its trailing position, which the caller prints.
fn json_error_text(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(index) => text.get(..index).unwrap_or(&text).to_owned(),
        None => text,
    }
}

/// Checks a tool name against the rules of [`mcpsec_policy::names`], which the policy, key
/// scopes and upstream prefixes use too.
pub(super) fn check_tool_name(name: &str) -> Result<(), String> {
    mcpsec_policy::names::check_tool_name(name).map_err(|error| format!("invalid `tool_name`: {error}"))
}

/// Characters allowed in REST session ids: ASCII letters, digits and `_ - . :`, 1 to 128.
pub(super) fn check_session_id(id: &str) -> Result<(), String> {
    check_identifier(id, "session_id", |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn check_identifier(value: &str, field: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if value.is_empty() || value.len() > 128 {
        return Err(format!("invalid `{field}`: must be 1 to 128 characters long"));
    }
    match value.chars().find(|c| !allowed(*c)) {
        Some(bad) => Err(format!("invalid `{field}` `{}`: character {bad:?} is not allowed", value.escape_debug())),
        None => Ok(()),
    }
}
