//! HTTP routes: the REST tool call, the MCP endpoint, admin routes and health.

mod admin;
mod body;
mod mcp;
mod rest;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// Routes models call: `POST /mcp/toolcall` and `/mcp`.
pub fn model_routes() -> Router<AppState> {
    Router::new().route("/mcp/toolcall", post(rest::toolcall)).route("/mcp", post(mcp::post).get(mcp::not_allowed).delete(mcp::not_allowed))
}

/// Admin routes for sessions.
pub fn session_routes() -> Router<AppState> {
    Router::new().route("/api/session/{id}", get(admin::session)).route("/api/sessions", get(admin::sessions))
}

/// Builds every route of the one-process gateway.
pub fn router(state: AppState) -> Router {
    model_routes().merge(session_routes()).route("/healthz", get(health)).with_state(state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}
