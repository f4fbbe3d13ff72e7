//! One HTTP exchange of the Streamable HTTP transport: a POST carrying a JSON-RPC message and
//! its reply as `application/json` or `text/event-stream`.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use serde::Serialize;

use super::client::Session;
use super::error::{MAX_EXCERPT_CHARS, UpstreamError, excerpt, transport_detail};
use super::jsonrpc::{self, Reply};
use super::sse::ResponseReader;

/// Media types that a request accepts, as the transport requires of every POST.
const ACCEPTED_MEDIA_TYPES: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");

/// Header that carries the session id.
const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// Header that carries the negotiated protocol version.
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// Maximum number of error body bytes read for its excerpt.
const MAX_EXCERPT_BYTES: usize = 4096;

/// A failed exchange, before it is tied to an upstream name.
#[derive(Debug)]
pub(crate) enum Failure {
    /// HTTP 404 to a request that carried a session id.
    SessionExpired {
        /// Start of the reply body.
        body_excerpt: String,
    },
    /// A time limit ran out.
    TimedOut,
    /// The request could not be sent.
    Unreachable(String),
    /// A status other than 2xx.
    Status {
        /// Status of the reply.
        status: StatusCode,
        /// Start of the reply body.
        body_excerpt: String,
    },
    /// A reply that breaks the transport or JSON-RPC.
    Protocol(String),
    /// A JSON-RPC error response.
    JsonRpc {
        /// JSON-RPC error code.
        code: i64,
        /// JSON-RPC error message.
        message: String,
    },
}

impl Failure {
    /// Names the upstream. `waited` is the time spent on the request, reported for timeouts.
    pub(crate) fn into_error(self, upstream: &str, waited: Duration) -> UpstreamError {
        let upstream = upstream.to_owned();
        match self {
            Self::SessionExpired { body_excerpt } => {
                UpstreamError::HttpStatus { upstream, status: StatusCode::NOT_FOUND, body_excerpt }
            }
            Self::TimedOut => UpstreamError::Timeout { upstream, after: waited },
            Self::Unreachable(detail) => UpstreamError::Unreachable { upstream, detail },
            Self::Status { status, body_excerpt } => UpstreamError::HttpStatus { upstream, status, body_excerpt },
            Self::Protocol(detail) => UpstreamError::Protocol { upstream, detail },
            Self::JsonRpc { code, message } => UpstreamError::JsonRpc { upstream, code, message },
        }
    }

    /// Classifies a request that got no reply. Only a failed connection or an unusable URL means
    /// the server is unreachable. A server that closed an accepted connection is running, so
    /// the advice to check the URL would mislead.
    fn from_send(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::TimedOut
        } else if error.is_connect() || error.is_builder() {
            Self::Unreachable(transport_detail(error))
        } else {
            Self::Protocol(format!("the connection failed before a reply arrived: {}", transport_detail(error)))
        }
    }

    fn from_body(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::TimedOut
        } else {
            Self::Protocol(format!("reading the reply body failed: {}", transport_detail(error)))
        }
    }

    fn too_large(max_bytes: usize) -> Self {
        Self::Protocol(format!(
            "reply body exceeds the limit of {max_bytes} bytes; raise `max_response_bytes` if the server is trusted"
        ))
    }
}

/// The parts of a client that one exchange needs.
pub(crate) struct Transport<'a> {
    /// The HTTP client.
    pub(crate) http: &'a reqwest::Client,
    /// The MCP endpoint.
    pub(crate) url: &'a Url,
    /// Limit on the size of one reply body, in bytes.
    pub(crate) max_response_bytes: usize,
}

impl Transport<'_> {
    /// POSTs `message` with the session's headers, returning the reply if its status is 2xx.
    pub(crate) async fn post(&self, message: &impl Serialize, session: Option<&Session>) -> Result<Response, Failure> {
        let mut request = self.http.post(self.url.clone()).header(ACCEPT, ACCEPTED_MEDIA_TYPES).json(message);
        let mut has_session_id = false;
        if let Some(session) = session {
            request = request.header(PROTOCOL_VERSION, session.protocol_version.clone());
            if let Some(id) = &session.id {
                request = request.header(SESSION_ID, id.clone());
                has_session_id = true;
            }
        }

        let response = request.send().await.map_err(Failure::from_send)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }

        let body_excerpt = read_excerpt(response).await;
        if status == StatusCode::NOT_FOUND && has_session_id {
            return Err(Failure::SessionExpired { body_excerpt });
        }
        Err(Failure::Status { status, body_excerpt })
    }

    /// Reads the response to request `request_id` from a 2xx reply.
    pub(crate) async fn read_reply(&self, mut response: Response, request_id: u64) -> Result<Reply, Failure> {
        match media_type(&response).as_deref() {
            Some("application/json") => {
                let body = read_body(&mut response, self.max_response_bytes).await?;
                let message = serde_json::from_slice(&body)
                    .map_err(|error| Failure::Protocol(format!("reply is not valid JSON: {error}")))?;
                let reply = jsonrpc::find_response(message, request_id)
                    .map_err(|error| Failure::Protocol(error.to_string()))?;
                reply.ok_or_else(|| {
                    Failure::Protocol(format!("JSON reply does not contain the response to request {request_id}"))
                })
            }
            Some("text/event-stream") => read_event_stream(response, request_id, self.max_response_bytes).await,
            None if response.status() == StatusCode::ACCEPTED => Err(Failure::Protocol(format!(
                "server accepted request {request_id} with HTTP 202 but sent no response"
            ))),
            other => {
                let detail = format!(
                    "reply has content type `{}`; expected `application/json` or `text/event-stream`",
                    excerpt(other.unwrap_or("none"), 80)
                );
                Err(Failure::Protocol(detail))
            }
        }
    }
}

/// Reads the `Mcp-Session-Id` header of an `initialize` reply.
///
/// The transport allows only visible ASCII (0x21 to 0x7E) in a session id.
pub(crate) fn session_id(response: &Response) -> Result<Option<HeaderValue>, Failure> {
    let Some(id) = response.headers().get(SESSION_ID) else {
        return Ok(None);
    };
    if id.is_empty() || !id.as_bytes().iter().all(|byte| (0x21..=0x7E).contains(byte)) {
        return Err(Failure::Protocol("`Mcp-Session-Id` header must be visible ASCII characters".to_owned()));
    }
    Ok(Some(id.clone()))
}

/// Returns the lowercase media type of the reply without parameters such as `charset`.
fn media_type(response: &Response) -> Option<String> {
    let value = response.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let media_type = value.split(';').next().unwrap_or(value).trim();
    Some(media_type.to_ascii_lowercase())
}

async fn read_body(response: &mut Response, max_bytes: usize) -> Result<Vec<u8>, Failure> {
    if response.content_length().is_some_and(|length| length > max_bytes as u64) {
        return Err(Failure::too_large(max_bytes));
    }

    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::from_body)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(Failure::too_large(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads events until the response arrives, then drops the rest of the stream.
async fn read_event_stream(mut response: Response, request_id: u64, max_bytes: usize) -> Result<Reply, Failure> {
    let mut reader = ResponseReader::new(request_id);
    let mut received = 0_usize;
    while let Some(chunk) = response.chunk().await.map_err(Failure::from_body)? {
        received += chunk.len();
        if received > max_bytes {
            return Err(Failure::too_large(max_bytes));
        }
        if let Some(reply) = reader.feed(&chunk).map_err(|error| Failure::Protocol(error.to_string()))? {
            return Ok(reply);
        }
    }

    // NOTE: the stream is not resumed with a GET carrying `Last-Event-ID`. Under the requested
    // 2025-06-18 version a server should not close the stream before the response, but a
    // server that negotiates 2025-11-25 may, and its calls then fail here.
    Err(Failure::Protocol(reader.finish().to_string()))
}

/// Reads the start of an error body, ignoring read errors, because the status already shows
/// what failed.
async fn read_excerpt(mut response: Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    excerpt(&String::from_utf8_lossy(&body), MAX_EXCERPT_CHARS)
}
