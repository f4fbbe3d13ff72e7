//! Every way to reach a tool gets the same decision, audit event and trace. REST and MCP calls
//! are decided and recorded alike, and the model is the key's model whatever the body claims.
//! JSON-RPC envelopes that could carry a call past the checks (batches, notifications, odd ids,
//! repeated members) are rejected before the upstream, or decided on exactly what is forwarded.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::support::gateway::Reply;
use crate::support::hostile_upstream::{HostileUpstream, Mode};
use crate::support::{
    DENIED_TOOL, DENY_RULE, FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, NARROW_KEY, NARROW_MODEL, ReferenceServer,
};
use crate::transport::{
    DENIED, INVALID_REQUEST, JSON, UPSTREAM_FAILED, initialize, last_event, mcp_post, rest_body, tool_call,
};

/// JSON-RPC error code of an unknown method.
const METHOD_NOT_FOUND: i64 = -32601;

async fn reference_gateway(reference: &ReferenceServer) -> Result<Gateway> {
    Gateway::start(GatewayOptions { upstream_url: Some(reference.url().to_owned()), ..GatewayOptions::default() })
}

/// Returns the names that `tools/list` shows the model of `session_id`.
async fn listed_tools(gateway: &Gateway, key: &str, session_id: &str) -> Result<BTreeSet<String>> {
    let reply =
        mcp_post(gateway, key, Some(session_id), &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await?;
    let Some(tools) = value_at(&reply.json, "/result/tools").as_array() else {
        bail!("tools/list failed: {}", reply.text)
    };
    Ok(tools.iter().filter_map(|tool| tool["name"].as_str()).map(str::to_owned).collect())
}

/// One call made over both routes, and the decision it must get on each.
struct RouteCase {
    name: &'static str,
    model: &'static str,
    key: &'static str,
    tool: &'static str,
    input: Value,
    /// `allow` or `deny`.
    decision: &'static str,
    /// Whether `tools/list` shows the tool to the model.
    listed: bool,
}

fn route_cases() -> Vec<RouteCase> {
    let case =
        |name, model, key, tool, input, decision, listed| RouteCase { name, model, key, tool, input, decision, listed };
    vec![
        case("allowed", FULL_MODEL, FULL_KEY, "echo", json!({"message": "over both routes"}), "allow", true),
        case("allowed in a narrow scope", NARROW_MODEL, NARROW_KEY, "get-sum", json!({"a": 2, "b": 3}), "allow", true),
        case("denied by a rule", FULL_MODEL, FULL_KEY, DENIED_TOOL, json!({}), "deny", false),
        case(
            "out of the key's scope",
            NARROW_MODEL,
            NARROW_KEY,
            "get-structured-content",
            json!({"location": "Oslo"}),
            "deny",
            false,
        ),
        case("hidden by scope and rule", NARROW_MODEL, NARROW_KEY, DENIED_TOOL, json!({}), "deny", false),
        case("unknown tool", FULL_MODEL, FULL_KEY, "no-such-tool", json!({"x": 1}), "allow", false),
    ]
}

/// Fields of an audit event that must be equal whichever route the call took.
const SAME_ON_BOTH_ROUTES: [&str; 8] =
    ["decision", "reason", "rule", "rules", "model_id", "key_id", "tool_name", "input"];

#[tokio::test]
async fn rest_and_mcp_decide_alike() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = reference_gateway(&reference).await?;
    let full_session = initialize(&gateway, FULL_KEY).await?;
    let narrow_session = initialize(&gateway, NARROW_KEY).await?;
    let full_tools = listed_tools(&gateway, FULL_KEY, &full_session).await?;
    let narrow_tools = listed_tools(&gateway, NARROW_KEY, &narrow_session).await?;
    let rest_session = "smuggling-routes";

    for (index, case) in route_cases().into_iter().enumerate() {
        let name = case.name;
        let (mcp_session, listed) =
            if case.key == FULL_KEY { (&full_session, &full_tools) } else { (&narrow_session, &narrow_tools) };
        assert_eq!(listed.contains(case.tool), case.listed, "{name}: `{}` listed to `{}`", case.tool, case.model);

        let rest = gateway
            .rest_call(Some(case.key), &rest_body(case.model, rest_session, case.tool, case.input.clone()))
            .await?;
        let rest_event = last_event(&gateway, rest_session).await?;
        let mcp =
            mcp_post(&gateway, case.key, Some(mcp_session), &tool_call(json!(index), case.tool, case.input.clone()))
                .await?;
        let mcp_event = last_event(&gateway, mcp_session).await?;

        assert_eq!(rest_event["input"], case.input, "{name}: the REST event is this call's: {rest_event}");
        assert_eq!(mcp_event["input"], case.input, "{name}: the MCP event is this call's: {mcp_event}");
        assert_eq!(rest_event["decision"], case.decision, "{name}: decision: {rest_event}");
        assert_eq!(rest_event["model_id"], case.model, "{name}: the event names the key's model: {rest_event}");
        for field in SAME_ON_BOTH_ROUTES {
            assert_eq!(rest_event[field], mcp_event[field], "{name}: `{field}` is the same on both routes");
        }
        assert_eq!(rest_event["route"], "rest", "{name}: REST route: {rest_event}");
        assert_eq!(mcp_event["route"], "mcp", "{name}: MCP route: {mcp_event}");
        assert_eq!(
            rest_event["upstream"]["status"], mcp_event["upstream"]["status"],
            "{name}: the same upstream outcome"
        );
        assert_eq!(rest_event["upstream"]["error"], mcp_event["upstream"]["error"], "{name}: the same upstream error");

        assert_equivalent_replies(name, &rest, &mcp, &rest_event, &mcp_event)?;
        if case.tool == "no-such-tool" {
            assert_ne!(rest_event["upstream"]["status"], "ok", "{name}: an unknown tool is no success: {rest_event}");
        }
    }
    Ok(())
}

/// Returns the value at a JSON pointer such as `/error/code`, or `null` when there is none.
fn value_at<'v>(value: &'v Value, pointer: &str) -> &'v Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

/// Checks that the REST and MCP replies carry the same outcome, each in its own form.
fn assert_equivalent_replies(
    name: &str,
    rest: &Reply,
    mcp: &Reply,
    rest_event: &Value,
    mcp_event: &Value,
) -> Result<()> {
    let (rest_json, mcp_json) = (&rest.json, &mcp.json);
    assert_eq!(mcp.status, 200, "{name}: a decided MCP call has HTTP status 200: {}", mcp.text);
    match rest.status {
        200 => {
            let result = value_at(rest_json, "/result");
            assert_eq!(result, value_at(mcp_json, "/result"), "{name}: the same result on both routes");
            let event_id = value_at(rest_json, "/event_id");
            assert_eq!(event_id, &rest_event["event_id"], "{name}: REST names its event: {}", rest.text);
        }
        403 => {
            let data = value_at(mcp_json, "/error/data");
            assert_eq!(value_at(mcp_json, "/error/code"), DENIED, "{name}: MCP denial code: {}", mcp.text);
            let reason = value_at(rest_json, "/reason");
            assert_eq!(reason, &data["reason"], "{name}: the same denial reason: {}", mcp.text);
            let rules = value_at(rest_json, "/rules");
            assert_eq!(rules, &data["rules"], "{name}: the same denial rules: {}", mcp.text);
            let event_id = value_at(rest_json, "/event_id");
            assert_eq!(event_id, &rest_event["event_id"], "{name}: REST names its event: {}", rest.text);
            assert_eq!(data["event_id"], mcp_event["event_id"], "{name}: MCP names its event: {}", mcp.text);
            assert!(rest_event.get("upstream").is_none(), "{name}: a denied call is not forwarded: {rest_event}");
        }
        502 => {
            let data = value_at(mcp_json, "/error/data");
            let code = value_at(mcp_json, "/error/code");
            assert_eq!(code, UPSTREAM_FAILED, "{name}: MCP upstream code: {}", mcp.text);
            let reason = value_at(rest_json, "/reason");
            assert_eq!(reason, &data["reason"], "{name}: the same upstream reason: {}", mcp.text);
        }
        status => bail!("{name}: unexpected REST status {status}: {}", rest.text),
    }
    Ok(())
}

#[tokio::test]
async fn body_model_id_never_changes_identity() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = reference_gateway(&reference).await?;
    let out_of_scope = "get-structured-content";

    let rest_cases = [
        ("narrow key claiming full", NARROW_KEY, FULL_MODEL, out_of_scope),
        ("full key claiming narrow", FULL_KEY, NARROW_MODEL, "echo"),
        ("narrow key claiming a model that does not exist", NARROW_KEY, "ghost", "echo"),
    ];
    for (name, key, claimed, tool) in rest_cases {
        let session = "claimed-model";
        let reply = gateway.rest_call(Some(key), &rest_body(claimed, session, tool, json!({"case": name}))).await?;
        assert_eq!(reply.status, 401, "{name}: a body model that is not the key's is rejected: {}", reply.text);
        assert_eq!(reply.json["reason"], "invalid model id or key", "{name}: reason: {}", reply.text);
        let event = last_event(&gateway, session).await?;
        assert_eq!(event["input"], json!({"case": name}), "{name}: the attempt is recorded: {event}");
        assert_eq!(event["decision"], "unauthorized", "{name}: recorded as unauthorized: {event}");
        assert!(event.get("upstream").is_none(), "{name}: the call was not forwarded: {event}");
    }

    let session = initialize(&gateway, NARROW_KEY).await?;
    let claims = [
        ("model_id in params", json!({"name": out_of_scope, "arguments": {}, "model_id": FULL_MODEL})),
        ("model_id in _meta", json!({"name": out_of_scope, "arguments": {}, "_meta": {"model_id": FULL_MODEL}})),
        ("model_id in arguments", json!({"name": out_of_scope, "arguments": {"model_id": FULL_MODEL}})),
    ];
    for (index, (name, params)) in claims.into_iter().enumerate() {
        let message =
            json!({"jsonrpc": "2.0", "id": index, "method": "tools/call", "params": params, "model_id": FULL_MODEL});
        let reply = mcp_post(&gateway, NARROW_KEY, Some(&session), &message).await?;
        assert_eq!(
            reply.json["error"]["code"], DENIED,
            "{name}: the call is decided for the key's model: {}",
            reply.text
        );
        let event = last_event(&gateway, &session).await?;
        assert_eq!(event["model_id"], NARROW_MODEL, "{name}: the event names the key's model: {event}");
        assert_eq!(event["decision"], "deny", "{name}: denied by the key's scope: {event}");
    }
    Ok(())
}

#[tokio::test]
async fn repeated_json_members_decide_on_the_forwarded_value() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = reference_gateway(&reference).await?;
    let rest_session = "repeated-members";
    let mcp_session = initialize(&gateway, FULL_KEY).await?;

    // Hand-written bodies, because a JSON value cannot hold a member twice. The gateway, like
    // serde_json, keeps the last value of a repeated member.
    let echo = "\"echo\"".to_owned();
    let denied = format!("\"{DENIED_TOOL}\"");
    let cases = [
        ("tool name echo then denied", echo.clone(), denied.clone(), DENIED_TOOL, "{}"),
        ("tool name denied then echo", denied, echo, "echo", "{\"message\": \"first\", \"message\": \"second\"}"),
    ];
    for (index, (name, first, last, decided_tool, input)) in cases.into_iter().enumerate() {
        let rest_body = format!(
            "{{\"model_id\": \"{FULL_MODEL}\", \"session_id\": \"{rest_session}\", \"tool_name\": {first}, \"input\": {input}, \"tool_name\": {last}}}"
        );
        let rest = gateway
            .post("/mcp/toolcall", &[("content-type", JSON), ("x-model-key", FULL_KEY)], rest_body.into_bytes())
            .await?;
        let mcp_body = format!(
            "{{\"jsonrpc\": \"2.0\", \"id\": {index}, \"method\": \"tools/call\", \"params\": {{\"name\": {first}, \"arguments\": {input}, \"name\": {last}}}}}"
        );
        let headers = [("content-type", JSON), ("x-model-key", FULL_KEY), ("mcp-session-id", mcp_session.as_str())];
        let mcp = gateway.post("/mcp", &headers, mcp_body.into_bytes()).await?;

        let rest_event = last_event(&gateway, rest_session).await?;
        let mcp_event = last_event(&gateway, &mcp_session).await?;
        for (route, event) in [("REST", &rest_event), ("MCP", &mcp_event)] {
            assert_eq!(event["tool_name"], decided_tool, "{name} over {route}: the last name is decided: {event}");
        }
        if decided_tool == DENIED_TOOL {
            assert_eq!(rest.status, 403, "{name}: REST denies the last name: {}", rest.text);
            assert_eq!(rest.json["rules"], json!([DENY_RULE]), "{name}: REST denial rule: {}", rest.text);
            assert_eq!(mcp.json["error"]["code"], DENIED, "{name}: MCP denies the last name: {}", mcp.text);
        } else {
            let expected = json!({"message": "second"});
            assert_eq!(rest_event["input"], expected, "{name}: REST records the last argument value: {rest_event}");
            assert_eq!(mcp_event["input"], expected, "{name}: MCP records the last argument value: {mcp_event}");
            for (route, reply) in [("REST", &rest.json["result"]), ("MCP", &mcp.json["result"])] {
                let text = reply["content"][0]["text"].as_str().unwrap_or_default();
                assert!(
                    text.contains("second") && !text.contains("first"),
                    "{name} over {route}: echo got the recorded value: {reply}"
                );
            }
        }
    }
    Ok(())
}

/// A JSON-RPC body that must not reach a tool, and the reply it must get.
struct EnvelopeCase {
    name: &'static str,
    body: String,
    status: u16,
    /// The reply's `id` and error code; `None` for 202 with no body.
    error: Option<(Value, i64)>,
}

fn envelope_cases() -> Vec<EnvelopeCase> {
    let call = |id: Value| tool_call(id, Mode::Json.tool_name(), json!({"smuggled": true}));
    let notification = |method: &str| json!({"jsonrpc": "2.0", "method": method, "params": {}});
    let invalid = |name, body: Value| EnvelopeCase {
        name,
        body: body.to_string(),
        status: 400,
        error: Some((Value::Null, INVALID_REQUEST)),
    };
    let accepted = |name, body: Value| EnvelopeCase { name, body: body.to_string(), status: 202, error: None };
    let call_named = |method: &str| json!({"jsonrpc": "2.0", "id": 11, "method": method, "params": {"name": Mode::Json.tool_name(), "arguments": {}}});

    vec![
        invalid("empty batch", json!([])),
        invalid("batch of two calls", json!([call(json!(1)), call(json!(2))])),
        invalid("batch with initialize", json!([crate::transport::initialize_message(), call(json!(3))])),
        invalid("batch of notifications", json!([notification("notifications/initialized")])),
        invalid("nested batch", json!([[call(json!(4))]])),
        invalid(
            "tools/call notification",
            json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": Mode::Json.tool_name(), "arguments": {}}}),
        ),
        invalid("ping notification", notification("ping")),
        invalid("id with a fraction", call(json!(1.5))),
        EnvelopeCase {
            name: "id beyond 64 bits",
            body: call(json!(0)).to_string().replacen("\"id\":0", "\"id\":123456789012345678901234567890", 1),
            status: 400,
            error: Some((Value::Null, INVALID_REQUEST)),
        },
        invalid("id true", call(json!(true))),
        invalid("id array", call(json!([5]))),
        EnvelopeCase {
            name: "jsonrpc as a number",
            body: call(json!(6)).to_string().replacen("\"jsonrpc\":\"2.0\"", "\"jsonrpc\":2.0", 1),
            status: 400,
            error: Some((json!(6), INVALID_REQUEST)),
        },
        EnvelopeCase {
            name: "method in upper case",
            body: call_named("TOOLS/CALL").to_string(),
            status: 200,
            error: Some((json!(11), METHOD_NOT_FOUND)),
        },
        EnvelopeCase {
            name: "method with a trailing space",
            body: call_named("tools/call ").to_string(),
            status: 200,
            error: Some((json!(11), METHOD_NOT_FOUND)),
        },
        accepted("initialized notification", notification("notifications/initialized")),
        accepted(
            "cancelled notification",
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        ),
        accepted("response from the client", json!({"jsonrpc": "2.0", "id": 99, "result": {}})),
    ]
}

#[tokio::test]
async fn smuggling_envelopes_never_reach_the_upstream() -> Result<()> {
    let upstream = HostileUpstream::start().await?;
    let gateway = Gateway::start(GatewayOptions { upstream_url: Some(upstream.url()), ..GatewayOptions::default() })?;
    let session_id = initialize(&gateway, FULL_KEY).await?;

    for case in envelope_cases() {
        let name = case.name;
        let headers = [("content-type", JSON), ("x-model-key", FULL_KEY), ("mcp-session-id", session_id.as_str())];
        let reply = gateway.post("/mcp", &headers, case.body.into_bytes()).await?;
        assert_eq!(reply.status, case.status, "{name}: status: {}", reply.text);
        let Some((id, code)) = case.error else {
            assert!(reply.text.is_empty(), "{name}: an accepted notification gets no body: {}", reply.text);
            continue;
        };
        assert_eq!(reply.json["id"], id, "{name}: error id: {}", reply.text);
        assert_eq!(reply.json["error"]["code"], code, "{name}: error code: {}", reply.text);
        let message = reply.json["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{name}: the error says what was rejected: {}", reply.text);
    }

    assert!(upstream.tool_calls().is_empty(), "no smuggled call reached the upstream: {:?}", upstream.tool_calls());
    let sessions = gateway.sessions().await?;
    assert!(sessions.is_empty(), "no smuggled call is recorded as a call: {sessions:?}");
    Ok(())
}

#[tokio::test]
async fn request_ids_are_echoed_and_never_forwarded() -> Result<()> {
    let upstream = HostileUpstream::start().await?;
    let gateway = Gateway::start(GatewayOptions { upstream_url: Some(upstream.url()), ..GatewayOptions::default() })?;
    let session_id = initialize(&gateway, FULL_KEY).await?;

    let ids = [
        ("zero", "0"),
        ("empty string", "\"\""),
        ("negative", "-7"),
        ("above 2^53", "9007199254740993"),
        ("smallest i64", "-9223372036854775808"),
        ("largest u64", "18446744073709551615"),
        ("string with escapes", "\"client-id \\\"quoted\\\" \\u2028\""),
    ];
    for (index, (name, id)) in ids.iter().enumerate() {
        let body = format!(
            "{{\"jsonrpc\": \"2.0\", \"id\": {id}, \"method\": \"tools/call\", \"params\": {{\"name\": \"{}\", \"arguments\": {{\"index\": {index}}}}}}}",
            Mode::Json.tool_name()
        );
        let headers = [("content-type", JSON), ("x-model-key", FULL_KEY), ("mcp-session-id", session_id.as_str())];
        let reply = gateway.post("/mcp", &headers, body.into_bytes()).await?;
        assert_eq!(reply.status, 200, "id {name}: status: {}", reply.text);
        let sent: Value = serde_json::from_str(id)?;
        assert_eq!(reply.json["id"], sent, "id {name}: the reply carries the request's id: {}", reply.text);
        assert!(reply.json["result"].is_object(), "id {name}: the call succeeds: {}", reply.text);
    }

    let calls = upstream.tool_calls();
    assert_eq!(calls.len(), ids.len(), "every call reached the upstream once: {calls:?}");
    let upstream_ids: BTreeSet<u64> = calls.iter().filter_map(|call| call["id"].as_u64()).collect();
    assert_eq!(
        upstream_ids.len(),
        ids.len(),
        "the gateway sends each call with its own distinct integer id: {calls:?}"
    );
    for call in &calls {
        assert!(!call.to_string().contains("client-id"), "the client's id is not forwarded: {call}");
    }
    Ok(())
}
