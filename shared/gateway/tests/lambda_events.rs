//! API Gateway and DynamoDB stream events, as Lambda delivers them, through the real handlers.
//!
//! The HTTP fixtures in `tests/fixtures/` follow the payload shapes of the API Gateway
//! documentation: HTTP API (payload format 2.0) on the `$default` stage and on a named stage,
//! and REST API (payload format 1.0) with a `/{proxy+}` resource. `lambda_http` turns each into
//! an `http::Request`, which goes through [`lambda::http_service`] (the service the functions
//! run) into the real routers, on an SQLite store in a temporary directory and the demo MCP
//! server on 127.0.0.1 as the upstream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail by panicking"
)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::Event;
use axum::body::Body;
use axum::http::{Response, StatusCode};
use mcpsec_gateway::audit::{AuditEvent, Outcome};
use mcpsec_gateway::config::{EXAMPLE_KEYS, EXAMPLE_POLICY};
use mcpsec_gateway::http::{model_routes, session_routes};
use mcpsec_gateway::lambda::stream::{EventSink, LogSink, SinkFailure, StreamPipeline, handle_batch};
use mcpsec_gateway::lambda::{self, HttpService};
use mcpsec_gateway::sessions::SessionIssuer;
use mcpsec_gateway::state::{AppState, AuditWrites, Options, Stores};
use mcpsec_gateway::store::sqlite::SqliteStore;
use mcpsec_gateway::store::{KeyStore, PolicyStore};
use mcpsec_gateway::upstream::{DEFAULT_TIMEOUT, UpstreamClient, Upstreams};
use mcpsec_policy::KeySet;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

const ADMIN_KEY: &str = "admin-key-for-tests";
const EXECUTE_API_HOST: &str = "abc123defg.execute-api.us-east-1.amazonaws.com";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap_or_else(|error| panic!("cannot read fixture {name}: {error}"))
}

/// Parses an API Gateway event the way `lambda_http::run` does.
fn request(name: &str) -> lambda_http::Request {
    lambda_http::request::from_str(&fixture(name))
        .unwrap_or_else(|error| panic!("fixture {name} is not an API Gateway event: {error}"))
}

/// The service a Lambda HTTP function runs, and the store directory that must outlive it.
struct Gateway {
    _data: TempDir,
    service: HttpService,
}

impl Gateway {
    /// Imports the example keys and policy into a fresh SQLite store, starts the demo MCP
    /// server on a loopback port and mounts the model and session routes.
    async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&data.path().join("data")).unwrap());
        for entry in KeySet::from_yaml("example keys", EXAMPLE_KEYS).unwrap().entries() {
            store.put_model(entry).await.unwrap();
        }
        store.save(EXAMPLE_POLICY, None, "test", None).await.unwrap();

        let stores = Stores { keys: store.clone(), policy: store.clone(), audit: store };
        let sessions = SessionIssuer::new(b"a secret of at least thirty-two bytes", Duration::from_secs(3600));
        let options = Options {
            audit_tool_input: true,
            max_body_bytes: 1 << 20,
            cache_ttl: Duration::from_secs(5),
            audit_writes: AuditWrites::Once,
        };
        let state = AppState::new(stores, demo_upstream().await, Some(ADMIN_KEY), sessions, options);

        let router = model_routes().merge(session_routes()).with_state(state);
        Self { _data: data, service: lambda::http_service(router) }
    }

    async fn send(&self, request: lambda_http::Request) -> Response<Body> {
        self.service.clone().oneshot(request).await.unwrap()
    }

    async fn send_fixture(&self, name: &str) -> (StatusCode, Value) {
        let response = self.send(request(name)).await;
        let status = response.status();
        (status, json_body(response).await)
    }
}

async fn demo_upstream() -> Upstreams {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(mcpsec_gateway::demo::serve(listener));

    let url = reqwest::Url::parse(&format!("http://{address}{}", mcpsec_gateway::demo::MCP_PATH)).unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Upstreams::single(UpstreamClient::new("demo".to_owned(), url, http, DEFAULT_TIMEOUT))
}

async fn json_body(response: Response<Body>) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", String::from_utf8_lossy(&bytes)))
}

#[test]
fn lambda_http_prefixes_stage_to_path() {
    let ignore_stage = std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH");
    assert!(
        ignore_stage.is_none(),
        "this test checks lambda_http's default; unset AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"
    );
    // The paths the router would get without `lambda::strip_stage` (lambda_http 1.3).
    let cases = [
        ("apigw_v2_default_stage_toolcall.json", "/mcp/toolcall"),
        ("apigw_v2_prod_stage_toolcall_base64.json", "/prod/mcp/toolcall"),
        ("apigw_v2_prod_stage_mcp_initialize.json", "/prod/mcp"),
        ("apigw_v1_prod_stage_toolcall.json", "/prod/mcp/toolcall"),
        ("apigw_v1_prod_stage_sessions.json", "/prod/api/sessions"),
    ];
    for (name, path) in cases {
        assert_eq!(request(name).uri().path(), path, "{name}");
    }
}

#[test]
fn strip_stage_keeps_host_and_query() {
    let cases = [
        ("apigw_v2_default_stage_toolcall.json", "/mcp/toolcall", None),
        ("apigw_v2_prod_stage_toolcall_base64.json", "/mcp/toolcall", Some("trace=1")),
        ("apigw_v2_prod_stage_mcp_initialize.json", "/mcp", None),
        ("apigw_v1_prod_stage_toolcall.json", "/mcp/toolcall", None),
        ("apigw_v1_prod_stage_session_trace.json", "/api/session/sess-rest-prod", None),
        ("apigw_v1_prod_stage_sessions.json", "/api/sessions", Some("limit=5")),
    ];
    for (name, path, query) in cases {
        let request = lambda::strip_stage(request(name));
        assert_eq!(request.uri().path(), path, "{name}");
        assert_eq!(request.uri().query(), query, "{name}");
        assert_eq!(request.uri().host(), Some(EXECUTE_API_HOST), "{name}");
        assert_eq!(request.headers()["host"], EXECUTE_API_HOST, "{name}");
    }
}

#[test]
fn http_api_headers_keep_commas_and_cookies() {
    let request = request("apigw_v2_prod_stage_toolcall_base64.json");

    assert_eq!(request.headers()["x-forwarded-for"], "198.51.100.7,203.0.113.9");
    assert_eq!(request.headers()["accept"], "application/json,text/plain");
    assert_eq!(request.headers()["cookie"], "session=opaque-cookie-value");
}

#[tokio::test]
async fn http_api_default_stage_toolcall() {
    let gateway = Gateway::start().await;

    let (status, body) = gateway.send_fixture("apigw_v2_default_stage_toolcall.json").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["result"]["structuredContent"]["query"], "tool calls");
    assert_eq!(body["result"]["structuredContent"]["results"][0]["title"], "Securing tool calls");
}

#[tokio::test]
async fn http_api_named_stage_base64_toolcall() {
    let gateway = Gateway::start().await;

    let (status, body) = gateway.send_fixture("apigw_v2_prod_stage_toolcall_base64.json").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["result"]["structuredContent"]["query"], "calendar tool");
    assert_eq!(body["result"]["structuredContent"]["results"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn rest_api_stage_toolcall() {
    let gateway = Gateway::start().await;

    let (status, body) = gateway.send_fixture("apigw_v1_prod_stage_toolcall.json").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["result"]["structuredContent"]["query"], "json-rpc");
    assert!(body["event_id"].is_string(), "{body}");
}

#[tokio::test]
async fn rest_api_wrong_key_returns_401() {
    let gateway = Gateway::start().await;

    let (status, body) = gateway.send_fixture("apigw_v1_prod_stage_toolcall_wrong_key.json").await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["status"], "unauthorized");
}

#[tokio::test]
async fn mcp_session_on_named_stage() {
    let gateway = Gateway::start().await;

    let response = gateway.send(request("apigw_v2_prod_stage_mcp_initialize.json")).await;
    let status = response.status();
    let session_id = response.headers().get("mcp-session-id").map(|value| value.to_str().unwrap().to_owned());
    let body = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(body["result"]["serverInfo"]["name"], "mcpsec-gateway");
    let session_id = session_id.expect("initialize returns an Mcp-Session-Id header");

    // The same event shape with the session id and a tools/call body, as the model's next
    // request arrives.
    let mut event: Value = serde_json::from_str(&fixture("apigw_v2_prod_stage_mcp_initialize.json")).unwrap();
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "search.docs", "arguments": {"query": "policies"}}});
    event["body"] = Value::String(call.to_string());
    event["headers"]["content-length"] = Value::String(call.to_string().len().to_string());
    event["headers"]["mcp-session-id"] = Value::String(session_id);
    let call_request = lambda_http::request::from_str(&event.to_string()).unwrap();

    let response = gateway.send(call_request).await;
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], 2);
    assert_eq!(body["result"]["structuredContent"]["query"], "policies", "{body}");
}

#[tokio::test]
async fn session_routes_on_rest_api_stage() {
    let gateway = Gateway::start().await;
    let (status, body) = gateway.send_fixture("apigw_v1_prod_stage_toolcall.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, trace) = gateway.send_fixture("apigw_v1_prod_stage_session_trace.json").await;
    assert_eq!(status, StatusCode::OK, "{trace}");
    assert_eq!(trace["session_id"], "sess-rest-prod");
    assert_eq!(trace["calls"], 1);
    assert_eq!(trace["events"][0]["event_id"], body["event_id"]);

    let (status, sessions) = gateway.send_fixture("apigw_v1_prod_stage_sessions.json").await;
    assert_eq!(status, StatusCode::OK, "{sessions}");
    let listed = sessions["sessions"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{sessions}");
    assert_eq!(listed[0]["session_id"], "sess-rest-prod", "{sessions}");
}

#[tokio::test]
async fn unknown_path_on_named_stage_returns_404() {
    let gateway = Gateway::start().await;
    let mut event: Value = serde_json::from_str(&fixture("apigw_v2_prod_stage_toolcall_base64.json")).unwrap();
    event["rawPath"] = Value::String("/prod/mcp/unknown".to_owned());

    let response = gateway.send(lambda_http::request::from_str(&event.to_string()).unwrap()).await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// A sink that keeps what it receives and fails on one event id, delivering the events
/// before it, as a SIEM forwarder does.
#[derive(Default, Clone)]
struct RecordingSink {
    events: Arc<Mutex<Vec<AuditEvent>>>,
    fail_on: Option<String>,
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn deliver(&self, events: &[AuditEvent]) -> Result<(), SinkFailure> {
        for (index, event) in events.iter().enumerate() {
            if self.fail_on.as_deref() == Some(event.event_id.as_str()) {
                return Err(SinkFailure { delivered: index, reason: "the SIEM endpoint returned 503".to_owned() });
            }
            self.events.lock().unwrap().push(event.clone());
        }
        Ok(())
    }
}

impl RecordingSink {
    fn event_ids(&self) -> Vec<String> {
        self.events.lock().unwrap().iter().map(|event| event.event_id.clone()).collect()
    }

    fn pipeline(&self) -> StreamPipeline {
        StreamPipeline { sink: Some(Box::new(self.clone())), detection: None, webhook: None }
    }
}

fn stream_batch() -> Event {
    serde_json::from_str(&fixture("dynamodb_stream_batch.json")).unwrap()
}

fn failed_sequence_numbers(response: &aws_lambda_events::event::streams::DynamoDbEventResponse) -> Vec<Option<String>> {
    response.batch_item_failures.iter().map(|failure| failure.item_identifier.clone()).collect()
}

#[tokio::test]
async fn stream_batch_reports_only_the_poison_record() {
    let sink = RecordingSink::default();

    let response = handle_batch(stream_batch(), &sink.pipeline(), None).await;

    assert_eq!(failed_sequence_numbers(&response), [Some("4421584500000000017450439092".to_owned())]);
    assert_eq!(sink.event_ids(), ["0195f1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1b", "0195f1a2-7c3d-7e4f-8a5b-6c7d8e9f0a2c"]);
}

#[tokio::test]
async fn stream_batch_decodes_the_whole_event() {
    let sink = RecordingSink::default();

    handle_batch(stream_batch(), &sink.pipeline(), None).await;

    let events = sink.events.lock().unwrap();
    let allowed = &events[0];
    assert_eq!(allowed.session_id, "sess-rest-prod");
    assert_eq!(allowed.model_id, "gpt-4o");
    assert_eq!(allowed.decision, Outcome::Allow);
    assert_eq!(allowed.upstream.as_ref().map(|upstream| upstream.status.as_str()), Some("ok"));
    let denied = &events[1];
    assert_eq!(denied.decision, Outcome::Deny);
    assert_eq!(denied.rule.as_deref(), Some("no-calendar-deletes"));
}

/// The sink takes the events before the failing one; the failing record and every record
/// after it are reported, so Lambda retries them.
#[tokio::test]
async fn stream_sink_failure_is_a_batch_item_failure() {
    let sink =
        RecordingSink { fail_on: Some("0195f1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1b".to_owned()), ..RecordingSink::default() };

    let response = handle_batch(stream_batch(), &sink.pipeline(), None).await;

    assert_eq!(
        failed_sequence_numbers(&response),
        [
            Some("4421584500000000017450439091".to_owned()),
            Some("4421584500000000017450439092".to_owned()),
            Some("4421584500000000017450439095".to_owned())
        ]
    );
    assert!(sink.event_ids().is_empty(), "the failing event is the first, so none was delivered");
}

/// A sink that never answers, like a SIEM that holds the connection open.
struct HangingSink;

#[async_trait]
impl EventSink for HangingSink {
    async fn deliver(&self, _events: &[AuditEvent]) -> Result<(), SinkFailure> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn stream_batch_out_of_time_fails_every_record() {
    let pipeline = StreamPipeline { sink: Some(Box::new(HangingSink)), detection: None, webhook: None };

    let response = handle_batch(stream_batch(), &pipeline, Some(Duration::from_millis(200))).await;

    assert_eq!(
        failed_sequence_numbers(&response),
        [
            Some("4421584500000000017450439091".to_owned()),
            Some("4421584500000000017450439092".to_owned()),
            Some("4421584500000000017450439095".to_owned())
        ],
        "a sink still busy when the time is up leaves every record to the retry"
    );
}

#[test]
fn stream_steps_parse() {
    use mcpsec_gateway::lambda::stream::Steps;
    let all = Steps { forward: true, detect: true, alert: true };
    assert_eq!(Steps::parse(None), Ok(all));
    assert_eq!(Steps::parse(Some(" ")), Ok(all));
    assert_eq!(Steps::parse(Some("forward")), Ok(Steps { forward: true, detect: false, alert: false }));
    assert_eq!(Steps::parse(Some("detect, alert")), Ok(Steps { forward: false, detect: true, alert: true }));
    let error = Steps::parse(Some("forward,siem")).unwrap_err();
    assert!(error.contains("`siem` is not `forward`, `detect` or `alert`"), "{error}");
}

#[tokio::test]
async fn stream_response_serializes_as_lambda_expects() {
    let response = handle_batch(
        stream_batch(),
        &StreamPipeline { sink: Some(Box::new(LogSink)), detection: None, webhook: None },
        None,
    )
    .await;

    let json = serde_json::to_value(&response).unwrap();

    assert_eq!(json, serde_json::json!({"batchItemFailures": [{"itemIdentifier": "4421584500000000017450439092"}]}));
}

#[tokio::test]
async fn stream_insert_without_new_image_fails() {
    let mut batch: Value = serde_json::from_str(&fixture("dynamodb_stream_batch.json")).unwrap();
    let records = batch["Records"].as_array_mut().unwrap();
    records.truncate(1);
    records[0]["dynamodb"].as_object_mut().unwrap().remove("NewImage");
    records[0]["dynamodb"]["StreamViewType"] = Value::String("KEYS_ONLY".to_owned());
    let sink = RecordingSink::default();

    let response = handle_batch(serde_json::from_value(batch).unwrap(), &sink.pipeline(), None).await;

    assert_eq!(failed_sequence_numbers(&response), [Some("4421584500000000017450439091".to_owned())]);
    assert!(sink.event_ids().is_empty());
}

#[test]
fn lambda_settings_require_session_secret() {
    let error = lambda::settings_from_env(|_| None).unwrap_err();

    assert_eq!(error.name, "SESSION_SECRET");
    assert!(error.to_string().starts_with("invalid environment variable `SESSION_SECRET`: missing; set it"), "{error}");
}

#[test]
fn lambda_settings_reject_short_session_secret() {
    let error = lambda::settings_from_env(|name| (name == "SESSION_SECRET").then(|| "short".to_owned())).unwrap_err();

    assert_eq!(
        error.to_string(),
        "invalid environment variable `SESSION_SECRET`: too short (5 bytes); set at least 32 random bytes, such as the output of `openssl rand -hex 32`"
    );
}

#[test]
fn lambda_settings_default_to_one_audit_write() {
    let secret = "0123456789abcdef0123456789abcdef".to_owned();
    let settings = lambda::settings_from_env(|name| (name == "SESSION_SECRET").then(|| secret.clone())).unwrap();

    assert_eq!(settings.audit_writes, AuditWrites::Once);
    assert_eq!(settings.cache_ttl, Duration::from_secs(5));
}

#[test]
fn lambda_settings_keep_explicit_audit_writes() {
    let var = |name: &str| match name {
        "SESSION_SECRET" => Some("0123456789abcdef0123456789abcdef".to_owned()),
        "AUDIT_WRITES" => Some("twice".to_owned()),
        "CACHE_TTL" => Some("30s".to_owned()),
        _ => None,
    };

    let settings = lambda::settings_from_env(var).unwrap();

    assert_eq!(settings.audit_writes, AuditWrites::Twice);
    assert_eq!(settings.cache_ttl, Duration::from_secs(30));
}
