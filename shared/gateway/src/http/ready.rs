//! `GET /healthz` and `GET /readyz`: liveness and readiness for load balancers, container
//! health checks and orchestrators, and `GET /metrics` for Prometheus.
//!
//! `/healthz` returns 200 while the process serves HTTP. `/readyz` returns 200 only when a
//! read from the store succeeds and every configured upstream accepts a TCP connection, and
//! 503 otherwise, naming what failed. A gateway without upstreams is ready: it answers tool calls
//! with 502, which is its configured behaviour, not a fault. No credential or key is checked
//! or shown, so both routes are public.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// Content type of `GET /metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Time each check may take, so that a probe gets its reply well within usual probe timeouts.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let (store, upstreams) = tokio::join!(check_store(&state), check_upstreams(&state));
    let ready = store.is_ok() && upstreams.values().all(|result| result == "ok");

    let mut checks = Map::new();
    checks.insert("store".to_owned(), Value::String(store.err().unwrap_or_else(|| "ok".to_owned())));
    checks.insert("upstreams".to_owned(), Value::Object(upstreams));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let label = if ready { "ready" } else { "not_ready" };
    if !ready {
        let failed = Value::Object(checks.clone()).to_string();
        tracing::warn!(checks = %failed, "readiness check failed");
    }
    (status, Json(json!({"status": label, "checks": checks}))).into_response()
}

/// `GET /metrics`: the process's Prometheus metrics. Public like the probes: the labels are
/// routes, decisions, rule ids, upstream names and detectors, never model or session ids.
pub(super) async fn metrics() -> Response {
    match crate::metrics::metrics().render() {
        // The encoder writes OpenMetrics (`_total` counters, `# EOF`), which Prometheus reads
        // when the content type names that format.
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "rendering the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Reads the current policy version from the store, one request on every backend.
async fn check_store(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, state.stores().policy.current()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

/// Opens a TCP connection to each upstream's host and port. A connection shows that the
/// server is up without sending it an MCP request that it would have to handle.
async fn check_upstreams(state: &AppState) -> Map<String, Value> {
    let clients = state.upstreams().clients();
    let checks = clients.iter().map(|client| async move {
        let url = client.url();
        let result = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
                    Ok(Ok(_)) => "ok".to_owned(),
                    Ok(Err(error)) => format!("cannot connect to {host}:{port}: {error}"),
                    Err(_) => format!("no connection to {host}:{port} within {} s", CHECK_TIMEOUT.as_secs()),
                }
            }
            _ => "the URL has no host or port".to_owned(),
        };
        (client.name().to_owned(), Value::String(result))
    });
    futures::future::join_all(checks).await.into_iter().collect()
}
