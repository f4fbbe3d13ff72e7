//! The client for one upstream MCP server over Streamable HTTP.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::error::UpstreamError;
use super::jsonrpc::{Reply, Request};
use super::transport::{self, Failure};

/// Protocol version that the client requests in `initialize`.
pub const REQUESTED_PROTOCOL_VERSION: &str = "2025-06-18";

/// Protocol versions that the client accepts from a server. All three use the Streamable HTTP
/// transport and the same `tools/list`, `tools/call` and `ping` messages.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// Default limit on the size of one reply body, in bytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Maximum number of `tools/list` pages that [`UpstreamClient::list_tools`] follows.
pub const MAX_TOOL_PAGES: usize = 100;

/// Name that the client gives itself in `initialize`.
const CLIENT_NAME: &str = "mcpsec-gateway";

/// A client for one MCP server. Cloning is cheap, and clones share the session.
///
/// The first request opens a session: it sends `initialize`, then
/// `notifications/initialized`, and keeps the `Mcp-Session-Id` and negotiated protocol version
/// for the `Mcp-Session-Id` and `MCP-Protocol-Version` headers of later requests. Concurrent
/// first requests wait for one initialisation. When the server replies with HTTP 404 to a
/// request that carries a session id, the session has expired: the client opens a new session
/// and sends the request once more.
///
/// Each request, including any initialisation it waits for or performs, is bounded by the
/// timeout. A [`UpstreamClient::list_tools`] call sends one request per page.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    url: Url,
    http: reqwest::Client,
    timeout: Duration,
    max_response_bytes: usize,
    session: Mutex<Option<Arc<Session>>>,
    next_request_id: AtomicU64,
}

/// State of an initialised session.
pub(crate) struct Session {
    /// The `Mcp-Session-Id` that the server assigned, if it uses sessions.
    pub(crate) id: Option<HeaderValue>,
    /// The protocol version that the server chose.
    pub(crate) protocol_version: HeaderValue,
}

/// Parameters of `tools/call`, serialized without copying the arguments.
#[derive(Serialize)]
struct CallToolParams<'a> {
    name: &'a str,
    arguments: &'a Value,
}

impl UpstreamClient {
    /// Creates a client for the server at `url`, named `name` in logs and errors.
    ///
    /// No request is sent until the first call. The caller checks that `url` is http or https,
    /// as [`super::Upstreams`] does; a request to another scheme fails as unreachable.
    pub fn new(name: String, url: Url, http: reqwest::Client, timeout: Duration) -> Self {
        Self::build(name, url, http, timeout, DEFAULT_MAX_RESPONSE_BYTES)
    }

    /// Sets the limit on the size of one reply body, in bytes.
    ///
    /// Call it before the first request, because the returned client starts without a session.
    #[must_use]
    pub fn with_max_response_bytes(self, max_response_bytes: usize) -> Self {
        let inner = &self.inner;
        Self::build(inner.name.clone(), inner.url.clone(), inner.http.clone(), inner.timeout, max_response_bytes)
    }

    fn build(name: String, url: Url, http: reqwest::Client, timeout: Duration, max_response_bytes: usize) -> Self {
        let inner = Inner {
            name,
            url,
            http,
            timeout,
            max_response_bytes,
            session: Mutex::new(None),
            next_request_id: AtomicU64::new(1),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Returns the name of this upstream.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Returns the endpoint URL of this upstream.
    pub fn url(&self) -> &Url {
        &self.inner.url
    }

    /// Returns the time limit of one request.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Returns the limit on the size of one reply body, in bytes.
    pub fn max_response_bytes(&self) -> usize {
        self.inner.max_response_bytes
    }

    /// Lists every tool of the server as raw `Tool` objects, following `nextCursor` for at most
    /// [`MAX_TOOL_PAGES`] pages.
    ///
    /// Every tool is checked to be an object with a string `name` and is otherwise unchanged.
    pub async fn list_tools(&self) -> Result<Vec<Value>, UpstreamError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = match &cursor {
                Some(cursor) => json!({ "cursor": cursor }),
                None => json!({}),
            };
            let result = self.request("tools/list", Some(&params)).await?;
            let (page, next_cursor) = split_tool_page(result).map_err(|detail| self.protocol_error(detail))?;
            tools.extend(page);

            match next_cursor {
                Some(next_cursor) => cursor = Some(next_cursor),
                None => return Ok(tools),
            }
        }

        let detail = format!("`tools/list` returned more than {MAX_TOOL_PAGES} pages; check the server's `nextCursor`");
        Err(self.protocol_error(detail))
    }

    /// Calls tool `name` and returns the `CallToolResult` object unchanged.
    ///
    /// A result with `isError: true` is a success here, because the tool ran and reported its
    /// own failure. A JSON-RPC error reply, such as an unknown tool, is
    /// [`UpstreamError::JsonRpc`]. A result without the `content` array, which every supported
    /// protocol version requires, is [`UpstreamError::Protocol`], so that an empty object is
    /// never passed on as a success.
    pub async fn call_tool(&self, name: &str, arguments: &Value) -> Result<Value, UpstreamError> {
        let params = CallToolParams { name, arguments };
        let result = self.request("tools/call", Some(&params)).await?;
        check_tool_result(&result).map_err(|detail| self.protocol_error(detail.to_owned()))?;
        Ok(result)
    }

    /// Sends `ping` and waits for the empty result.
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        self.request::<Value>("ping", None).await.map(drop)
    }

    /// Sends one request, bounded by the timeout, and returns its `result`.
    async fn request<P: Serialize>(&self, method: &str, params: Option<&P>) -> Result<Value, UpstreamError> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.inner.timeout, self.request_in_session(method, params)).await;
        let result = outcome.unwrap_or(Err(Failure::TimedOut));

        let latency_ms = started.elapsed().as_millis();
        let name = &self.inner.name;
        match &result {
            Ok(_) => {
                tracing::debug!(upstream.name = %name, rpc.method = method, latency_ms, "upstream request succeeded")
            }
            Err(failure) => {
                tracing::debug!(
                    upstream.name = %name,
                    rpc.method = method,
                    latency_ms,
                    error = ?failure,
                    "upstream request failed"
                );
            }
        }

        let waited = started.elapsed().min(self.inner.timeout);
        result.map_err(|failure| failure.into_error(&self.inner.name, round_to_millis(waited)))
    }

    /// Sends a request in the current session, opening a new session and retrying once when
    /// the server reports that the session expired.
    async fn request_in_session<P: Serialize>(&self, method: &str, params: Option<&P>) -> Result<Value, Failure> {
        let session = self.session().await?;
        match self.send_request(&session, method, params).await {
            Err(Failure::SessionExpired { .. }) => {}
            other => return other,
        }

        tracing::warn!(
            upstream.name = %self.inner.name,
            rpc.method = method,
            "upstream session expired; initialising a new session and retrying once"
        );
        self.forget(&session).await;
        let session = self.session().await?;
        self.send_request(&session, method, params).await
    }

    async fn send_request<P: Serialize>(
        &self,
        session: &Session,
        method: &str,
        params: Option<&P>,
    ) -> Result<Value, Failure> {
        let id = self.next_request_id();
        tracing::debug!(upstream.name = %self.inner.name, rpc.method = method, rpc.id = id, "sending upstream request");

        let response = self.transport().post(&Request::new(id, method, params), Some(session)).await?;
        match self.transport().read_reply(response, id).await? {
            Reply::Result(result) => Ok(result),
            Reply::Error { code, message } => Err(Failure::JsonRpc { code, message }),
        }
    }

    /// Returns the current session, initialising one if there is none.
    async fn session(&self) -> Result<Arc<Session>, Failure> {
        let mut slot = self.inner.session.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(Arc::clone(session));
        }

        let session = Arc::new(self.initialize().await?);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Drops `expired` unless another caller has already replaced it.
    async fn forget(&self, expired: &Arc<Session>) {
        let mut slot = self.inner.session.lock().await;
        if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, expired)) {
            *slot = None;
        }
    }

    async fn initialize(&self) -> Result<Session, Failure> {
        let id = self.next_request_id();
        let params = json!({
            "protocolVersion": REQUESTED_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": CLIENT_NAME, "version": env!("CARGO_PKG_VERSION") },
        });
        let response = self.transport().post(&Request::new(id, "initialize", Some(&params)), None).await?;
        let session_id = transport::session_id(&response)?;

        let result = match self.transport().read_reply(response, id).await? {
            Reply::Result(result) => result,
            Reply::Error { code, message } => return Err(Failure::JsonRpc { code, message }),
        };
        let session = Session { id: session_id, protocol_version: negotiated_version(&result)? };

        let notification = Request::<Value>::notification("notifications/initialized");
        self.transport().post(&notification, Some(&session)).await?;
        tracing::debug!(
            upstream.name = %self.inner.name,
            mcp.protocol_version = ?session.protocol_version,
            mcp.has_session_id = session.id.is_some(),
            "initialised upstream session"
        );
        Ok(session)
    }

    fn transport(&self) -> transport::Transport<'_> {
        let inner = &self.inner;
        transport::Transport { http: &inner.http, url: &inner.url, max_response_bytes: inner.max_response_bytes }
    }

    fn next_request_id(&self) -> u64 {
        self.inner.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    fn protocol_error(&self, detail: String) -> UpstreamError {
        UpstreamError::Protocol { upstream: self.inner.name.clone(), detail }
    }
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL and session id stay out, because either may carry a credential.
        f.debug_struct("UpstreamClient")
            .field("name", &self.inner.name)
            .field("timeout", &self.inner.timeout)
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// Reads the protocol version from an `initialize` result and checks that it is supported.
fn negotiated_version(result: &Value) -> Result<HeaderValue, Failure> {
    let Some(version) = result.get("protocolVersion").and_then(Value::as_str) else {
        return Err(Failure::Protocol("`initialize` result has no string `protocolVersion`".to_owned()));
    };
    let Some(supported) = SUPPORTED_PROTOCOL_VERSIONS.iter().find(|supported| **supported == version) else {
        let detail = format!(
            "server chose protocol version `{}`, which this gateway does not support; supported versions are {}",
            super::error::excerpt(version, 40),
            SUPPORTED_PROTOCOL_VERSIONS.join(", ")
        );
        return Err(Failure::Protocol(detail));
    };
    Ok(HeaderValue::from_static(supported))
}

/// Checks the shape of a `CallToolResult`: an object with a `content` array.
fn check_tool_result(result: &Value) -> Result<(), &'static str> {
    let Some(result) = result.as_object() else {
        return Err("`tools/call` result is not a JSON object");
    };
    match result.get("content") {
        Some(Value::Array(_)) => Ok(()),
        Some(_) => Err("`tools/call` result has a `content` member that is not an array"),
        None => Err("`tools/call` result has no `content` array"),
    }
}

/// Splits a `tools/list` result into its tools and the cursor of the next page.
fn split_tool_page(result: Value) -> Result<(Vec<Value>, Option<String>), String> {
    let Value::Object(mut result) = result else {
        return Err("`tools/list` result is not a JSON object".to_owned());
    };
    let Some(Value::Array(tools)) = result.remove("tools") else {
        return Err("`tools/list` result has no `tools` array".to_owned());
    };
    if let Some(index) = tools.iter().position(|tool| !tool.get("name").is_some_and(Value::is_string)) {
        return Err(format!("tool {index} of a `tools/list` page has no string `name`"));
    }

    let next_cursor = match result.remove("nextCursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(cursor),
        Some(_) => return Err("`tools/list` result has a `nextCursor` that is not a string".to_owned()),
    };
    Ok((tools, next_cursor))
}

fn round_to_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiated_version_cases() {
        let accepted = ["2025-03-26", "2025-06-18", "2025-11-25"];
        for version in accepted {
            let result = negotiated_version(&json!({ "protocolVersion": version }));
            assert_eq!(result.ok(), Some(HeaderValue::from_static(version)), "version {version}");
        }

        let rejected = [json!({ "protocolVersion": "2024-11-05" }), json!({ "protocolVersion": 20250618 }), json!({})];
        for result in rejected {
            assert!(negotiated_version(&result).is_err(), "result {result}");
        }
    }

    #[test]
    fn tool_result_cases() {
        let cases = [
            (json!({ "content": [] }), Ok(())),
            (json!({ "content": [{ "type": "text", "text": "a" }], "isError": true }), Ok(())),
            (json!({}), Err("`tools/call` result has no `content` array")),
            (json!({ "content": "a" }), Err("`tools/call` result has a `content` member that is not an array")),
            (json!({ "content": null }), Err("`tools/call` result has a `content` member that is not an array")),
            (json!("done"), Err("`tools/call` result is not a JSON object")),
        ];
        for (result, expected) in cases {
            assert_eq!(check_tool_result(&result), expected, "result {result}");
        }
    }

    #[test]
    fn tool_page_cases() {
        let page = split_tool_page(json!({ "tools": [{ "name": "a" }], "nextCursor": "c2" }));
        assert_eq!(page, Ok((vec![json!({ "name": "a" })], Some("c2".to_owned()))));

        let last = split_tool_page(json!({ "tools": [], "nextCursor": null }));
        assert_eq!(last, Ok((vec![], None)));

        let invalid = [
            (json!([]), "`tools/list` result is not a JSON object"),
            (json!({}), "`tools/list` result has no `tools` array"),
            (
                json!({ "tools": [{ "name": "a" }, { "title": "b" }] }),
                "tool 1 of a `tools/list` page has no string `name`",
            ),
            (json!({ "tools": [], "nextCursor": 2 }), "`tools/list` result has a `nextCursor` that is not a string"),
        ];
        for (result, message) in invalid {
            assert_eq!(split_tool_page(result).err().as_deref(), Some(message));
        }
    }
}
