//! HTTP routes: the REST tool call, the MCP endpoint, admin routes and health.

mod admin;
mod audit_admin;
mod body;
mod impact;
mod keys_admin;
mod mcp;
mod openapi;
mod policy_admin;
mod ready;
mod reply;
mod rest;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

pub use mcp::check_mcp_body;
pub use rest::check_toolcall_body;

/// Routes models call: `POST /mcp/toolcall` and `/mcp`.
pub fn model_routes() -> Router<AppState> {
    Router::new()
        .route("/mcp/toolcall", post(rest::toolcall))
        .route("/mcp", post(mcp::post).get(mcp::not_allowed).delete(mcp::not_allowed))
}

/// Admin routes for sessions, the audit trail and the alerts.
pub fn session_routes() -> Router<AppState> {
    Router::new()
        .route("/api/session/{id}", get(admin::session))
        .route("/api/sessions", get(admin::sessions))
        .route("/api/audit", get(audit_admin::events))
        .route("/api/alerts", get(audit_admin::alerts))
}

/// Policy routes: read, validate, save, versions, diff and rollback.
pub fn policy_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/config",
            get(policy_admin::get_config).put(policy_admin::put_config).post(policy_admin::put_config),
        )
        .route("/api/policy/validate", post(policy_admin::validate))
        .route("/api/policy/versions", get(policy_admin::versions))
        .route("/api/policy/versions/{id}", get(policy_admin::version))
        .route("/api/policy/diff", get(policy_admin::diff))
        .route("/api/policy/rollback/{version}", post(policy_admin::rollback))
}

/// Routes of the admin function: every route that requires `X-Admin-Key` except the
/// session routes, which have a function of their own on AWS, plus the dashboard page
/// (`/dash`), which is public because it only prompts for the key, and the public OpenAPI
/// document (`/openapi.json`).
pub fn admin_routes() -> Router<AppState> {
    policy_routes()
        .merge(crate::dash::routes())
        .route("/openapi.json", get(openapi::document))
        .route("/api/policy/impact", post(impact::preview))
        .route("/api/keys", get(keys_admin::list).post(keys_admin::create))
        .route("/api/keys/import", post(keys_admin::import))
        .route("/api/keys/{model_id}", patch(keys_admin::update))
        .route("/api/keys/{model_id}/rotate", post(keys_admin::rotate))
        .route("/api/keys/{model_id}/revoke", post(keys_admin::revoke))
        .route("/api/keys/{model_id}/quarantine", delete(keys_admin::lift_quarantine))
}

/// Builds every route of the one-process gateway.
///
/// A path that no route serves gets a JSON 404 with `status` `route_not_found`, and a method
/// that a route does not serve gets a JSON 405 with `status` `method_not_allowed` and the
/// `Allow` header. axum's own replies would have an empty body, and the labels distinguish a
/// wrong path from a missing resource.
pub fn router(state: AppState) -> Router {
    model_routes()
        .merge(session_routes())
        .merge(admin_routes())
        .route("/healthz", get(ready::health))
        .route("/readyz", get(ready::ready))
        .route("/metrics", get(ready::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn route_not_found(method: Method, uri: Uri) -> Response {
    let reason = format!("no route serves {method} `{}`; see /openapi.json", uri.path().escape_debug());
    (StatusCode::NOT_FOUND, Json(json!({"status": "route_not_found", "reason": reason}))).into_response()
}

/// Returns the 405 reply for a method that the path does not serve. axum adds the `Allow`
/// header afterwards.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let reason = format!("method {method} is not allowed on `{}`; see the `Allow` header", uri.path().escape_debug());
    (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"status": "method_not_allowed", "reason": reason}))).into_response()
}
