//! Parses the fuzzer's input as a `POST /mcp` body, as the route does before authentication:
//! JSON syntax, then the JSON-RPC envelope, then the `tools/call` params.
//!
//! An accepted message must carry exactly the members it was read from, survive a round trip
//! through its JSON form, and be classified the same way on every parse. A numeric request id
//! must keep the digits the client sent, because the client matches the response by them. A rejected message
//! must still give an id that a JSON-RPC error response may carry: a string, a number or `null`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpsec_protocol::message::{Message, tool_call_params};
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };

    let parsed = Message::parse(value.clone());
    assert_eq!(parsed, Message::parse(value.clone()), "parsing twice differs");
    match parsed {
        Ok(message) => check_message(&message, &value, data),
        Err(error) => {
            assert!(error.id.is_string() || error.id.is_number() || error.id.is_null(), "error id {}", error.id);
            let sent = value.get("id").unwrap_or(&Value::Null);
            assert!(error.id.is_null() || &error.id == sent, "error id {} is not the message's id", error.id);
            assert!(!error.reason.is_empty());
        }
    }
});

fn check_message(message: &Message, value: &Value, data: &[u8]) {
    let Some(object) = value.as_object() else { panic!("accepted a message that is not an object: {value}") };
    assert_eq!(object.get("jsonrpc"), Some(&json!("2.0")));
    assert_eq!(message.is_tool_call(), object.get("method") == Some(&json!("tools/call")));

    match message {
        Message::Request { id, method, params } => {
            assert!(id.is_string() || id.is_number(), "request id {id}");
            assert_eq!(Some(id), object.get("id"));
            assert_eq!(message.id_or_null(), *id);
            if id.is_number() {
                let digits = id.to_string();
                assert!(
                    data.windows(digits.len()).any(|window| window == digits.as_bytes()),
                    "id {id} is not in the body"
                );
            }
            assert_eq!(object.get("method"), Some(&json!(method)));
            let expected_params = match object.get("params") {
                Some(Value::Object(sent)) => sent.clone(),
                _ => Map::new(),
            };
            assert_eq!(params, &expected_params);

            let rendered = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            assert_eq!(Message::parse(rendered).as_ref(), Ok(message), "round trip changes the request");
            if method == "tools/call" {
                check_tool_call(params);
            }
        }
        Message::Other { method: Some(method) } => {
            assert!(!object.contains_key("id"), "a message with an id was taken for a notification");
            assert_eq!(object.get("method"), Some(&json!(method)));
            assert_eq!(message.id_or_null(), Value::Null);
        }
        Message::Other { method: None } => {
            assert!(object.contains_key("id"), "a response without an id");
            assert!(!object.contains_key("method"), "a request was taken for a response");
            assert!(object.contains_key("result") || object.contains_key("error"), "a response without an outcome");
        }
    }
}

fn check_tool_call(params: &Map<String, Value>) {
    let Ok((name, arguments)) = tool_call_params(params) else { return };
    assert_eq!(params.get("name"), Some(&json!(name)));
    match arguments {
        Some(arguments) => {
            assert!(arguments.is_object());
            assert_eq!(params.get("arguments"), Some(arguments));
        }
        None => assert!(params.get("arguments").is_none_or(Value::is_null)),
    }
}
