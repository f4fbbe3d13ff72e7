//! JSON-RPC 2.0 messages as MCP sends them, kept as raw JSON.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::excerpt;

/// Maximum length of a JSON-RPC error message kept from a server, in characters.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 500;

/// The outcome carried by a JSON-RPC response.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The `result` member, unchanged.
    Result(Value),
    /// The `error` member.
    Error {
        /// JSON-RPC error code.
        code: i64,
        /// Error message, shortened to [`MAX_ERROR_MESSAGE_CHARS`] plus the `…` that marks a cut.
        message: String,
    },
}

/// A message that claims to be the response to our request but cannot be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The message is neither an object nor a batch array.
    #[error("message is not a JSON-RPC object or batch")]
    NotJsonRpc,

    /// The response to our request has neither `result` nor `error`, or both.
    #[error("response to request {request_id} must contain exactly one of `result` and `error`")]
    ResultOrError {
        /// Id of our request.
        request_id: u64,
    },

    /// The `error` member lacks an integer `code` or a string `message`.
    #[error("error response to request {request_id} lacks an integer `code` or a string `message`")]
    MalformedError {
        /// Id of our request.
        request_id: u64,
    },
}

/// A request or, without an id, a notification, serialized straight from borrowed parameters.
#[derive(Debug, Serialize)]
pub struct Request<'a, P: Serialize> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a P>,
}

impl<'a, P: Serialize> Request<'a, P> {
    /// Builds a request. The server's response to it carries the same `id`.
    pub fn new(id: u64, method: &'a str, params: Option<&'a P>) -> Self {
        Self { jsonrpc: "2.0", id: Some(id), method, params }
    }

    /// Builds a notification, which has no id and gets no response.
    pub fn notification(method: &'a str) -> Self {
        Self { jsonrpc: "2.0", id: None, method, params: None }
    }
}

/// Finds the response to request `request_id` in one message or batch.
///
/// Server requests, notifications and responses to other ids are skipped, so the result is
/// `Ok(None)` when the message holds only those. An error response with a `null` id counts as
/// the response, because a server sends that when it could not read the request's id, and each
/// HTTP request carries one JSON-RPC request.
pub fn find_response(message: Value, request_id: u64) -> Result<Option<Reply>, MessageError> {
    match message {
        Value::Array(batch) => {
            for element in batch {
                if let Some(reply) = find_response(element, request_id)? {
                    return Ok(Some(reply));
                }
            }
            Ok(None)
        }
        Value::Object(object) => response_in_object(object, request_id),
        _ => Err(MessageError::NotJsonRpc),
    }
}

fn response_in_object(mut object: Map<String, Value>, request_id: u64) -> Result<Option<Reply>, MessageError> {
    if object.contains_key("method") {
        return Ok(None);
    }

    let is_ours = match object.get("id") {
        Some(Value::Number(id)) => id.as_u64() == Some(request_id),
        Some(Value::Null) => object.contains_key("error"),
        _ => false,
    };
    if !is_ours {
        return Ok(None);
    }

    match (object.remove("result"), object.remove("error")) {
        (Some(result), None) => Ok(Some(Reply::Result(result))),
        (None, Some(error)) => error_reply(&error, request_id).map(Some),
        _ => Err(MessageError::ResultOrError { request_id }),
    }
}

fn error_reply(error: &Value, request_id: u64) -> Result<Reply, MessageError> {
    let code = error.get("code").and_then(Value::as_i64);
    let message = error.get("message").and_then(Value::as_str);
    match (code, message) {
        (Some(code), Some(message)) => Ok(Reply::Error { code, message: excerpt(message, MAX_ERROR_MESSAGE_CHARS) }),
        _ => Err(MessageError::MalformedError { request_id }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn request_serialization() -> Result<(), serde_json::Error> {
        let params = json!({"cursor": "c1"});
        let request = serde_json::to_string(&Request::new(4, "tools/list", Some(&params)))?;
        assert_eq!(request, r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"cursor":"c1"}}"#);

        let ping = serde_json::to_string(&Request::<Value>::new(5, "ping", None))?;
        assert_eq!(ping, r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#);

        let notification = serde_json::to_string(&Request::<Value>::notification("notifications/initialized"))?;
        assert_eq!(notification, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        Ok(())
    }

    #[test]
    fn find_response_cases() {
        let cases = [
            (json!({"jsonrpc": "2.0", "id": 7, "result": {"ok": true}}), Ok(Some(Reply::Result(json!({"ok": true}))))),
            (json!({"jsonrpc": "2.0", "id": 8, "result": {}}), Ok(None)),
            (json!({"jsonrpc": "2.0", "id": "7", "result": {}}), Ok(None)),
            (json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}), Ok(None)),
            (json!({"jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage"}), Ok(None)),
            (
                json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "no such method"}}),
                Ok(Some(Reply::Error { code: -32601, message: "no such method".to_owned() })),
            ),
            (
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}),
                Ok(Some(Reply::Error { code: -32700, message: "parse error".to_owned() })),
            ),
            (json!({"jsonrpc": "2.0", "id": null, "result": {}}), Ok(None)),
            (
                json!([{"jsonrpc": "2.0", "method": "notifications/message"}, {"jsonrpc": "2.0", "id": 7, "result": []}]),
                Ok(Some(Reply::Result(json!([])))),
            ),
            (json!({"jsonrpc": "2.0", "id": 7}), Err(MessageError::ResultOrError { request_id: 7 })),
            (
                json!({"jsonrpc": "2.0", "id": 7, "result": {}, "error": {}}),
                Err(MessageError::ResultOrError { request_id: 7 }),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 7, "error": {"code": "x"}}),
                Err(MessageError::MalformedError { request_id: 7 }),
            ),
            (json!("hello"), Err(MessageError::NotJsonRpc)),
        ];
        for (message, expected) in cases {
            let rendered = message.to_string();
            assert_eq!(find_response(message, 7), expected, "message {rendered}");
        }
    }

    #[test]
    fn error_message_is_shortened() -> Result<(), String> {
        let long = "x".repeat(2 * MAX_ERROR_MESSAGE_CHARS);
        let message = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": long}});
        let Ok(Some(Reply::Error { message, .. })) = find_response(message, 1) else {
            return Err("expected an error reply".to_owned());
        };
        assert_eq!(message.chars().count(), MAX_ERROR_MESSAGE_CHARS + 1);
        Ok(())
    }
}
