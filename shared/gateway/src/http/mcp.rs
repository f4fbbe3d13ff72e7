//! `POST /mcp`: the Streamable HTTP MCP endpoint for models.
//!
//! Every reply is a single JSON body; the gateway opens no event streams and sends no server
//! requests. Session ids are signed tokens (see [`crate::sessions`]), so any gateway instance
//! can check them without a store read. JSON-RPC batches are rejected: MCP 2025-06-18 removed
//! them, and a batch would let one request carry calls past per-request checks. A request sent
//! as a notification, such as `tools/call` without an `id`, is rejected with 400 as the
//! Streamable HTTP transport allows, so no call runs without a response and an audit record.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcpsec_policy::AuthError;
use mcpsec_protocol::message::{InvalidMessage, Message};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::body::{BodyError, check_session_id, check_tool_name, parse_json, read_json, require_json};
use crate::audit::Route;
use crate::state::AppState;
use crate::toolcall::{self, CallOutcome, CallRequest, Caller};

/// Protocol revisions the endpoint speaks, oldest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// A request header that a model route reads: its lowercase name, the name shown in errors,
/// and whether its value is a single token, so that a comma means a joined list of values.
pub(super) type ReadHeader = (&'static str, &'static str, bool);

/// The headers that `POST /mcp` reads.
const MCP_HEADERS: [ReadHeader; 5] = [
    ("content-type", "Content-Type", false),
    ("x-model-key", "X-Model-Key", true),
    ("authorization", "Authorization", false),
    (SESSION_HEADER, "Mcp-Session-Id", true),
    (VERSION_HEADER, "MCP-Protocol-Version", true),
];

/// JSON-RPC 2.0 and MCP error codes used here.
mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Implementation-defined server error: the key was not accepted.
    pub const UNAUTHORIZED: i64 = -32001;
    /// Implementation-defined server error: the session id was not accepted.
    pub const UNKNOWN_SESSION: i64 = -32002;
    /// Implementation-defined server error: the call was denied by scope, policy or a limit.
    pub const DENIED: i64 = -32003;
    /// Implementation-defined server error: the upstream failed or timed out.
    pub const UPSTREAM: i64 = -32004;
}

/// Rejects `GET` and `DELETE` with 405, because this endpoint offers no server-sent stream
/// and its sessions end by expiring.
pub(super) async fn not_allowed() -> Response {
    let mut response = rpc_error(
        StatusCode::METHOD_NOT_ALLOWED,
        Value::Null,
        code::INVALID_REQUEST,
        "use POST for MCP requests",
        None,
    );
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Handles one JSON-RPC message.
pub(super) async fn post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Err(reason) = check_repeated_headers(&headers, &MCP_HEADERS) {
        return rpc_error(StatusCode::BAD_REQUEST, Value::Null, code::INVALID_REQUEST, &reason, None);
    }
    if let Err(BodyError { status, reason }) = require_json(&headers) {
        return rpc_error(status, Value::Null, code::INVALID_REQUEST, &reason, None);
    }
    let message = match read_json(body, state.options().max_body_bytes).await {
        Ok(message) => message,
        Err(BodyError { status, reason }) if status == StatusCode::BAD_REQUEST => {
            return rpc_error(status, Value::Null, code::PARSE_ERROR, &reason, None);
        }
        Err(BodyError { status, reason }) => {
            return rpc_error(status, Value::Null, code::INVALID_REQUEST, &reason, None);
        }
    };
    let message = match Message::parse(message) {
        Ok(message) => message,
        Err(InvalidMessage { id, reason }) => {
            return rpc_error(StatusCode::BAD_REQUEST, id, code::INVALID_REQUEST, &reason, None);
        }
    };
    if let Message::Other { method: Some(method) } = &message
        && !method.starts_with("notifications/")
    {
        let reason =
            format!("`{method}` is a request and needs an `id`; the gateway answers no request sent as a notification");
        return rpc_error(StatusCode::BAD_REQUEST, Value::Null, code::INVALID_REQUEST, &reason, None);
    }

    if let Some(version) = header_text(&headers, VERSION_HEADER)
        && !PROTOCOL_VERSIONS.contains(&version)
    {
        let reason =
            format!("unsupported MCP-Protocol-Version `{version}`; supported: {}", PROTOCOL_VERSIONS.join(", "));
        return rpc_error(StatusCode::BAD_REQUEST, message.id_or_null(), code::INVALID_REQUEST, &reason, None);
    }

    let key = model_key(&headers);
    let now = OffsetDateTime::now_utc();
    let model_id = match authenticate(&state, key, now).await {
        Ok(model_id) => model_id,
        Err(Rejection::Unavailable(reason)) => {
            let data = Some(json!({"status": "unavailable"}));
            let reason = format!("{reason}; the request was rejected and not forwarded");
            return rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                message.id_or_null(),
                code::INTERNAL_ERROR,
                &reason,
                data,
            );
        }
        Err(Rejection::Unauthorized(reason)) => return unauthorized(&state, &headers, &message, key, &reason).await,
    };

    let Message::Request { id, method, params } = message else {
        return StatusCode::ACCEPTED.into_response();
    };
    if method == "initialize" {
        return initialize(&state, &model_id, id, &params, now);
    }
    let session_id = match check_session(&state, &headers, &model_id, now) {
        Ok(session_id) => session_id,
        Err((status, reason)) => {
            return reject_session(&state, &headers, key, id, &method, &params, status, &reason).await;
        }
    };
    dispatch(&state, &model_id, key, &session_id, id, &method, &params).await
}

async fn dispatch(
    state: &AppState,
    model_id: &str,
    key: Option<&str>,
    session_id: &str,
    id: Value,
    method: &str,
    params: &Map<String, Value>,
) -> Response {
    match method {
        "ping" => rpc_result(id, json!({})),
        "tools/list" => match visible_tools(state, model_id).await {
            Ok(tools) => rpc_result(id, json!({"tools": tools})),
            Err(reason) => rpc_error(StatusCode::SERVICE_UNAVAILABLE, id, code::INTERNAL_ERROR, &reason, None),
        },
        "tools/call" => call_tool(state, key, session_id, id, params).await,
        _ => rpc_error(
            StatusCode::OK,
            id,
            code::METHOD_NOT_FOUND,
            &format!("method `{method}` is not supported by this gateway"),
            None,
        ),
    }
}

fn initialize(
    state: &AppState,
    model_id: &str,
    id: Value,
    params: &Map<String, Value>,
    now: OffsetDateTime,
) -> Response {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let Some(requested) = requested else {
        return rpc_error(
            StatusCode::OK,
            id,
            code::INVALID_PARAMS,
            "missing `protocolVersion` in initialize params",
            None,
        );
    };
    // A client that requests an unsupported revision gets the newest supported one. The MCP
    // lifecycle leaves it to the client to go on or disconnect.
    let version = if PROTOCOL_VERSIONS.contains(&requested) { requested } else { PROTOCOL_VERSIONS[2] };
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "mcpsec-gateway", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Tool calls pass through MCP-Sec Gateway: each call is checked against this model's scope and policy, and recorded.",
    });

    let session_id = state.sessions().issue(model_id, now);
    let mut response = rpc_result(id, result);
    if let Ok(value) = HeaderValue::from_str(&session_id) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

/// Lists the upstream tools this model may call. A tool whose name breaks the naming rules is
/// left out, because no call to it could pass.
async fn visible_tools(state: &AppState, model_id: &str) -> Result<Vec<Value>, String> {
    let keys = state.keys().await?;
    let policy = state.policy().await?;
    let Some(entry) = keys.get(model_id) else { return Ok(Vec::new()) };
    let tools = state
        .upstreams()
        .list_tools()
        .await
        .into_iter()
        .filter(|(name, _)| {
            check_tool_name(name).is_ok() && entry.scope.allows(name) && policy.may_allow(model_id, name)
        })
        .map(|(_, tool)| tool)
        .collect();
    Ok(tools)
}

async fn call_tool(
    state: &AppState,
    key: Option<&str>,
    session_id: &str,
    id: Value,
    params: &Map<String, Value>,
) -> Response {
    let (name, arguments) = match tool_call_params(params) {
        Ok(parsed) => parsed,
        Err(reason) => return rpc_error(StatusCode::OK, id, code::INVALID_PARAMS, &reason, None),
    };
    let empty = Value::Object(Map::new());
    let arguments = arguments.unwrap_or(&empty);

    let call = CallRequest { route: Route::Mcp, session_id, tool_name: name, arguments };
    match toolcall::handle(state, Caller::Key(key), call).await {
        CallOutcome::Completed { result, .. } => rpc_result(id, result),
        CallOutcome::Denied { reason, rules, event_id } => {
            let data = json!({"status": "denied", "reason": reason, "rules": rules, "event_id": event_id});
            rpc_error(StatusCode::OK, id, code::DENIED, &format!("denied: {reason}"), Some(data))
        }
        CallOutcome::UpstreamFailed { reason, timeout, event_id } => {
            let status = if timeout { "upstream_timeout" } else { "upstream_error" };
            let data = json!({"status": status, "reason": reason, "event_id": event_id});
            rpc_error(StatusCode::OK, id, code::UPSTREAM, &reason, Some(data))
        }
        CallOutcome::Unauthorized { reason, .. } => {
            rpc_error(StatusCode::UNAUTHORIZED, id, code::UNAUTHORIZED, &reason, None)
        }
        CallOutcome::Unavailable { reason } => rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            id,
            code::INTERNAL_ERROR,
            &reason,
            Some(json!({"status": "unavailable"})),
        ),
    }
}

/// Reads the tool name and arguments of `tools/call` params and checks the name's characters.
/// The arguments are `None` when they are absent or `null`, which means `{}`.
fn tool_call_params(params: &Map<String, Value>) -> Result<(&str, Option<&Value>), String> {
    let (name, arguments) = mcpsec_protocol::message::tool_call_params(params)?;
    check_tool_name(name)?;
    Ok((name, arguments))
}

/// Parses a `POST /mcp` body as the route does before authentication and the policy: the JSON
/// syntax, the JSON-RPC envelope and, for `tools/call`, the tool name and arguments. Returns the
/// reason that the route would send in its JSON-RPC error. It is public for the crate's `parse`
/// benchmark. The route itself reads the body with a size limit first.
pub fn check_mcp_body(body: &[u8]) -> Result<(), String> {
    let value = parse_json(body).map_err(|error| error.reason)?;
    let message = Message::parse(value).map_err(|error| error.reason)?;
    match message {
        Message::Request { method, params, .. } if method == "tools/call" => tool_call_params(&params).map(|_| ()),
        _ => Ok(()),
    }
}

/// Returns the model's key from `X-Model-Key`, or else from `Authorization: Bearer`.
fn model_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = header_text(headers, "x-model-key") {
        return Some(key);
    }
    let authorization = header_text(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a message's key was not accepted.
enum Rejection {
    /// The key is missing, unknown, expired or revoked.
    Unauthorized(String),
    /// The keys could not be loaded, so no key can be checked.
    Unavailable(String),
}

async fn authenticate(state: &AppState, key: Option<&str>, now: OffsetDateTime) -> Result<String, Rejection> {
    let keys = state.keys().await.map_err(Rejection::Unavailable)?;
    let reason = match keys.authenticate_key(key, now) {
        Ok(principal) => return Ok(principal.model_id().to_owned()),
        Err(AuthError::MissingKey) => "missing model key; send it in `X-Model-Key` or `Authorization: Bearer`",
        Err(AuthError::Expired { .. }) => "the model key has expired; ask an admin for a new key",
        Err(AuthError::Revoked { .. }) => "the model key has been revoked",
        Err(_) => "invalid model key",
    };
    Err(Rejection::Unauthorized(reason.to_owned()))
}

/// Rejects a message whose key was not accepted. A rejected `tools/call` is recorded like any
/// other call, so probing shows in the audit trail, and is never forwarded. When that
/// record fails, the reply is 503, as for any call the gateway could not record.
async fn unauthorized(
    state: &AppState,
    headers: &HeaderMap,
    message: &Message,
    key: Option<&str>,
    reason: &str,
) -> Response {
    if let Message::Request { params, .. } = message
        && message.is_tool_call()
    {
        // A name or arguments that the route would reject are not recorded: the stored event
        // must not carry a name that breaks the tool-name rule, such as one with a line break.
        let Ok((tool_name, arguments)) = tool_call_params(params) else {
            return unauthorized_reply(message, reason);
        };
        let session_id = recorded_session_id(headers);
        let empty = Value::Object(Map::new());
        let arguments = arguments.unwrap_or(&empty);
        let call = CallRequest { route: Route::Mcp, session_id, tool_name, arguments };
        if let CallOutcome::Unavailable { reason } = toolcall::record_unauthorized(state, key, call).await {
            let data = Some(json!({"status": "unavailable"}));
            let id = message.id_or_null();
            return rpc_error(StatusCode::SERVICE_UNAVAILABLE, id, code::INTERNAL_ERROR, &reason, data);
        }
    }
    unauthorized_reply(message, reason)
}

fn unauthorized_reply(message: &Message, reason: &str) -> Response {
    let mut response = rpc_error(StatusCode::UNAUTHORIZED, message.id_or_null(), code::UNAUTHORIZED, reason, None);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mcpsec\""));
    response
}

/// Answers a request whose session id was not accepted. A `tools/call` is also recorded as a
/// denied call under [`recorded_session_id`], so that the trace of the session a model tried to
/// use shows the attempt. Other methods are not tool calls and leave no record.
#[expect(clippy::too_many_arguments, reason = "the parts of one rejected request, passed by reference")]
async fn reject_session(
    state: &AppState,
    headers: &HeaderMap,
    key: Option<&str>,
    id: Value,
    method: &str,
    params: &Map<String, Value>,
    status: StatusCode,
    reason: &str,
) -> Response {
    if method == "tools/call"
        && let Ok((tool_name, arguments)) = tool_call_params(params)
    {
        let session_id = recorded_session_id(headers);
        let empty = Value::Object(Map::new());
        let arguments = arguments.unwrap_or(&empty);
        let call = CallRequest { route: Route::Mcp, session_id, tool_name, arguments };
        if let CallOutcome::Unavailable { reason } = toolcall::reject_session(state, key, call, reason).await {
            let data = Some(json!({"status": "unavailable"}));
            return rpc_error(StatusCode::SERVICE_UNAVAILABLE, id, code::INTERNAL_ERROR, &reason, data);
        }
    }
    rpc_error(status, id, code::UNKNOWN_SESSION, reason, None)
}

/// Returns the session id under which a rejected `tools/call` is recorded: the presented
/// `Mcp-Session-Id` when its characters and length are those of a session id, `invalid` when
/// they are not, and `none` when the header is missing.
fn recorded_session_id(headers: &HeaderMap) -> &str {
    match header_text(headers, SESSION_HEADER) {
        Some(presented) if check_session_id(presented).is_ok() => presented,
        Some(_) => "invalid",
        None => "none",
    }
}

fn check_session(
    state: &AppState,
    headers: &HeaderMap,
    model_id: &str,
    now: OffsetDateTime,
) -> Result<String, (StatusCode, String)> {
    let Some(session_id) = header_text(headers, SESSION_HEADER) else {
        return Err((StatusCode::BAD_REQUEST, "missing Mcp-Session-Id header; send `initialize` first".to_owned()));
    };
    state.sessions().verify(session_id, model_id, now).map_err(|error| (StatusCode::NOT_FOUND, error.to_string()))?;
    Ok(session_id.to_owned())
}

/// Rejects a request that sends one of the `read` headers more than once, or a comma-joined
/// list in a header that contains one token. The gateway cannot know which value the client
/// meant, and a proxy in front of it may have picked another one.
pub(super) fn check_repeated_headers(headers: &HeaderMap, read: &[ReadHeader]) -> Result<(), String> {
    for &(name, shown, single_token) in read {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        let count = 1 + values.count();
        if count > 1 {
            return Err(format!("header `{shown}` was sent {count} times; send it once"));
        }
        if single_token && first.as_bytes().contains(&b',') {
            return Err(format!("header `{shown}` contains a comma-separated list; send one value"));
        }
    }
    Ok(())
}

/// Returns a header's value as text. A header sent several times, or with a comma-joined
/// list, counts as absent, because the gateway cannot know which value the client meant.
/// [`check_repeated_headers`] rejects such requests before any header is read.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().map(str::trim).filter(|value| !value.is_empty() && !value.contains(','))
}

fn rpc_result(id: Value, result: Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str, data: Option<Value>) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let (Some(data), Some(object)) = (data, error.as_object_mut()) {
        object.insert("data".to_owned(), data);
    }
    (status, Json(json!({"jsonrpc": "2.0", "id": id, "error": error}))).into_response()
}
