//! `GET /api/session/{id}` lists every call of a session in order, with what the gateway
//! decided and why.

use anyhow::Result;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_KEY, DENIED_TOOL, DENY_REASON, DENY_RULE, FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, NARROW_KEY,
    NARROW_MODEL, ReferenceServer, key_header, run_mcp_client,
};

/// One REST call of the traced session and the audit event it must leave.
struct TracedCall {
    model_id: &'static str,
    key: &'static str,
    tool_name: &'static str,
    input: Value,
    http_status: u16,
    decision: &'static str,
    rule: Option<&'static str>,
    /// The upstream status of an allowed call: `ok` or `tool_error`.
    upstream_status: Option<&'static str>,
}

fn traced_calls() -> Vec<TracedCall> {
    let call = |model_id, key, tool_name, input, http_status, decision, rule, upstream_status| TracedCall {
        model_id,
        key,
        tool_name,
        input,
        http_status,
        decision,
        rule,
        upstream_status,
    };
    vec![
        call(FULL_MODEL, FULL_KEY, "echo", json!({"message": "first"}), 200, "allow", None, Some("ok")),
        call(FULL_MODEL, FULL_KEY, DENIED_TOOL, json!({}), 403, "deny", Some(DENY_RULE), None),
        call(NARROW_MODEL, NARROW_KEY, "get-structured-content", json!({"location": "Oslo"}), 403, "deny", None, None),
        call(
            FULL_MODEL,
            "e2e-key-wrong",
            "echo",
            json!({"message": "with a wrong key"}),
            401,
            "unauthorized",
            None,
            None,
        ),
        call(FULL_MODEL, FULL_KEY, "get-sum", json!({"a": "not a number"}), 200, "allow", None, Some("tool_error")),
        call(NARROW_MODEL, NARROW_KEY, "get-sum", json!({"a": 1, "b": 2}), 200, "allow", None, Some("ok")),
    ]
}

/// Sends every call of [`traced_calls`] in session `session_id` and returns the event id of
/// each reply (`None` for a 401, which names no event).
async fn send_traced_calls(gateway: &Gateway, session_id: &str, calls: &[TracedCall]) -> Result<Vec<Option<String>>> {
    let mut event_ids = Vec::new();
    for call in calls {
        let body = json!({"model_id": call.model_id, "session_id": session_id, "tool_name": call.tool_name, "input": call.input});
        let reply = gateway.rest_call(Some(call.key), &body).await?;
        assert_eq!(
            reply.status, call.http_status,
            "REST call `{}` as `{}` returns {}: {}",
            call.tool_name, call.model_id, call.http_status, reply.text
        );
        event_ids.push(reply.json.get("event_id").and_then(Value::as_str).map(str::to_owned));
    }
    Ok(event_ids)
}

#[tokio::test]
async fn rest_session_trace_lists_calls_in_order() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway =
        Gateway::start(GatewayOptions { upstream_url: Some(reference.url().to_owned()), ..GatewayOptions::default() })?;
    let session_id = "trace-rest";
    let calls = traced_calls();
    let event_ids = send_traced_calls(&gateway, session_id, &calls).await?;

    let reply = gateway.session_trace(session_id).await?;
    assert_eq!(reply.status, 200, "the trace of a session with calls returns 200: {}", reply.text);
    assert_eq!(reply.json["session_id"], session_id, "the trace names its session: {}", reply.text);
    assert_eq!(reply.json["calls"], calls.len(), "the trace counts every call, whatever its decision: {}", reply.text);
    let events = gateway.trace_events(session_id).await?;
    assert_eq!(events.len(), calls.len(), "the trace has one event per call: {}", reply.text);

    for (index, ((call, event), event_id)) in calls.iter().zip(&events).zip(&event_ids).enumerate() {
        let at = format!("event {index} ({} as {})", call.tool_name, call.model_id);
        assert_eq!(event["tool_name"], call.tool_name, "{at} is in call order: {event}");
        assert_eq!(event["model_id"], call.model_id, "{at} names the model: {event}");
        assert_eq!(event["session_id"], session_id, "{at} names the session: {event}");
        assert_eq!(event["route"], "rest", "{at} names the REST route: {event}");
        assert_eq!(event["decision"], call.decision, "{at} records the decision: {event}");
        assert_eq!(event["input"], call.input, "{at} keeps the tool input: {event}");
        assert!(event["reason"].as_str().is_some_and(|reason| !reason.is_empty()), "{at} records a reason: {event}");
        assert!(
            event["latency_ms"].as_f64().is_some_and(|latency| latency >= 0.0),
            "{at} records its latency: {event}"
        );
        assert!(event["time"].is_string(), "{at} records its time: {event}");
        if let Some(event_id) = event_id {
            assert_eq!(event["event_id"], event_id.as_str(), "{at} has the event id that the reply named: {event}");
        }

        let expected_rules: Vec<&str> = call.rule.into_iter().collect();
        assert_eq!(event["rules"], json!(expected_rules), "{at} lists the matched rules: {event}");
        match call.rule {
            Some(rule) => assert_eq!(event["rule"], rule, "{at} names the deciding rule: {event}"),
            None => assert!(event.get("rule").is_none_or(Value::is_null), "{at} names no deciding rule: {event}"),
        }
        assert_upstream_outcome(event, call.upstream_status, &at);
        if call.decision == "unauthorized" {
            assert!(event.get("key_id").is_none(), "{at} has no key id, because no key was accepted: {event}");
        } else {
            assert!(event["key_id"].is_string(), "{at} names the key that authenticated: {event}");
        }
    }

    let rule_denial = &events[1];
    assert_eq!(rule_denial["reason"], DENY_REASON, "a rule denial records the rule's reason: {rule_denial}");
    let scope_denial = &events[2];
    assert!(
        scope_denial["reason"].as_str().is_some_and(|reason| reason.contains("scope")),
        "a scope denial says so: {scope_denial}"
    );
    for event in &events {
        let text = event.to_string();
        assert!(!text.contains(FULL_KEY), "no event contains the key of `full`: {event}");
        assert!(!text.contains(NARROW_KEY), "no event contains the key of `narrow`: {event}");
    }
    Ok(())
}

/// Checks the `upstream` member of a trace event: absent for a call that was not forwarded,
/// else the upstream's name, status, latency and response size.
fn assert_upstream_outcome(event: &Value, expected_status: Option<&str>, at: &str) {
    let Some(status) = expected_status else {
        assert!(event.get("upstream").is_none(), "{at} was not forwarded, so it has no upstream outcome: {event}");
        return;
    };
    let upstream = &event["upstream"];
    assert_eq!(upstream["status"], status, "{at} records the upstream status: {event}");
    assert_eq!(upstream["upstream"], "default", "{at} names the upstream set by TOOL_SERVER_URL: {event}");
    assert!(
        upstream["latency_ms"].as_f64().is_some_and(|latency| latency > 0.0),
        "{at} records the upstream latency: {event}"
    );
    assert!(
        upstream["response_bytes"].as_u64().is_some_and(|bytes| bytes > 0),
        "{at} records the response size: {event}"
    );

    let total = event["latency_ms"].as_f64().unwrap_or_default();
    let waited = upstream["latency_ms"].as_f64().unwrap_or_default();
    assert!(total >= waited, "{at} has a total latency of at least the upstream latency: {event}");
}

#[tokio::test]
async fn mcp_session_trace_uses_issued_session_id() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway =
        Gateway::start(GatewayOptions { upstream_url: Some(reference.url().to_owned()), ..GatewayOptions::default() })?;
    let ops = json!([
        {"op": "call_tool", "name": "echo", "arguments": {"message": "one"}},
        {"op": "call_tool", "name": DENIED_TOOL, "arguments": {}},
        {"op": "call_tool", "name": "get-sum", "arguments": {"a": 1, "b": 2}},
    ]);
    let run = run_mcp_client(&gateway.mcp_url(), &[key_header(FULL_KEY)], &ops).await?;
    run.call_result(0)?;
    run.call_error(1)?;
    run.call_result(2)?;

    let Some(session_id) = run.session_id() else {
        anyhow::bail!("the client saw no Mcp-Session-Id from the gateway: {}", run.output);
    };
    let events = gateway.trace_events(session_id).await?;
    let tools: Vec<&str> = events.iter().filter_map(|event| event["tool_name"].as_str()).collect();
    assert_eq!(tools, ["echo", DENIED_TOOL, "get-sum"], "the trace of the MCP session lists its tool calls in order");
    let decisions: Vec<&str> = events.iter().filter_map(|event| event["decision"].as_str()).collect();
    assert_eq!(decisions, ["allow", "deny", "allow"], "the trace records each decision");
    for event in &events {
        assert_eq!(event["route"], "mcp", "each event names the MCP route: {event}");
        assert_eq!(event["model_id"], FULL_MODEL, "each event names the model that the key belongs to: {event}");
        assert_eq!(event["session_id"], session_id, "each event names the issued session id: {event}");
    }
    assert_eq!(events[1]["rules"], json!([DENY_RULE]), "the denied call lists its rule: {}", events[1]);

    let sessions = gateway.sessions().await?;
    let summary = sessions.iter().find(|summary| summary["session_id"] == session_id);
    let Some(summary) = summary else {
        anyhow::bail!("GET /api/sessions does not list session `{session_id}`: {sessions:?}");
    };
    assert_eq!(summary["model_id"], FULL_MODEL, "the session summary names the model: {summary}");
    assert_eq!(summary["calls"], 3, "the session summary counts every call: {summary}");
    assert_eq!(summary["denied"], 1, "the session summary counts the denied call: {summary}");
    Ok(())
}

#[tokio::test]
async fn session_trace_requires_admin_key() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions::default())?;
    let body = json!({"model_id": FULL_MODEL, "session_id": "trace-admin", "tool_name": DENIED_TOOL, "input": {}});
    let reply = gateway.rest_call(Some(FULL_KEY), &body).await?;
    assert_eq!(reply.status, 403, "the recorded call is denied: {}", reply.text);

    let path = "/api/session/trace-admin";
    let without_key = gateway.admin_get(path, None).await?;
    assert_eq!(without_key.status, 401, "a trace request without X-Admin-Key returns 401: {}", without_key.text);
    let wrong_key = gateway.admin_get(path, Some("e2e-admin-wrong")).await?;
    assert_eq!(wrong_key.status, 401, "a trace request with a wrong X-Admin-Key returns 401: {}", wrong_key.text);
    assert!(!wrong_key.text.contains(DENY_REASON), "a rejected trace request shows no event: {}", wrong_key.text);
    let sessions = gateway.admin_get("/api/sessions", Some("e2e-admin-wrong")).await?;
    assert_eq!(sessions.status, 401, "GET /api/sessions with a wrong X-Admin-Key returns 401: {}", sessions.text);

    let with_key = gateway.admin_get(path, Some(ADMIN_KEY)).await?;
    assert_eq!(with_key.status, 200, "the admin key opens the trace: {}", with_key.text);
    let unknown = gateway.session_trace("no-such-session").await?;
    assert_eq!(unknown.status, 404, "a session without calls returns 404: {}", unknown.text);
    Ok(())
}
