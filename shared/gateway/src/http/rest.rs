//! `POST /mcp/toolcall`: the original REST contract.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body::{BodyError, check_session_id, check_tool_name, parse_json, read_json, require_json};
use super::mcp::{ReadHeader, check_repeated_headers};
use crate::audit::Route;
use crate::state::AppState;
use crate::toolcall::{self, CallOutcome, CallRequest, Caller};

/// The headers that `POST /mcp/toolcall` reads, in the form of [`ReadHeader`].
const REST_HEADERS: [ReadHeader; 2] = [("content-type", "Content-Type", false), ("x-model-key", "X-Model-Key", true)];

/// Handles a REST tool call.
pub(super) async fn toolcall(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Err(reason) = check_repeated_headers(&headers, &REST_HEADERS) {
        return reply(StatusCode::BAD_REQUEST, "invalid_request", &reason);
    }
    if let Err(error) = require_json(&headers) {
        return reply(error.status, "invalid_request", &error.reason);
    }
    let value = match read_json(body, state.options().max_body_bytes).await {
        Ok(value) => value,
        Err(BodyError { status, reason }) => return reply(status, "invalid_request", &reason),
    };
    let fields = match Fields::from_json(&value) {
        Ok(fields) => fields,
        Err(reason) => return reply(StatusCode::BAD_REQUEST, "invalid_request", &reason),
    };

    let key = headers.get("x-model-key").and_then(|value| value.to_str().ok());
    let caller = Caller::Claimed { model_id: fields.model_id, key };
    let call = CallRequest {
        route: Route::Rest,
        session_id: fields.session_id,
        tool_name: fields.tool_name,
        arguments: fields.input,
    };
    respond(toolcall::handle(&state, caller, call).await)
}

/// Parses a `POST /mcp/toolcall` body as the route does before authentication and the policy:
/// the JSON syntax, the four fields and the characters of `session_id` and `tool_name`. Returns
/// the reason that the route would send with status 400. It is public for the crate's `parse`
/// benchmark. The route itself reads the body with a size limit first.
pub fn check_toolcall_body(body: &[u8]) -> Result<(), String> {
    let value = parse_json(body).map_err(|error| error.reason)?;
    Fields::from_json(&value).map(|_| ())
}

struct Fields<'a> {
    model_id: &'a str,
    session_id: &'a str,
    tool_name: &'a str,
    input: &'a Value,
}

impl<'a> Fields<'a> {
    fn from_json(value: &'a Value) -> Result<Self, String> {
        let Some(object) = value.as_object() else {
            return Err(
                "the body must be a JSON object with `model_id`, `session_id`, `tool_name` and `input`".to_owned()
            );
        };
        let text = |name: &str| match object.get(name) {
            Some(Value::String(text)) => Ok(text.as_str()),
            Some(_) => Err(format!("field `{name}` must be a string")),
            None => Err(format!("missing field `{name}`")),
        };
        let model_id = text("model_id")?;
        let session_id = text("session_id")?;
        let tool_name = text("tool_name")?;
        check_session_id(session_id)?;
        check_tool_name(tool_name)?;
        // The claimed model id is stored in the audit event of a rejected key, so it gets the
        // same character rule as stored model ids; a line break in it could forge a log line.
        mcpsec_policy::names::check_model_id(model_id).map_err(|error| format!("invalid `model_id`: {error}"))?;
        let input = match object.get("input") {
            Some(input @ Value::Object(_)) => input,
            Some(_) => return Err("field `input` must be a JSON object of tool arguments".to_owned()),
            None => return Err("missing field `input`; send `{}` for a tool without arguments".to_owned()),
        };
        Ok(Self { model_id, session_id, tool_name, input })
    }
}

fn respond(outcome: CallOutcome) -> Response {
    match outcome {
        CallOutcome::Completed { result, event_id } => {
            (StatusCode::OK, Json(json!({"status": "ok", "result": result, "event_id": event_id}))).into_response()
        }
        CallOutcome::Unauthorized { reason, .. } => reply(StatusCode::UNAUTHORIZED, "unauthorized", &reason),
        CallOutcome::Denied { reason, rules, event_id } => {
            let body = json!({"status": "denied", "reason": reason, "rules": rules, "event_id": event_id});
            (StatusCode::FORBIDDEN, Json(body)).into_response()
        }
        CallOutcome::UpstreamFailed { reason, timeout, event_id } => {
            let (status, label) = if timeout {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
            } else {
                (StatusCode::BAD_GATEWAY, "upstream_error")
            };
            (status, Json(json!({"status": label, "reason": reason, "event_id": event_id}))).into_response()
        }
        CallOutcome::Unavailable { reason } => reply(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &reason),
    }
}

fn reply(status: StatusCode, label: &str, reason: &str) -> Response {
    (status, Json(json!({"status": label, "reason": reason}))).into_response()
}
