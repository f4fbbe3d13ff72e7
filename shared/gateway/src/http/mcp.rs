//! `POST /mcp`: the Streamable HTTP MCP endpoint for models.
//!
//! Every reply is a single JSON body; the gateway opens no event streams and sends no server
//! requests. Session ids are signed tokens (see [`crate::sessions`]), so any gateway instance
//! can check them without a store read. JSON-RPC batches are rejected: MCP 2025-06-18 removed
//! them, and a batch would let one request carry calls past per-request checks.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcpsec_policy::AuthError;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::body::{BodyError, check_tool_name, parse_json, read_json, require_json};
use crate::audit::Route;
use crate::state::AppState;
use crate::toolcall::{self, CallOutcome, CallRequest, Caller};

/// Protocol revisions the endpoint speaks, oldest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

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
        Err((id, reason)) => return rpc_error(StatusCode::BAD_REQUEST, id, code::INVALID_REQUEST, &reason, None),
    };

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
        Err((status, reason)) => return rpc_error(status, id, code::UNKNOWN_SESSION, &reason, None),
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

/// A JSON-RPC message after the envelope checks.
enum Message {
    Request {
        id: Value,
        method: String,
        params: Map<String, Value>,
    },
    /// A notification or a response from the client, accepted with 202 and no body.
    Other {
        method: Option<String>,
    },
}

impl Message {
    fn parse(value: Value) -> Result<Self, (Value, String)> {
        let object = match value {
            Value::Object(object) => object,
            Value::Array(_) => {
                return Err((
                    Value::Null,
                    "JSON-RPC batches are not supported; send one message per request".to_owned(),
                ));
            }
            _ => return Err((Value::Null, "a JSON-RPC message must be a JSON object".to_owned())),
        };
        let id = object.get("id").cloned();
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err((
                id.unwrap_or(Value::Null),
                "missing or wrong `jsonrpc` member; it must be \"2.0\"".to_owned(),
            ));
        }
        if let Some(id) = &id
            && !(id.is_string() || id.is_number() || id.is_null())
        {
            return Err((Value::Null, "`id` must be a string or a number".to_owned()));
        }

        let method = match object.get("method") {
            Some(Value::String(method)) => Some(method.clone()),
            Some(_) => return Err((id.unwrap_or(Value::Null), "`method` must be a string".to_owned())),
            None => None,
        };
        let params = match object.get("params") {
            Some(Value::Object(params)) => params.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err((id.unwrap_or(Value::Null), "`params` must be an object".to_owned())),
        };
        match (id, method) {
            (Some(Value::Null), Some(_)) => Err((Value::Null, "`id` must not be null in a request".to_owned())),
            (Some(id), Some(method)) => Ok(Self::Request { id, method, params }),
            (None, method @ Some(_)) => Ok(Self::Other { method }),
            (Some(_), None) if object.contains_key("result") || object.contains_key("error") => {
                Ok(Self::Other { method: None })
            }
            (id, None) => Err((id.unwrap_or(Value::Null), "missing `method`".to_owned())),
        }
    }

    fn id_or_null(&self) -> Value {
        match self {
            Self::Request { id, .. } => id.clone(),
            Self::Other { .. } => Value::Null,
        }
    }

    fn is_tool_call(&self) -> bool {
        match self {
            Self::Request { method, .. } => method == "tools/call",
            Self::Other { method } => method.as_deref() == Some("tools/call"),
        }
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

/// Reads the tool name and arguments of `tools/call` params. The arguments are `None` when
/// they are absent or `null`, which means `{}`.
fn tool_call_params(params: &Map<String, Value>) -> Result<(&str, Option<&Value>), String> {
    let name = match params.get("name") {
        Some(Value::String(name)) => name.as_str(),
        Some(_) => return Err("`name` must be a string".to_owned()),
        None => return Err("missing `name` in tools/call params".to_owned()),
    };
    check_tool_name(name)?;
    match params.get("arguments") {
        None | Some(Value::Null) => Ok((name, None)),
        Some(arguments @ Value::Object(_)) => Ok((name, Some(arguments))),
        Some(_) => Err("`arguments` must be an object".to_owned()),
    }
}

/// Parses a `POST /mcp` body as the route does before authentication and the policy: the JSON
/// syntax, the JSON-RPC envelope and, for `tools/call`, the tool name and arguments. Returns the
/// reason that the route would send in its JSON-RPC error. It is public for the crate's `parse`
/// benchmark. The route itself reads the body with a size limit first.
pub fn check_mcp_body(body: &[u8]) -> Result<(), String> {
    let value = parse_json(body).map_err(|error| error.reason)?;
    let message = Message::parse(value).map_err(|(_, reason)| reason)?;
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
/// other call, through the shared call path, so probing shows in the audit trail.
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
        let tool_name = params.get("name").and_then(Value::as_str).unwrap_or_default();
        let session_id = header_text(headers, SESSION_HEADER).unwrap_or("none");
        let empty = Value::Object(Map::new());
        let arguments = params.get("arguments").filter(|value| value.is_object()).unwrap_or(&empty);
        let call = CallRequest { route: Route::Mcp, session_id, tool_name, arguments };
        toolcall::handle(state, Caller::Key(key), call).await;
    }
    let mut response = rpc_error(StatusCode::UNAUTHORIZED, message.id_or_null(), code::UNAUTHORIZED, reason, None);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mcpsec\""));
    response
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

/// Returns a header's value as text. A header sent several times, or with a comma-joined
/// list, counts as absent, because the gateway cannot know which value the client meant.
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
