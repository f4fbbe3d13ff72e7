//! Invalid requests over REST and MCP are rejected with the specified status and error, and
//! none of them reaches the upstream.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::support::{FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, ReferenceServer};

/// `MAX_BODY_BYTES` of the gateways in these tests.
const BODY_LIMIT: usize = 4096;
const JSON: &str = "application/json";

/// Builds a message longer than [`BODY_LIMIT`].
fn oversized_message() -> String {
    "a".repeat(BODY_LIMIT + 1)
}

fn small_gateway(reference: &ReferenceServer) -> Result<Gateway> {
    Gateway::start(GatewayOptions {
        upstream_url: Some(reference.url().to_owned()),
        max_body_bytes: Some(BODY_LIMIT),
        ..GatewayOptions::default()
    })
}

/// One invalid REST request and the rejection it must get.
struct RestCase {
    name: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    /// Text that the `reason` must contain, such as the field name.
    reason_contains: &'static str,
}

fn rest_cases() -> Vec<RestCase> {
    let session = "bad-input-rest";
    let echo = |input: Value| {
        json!({"model_id": FULL_MODEL, "session_id": session, "tool_name": "echo", "input": input}).to_string()
    };
    let without = |field: &str| {
        let mut body =
            json!({"model_id": FULL_MODEL, "session_id": session, "tool_name": "echo", "input": {"message": "hi"}});
        if let Some(object) = body.as_object_mut() {
            object.remove(field);
        }
        body.to_string()
    };
    let with = |field: &str, value: Value| {
        let mut body =
            json!({"model_id": FULL_MODEL, "session_id": session, "tool_name": "echo", "input": {"message": "hi"}});
        if let Some(object) = body.as_object_mut() {
            object.insert(field.to_owned(), value);
        }
        body.to_string()
    };
    let case = |name, content_type, body, status, reason_contains| RestCase {
        name,
        content_type,
        body,
        status,
        reason_contains,
    };

    vec![
        case(
            "malformed JSON",
            Some(JSON),
            r#"{"model_id": "full", "session_id": "#.to_owned(),
            400,
            "line 1 column 35",
        ),
        case("JSON array", Some(JSON), "[1, 2]".to_owned(), 400, "JSON object"),
        case("missing model_id", Some(JSON), without("model_id"), 400, "`model_id`"),
        case("missing session_id", Some(JSON), without("session_id"), 400, "`session_id`"),
        case("missing tool_name", Some(JSON), without("tool_name"), 400, "`tool_name`"),
        case("missing input", Some(JSON), without("input"), 400, "`input`"),
        case("model_id is a number", Some(JSON), with("model_id", json!(7)), 400, "`model_id`"),
        case("tool_name is a number", Some(JSON), with("tool_name", json!(5)), 400, "`tool_name`"),
        case("input is a string", Some(JSON), with("input", json!("hi")), 400, "`input`"),
        case("tool_name with a space", Some(JSON), with("tool_name", json!("ec ho")), 400, "`tool_name`"),
        case("session_id with a slash", Some(JSON), with("session_id", json!("a/b")), 400, "`session_id`"),
        case(
            "model_id with a line break",
            Some(JSON),
            with(
                "model_id",
                json!(
                    "full
INFO forged"
                ),
            ),
            400,
            "`model_id`",
        ),
        case("body over MAX_BODY_BYTES", Some(JSON), echo(json!({"message": oversized_message()})), 413, "4096"),
        case("text/plain", Some("text/plain"), echo(json!({"message": "plain"})), 415, "application/json"),
        case("no content type", None, echo(json!({"message": "untyped"})), 415, "application/json"),
    ]
}

#[tokio::test]
async fn rest_rejects_bad_bodies_before_upstream() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = small_gateway(&reference)?;

    for case in rest_cases() {
        let key_header = ("x-model-key", FULL_KEY);
        let headers: Vec<(&str, &str)> = match case.content_type {
            Some(content_type) => vec![key_header, ("content-type", content_type)],
            None => vec![key_header],
        };
        let reply = gateway.post("/mcp/toolcall", &headers, case.body.into_bytes()).await?;
        let name = case.name;
        assert_eq!(reply.status, case.status, "{name}: status: {}", reply.text);
        assert_eq!(reply.json["status"], "invalid_request", "{name}: body status: {}", reply.text);
        let reason = reply.json["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(case.reason_contains),
            "{name}: reason contains `{}`: {}",
            case.reason_contains,
            reply.text
        );
    }

    let sessions = gateway.sessions().await?;
    assert!(sessions.is_empty(), "no rejected request is recorded as a call: {sessions:?}");
    Ok(())
}

/// One MCP message and the reply it must get.
struct McpCase {
    name: &'static str,
    content_type: &'static str,
    body: String,
    status: u16,
    /// The JSON-RPC reply: the `id` and either `Ok(())` for a result or `Err(code)`.
    reply: Option<(Value, Result<(), i64>)>,
}

fn call_message(id: Option<Value>, message: &str) -> Value {
    let mut call = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo", "arguments": {"message": message}}});
    if let (Some(id), Some(object)) = (id, call.as_object_mut()) {
        object.insert("id".to_owned(), id);
    }
    call
}

fn mcp_cases() -> Vec<McpCase> {
    let case = |name, content_type, body: Value, status, reply| McpCase {
        name,
        content_type,
        body: body.to_string(),
        status,
        reply,
    };
    let params = |params: Value| json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params});
    let invalid = |id: Value| Some((id, Err(-32600)));

    vec![
        McpCase {
            name: "malformed JSON",
            content_type: JSON,
            body: r#"{"jsonrpc": "2.0", "id": 1,"#.to_owned(),
            status: 400,
            reply: Some((Value::Null, Err(-32700))),
        },
        case("text/plain", "text/plain", call_message(Some(json!(2)), "plain"), 415, invalid(Value::Null)),
        case(
            "body over MAX_BODY_BYTES",
            JSON,
            call_message(Some(json!(3)), &oversized_message()),
            413,
            invalid(Value::Null),
        ),
        case("batch", JSON, json!([call_message(Some(json!(4)), "batch")]), 400, invalid(Value::Null)),
        case("id null", JSON, call_message(Some(Value::Null), "id null"), 400, invalid(Value::Null)),
        case("id object", JSON, call_message(Some(json!({"n": 1})), "id object"), 400, invalid(Value::Null)),
        case(
            "id array and wrong jsonrpc",
            JSON,
            json!({"jsonrpc": "1.0", "id": [1], "method": "ping"}),
            400,
            invalid(Value::Null),
        ),
        case(
            "jsonrpc missing",
            JSON,
            json!({"id": 6, "method": "tools/call", "params": {"name": "echo"}}),
            400,
            invalid(json!(6)),
        ),
        case("params not an object", JSON, params(json!(["echo"])), 400, invalid(json!(5))),
        case(
            "name missing",
            JSON,
            params(json!({"arguments": {"message": "no name"}})),
            200,
            Some((json!(5), Err(-32602))),
        ),
        case("name is a number", JSON, params(json!({"name": 5})), 200, Some((json!(5), Err(-32602)))),
        case(
            "arguments is a string",
            JSON,
            params(json!({"name": "echo", "arguments": "x"})),
            200,
            Some((json!(5), Err(-32602))),
        ),
        case(
            "unknown method",
            JSON,
            json!({"jsonrpc": "2.0", "id": 7, "method": "resources/list"}),
            200,
            Some((json!(7), Err(-32601))),
        ),
        case("notification", JSON, json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), 202, None),
        case("tools/call as a notification", JSON, call_message(None, "notification"), 400, invalid(Value::Null)),
        case("id 0", JSON, call_message(Some(json!(0)), "id zero"), 200, Some((json!(0), Ok(())))),
        case("id empty string", JSON, call_message(Some(json!("")), "id empty"), 200, Some((json!(""), Ok(())))),
    ]
}

/// Sends `initialize` and returns the session id from the `Mcp-Session-Id` header.
async fn initialize(gateway: &Gateway) -> Result<String> {
    let message = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "mcpsec-e2e", "version": "0"}}
    });
    let headers =
        [("content-type", JSON), ("accept", "application/json, text/event-stream"), ("x-model-key", FULL_KEY)];
    let reply = gateway.post("/mcp", &headers, message.to_string().into_bytes()).await?;
    if reply.status != 200 {
        bail!("initialize returned {}: {}", reply.status, reply.text);
    }
    match reply.headers.get("mcp-session-id").and_then(|value| value.to_str().ok()) {
        Some(session_id) => Ok(session_id.to_owned()),
        None => bail!("initialize sent no Mcp-Session-Id header: {:?}", reply.headers),
    }
}

#[tokio::test]
async fn mcp_rejects_bad_messages_before_upstream() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = small_gateway(&reference)?;
    let session_id = initialize(&gateway).await?;

    for case in mcp_cases() {
        let headers = [
            ("content-type", case.content_type),
            ("accept", "application/json, text/event-stream"),
            ("x-model-key", FULL_KEY),
            ("mcp-session-id", session_id.as_str()),
        ];
        let reply = gateway.post("/mcp", &headers, case.body.into_bytes()).await?;
        let name = case.name;
        assert_eq!(reply.status, case.status, "{name}: status: {}", reply.text);

        let Some((id, expected)) = case.reply else {
            assert!(reply.text.is_empty(), "{name}: a notification gets no body: {}", reply.text);
            continue;
        };
        assert_eq!(reply.json["jsonrpc"], "2.0", "{name}: the reply is JSON-RPC 2.0: {}", reply.text);
        assert_eq!(reply.json["id"], id, "{name}: the reply id: {}", reply.text);
        match expected {
            Ok(()) => {
                assert!(reply.json.get("error").is_none(), "{name}: the call succeeds: {}", reply.text);
                assert!(
                    reply.json["result"]["content"].is_array(),
                    "{name}: the result is a CallToolResult: {}",
                    reply.text
                );
            }
            Err(code) => {
                assert_eq!(reply.json["error"]["code"], code, "{name}: error code: {}", reply.text);
                assert!(reply.json.get("result").is_none(), "{name}: an error has no result: {}", reply.text);
            }
        }
    }

    let malformed = gateway
        .post(
            "/mcp",
            &[("content-type", JSON), ("x-model-key", FULL_KEY)],
            b"{\"jsonrpc\": \"2.0\",\n  \"id\": }".to_vec(),
        )
        .await?;
    let message = malformed.json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("line 2 column 9"), "a parse error names its line and column: {}", malformed.text);

    let events = gateway.trace_events(&session_id).await?;
    let inputs: Vec<&Value> = events.iter().map(|event| &event["input"]).collect();
    assert_eq!(
        inputs,
        [&json!({"message": "id zero"}), &json!({"message": "id empty"})],
        "only the two valid calls were recorded"
    );
    let decisions: Vec<&Value> = events.iter().map(|event| &event["decision"]).collect();
    assert_eq!(decisions, [&json!("allow"), &json!("allow")], "both valid calls were allowed");
    let sessions = gateway.sessions().await?;
    assert_eq!(sessions.len(), 1, "no rejected message is recorded under another session: {sessions:?}");
    Ok(())
}
