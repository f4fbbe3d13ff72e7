//! JSON-RPC 2.0 messages that an MCP client sends to the server, with the envelope checks of
//! `POST /mcp`.
//!
//! Batches are rejected: MCP 2025-06-18 removed them, and a batch would let one request carry
//! calls past per-request checks. The tool-name character rules are not checked here, because
//! they belong to the policy. Callers check the name that [`tool_call_params`] returns.

use serde_json::{Map, Value};

/// A JSON-RPC message after the envelope checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request, which gets a response with the same `id`.
    Request {
        /// The request id: a string or an integer.
        id: Value,
        /// The method name.
        method: String,
        /// The `params` object; empty when the member is absent or `null`.
        params: Map<String, Value>,
    },
    /// A notification or a response from the client, which the server accepts with no reply.
    Other {
        /// The method of a notification; `None` for a response.
        method: Option<String>,
    },
}

/// A message rejected by the envelope checks, with what the JSON-RPC error reply needs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidMessage {
    /// The id for the error reply: the message's id when it could be read, else `null`.
    pub id: Value,
    /// The reason for the rejection, sent as the error message.
    pub reason: String,
}

impl InvalidMessage {
    fn new(id: Option<Value>, reason: &str) -> Self {
        Self { id: id.unwrap_or(Value::Null), reason: reason.to_owned() }
    }
}

impl Message {
    /// Checks the JSON-RPC envelope of one parsed message: an object with `jsonrpc: "2.0"`, a
    /// string or integer `id`, a string `method` and an object `params`.
    ///
    /// A message with an `id` and no `method` is a response when it has `result` or `error`.
    pub fn parse(value: Value) -> Result<Self, InvalidMessage> {
        let object = match value {
            Value::Object(object) => object,
            Value::Array(_) => {
                return Err(InvalidMessage::new(
                    None,
                    "JSON-RPC batches are not supported; send one message per request",
                ));
            }
            _ => return Err(InvalidMessage::new(None, "a JSON-RPC message must be a JSON object")),
        };
        // The id is checked first, because every later error reply echoes it, and a reply
        // id must be a string, an integer or null.
        let id = object.get("id").cloned();
        if let Some(id) = &id
            && !(id.is_string() || is_integer(id) || id.is_null())
        {
            return Err(InvalidMessage::new(None, "`id` must be a string or an integer"));
        }
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(InvalidMessage::new(id, "missing or wrong `jsonrpc` member; it must be \"2.0\""));
        }

        let method = match object.get("method") {
            Some(Value::String(method)) => Some(method.clone()),
            Some(_) => return Err(InvalidMessage::new(id, "`method` must be a string")),
            None => None,
        };
        let params = match object.get("params") {
            Some(Value::Object(params)) => params.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(InvalidMessage::new(id, "`params` must be an object")),
        };
        match (id, method) {
            (Some(Value::Null), Some(_)) => Err(InvalidMessage::new(None, "`id` must not be null in a request")),
            (Some(id), Some(method)) => Ok(Self::Request { id, method, params }),
            (None, method @ Some(_)) => Ok(Self::Other { method }),
            (Some(_), None) if object.contains_key("result") || object.contains_key("error") => {
                Ok(Self::Other { method: None })
            }
            (id, None) => Err(InvalidMessage::new(id, "missing `method`")),
        }
    }

    /// Returns the id for the response: the request's id, or `null` for other messages.
    pub fn id_or_null(&self) -> Value {
        match self {
            Self::Request { id, .. } => id.clone(),
            Self::Other { .. } => Value::Null,
        }
    }

    /// Returns `true` for a `tools/call` request or notification.
    pub fn is_tool_call(&self) -> bool {
        match self {
            Self::Request { method, .. } => method == "tools/call",
            Self::Other { method } => method.as_deref() == Some("tools/call"),
        }
    }
}

/// Returns `true` for a JSON integer with a 64-bit value. MCP allows only strings and integers
/// as request ids. A fraction, or an integer too large for 64 bits, would be written back in
/// other digits (`1e30` for `1000000000000000000000000000000`), so the client could not match
/// the response to its request.
fn is_integer(id: &Value) -> bool {
    id.is_i64() || id.is_u64()
}

/// Reads the tool name and arguments of `tools/call` params. The arguments are `None` when
/// they are absent or `null`, which means `{}`.
///
/// Only the JSON types are checked, so the caller still checks the characters of the name.
pub fn tool_call_params(params: &Map<String, Value>) -> Result<(&str, Option<&Value>), String> {
    let name = match params.get("name") {
        Some(Value::String(name)) => name.as_str(),
        Some(_) => return Err("`name` must be a string".to_owned()),
        None => return Err("missing `name` in tools/call params".to_owned()),
    };
    match params.get("arguments") {
        None | Some(Value::Null) => Ok((name, None)),
        Some(arguments @ Value::Object(_)) => Ok((name, Some(arguments))),
        Some(_) => Err("`arguments` must be an object".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(id: Value, method: &str, params: Value) -> Result<Message, InvalidMessage> {
        let params = params.as_object().cloned().expect("params are an object");
        Ok(Message::Request { id, method: method.to_owned(), params })
    }

    fn invalid(id: Value, reason: &str) -> Result<Message, InvalidMessage> {
        Err(InvalidMessage::new(Some(id), reason))
    }

    #[test]
    fn parse_cases() {
        let cases = [
            (json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}), request(json!(1), "ping", json!({}))),
            (
                json!({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "x"}}),
                request(json!("a"), "tools/call", json!({"name": "x"})),
            ),
            (json!({"jsonrpc": "2.0", "id": 2, "method": "m", "params": null}), request(json!(2), "m", json!({}))),
            (
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                Ok(Message::Other { method: Some("notifications/initialized".to_owned()) }),
            ),
            (json!({"jsonrpc": "2.0", "id": 3, "result": {}}), Ok(Message::Other { method: None })),
            (json!({"jsonrpc": "2.0", "id": null, "error": {}}), Ok(Message::Other { method: None })),
            (
                json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
                invalid(Value::Null, "JSON-RPC batches are not supported; send one message per request"),
            ),
            (json!("ping"), invalid(Value::Null, "a JSON-RPC message must be a JSON object")),
            (
                json!({"jsonrpc": "1.0", "id": 4, "method": "ping"}),
                invalid(json!(4), "missing or wrong `jsonrpc` member; it must be \"2.0\""),
            ),
            (
                json!({"jsonrpc": "2.0", "id": [1], "method": "ping"}),
                invalid(Value::Null, "`id` must be a string or an integer"),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
                invalid(Value::Null, "`id` must be a string or an integer"),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1e30, "method": "ping"}),
                invalid(Value::Null, "`id` must be a string or an integer"),
            ),
            (json!({"jsonrpc": "2.0", "id": -7, "method": "ping"}), request(json!(-7), "ping", json!({}))),
            (json!({"jsonrpc": "2.0", "id": u64::MAX, "method": "ping"}), request(json!(u64::MAX), "ping", json!({}))),
            (
                json!({"jsonrpc": "1.0", "id": {"n": [1]}, "method": "ping"}),
                invalid(Value::Null, "`id` must be a string or an integer"),
            ),
            (json!({"jsonrpc": "2.0", "id": 5, "method": 5}), invalid(json!(5), "`method` must be a string")),
            (
                json!({"jsonrpc": "2.0", "id": 6, "method": "m", "params": [1]}),
                invalid(json!(6), "`params` must be an object"),
            ),
            (
                json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
                invalid(Value::Null, "`id` must not be null in a request"),
            ),
            (json!({"jsonrpc": "2.0", "id": 7}), invalid(json!(7), "missing `method`")),
            (json!({"jsonrpc": "2.0"}), invalid(Value::Null, "missing `method`")),
        ];
        for (value, expected) in cases {
            let rendered = value.to_string();
            assert_eq!(Message::parse(value), expected, "message {rendered}");
        }
    }

    #[test]
    fn tool_call_detection() -> Result<(), InvalidMessage> {
        let call = Message::parse(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}))?;
        assert!(call.is_tool_call());
        assert_eq!(call.id_or_null(), json!(1));

        let notification = Message::parse(json!({"jsonrpc": "2.0", "method": "tools/call"}))?;
        assert!(notification.is_tool_call());
        assert_eq!(notification.id_or_null(), Value::Null);

        let list = Message::parse(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))?;
        assert!(!list.is_tool_call());
        Ok(())
    }

    #[test]
    fn tool_call_params_cases() {
        let arguments = json!({"q": 1});
        let cases = [
            (json!({"name": "search.web"}), Ok(("search.web", None))),
            (json!({"name": "search.web", "arguments": null}), Ok(("search.web", None))),
            (json!({"name": "search.web", "arguments": {"q": 1}}), Ok(("search.web", Some(&arguments)))),
            (json!({"name": "bad name"}), Ok(("bad name", None))),
            (json!({}), Err("missing `name` in tools/call params".to_owned())),
            (json!({"name": 1}), Err("`name` must be a string".to_owned())),
            (json!({"name": "x", "arguments": [1]}), Err("`arguments` must be an object".to_owned())),
        ];
        for (params, expected) in cases {
            let params = params.as_object().expect("params are an object");
            assert_eq!(tool_call_params(params), expected, "params {params:?}");
        }
    }
}
