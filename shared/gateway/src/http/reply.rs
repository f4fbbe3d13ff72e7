//! Error replies shared by the admin routes: `{"status": <label>, "reason": <text>}` with the
//! HTTP status, and the 400 reply that lists the problems of an invalid YAML document.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mcpsec_policy::LoadError;
use serde_json::{Value, json};

use crate::store::StoreError;

/// Builds the 400 reply for an invalid YAML document, with each problem's position, field and message.
pub(super) fn invalid_document(error: &LoadError, label: &str) -> Response {
    let problems: Vec<Value> = error
        .problems
        .iter()
        .map(|problem| {
            json!({
                "line": problem.position.map(|p| p.line),
                "column": problem.position.map(|p| p.column),
                "field": problem.field,
                "message": problem.message,
            })
        })
        .collect();
    let body = json!({"status": label, "valid": false, "reason": error.to_string(), "problems": problems});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Unwraps a parsed query string, or builds the 400 reply that names what is wrong with it.
/// Handlers take the query as a `Result` and call this after the admin check, so that a
/// request without the admin key gets 401 whatever its query string.
pub(super) fn query<T>(parsed: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    parsed.map(|Query(value)| value).map_err(|rejection| {
        bad_request(&format!("invalid query string: {}; see the route's parameters", rejection.body_text()))
    })
}

/// Unwraps a parsed path parameter, or builds the 400 reply that names what is wrong with it,
/// such as a percent-encoded byte sequence that is not UTF-8. Handlers call it after the admin
/// check, like [`query`].
pub(super) fn path<T>(parsed: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    parsed
        .map(|Path(value)| value)
        .map_err(|rejection| bad_request(&format!("invalid path: {}", rejection.body_text())))
}

pub(super) fn bad_request(reason: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason)
}

/// A rejected admin request: the status, a short label and the reason.
pub(super) struct ApiError {
    status: StatusCode,
    label: &'static str,
    reason: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, label: &'static str, reason: &str) -> Self {
        Self { status, label, reason: reason.to_owned() }
    }

    /// Logs a store failure and builds its 503.
    pub(super) fn store(error: &StoreError) -> Self {
        tracing::error!(error = %error, "store failed on an admin request");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &format!("{error}; try again"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"status": self.label, "reason": self.reason}))).into_response()
    }
}
