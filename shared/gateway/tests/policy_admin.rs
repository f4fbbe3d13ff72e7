//! Policy admin routes over both stores, the embedded one and the AWS one on the moto
//! emulator: validation, compare-and-set saves, versions, diff and rollback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use mcpsec_gateway::sessions::SessionIssuer;
use mcpsec_gateway::state::{AppState, AuditWrites, Options, Stores};
use mcpsec_gateway::store::aws::AwsStores;
use mcpsec_gateway::store::aws::setup::aws_init;
use mcpsec_gateway::store::sqlite::SqliteStore;
use mcpsec_gateway::upstream::Upstreams;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN_KEY: &str = "admin-secret";
const V1: &str = "default: allow\n";
const V2: &str =
    "default: deny\nrules:\n  - id: allow-search\n    action: allow\n    tools: ['search.*']\n    reason: read-only\n";

#[path = "common/moto.rs"]
mod moto;

struct Gateway {
    _dir: Option<tempfile::TempDir>,
    router: Router,
}

async fn sqlite_gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    gateway_on(Stores { keys: store.clone(), policy: store.clone(), audit: store }, Some(dir)).await
}

async fn aws_gateway() -> Gateway {
    let config = moto::config();
    let names = moto::unique_names();
    aws_init(&config, &names).await.unwrap();
    let store = Arc::new(AwsStores::new(&config, names));
    gateway_on(Stores { keys: store.clone(), policy: store.clone(), audit: store }, None).await
}

async fn gateway_on(stores: Stores, dir: Option<tempfile::TempDir>) -> Gateway {
    stores.policy.save(V1, None, "import", None).await.unwrap();
    let options = Options {
        audit_tool_input: true,
        max_body_bytes: 1 << 20,
        cache_ttl: Duration::from_secs(60),
        audit_writes: AuditWrites::Twice,
    };
    let sessions = SessionIssuer::new(b"test-secret", Duration::from_secs(60));
    let state = AppState::new(stores, Upstreams::none(), Some(ADMIN_KEY), sessions, options);
    Gateway { _dir: dir, router: mcpsec_gateway::http::router(state) }
}

/// Runs each case once on the embedded store and once on the AWS store.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::sqlite_gateway().await).await;
            })*
        }
        mod aws {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::aws_gateway().await).await;
            })*
        }
    };
}

on_both_stores!(
    config_returns_policy_and_version,
    invalid_policy_saves_nothing,
    concurrent_edits_from_same_version_conflict,
    validate_saves_nothing,
    rollback_by_id_restores_text,
    rollback_by_timestamp_selects_version_in_force,
    hostile_version_ids_are_not_found,
    diff_shows_changed_lines,
    policy_routes_require_admin_key,
);

async fn send(gateway: &Gateway, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("x-admin-key", ADMIN_KEY);
    let body = match body {
        Some(value) => {
            request = request.header("content-type", "application/json");
            Body::from(value.to_string())
        }
        None => Body::empty(),
    };
    let response = gateway.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

async fn current_version(gateway: &Gateway) -> String {
    let (_, config) = send(gateway, "GET", "/api/config", None).await;
    config["version"].as_str().unwrap().to_owned()
}

async fn config_returns_policy_and_version(gateway: Gateway) {
    let (status, config) = send(&gateway, "GET", "/api/config", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["policy_yaml"], V1);
    assert!(config["version"].is_string(), "{config}");
}

async fn invalid_policy_saves_nothing(gateway: Gateway) {
    let base = current_version(&gateway).await;
    let bad = "default: allow\nrules:\n  - id: r\n    action: block\n";
    let (status, body) =
        send(&gateway, "PUT", "/api/config", Some(json!({"policy_yaml": bad, "base_version": base}))).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["problems"][0]["line"], 4, "{body}");
    assert_eq!(body["problems"][0]["column"], 13, "{body}");
    assert_eq!(current_version(&gateway).await, base, "nothing was saved");
}

async fn concurrent_edits_from_same_version_conflict(gateway: Gateway) {
    let base = current_version(&gateway).await;
    let first = send(
        &gateway,
        "PUT",
        "/api/config",
        Some(json!({"policy_yaml": V2, "base_version": base, "comment": "first"})),
    );
    let second = send(
        &gateway,
        "POST",
        "/api/config",
        Some(json!({"policy_yaml": V1, "base_version": base, "comment": "second"})),
    );
    let ((first_status, _), (second_status, _)) = tokio::join!(first, second);

    let mut statuses = [first_status, second_status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let (_, versions) = send(&gateway, "GET", "/api/policy/versions", None).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2, "exactly one edit was saved");
}

async fn validate_saves_nothing(gateway: Gateway) {
    let base = current_version(&gateway).await;
    let (status, body) = send(&gateway, "POST", "/api/policy/validate", Some(json!({"policy_yaml": V2}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["valid"], true);
    assert_eq!(body["rule_ids"], json!(["allow-search"]));
    assert_eq!(current_version(&gateway).await, base);
}

async fn rollback_by_id_restores_text(gateway: Gateway) {
    let first = current_version(&gateway).await;
    let (status, _) =
        send(&gateway, "PUT", "/api/config", Some(json!({"policy_yaml": V2, "base_version": first}))).await;
    assert_eq!(status, StatusCode::OK);

    let (status, saved) = send(&gateway, "POST", &format!("/api/policy/rollback/{first}"), None).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let (_, config) = send(&gateway, "GET", "/api/config", None).await;
    assert_eq!(config["policy_yaml"], V1);
    assert_eq!(config["comment"], format!("rollback to {first}"));
    assert_ne!(config["version"], first.as_str(), "a rollback is a new version");
}

async fn rollback_by_timestamp_selects_version_in_force(gateway: Gateway) {
    let first = current_version(&gateway).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(&gateway, "PUT", "/api/config", Some(json!({"policy_yaml": V2, "base_version": first}))).await;

    let (status, body) = send(&gateway, "POST", &format!("/api/policy/rollback/{between}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, config) = send(&gateway, "GET", "/api/config", None).await;
    assert_eq!(config["policy_yaml"], V1);

    let (status, _) = send(&gateway, "POST", "/api/policy/rollback/2000-01-01T00:00:00Z", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn hostile_version_ids_are_not_found(gateway: Gateway) {
    let long = "x".repeat(300);
    let ids = ["..%2F..%2Fetc%2Fpasswd", "v1'%20OR%201=1%20--", "%00", long.as_str(), "v999999"];
    for id in ids {
        let (status, _) = send(&gateway, "GET", &format!("/api/policy/versions/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET version {id}");
        let (status, _) = send(&gateway, "POST", &format!("/api/policy/rollback/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "rollback {id}");
    }
}

async fn diff_shows_changed_lines(gateway: Gateway) {
    let first = current_version(&gateway).await;
    let (_, saved) =
        send(&gateway, "PUT", "/api/config", Some(json!({"policy_yaml": V2, "base_version": first}))).await;
    let second = saved["version"].as_str().unwrap();

    let (status, body) = send(&gateway, "GET", &format!("/api/policy/diff?from={first}&to={second}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let diff = body["diff"].as_str().unwrap();
    assert!(diff.contains("-default: allow"), "{diff}");
    assert!(diff.contains("+default: deny"), "{diff}");
}

async fn policy_routes_require_admin_key(gateway: Gateway) {
    let routes = [
        ("GET", "/api/config"),
        ("PUT", "/api/config"),
        ("POST", "/api/config"),
        ("POST", "/api/policy/validate"),
        ("GET", "/api/policy/versions"),
        ("GET", "/api/policy/versions/v000001"),
        ("GET", "/api/policy/diff?from=a&to=b"),
        ("POST", "/api/policy/rollback/v000001"),
        ("GET", "/api/session/s"),
        ("GET", "/api/sessions"),
    ];
    for (method, uri) in routes {
        for key in [None, Some("wrong")] {
            let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
            if let Some(key) = key {
                request = request.header("x-admin-key", key);
            }
            let response = gateway.router.clone().oneshot(request.body(Body::from("{}")).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {uri} with key {key:?}");
        }
    }
}
