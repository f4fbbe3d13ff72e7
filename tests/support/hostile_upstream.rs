//! A hostile MCP server on a loopback port, for the fault tests: it speaks enough of MCP
//! Streamable HTTP (`initialize`, notifications, `tools/list`, `tools/call`) for the gateway to
//! open a session, and replies to each `tools/call` in the [`Mode`] that the tool's name selects.
//! It records every request, so a test can check what the gateway forwarded.
//!
//! Every response carries `Connection: close`, so a stopped server has no kept-alive
//! connection left that the gateway could still reach it through.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The session id that the server issues at `initialize` and requires on every later request.
pub const UPSTREAM_SESSION_ID: &str = "hostile-upstream-session";

/// Size of the text in the [`Mode::OversizedJson`] and [`Mode::OversizedSse`] replies, in bytes.
pub const OVERSIZED_BYTES: usize = 256 * 1024;

/// How long a [`Mode::Slow`] reply is held back: longer than any timeout the tests configure.
const SLOW_DELAY: Duration = Duration::from_secs(60);

/// How the server replies to `tools/call`. Each mode is a tool of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A correct `application/json` response whose text is the call's arguments.
    Json,
    /// Like [`Mode::Json`], but the tool is left out of `tools/list`.
    Unlisted,
    /// An event stream with comments, a notification, a response to another id and then the
    /// response split over several `data` lines, with CRLF and LF line ends.
    SseEvents,
    /// A correct JSON response labelled `text/event-stream`.
    JsonAsSse,
    /// An event stream that ends in the middle of the response event.
    SseTruncated,
    /// An event stream whose connection breaks in the middle of the response event.
    SseDropped,
    /// The connection closes after the request, before any reply.
    Hangup,
    /// A JSON response of more than [`OVERSIZED_BYTES`], with its `Content-Length`.
    OversizedJson,
    /// An event stream of more than [`OVERSIZED_BYTES`], sent in chunks without a length.
    OversizedSse,
    /// No reply within any test timeout.
    Slow,
    /// HTTP 500 with a text body.
    Http500,
    /// HTTP 200 labelled `application/json` whose body is not JSON.
    Garbage,
    /// HTTP 200 labelled `application/json` with an empty body.
    EmptyBody,
    /// HTTP 202 with no body, as if the request were a notification.
    Accepted,
    /// A JSON-RPC response to another request id.
    WrongId,
    /// A JSON-RPC error response.
    RpcError,
    /// A result without `content`: `{}`.
    EmptyResult,
    /// A result that is a string instead of an object.
    StringResult,
}

impl Mode {
    /// Every mode, in the order `tools/list` shows them.
    pub const ALL: [Self; 18] = [
        Self::Json,
        Self::Unlisted,
        Self::SseEvents,
        Self::JsonAsSse,
        Self::SseTruncated,
        Self::SseDropped,
        Self::Hangup,
        Self::OversizedJson,
        Self::OversizedSse,
        Self::Slow,
        Self::Http500,
        Self::Garbage,
        Self::EmptyBody,
        Self::Accepted,
        Self::WrongId,
        Self::RpcError,
        Self::EmptyResult,
        Self::StringResult,
    ];

    /// Returns the name of the tool that selects this mode.
    pub fn tool_name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Unlisted => "unlisted",
            Self::SseEvents => "sse-events",
            Self::JsonAsSse => "json-as-sse",
            Self::SseTruncated => "sse-truncated",
            Self::SseDropped => "sse-dropped",
            Self::Hangup => "hangup",
            Self::OversizedJson => "oversized-json",
            Self::OversizedSse => "oversized-sse",
            Self::Slow => "slow",
            Self::Http500 => "http-500",
            Self::Garbage => "garbage",
            Self::EmptyBody => "empty-body",
            Self::Accepted => "accepted",
            Self::WrongId => "wrong-id",
            Self::RpcError => "rpc-error",
            Self::EmptyResult => "empty-result",
            Self::StringResult => "string-result",
        }
    }

    fn from_tool_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.tool_name() == name)
    }
}

/// The JSON-RPC error code of [`Mode::RpcError`].
pub const RPC_ERROR_CODE: i64 = -32050;
/// The JSON-RPC error message of [`Mode::RpcError`].
pub const RPC_ERROR_MESSAGE: &str = "the tool crashed";
/// The body of the [`Mode::Http500`] reply.
pub const HTTP_500_BODY: &str = "internal error in the hostile upstream";

/// One request that the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request headers.
    pub headers: HeaderMap,
    /// The body as text, lossily decoded.
    pub body: String,
    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub json: Value,
}

/// A running hostile server. Dropping it stops listening.
pub struct HostileUpstream {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    server: Option<JoinHandle<()>>,
}

impl HostileUpstream {
    /// Starts the server on a free 127.0.0.1 port.
    pub async fn start() -> Result<Self> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("failed to bind the hostile upstream's port")?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new().fallback(handle).with_state(Arc::clone(&requests));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("hostile upstream stopped: {error}");
            }
        });
        Ok(Self { port, requests, server: Some(server) })
    }

    /// Returns the MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Stops listening, so that connections to the port are refused.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Returns every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Returns the bodies of the `tools/call` requests received so far.
    pub fn tool_calls(&self) -> Vec<Value> {
        self.requests().into_iter().map(|request| request.json).filter(|body| body["method"] == "tools/call").collect()
    }
}

impl Drop for HostileUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(State(requests): State<Arc<Mutex<Vec<Recorded>>>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recorded = Recorded { headers: headers.clone(), body: String::from_utf8_lossy(&body).into_owned(), json };
    requests.lock().unwrap_or_else(PoisonError::into_inner).push(recorded.clone());

    let mut response = respond(&headers, &recorded.json).await;
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn respond(headers: &HeaderMap, message: &Value) -> Response {
    let method = message["method"].as_str().unwrap_or_default();
    let id = &message["id"];
    if method == "initialize" {
        return initialize(id);
    }

    let session = headers.get("mcp-session-id").and_then(|value| value.to_str().ok());
    if session != Some(UPSTREAM_SESSION_ID) {
        let reply = rpc_error(id, -32600, "missing or unknown Mcp-Session-Id");
        return json_response(StatusCode::BAD_REQUEST, &reply);
    }
    if method.starts_with("notifications/") {
        return StatusCode::ACCEPTED.into_response();
    }

    match method {
        "tools/list" => json_response(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": tools_list()})),
        "tools/call" => call_tool(id, &message["params"]).await,
        _ => json_response(StatusCode::OK, &rpc_error(id, -32601, "method not found")),
    }
}

fn initialize(id: &Value) -> Response {
    let result = json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "hostile-upstream", "version": "0"},
    });
    let mut response = json_response(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": result}));
    response.headers_mut().insert("mcp-session-id", HeaderValue::from_static(UPSTREAM_SESSION_ID));
    response
}

fn tools_list() -> Value {
    let tools: Vec<Value> = Mode::ALL
        .into_iter()
        .filter(|mode| *mode != Mode::Unlisted)
        .map(|mode| json!({"name": mode.tool_name(), "inputSchema": {"type": "object"}}))
        .collect();
    json!({"tools": tools})
}

async fn call_tool(id: &Value, params: &Value) -> Response {
    let name = params["name"].as_str().unwrap_or_default();
    let Some(mode) = Mode::from_tool_name(name) else {
        return json_response(StatusCode::OK, &rpc_error(id, -32602, &format!("unknown tool `{name}`")));
    };
    let text = params["arguments"].to_string();
    let response = result_message(id, &text);

    match mode {
        Mode::Json | Mode::Unlisted => json_response(StatusCode::OK, &response),
        Mode::SseEvents => sse_response(Body::from(sse_events(id, &response))),
        Mode::JsonAsSse => sse_response(Body::from(response.to_string())),
        Mode::SseTruncated => sse_response(Body::from(truncated_event(&response))),
        Mode::SseDropped => sse_response(dropped_stream(truncated_event(&response))),
        Mode::Hangup => {
            // A body that fails before its first chunk makes the server close the connection
            // before it has sent the status line.
            let failing = futures::stream::iter([Err::<Bytes, _>(std::io::Error::other("hang up"))]);
            sse_response(Body::from_stream(failing))
        }
        Mode::OversizedJson => json_response(StatusCode::OK, &result_message(id, &"x".repeat(OVERSIZED_BYTES))),
        Mode::OversizedSse => sse_response(oversized_stream(id)),
        Mode::Slow => {
            tokio::time::sleep(SLOW_DELAY).await;
            json_response(StatusCode::OK, &response)
        }
        Mode::Http500 => (StatusCode::INTERNAL_SERVER_ERROR, HTTP_500_BODY).into_response(),
        Mode::Garbage => labelled_json(StatusCode::OK, "<html>this is not JSON</html>"),
        Mode::EmptyBody => labelled_json(StatusCode::OK, ""),
        Mode::Accepted => StatusCode::ACCEPTED.into_response(),
        Mode::WrongId => {
            let other_id = id.as_u64().map_or(json!("another-id"), |id| json!(id + 1000));
            json_response(StatusCode::OK, &result_message(&other_id, &text))
        }
        Mode::RpcError => json_response(StatusCode::OK, &rpc_error(id, RPC_ERROR_CODE, RPC_ERROR_MESSAGE)),
        Mode::EmptyResult => json_response(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": {}})),
        Mode::StringResult => json_response(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": "done"})),
    }
}

/// Builds a successful `CallToolResult` response with one text item.
fn result_message(id: &Value, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}], "isError": false}})
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Builds the [`Mode::SseEvents`] stream. The response is split after each top-level member,
/// so its `data` lines must be joined with line feeds to read it.
fn sse_events(id: &Value, response: &Value) -> String {
    let other_id = id.as_u64().map_or(json!("another-id"), |id| json!(id + 1000));
    let progress =
        json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}});
    let other = json!({"jsonrpc": "2.0", "id": other_id, "result": {}});
    let data_lines: String = [
        "{\"jsonrpc\": \"2.0\",".to_owned(),
        format!("\"id\": {id},"),
        format!("\"result\": {}}}", response["result"]),
    ]
    .iter()
    .map(|line| format!("data: {line}\n"))
    .collect();
    format!(
        ": keep-alive comment\r\n\r\nevent: message\r\ndata: {progress}\r\n\r\nid: event-2\ndata: {other}\n\n: another comment\n{data_lines}\n"
    )
}

/// Returns the start of a response event, cut in the middle of its JSON.
fn truncated_event(response: &Value) -> String {
    let event = format!("data: {response}");
    let cut = event.len() / 2;
    event.get(..cut).unwrap_or_default().to_owned()
}

/// Streams `start`, then breaks the connection. The pause lets the server send the status
/// line and `start` before the break, so that the client sees a reply that breaks off.
fn dropped_stream(start: String) -> Body {
    let chunks = futures::stream::unfold(0, move |step| {
        let start = start.clone();
        async move {
            match step {
                0 => Some((Ok(Bytes::from(start)), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Err(std::io::Error::other("connection dropped")), 2))
                }
                _ => None,
            }
        }
    });
    Body::from_stream(chunks)
}

/// Streams one response event of more than [`OVERSIZED_BYTES`] in chunks of 8 KiB.
fn oversized_stream(id: &Value) -> Body {
    const CHUNK: usize = 8 * 1024;
    let mut chunks = vec![format!(
        "data: {{\"jsonrpc\": \"2.0\", \"id\": {id}, \"result\": {{\"content\": [{{\"type\": \"text\", \"text\": \""
    )];
    chunks.extend(std::iter::repeat_n("x".repeat(CHUNK), OVERSIZED_BYTES / CHUNK + 1));
    chunks.push("\"}]}}\n\n".to_owned());
    Body::from_stream(futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>)))
}

fn json_response(status: StatusCode, message: &Value) -> Response {
    labelled_json(status, &message.to_string())
}

fn labelled_json(status: StatusCode, body: &str) -> Response {
    let mut response = (status, body.to_owned()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}
