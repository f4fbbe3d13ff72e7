//! Admin API over the embedded store: model keys, audit events, session filters, the policy
//! impact preview, and the admin key check on every `/api/` route.
//!
//! The key lifecycle and the audit time range also run on the AWS stores (`aws_…` tests)
//! against moto's emulator on 127.0.0.1, started as in `store_contract.rs`. Install it with
//! `bash infra/install-test-deps.sh`. Those clients use static credentials and the loopback
//! endpoint, so nothing reaches AWS.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use mcpsec_gateway::audit::{AuditEvent, EventKind, Outcome, Route};
use mcpsec_gateway::sessions::SessionIssuer;
use mcpsec_gateway::state::{AppState, AuditWrites, Options, Stores};
use mcpsec_gateway::store::aws::AwsStores;
use mcpsec_gateway::store::aws::setup::aws_init;
use mcpsec_gateway::store::sqlite::SqliteStore;
use mcpsec_gateway::store::{AuditStore, KeyStore};
use mcpsec_gateway::upstream::Upstreams;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower::ServiceExt;

const ADMIN_KEY: &str = "admin-secret";
const ALLOW_ALL: &str = "default: allow\n";
const DENY_SEARCH: &str =
    "default: allow\nrules:\n  - id: deny-search\n    action: deny\n    tools: ['search.*']\n    reason: no search\n";

struct Gateway {
    _dir: Option<tempfile::TempDir>,
    keys: Arc<dyn KeyStore>,
    audit: Arc<dyn AuditStore>,
    router: Router,
}

async fn gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let stores = Stores { keys: store.clone(), policy: store.clone(), audit: store };
    gateway_on(stores, Some(dir)).await
}

async fn aws_gateway() -> Gateway {
    let config = moto::config();
    let names = moto::unique_names();
    aws_init(&config, &names).await.unwrap();
    let stores = Arc::new(AwsStores::new(&config, names));
    gateway_on(Stores { keys: stores.clone(), policy: stores.clone(), audit: stores }, None).await
}

async fn gateway_on(stores: Stores, dir: Option<tempfile::TempDir>) -> Gateway {
    stores.policy.save(ALLOW_ALL, None, "import", None).await.unwrap();
    let options = Options {
        audit_tool_input: true,
        max_body_bytes: 1 << 20,
        cache_ttl: Duration::from_secs(600),
        audit_writes: AuditWrites::Twice,
    };
    let sessions = SessionIssuer::new(b"test-secret", Duration::from_secs(60));
    let (keys, audit) = (stores.keys.clone(), stores.audit.clone());
    let state = AppState::new(stores, Upstreams::none(), Some(ADMIN_KEY), sessions, options);
    Gateway { _dir: dir, keys, audit, router: mcpsec_gateway::http::router(state) }
}

async fn send_with(
    gateway: &Gateway,
    admin_key: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = admin_key {
        request = request.header("x-admin-key", key);
    }
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
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn send(gateway: &Gateway, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    send_with(gateway, Some(ADMIN_KEY), method, uri, body).await
}

/// Calls `tool` through `POST /mcp/toolcall` as `model` with `key`.
async fn call_tool(gateway: &Gateway, model: &str, key: &str, tool: &str) -> StatusCode {
    let body = json!({"model_id": model, "session_id": "s-1", "tool_name": tool, "input": {}});
    let request = Request::builder()
        .method("POST")
        .uri("/mcp/toolcall")
        .header("content-type", "application/json")
        .header("x-model-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    gateway.router.clone().oneshot(request).await.unwrap().status()
}

/// Returns whether a call got past authentication and the policy. With no upstream
/// configured, an allowed call ends in 502.
fn accepted(status: StatusCode) -> bool {
    status == StatusCode::BAD_GATEWAY
}

async fn create_model(gateway: &Gateway, model: &str, tools: &[&str]) -> Value {
    let (status, created) = send(gateway, "POST", "/api/keys", Some(json!({"model_id": model, "tools": tools}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

fn event(id: &str, session: &str, model: &str, tool: &str, decision: Outcome, time: OffsetDateTime) -> AuditEvent {
    AuditEvent {
        event_id: id.to_owned(),
        time,
        session_id: session.to_owned(),
        model_id: model.to_owned(),
        key_id: None,
        route: Route::Rest,
        tool_name: tool.to_owned(),
        input: Some(json!({})),
        decision,
        reason: "test".to_owned(),
        rule: None,
        rules: Vec::new(),
        shadow: None,
        upstream: None,
        latency_ms: 1.0,
        kind: EventKind::ToolCall,
        anomaly: None,
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn key_lifecycle_create_rotate_revoke() {
    key_lifecycle(&gateway().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_key_lifecycle_create_rotate_revoke() {
    key_lifecycle(&aws_gateway().await).await;
}

async fn key_lifecycle(gateway: &Gateway) {
    let created = create_model(gateway, "gpt-4o", &["search.*"]).await;
    let first = created["key"].as_str().unwrap().to_owned();
    assert!(first.starts_with("mk_"), "{first}");
    assert_eq!(first.len(), 3 + 64);
    assert!(accepted(call_tool(gateway, "gpt-4o", &first, "search.web").await));

    let (status, rotated) = send(gateway, "POST", "/api/keys/gpt-4o/rotate", Some(json!({"grace_seconds": 600}))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(rotated["keys"].as_array().unwrap().len(), 2);
    assert!(rotated["keys"][0]["expires"].is_string(), "old key gets the grace expiry: {rotated}");
    assert!(accepted(call_tool(gateway, "gpt-4o", &first, "search.web").await), "old key works in grace");
    assert!(accepted(call_tool(gateway, "gpt-4o", &second, "search.web").await), "new key works");

    let old_id = rotated["keys"][0]["key_id"].as_str().unwrap().to_owned();
    let (status, _) = send(gateway, "POST", "/api/keys/gpt-4o/revoke", Some(json!({"key_id": old_id}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(call_tool(gateway, "gpt-4o", &first, "search.web").await, StatusCode::UNAUTHORIZED);
    assert!(accepted(call_tool(gateway, "gpt-4o", &second, "search.web").await));

    let (status, revoked) = send(gateway, "POST", "/api/keys/gpt-4o/revoke", None).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["revoked"], true);
    assert_eq!(call_tool(gateway, "gpt-4o", &second, "search.web").await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn key_listing_shows_ids_not_secrets() {
    let gateway = gateway().await;
    let created = create_model(&gateway, "claude", &["calendar.*"]).await;
    let key = created["key"].as_str().unwrap();
    let (status, listed) = send(&gateway, "GET", "/api/keys", None).await;
    assert_eq!(status, StatusCode::OK);

    let text = listed.to_string();
    assert!(!text.contains(key), "{text}");
    assert!(!text.contains(&hex_hash(key)), "{text}");
    assert_eq!(listed["models"][0]["model_id"], "claude");
    assert_eq!(listed["models"][0]["tools"], json!(["calendar.*"]));
    assert_eq!(listed["models"][0]["keys"][0]["key_id"], created["key_id"]);
}

fn hex_hash(key: &str) -> String {
    mcpsec_policy::keys::hash_key(key).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn key_creation_rejects_bad_fields() {
    let gateway = gateway().await;
    let cases = [
        (json!({"model_id": "bad id", "tools": ["a.*"]}), "model_id"),
        (json!({"model_id": "", "tools": ["a.*"]}), "model_id"),
        (json!({"model_id": "m", "tools": []}), "tools"),
        (json!({"model_id": "m", "tools": ["a.*"], "expires": "tomorrow"}), "expires"),
        (json!({"model_id": "m", "tools": ["a.*"], "expires": "2001-01-01T00:00:00Z"}), "expires"),
        (json!({"model_id": "m", "tools": ["a.*"], "colour": "red"}), "colour"),
        (json!({"tools": ["a.*"]}), "model_id"),
    ];
    for (body, field) in cases {
        let (status, reply) = send(&gateway, "POST", "/api/keys", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert!(reply["reason"].as_str().unwrap().contains(field), "{body}: {reply}");
    }
}

#[tokio::test]
async fn key_creation_conflicts_with_existing_model() {
    let gateway = gateway().await;
    create_model(&gateway, "m", &["a.*"]).await;
    let (status, reply) = send(&gateway, "POST", "/api/keys", Some(json!({"model_id": "m", "tools": ["b.*"]}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
}

#[tokio::test]
async fn rotation_rejects_grace_over_maximum() {
    let gateway = gateway().await;
    create_model(&gateway, "m", &["a.*"]).await;
    let body = json!({"grace_seconds": 31 * 24 * 3600});
    let (status, reply) = send(&gateway, "POST", "/api/keys/m/rotate", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(reply["reason"].as_str().unwrap().contains("grace_seconds"), "{reply}");
}

#[tokio::test]
async fn unknown_model_and_key_are_not_found() {
    let gateway = gateway().await;
    let (status, _) = send(&gateway, "POST", "/api/keys/ghost/rotate", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    create_model(&gateway, "m", &["a.*"]).await;
    let (status, _) = send(&gateway, "POST", "/api/keys/m/revoke", Some(json!({"key_id": "k_000000000000"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_replaces_tools_at_once() {
    let gateway = gateway().await;
    let created = create_model(&gateway, "m", &["search.*"]).await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(call_tool(&gateway, "m", key, "mail.send").await, StatusCode::FORBIDDEN);

    let (status, updated) = send(&gateway, "PATCH", "/api/keys/m", Some(json!({"tools": ["mail.*"]}))).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["tools"], json!(["mail.*"]));
    assert!(accepted(call_tool(&gateway, "m", key, "mail.send").await));
    assert_eq!(call_tool(&gateway, "m", key, "search.web").await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn patch_sets_and_clears_expiry() {
    let gateway = gateway().await;
    create_model(&gateway, "m", &["a.*"]).await;
    let (status, updated) =
        send(&gateway, "PATCH", "/api/keys/m", Some(json!({"expires": "2999-01-01T00:00:00Z"}))).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["keys"][0]["expires"], "2999-01-01T00:00:00Z");

    let (status, cleared) = send(&gateway, "PATCH", "/api/keys/m", Some(json!({"expires": null}))).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["keys"][0]["expires"], Value::Null);

    let (status, _) = send(&gateway, "PATCH", "/api/keys/m", Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn expiry_change_never_revives_rotated_key() {
    let gateway = gateway().await;
    let yaml = "models:\n  m:\n    key: key-old\n    tools: ['x.*']\n";
    let (status, reply) = send(&gateway, "POST", "/api/keys/import", Some(json!({"model_keys_yaml": yaml}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, rotated) = send(&gateway, "POST", "/api/keys/m/rotate", Some(json!({"grace_seconds": 0}))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap_or_default().to_owned();
    assert!(!accepted(call_tool(&gateway, "m", "key-old", "x.run").await), "the rotated-out key stops at once");

    for expires in [json!("2999-01-01T00:00:00Z"), Value::Null] {
        let (status, updated) = send(&gateway, "PATCH", "/api/keys/m", Some(json!({"expires": expires}))).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert!(!accepted(call_tool(&gateway, "m", "key-old", "x.run").await), "expires {expires}: old key stays out");
        assert!(accepted(call_tool(&gateway, "m", &new_key, "x.run").await), "expires {expires}: new key works");
    }
}

#[tokio::test]
async fn import_stores_every_model() {
    let gateway = gateway().await;
    let yaml = "models:\n  a:\n    key: key-a\n    tools: ['x.*']\n  b:\n    key: key-b\n    tools: ['y.*']\n";
    let (status, reply) = send(&gateway, "POST", "/api/keys/import", Some(json!({"model_keys_yaml": yaml}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["imported"], 2);
    assert!(accepted(call_tool(&gateway, "a", "key-a", "x.run").await));
    assert!(accepted(call_tool(&gateway, "b", "key-b", "y.run").await));
}

#[tokio::test]
async fn import_rejects_key_of_another_stored_model() {
    let gateway = gateway().await;
    let first = "models:\n  a:\n    key: key-a\n    tools: ['x.*']\n";
    let (status, reply) = send(&gateway, "POST", "/api/keys/import", Some(json!({"model_keys_yaml": first}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    let shared = "models:\n  b:\n    key: key-a\n    tools: ['*']\n";
    let (status, reply) = send(&gateway, "POST", "/api/keys/import", Some(json!({"model_keys_yaml": shared}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    let reason = reply["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("model `b` has the same key as the stored model `a`"), "{reply}");
    assert!(accepted(call_tool(&gateway, "a", "key-a", "x.run").await), "model `a` keeps its key");
    assert!(!accepted(call_tool(&gateway, "b", "key-a", "y.run").await), "model `b` was not stored");

    // An import that replaces `a` may give its key to a new model.
    let moved = "models:\n  a:\n    key: key-a2\n    tools: ['x.*']\n  b:\n    key: key-a\n    tools: ['y.*']\n";
    let (status, reply) = send(&gateway, "POST", "/api/keys/import", Some(json!({"model_keys_yaml": moved}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(accepted(call_tool(&gateway, "b", "key-a", "y.run").await), "model `b` now holds the key");
}

#[tokio::test]
async fn import_of_invalid_file_saves_nothing() {
    let gateway = gateway().await;
    let yaml = "models:\n  a:\n    key: key-a\n    tools: ['x.*']\n  b:\n    key: key-b\n    tools: []\n";
    let (status, reply) = send(&gateway, "POST", "/api/keys/import", Some(json!({"model_keys_yaml": yaml}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["status"], "invalid_keys");
    assert_eq!(reply["problems"][0]["field"], "models.b.tools");
    assert_eq!(reply["problems"][0]["line"], 7);
    assert!(gateway.keys.is_empty().await.unwrap(), "nothing was stored");
}

#[tokio::test]
async fn audit_lists_events_of_time_range() {
    audit_time_range(&gateway().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_audit_lists_events_of_time_range() {
    audit_time_range(&aws_gateway().await).await;
}

async fn audit_time_range(gateway: &Gateway) {
    let start = OffsetDateTime::now_utc() - time::Duration::hours(5);
    for hour in 0..4 {
        let time = start + time::Duration::hours(hour);
        let decision = if hour % 2 == 0 { Outcome::Allow } else { Outcome::Deny };
        gateway.audit.record(&event(&format!("e{hour}"), "s", "m", "t.x", decision, time)).await.unwrap();
    }

    let since = rfc3339(start + time::Duration::minutes(30));
    let until = rfc3339(start + time::Duration::minutes(150));
    let (status, reply) = send(gateway, "GET", &format!("/api/audit?since={since}&until={until}"), None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let ids: Vec<&str> = reply["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e1", "e2"]);

    let uri = format!("/api/audit?since={}&decision=allow&limit=1", rfc3339(start));
    let (_, reply) = send(gateway, "GET", &uri, None).await;
    let ids: Vec<&str> = reply["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e2"], "newest allowed event in range");
}

#[tokio::test]
async fn audit_rejects_bad_query() {
    let gateway = gateway().await;
    for uri in ["/api/audit?since=yesterday", "/api/audit?decision=maybe", "/api/audit?limit=0"] {
        let (status, reply) = send(&gateway, "GET", uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {reply}");
    }
}

#[tokio::test]
async fn sessions_filter_by_model_decision_and_time() {
    let gateway = gateway().await;
    let now = OffsetDateTime::now_utc();
    let old = now - time::Duration::days(2);
    let events = [
        event("a1", "sa", "alpha", "t.x", Outcome::Allow, now),
        event("b1", "sb", "beta", "t.x", Outcome::Allow, now),
        event("b2", "sb", "beta", "t.x", Outcome::Deny, now),
        event("c1", "sc", "alpha", "t.x", Outcome::Unauthorized, old),
    ];
    for event in &events {
        gateway.audit.record(event).await.unwrap();
    }

    let listed = |reply: &Value| -> BTreeSet<String> {
        reply["sessions"].as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, reply) = send(&gateway, "GET", "/api/sessions?model=alpha", None).await;
    assert_eq!(listed(&reply), BTreeSet::from(["sa".to_owned(), "sc".to_owned()]));
    let (_, reply) = send(&gateway, "GET", "/api/sessions?decision=deny", None).await;
    assert_eq!(listed(&reply), BTreeSet::from(["sb".to_owned()]));
    let (_, reply) = send(&gateway, "GET", "/api/sessions?decision=unauthorized", None).await;
    assert_eq!(listed(&reply), BTreeSet::from(["sc".to_owned()]));
    let since = rfc3339(now - time::Duration::days(1));
    let (_, reply) = send(&gateway, "GET", &format!("/api/sessions?since={since}"), None).await;
    assert_eq!(listed(&reply), BTreeSet::from(["sa".to_owned(), "sb".to_owned()]));
    let (status, _) = send(&gateway, "GET", "/api/sessions?decision=perhaps", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn impact_flags_new_deny_rule() {
    let gateway = gateway().await;
    let created = create_model(&gateway, "m", &["search.*", "mail.*"]).await;
    let key = created["key"].as_str().unwrap();
    assert!(accepted(call_tool(&gateway, "m", key, "search.web").await));
    assert!(accepted(call_tool(&gateway, "m", key, "mail.send").await));

    let (status, reply) = send(&gateway, "POST", "/api/policy/impact", Some(json!({"policy_yaml": DENY_SEARCH}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["evaluated"], 2, "{reply}");
    let changed = reply["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{reply}");
    assert_eq!(changed[0]["tool_name"], "search.web");
    assert_eq!(changed[0]["from"], "allow");
    assert_eq!(changed[0]["to"], "deny");
    assert_eq!(changed[0]["rules"], json!(["deny-search"]));
    assert_eq!(reply["by_rule"]["deny-search"]["allow_to_deny"], 1);
}

#[tokio::test]
async fn impact_rejects_invalid_candidate() {
    let gateway = gateway().await;
    let (status, reply) =
        send(&gateway, "POST", "/api/policy/impact", Some(json!({"policy_yaml": "default: perhaps\n"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["status"], "invalid_policy");
    assert!(!reply["problems"].as_array().unwrap().is_empty(), "{reply}");
}

/// Every `/api/` route with a method and a concrete URI to call it with.
///
/// A new `/api/` route must be added here: `api_route_list_matches_router` fails until it is.
const API_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/session/{id}", "/api/session/s-1"),
    ("GET", "/api/sessions", "/api/sessions"),
    ("GET", "/api/config", "/api/config"),
    ("PUT", "/api/config", "/api/config"),
    ("POST", "/api/config", "/api/config"),
    ("POST", "/api/policy/validate", "/api/policy/validate"),
    ("GET", "/api/policy/versions", "/api/policy/versions"),
    ("GET", "/api/policy/versions/{id}", "/api/policy/versions/1"),
    ("GET", "/api/policy/diff", "/api/policy/diff?from=1&to=1"),
    ("POST", "/api/policy/rollback/{version}", "/api/policy/rollback/1"),
    ("POST", "/api/policy/impact", "/api/policy/impact"),
    ("GET", "/api/keys", "/api/keys"),
    ("POST", "/api/keys", "/api/keys"),
    ("POST", "/api/keys/import", "/api/keys/import"),
    ("PATCH", "/api/keys/{model_id}", "/api/keys/m"),
    ("POST", "/api/keys/{model_id}/rotate", "/api/keys/m/rotate"),
    ("POST", "/api/keys/{model_id}/revoke", "/api/keys/m/revoke"),
    ("DELETE", "/api/keys/{model_id}/quarantine", "/api/keys/m/quarantine"),
    ("GET", "/api/audit", "/api/audit"),
    ("GET", "/api/alerts", "/api/alerts"),
];

/// Reads the `/api/` paths registered in `src/http/mod.rs`. Routes added in another file,
/// such as the dashboard module, are not seen.
fn registered_api_paths() -> BTreeSet<String> {
    let source = include_str!("../src/http/mod.rs");
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .filter(|path| path.starts_with("/api/"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn api_route_list_matches_router() {
    let listed: BTreeSet<String> = API_ROUTES.iter().map(|(_, path, _)| (*path).to_owned()).collect();
    assert_eq!(listed, registered_api_paths());
}

#[tokio::test]
async fn every_api_route_requires_admin_key() {
    let gateway = gateway().await;
    for (method, _, uri) in API_ROUTES {
        for key in [None, Some("wrong-key")] {
            let (status, reply) = send_with(&gateway, key, method, uri, Some(json!({}))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} with {key:?}: {reply}");
        }
    }
}

#[tokio::test]
async fn api_routes_answer_with_admin_key() {
    let gateway = gateway().await;
    for (method, _, uri) in API_ROUTES {
        let (status, reply) = send(&gateway, method, uri, Some(json!({}))).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {reply}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: {reply}");
    }
}

#[path = "common/moto.rs"]
mod moto;

#[tokio::test]
async fn impact_counts_calls_recorded_without_input() {
    let gateway = gateway().await;
    create_model(&gateway, "m", &["search.*"]).await;
    let mut recorded = event("e1", "s", "m", "search.web", Outcome::Allow, OffsetDateTime::now_utc());
    recorded.input = None;
    gateway.audit.record(&recorded).await.unwrap();

    let (status, reply) = send(&gateway, "POST", "/api/policy/impact", Some(json!({"policy_yaml": DENY_SEARCH}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["evaluated"], 1, "{reply}");
    assert_eq!(reply["evaluated_without_input"], 1, "{reply}");
    assert_eq!(reply["changed"][0]["event_id"], "e1", "{reply}");
}

#[tokio::test]
async fn rotation_of_revoked_model_conflicts() {
    let gateway = gateway().await;
    create_model(&gateway, "m", &["a.*"]).await;
    let (status, _) = send(&gateway, "POST", "/api/keys/m/revoke", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, reply) = send(&gateway, "POST", "/api/keys/m/rotate", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
}

#[tokio::test]
async fn bad_query_strings_get_json_400_after_the_admin_check() {
    let gateway = gateway().await;
    let uris = ["/api/alerts?limit=ten", "/api/audit?limit=-1", "/api/sessions?limit=x", "/api/policy/diff?from=1"];
    for uri in uris {
        let (status, reply) = send_with(&gateway, Some(ADMIN_KEY), "GET", uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {reply}");
        assert_eq!(reply["status"], "invalid_request", "{uri}: {reply}");
        assert!(reply["reason"].as_str().unwrap_or_default().starts_with("invalid query string"), "{uri}: {reply}");

        let (status, _) = send_with(&gateway, None, "GET", uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} without the admin key");
    }
}

#[tokio::test]
async fn non_utf8_path_parameter_gets_json_400() {
    let gateway = gateway().await;
    let templated = API_ROUTES.iter().filter(|(_, path, _)| path.contains('{'));
    for (method, path, _) in templated {
        // `%FF` decodes to a byte that is not UTF-8, so no path parameter can hold it.
        let start = path.find('{').unwrap();
        let end = path.find('}').unwrap();
        let uri = format!("{}%FF{}", &path[..start], &path[end + 1..]);

        let (status, reply) = send_with(&gateway, Some(ADMIN_KEY), method, &uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {reply}");
        assert_eq!(reply["status"], "invalid_request", "{method} {uri}: {reply}");
        assert!(reply["reason"].as_str().unwrap_or_default().starts_with("invalid path"), "{method} {uri}: {reply}");

        let (status, _) = send_with(&gateway, None, method, &uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} without the admin key");
    }
}
