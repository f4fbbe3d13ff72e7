//! The upstream client against real servers on 127.0.0.1: the demo MCP server built with
//! `rmcp`, and a small axum server that misbehaves in the ways a real server can.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mcpsec_gateway::demo;
use mcpsec_gateway::upstream::{UpstreamClient, UpstreamError, Upstreams};
use reqwest::Url;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on a free loopback port and returns the URL of its `/mcp` endpoint.
async fn spawn(router: Router) -> anyhow::Result<Url> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(Url::parse(&format!("http://{address}/mcp"))?)
}

fn client(name: &str, url: Url, timeout: Duration) -> UpstreamClient {
    UpstreamClient::new(name.to_owned(), url, reqwest::Client::new(), timeout)
}

async fn demo_client() -> anyhow::Result<UpstreamClient> {
    Ok(client("demo", spawn(demo::router()).await?, TIMEOUT))
}

fn structured(result: &Value) -> anyhow::Result<&Value> {
    result.get("structuredContent").context("result has no structuredContent")
}

#[tokio::test]
async fn demo_lists_five_dotted_tools() -> anyhow::Result<()> {
    let tools = demo_client().await?.list_tools().await?;

    let mut names: Vec<&str> = tools.iter().filter_map(|tool| tool.get("name")?.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["calendar.create_event", "calendar.delete_event", "calendar.list_events", "search.docs", "search.web"]
    );
    for tool in &tools {
        let schema_type = tool.pointer("/inputSchema/type").and_then(Value::as_str);
        assert_eq!(schema_type, Some("object"), "tool {tool}");
    }
    Ok(())
}

#[tokio::test]
async fn demo_creates_lists_and_deletes_event() -> anyhow::Result<()> {
    let demo = demo_client().await?;
    let arguments = json!({
        "title": "Design review",
        "start": "2030-01-14T10:00:00Z",
        "end": "2030-01-14T11:00:00Z",
        "attendees": ["ana@example.com"],
    });
    let created = demo.call_tool("calendar.create_event", &arguments).await?;
    assert_ne!(created.get("isError"), Some(&json!(true)), "result {created}");
    assert_eq!(structured(&created)?.get("id"), Some(&json!("evt-4")));

    let listed = demo.call_tool("calendar.list_events", &json!({ "day": "2030-01-14" })).await?;
    let ids: Vec<&str> = structured(&listed)?
        .pointer("/events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|event| event.get("id")?.as_str())
        .collect();
    assert_eq!(ids, ["evt-1", "evt-4", "evt-2"]);

    let deleted = demo.call_tool("calendar.delete_event", &json!({ "id": "evt-4" })).await?;
    assert_eq!(structured(&deleted)?.get("title"), Some(&json!("Design review")));
    Ok(())
}

#[tokio::test]
async fn demo_tool_failure_is_error_result() -> anyhow::Result<()> {
    let result = demo_client().await?.call_tool("calendar.delete_event", &json!({ "id": "evt-99" })).await?;

    assert_eq!(result.get("isError"), Some(&json!(true)));
    let text = result.pointer("/content/0/text").and_then(Value::as_str).unwrap_or_default();
    assert!(text.contains("no event has id `evt-99`"), "text {text}");
    Ok(())
}

#[tokio::test]
async fn demo_search_returns_results() -> anyhow::Result<()> {
    let demo = demo_client().await?;

    let web = demo.call_tool("search.web", &json!({ "query": "streamable http", "limit": 2 })).await?;
    let first_url = structured(&web)?.pointer("/results/0/url").and_then(Value::as_str);
    assert_eq!(first_url, Some("https://example.org/mcp/streamable-http"));

    let docs = demo.call_tool("search.docs", &json!({ "query": "writing policies" })).await?;
    let first_id = structured(&docs)?.pointer("/documents/0/id").and_then(Value::as_str);
    assert_eq!(first_id, Some("policies"));
    Ok(())
}

#[tokio::test]
async fn demo_unknown_tool_is_json_rpc_error() -> anyhow::Result<()> {
    let error = demo_client().await?.call_tool("calendar.nope", &json!({})).await.err();

    let Some(UpstreamError::JsonRpc { upstream, code, message }) = error else {
        bail!("expected a JSON-RPC error, got {error:?}");
    };
    assert_eq!(upstream, "demo");
    assert_eq!(code, -32602);
    assert_eq!(message, "tool not found");
    Ok(())
}

#[tokio::test]
async fn demo_answers_ping() -> anyhow::Result<()> {
    demo_client().await?.ping().await?;
    Ok(())
}

#[tokio::test]
async fn demo_streams_initialize_reply_with_session() -> anyhow::Result<()> {
    let url = spawn(demo::router()).await?;
    let initialize = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "raw-test", "version": "0" },
        },
    });

    let response = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await?;

    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(response.headers().contains_key("mcp-session-id"));
    let content_type = response.headers().get("content-type").and_then(|value| value.to_str().ok()).map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    let body = response.text().await?;
    assert!(body.contains("\"protocolVersion\":\"2025-06-18\""), "body {body}");
    Ok(())
}

/// How the mock server replies to requests other than `initialize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One JSON object.
    Json,
    /// An event stream with comments, CRLF line ends, a notification, a server request and
    /// the response split over two `data` lines.
    EventStream,
    /// HTTP 404 to the first session, JSON to later ones.
    ExpireFirstSession,
    /// HTTP 404 to every request with a session id.
    ExpireEverySession,
    /// Never replies.
    Hang,
    /// Sends one comment, then keeps the stream open without sending the response.
    StallStream,
    /// An event stream holding only a notification.
    StreamWithoutResponse,
    /// Plain JSON labelled `text/event-stream`.
    MislabelledJson,
    /// A JSON reply of about 4 KiB.
    Large,
    /// A JSON-RPC error.
    JsonRpcError,
    /// HTTP 500 with a text body.
    ServerError,
    /// `tools/list` in two pages.
    TwoPages,
    /// `tools/list` pages that never end.
    EndlessPages,
}

/// What the mock server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    session_id: Option<String>,
    protocol_version: Option<String>,
    accept: Option<String>,
    content_type: Option<String>,
}

struct Mock {
    mode: Mode,
    initializations: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl Mock {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self { mode, initializations: AtomicUsize::new(0), seen: Mutex::new(Vec::new()) })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn initializations(&self) -> usize {
        self.initializations.load(Ordering::SeqCst)
    }
}

async fn spawn_mock(mode: Mode) -> anyhow::Result<(Arc<Mock>, Url)> {
    let mock = Mock::new(mode);
    let router = Router::new().route("/mcp", post(handle)).with_state(Arc::clone(&mock));
    Ok((mock, spawn(router).await?))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

async fn handle(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let method = message.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let session_id = header_text(&headers, "mcp-session-id");
    mock.seen.lock().unwrap_or_else(PoisonError::into_inner).push(Seen {
        method: method.clone(),
        session_id: session_id.clone(),
        protocol_version: header_text(&headers, "mcp-protocol-version"),
        accept: header_text(&headers, "accept"),
        content_type: header_text(&headers, "content-type"),
    });

    match method.as_str() {
        "initialize" => {
            let number = mock.initializations.fetch_add(1, Ordering::SeqCst) + 1;
            let result = json!({
                "protocolVersion": "2025-06-18",
                "capabilities": { "tools": {} },
                "serverInfo": { "name": "mock", "version": "1.0.0" },
            });
            let mut response = json_reply(&id, result);
            if let Ok(value) = format!("session-{number}").parse() {
                response.headers_mut().insert("mcp-session-id", value);
            }
            response
        }
        "notifications/initialized" => StatusCode::ACCEPTED.into_response(),
        _ => reply(mock.mode, &method, &message, &id, session_id.as_deref()).await,
    }
}

async fn reply(mode: Mode, method: &str, message: &Value, id: &Value, session_id: Option<&str>) -> Response {
    let result = result_for(mode, method, message);
    match mode {
        Mode::Json | Mode::TwoPages | Mode::EndlessPages => json_reply(id, result),
        Mode::EventStream => event_stream(event_stream_body(id, &result)),
        Mode::ExpireFirstSession if session_id == Some("session-1") => StatusCode::NOT_FOUND.into_response(),
        Mode::ExpireFirstSession => json_reply(id, result),
        Mode::ExpireEverySession => (StatusCode::NOT_FOUND, "session not found").into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Mode::StallStream => {
            let first = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b": working\n\n")) });
            let body = Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()));
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        Mode::StreamWithoutResponse => event_stream(
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n".to_owned(),
        ),
        Mode::MislabelledJson => event_stream(json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string()),
        Mode::Large => json_reply(id, json!({ "content": [{ "type": "text", "text": "x".repeat(4096) }] })),
        Mode::JsonRpcError => {
            let error = json!({ "code": -32602, "message": "Unknown tool: nope" });
            axum::Json(json!({ "jsonrpc": "2.0", "id": id, "error": error })).into_response()
        }
        Mode::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "database\nunavailable").into_response(),
    }
}

fn result_for(mode: Mode, method: &str, message: &Value) -> Value {
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    match method {
        "tools/list" => tools_page(mode, params.get("cursor").and_then(Value::as_str)),
        "tools/call" => json!({
            "content": [{ "type": "text", "text": "called" }],
            "structuredContent": { "arguments": params.get("arguments") },
            "isError": false,
            "_meta": { "vendor.example/trace": "t-1" },
        }),
        _ => json!({}),
    }
}

fn tools_page(mode: Mode, cursor: Option<&str>) -> Value {
    let tool = |name: &str| json!({ "name": name, "inputSchema": { "type": "object" } });
    match (mode, cursor) {
        (Mode::TwoPages, None) => json!({ "tools": [tool("first")], "nextCursor": "page-2" }),
        (Mode::TwoPages, Some(_)) => json!({ "tools": [tool("second")] }),
        (Mode::EndlessPages, _) => json!({ "tools": [tool("again")], "nextCursor": "again" }),
        _ => json!({ "tools": [tool("create_event"), tool("list_events")] }),
    }
}

fn json_reply(id: &Value, result: Value) -> Response {
    axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
}

fn event_stream(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")], body).into_response()
}

/// Builds a stream that a real server could send: a keep-alive comment, a progress
/// notification, a server request, a response to another id, then the response split over
/// two `data` lines, all with CRLF line ends.
fn event_stream_body(id: &Value, result: &Value) -> String {
    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": { "progress": 1 } });
    let server_request = json!({ "jsonrpc": "2.0", "id": "srv-1", "method": "roots/list" });
    let other_response = json!({ "jsonrpc": "2.0", "id": 999_999, "result": {} });
    [
        ": keep-alive\r\n\r\n".to_owned(),
        "id: e1\r\ndata:\r\n\r\n".to_owned(),
        format!("data: {notification}\r\n\r\n"),
        format!("event: message\r\ndata: {server_request}\r\n\r\n"),
        format!("data: {other_response}\r\n\r\n"),
        format!("id: e2\r\ndata: {{\"jsonrpc\":\"2.0\",\r\ndata: \"id\":{id},\"result\":{result}}}\r\n\r\n"),
    ]
    .concat()
}

#[tokio::test]
async fn call_tool_returns_result_unchanged() -> anyhow::Result<()> {
    let (_, url) = spawn_mock(Mode::Json).await?;
    let arguments = json!({ "title": "x", "nested": { "list": [1, 2.5, null] } });

    let result = client("mock", url, TIMEOUT).call_tool("create_event", &arguments).await?;

    let expected = json!({
        "content": [{ "type": "text", "text": "called" }],
        "structuredContent": { "arguments": arguments },
        "isError": false,
        "_meta": { "vendor.example/trace": "t-1" },
    });
    assert_eq!(result, expected);
    Ok(())
}

#[tokio::test]
async fn requests_carry_session_headers() -> anyhow::Result<()> {
    let (mock, url) = spawn_mock(Mode::Json).await?;

    client("mock", url, TIMEOUT).call_tool("create_event", &json!({})).await?;

    let seen = mock.seen();
    let methods: Vec<&str> = seen.iter().map(|seen| seen.method.as_str()).collect();
    assert_eq!(methods, ["initialize", "notifications/initialized", "tools/call"]);
    let [initialize, initialized, call] = seen.as_slice() else {
        bail!("expected three requests, saw {seen:?}");
    };
    assert_eq!(initialize.session_id, None);
    assert_eq!(initialize.protocol_version, None);
    assert_eq!(initialized.session_id.as_deref(), Some("session-1"));
    assert_eq!(call.session_id.as_deref(), Some("session-1"));
    assert_eq!(call.protocol_version.as_deref(), Some("2025-06-18"));
    for request in &seen {
        assert_eq!(request.accept.as_deref(), Some("application/json, text/event-stream"), "request {request:?}");
        assert_eq!(request.content_type.as_deref(), Some("application/json"), "request {request:?}");
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_first_calls_initialise_once() -> anyhow::Result<()> {
    let (mock, url) = spawn_mock(Mode::Json).await?;
    let upstream = client("mock", url, TIMEOUT);

    let calls = (0..8).map(|_| {
        let upstream = upstream.clone();
        async move { upstream.ping().await }
    });
    for outcome in futures::future::join_all(calls).await {
        outcome?;
    }

    assert_eq!(mock.initializations(), 1);
    Ok(())
}

#[tokio::test]
async fn event_stream_reply_skips_other_messages() -> anyhow::Result<()> {
    let (_, url) = spawn_mock(Mode::EventStream).await?;

    let result = client("mock", url, TIMEOUT).call_tool("create_event", &json!({ "a": 1 })).await?;

    assert_eq!(result.pointer("/structuredContent/arguments"), Some(&json!({ "a": 1 })));
    Ok(())
}

#[tokio::test]
async fn expired_session_is_reinitialised_once() -> anyhow::Result<()> {
    let (mock, url) = spawn_mock(Mode::ExpireFirstSession).await?;
    let upstream = client("mock", url, TIMEOUT);

    upstream.ping().await?;
    upstream.ping().await?;

    assert_eq!(mock.initializations(), 2);
    let pings: Vec<Option<String>> =
        mock.seen().into_iter().filter(|seen| seen.method == "ping").map(|seen| seen.session_id).collect();
    let session = |id: &str| Some(id.to_owned());
    assert_eq!(pings, [session("session-1"), session("session-2"), session("session-2")]);
    Ok(())
}

#[tokio::test]
async fn session_that_keeps_expiring_fails_after_one_retry() -> anyhow::Result<()> {
    let (mock, url) = spawn_mock(Mode::ExpireEverySession).await?;

    let error = client("mock", url, TIMEOUT).ping().await.err();

    let Some(UpstreamError::HttpStatus { status, body_excerpt, .. }) = error else {
        bail!("expected HTTP 404, got {error:?}");
    };
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert_eq!(body_excerpt, "session not found");
    assert_eq!(mock.initializations(), 2);
    Ok(())
}

#[tokio::test]
async fn hanging_server_times_out() -> anyhow::Result<()> {
    for mode in [Mode::Hang, Mode::StallStream] {
        let (_, url) = spawn_mock(mode).await?;
        let started = Instant::now();

        let error = client("slow", url, Duration::from_millis(300)).ping().await.err();

        let Some(error) = error else { bail!("{mode:?}: expected a timeout") };
        assert!(error.is_timeout(), "{mode:?}: {error}");
        assert_eq!(
            error.to_string(),
            "upstream `slow` did not reply within 300ms; check that the server is healthy or raise its timeout"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{mode:?}: took {:?}", started.elapsed());
    }
    Ok(())
}

#[tokio::test]
async fn broken_replies_are_protocol_errors() -> anyhow::Result<()> {
    let cases = [
        (Mode::StreamWithoutResponse, "event stream ended after 1 events without the response to request 2"),
        (Mode::MislabelledJson, "reply is labelled `text/event-stream` but its body is plain JSON without events"),
        (
            Mode::Large,
            "reply body exceeds the limit of 1024 bytes; raise `max_response_bytes` if the server is trusted",
        ),
    ];
    for (mode, detail) in cases {
        let (_, url) = spawn_mock(mode).await?;
        let upstream = client("mock", url, TIMEOUT).with_max_response_bytes(1024);

        let error = upstream.ping().await.err();

        let Some(UpstreamError::Protocol { upstream, detail: actual }) = error else {
            bail!("{mode:?}: expected a protocol error, got {error:?}");
        };
        assert_eq!(upstream, "mock", "{mode:?}");
        assert_eq!(actual, detail, "{mode:?}");
    }
    Ok(())
}

#[tokio::test]
async fn json_rpc_error_reply_is_error() -> anyhow::Result<()> {
    let (_, url) = spawn_mock(Mode::JsonRpcError).await?;

    let error = client("mock", url, TIMEOUT).call_tool("nope", &json!({})).await.err();

    let Some(error) = error else { bail!("expected an error") };
    assert_eq!(error.to_string(), "upstream `mock` returned JSON-RPC error -32602: Unknown tool: nope");
    Ok(())
}

#[tokio::test]
async fn server_error_status_is_reported_with_excerpt() -> anyhow::Result<()> {
    let (_, url) = spawn_mock(Mode::ServerError).await?;

    let error = client("mock", url, TIMEOUT).ping().await.err();

    let Some(error) = error else { bail!("expected an error") };
    assert_eq!(
        error.to_string(),
        "upstream `mock` replied with HTTP status 500 Internal Server Error: database\\nunavailable"
    );
    Ok(())
}

#[tokio::test]
async fn closed_port_is_unreachable() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    drop(listener);

    let url = Url::parse(&format!("http://{address}/mcp"))?;
    let error = client("gone", url, TIMEOUT).ping().await.err();

    assert!(matches!(error, Some(UpstreamError::Unreachable { .. })), "error {error:?}");
    Ok(())
}

#[tokio::test]
async fn list_tools_follows_cursor() -> anyhow::Result<()> {
    let (_, url) = spawn_mock(Mode::TwoPages).await?;

    let tools = client("mock", url, TIMEOUT).list_tools().await?;

    let names: Vec<&str> = tools.iter().filter_map(|tool| tool.get("name")?.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    Ok(())
}

#[tokio::test]
async fn list_tools_stops_at_page_limit() -> anyhow::Result<()> {
    let (mock, url) = spawn_mock(Mode::EndlessPages).await?;

    let error = client("mock", url, TIMEOUT).list_tools().await.err();

    assert!(matches!(error, Some(UpstreamError::Protocol { .. })), "error {error:?}");
    let pages = mock.seen().iter().filter(|seen| seen.method == "tools/list").count();
    assert_eq!(pages, mcpsec_gateway::upstream::MAX_TOOL_PAGES);
    Ok(())
}

#[tokio::test]
async fn upstreams_prefix_tools_and_skip_failures() -> anyhow::Result<()> {
    let (_, calendar) = spawn_mock(Mode::Json).await?;
    let (_, broken) = spawn_mock(Mode::ServerError).await?;
    let file = [
        "upstreams:".to_owned(),
        format!("  - {{ name: calendar, url: '{calendar}', prefix: calendar }}"),
        format!("  - {{ name: broken, url: '{broken}', prefix: broken }}"),
    ]
    .join("\n");
    let upstreams = Upstreams::from_yaml("upstreams.yaml", &file, reqwest::Client::new())?;

    let tools = upstreams.list_tools().await;

    let names: Vec<&str> = tools.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["calendar.create_event", "calendar.list_events"]);
    let names_in_tools: Vec<Option<&str>> =
        tools.iter().map(|(_, tool)| tool.get("name").and_then(Value::as_str)).collect();
    assert_eq!(names_in_tools, [Some("calendar.create_event"), Some("calendar.list_events")]);

    let Some((upstream, name)) = upstreams.route("calendar.create_event") else {
        bail!("calendar.create_event has no route");
    };
    assert_eq!(name, "create_event");
    let result = upstream.call_tool(&name, &json!({})).await?;
    assert_eq!(result.get("isError"), Some(&json!(false)));
    Ok(())
}

#[tokio::test]
async fn single_upstream_lists_demo_tools_unchanged() -> anyhow::Result<()> {
    let upstreams = Upstreams::single(demo_client().await?);

    let tools = upstreams.list_tools().await;

    assert_eq!(tools.len(), 5);
    assert!(tools.iter().any(|(name, _)| name == "search.web"));
    Ok(())
}
