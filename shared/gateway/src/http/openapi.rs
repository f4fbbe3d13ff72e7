//! `GET /openapi.json`: the OpenAPI 3.1 document of every HTTP route, public like `/healthz`
//! because it contains no secret.
//!
//! The document is the hand-written `openapi.json` beside this file, embedded with
//! `include_str!`. A generator such as utoipa derives the document from typed extractors and
//! response types. These handlers have neither: they read the raw body, so that they can check
//! its size, its content type and the position of a JSON error before deserializing, and they
//! build their replies with `json!`. Annotations on every handler would only restate the
//! document, and could drift from the code as easily.
//!
//! Two checks keep the document true instead. `tests/openapi_document.rs` fails when a route
//! is served but not documented, or documented but not served. The schemathesis step of
//! `infra/test.sh` sends generated requests to the `mcpsec` binary, and fails on a status, a
//! content type or a body that the document does not declare.

use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

/// The OpenAPI document, as served.
const DOCUMENT: &str = include_str!("openapi.json");

/// Returns the OpenAPI document.
pub(super) async fn document() -> Response {
    ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], DOCUMENT).into_response()
}
