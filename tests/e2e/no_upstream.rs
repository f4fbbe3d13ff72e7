//! A gateway without `TOOL_SERVER_URL`, `UPSTREAMS_FILE` or `--demo-tools` rejects allowed
//! calls with 502 and records them.

use anyhow::Result;
use serde_json::json;

use crate::support::{FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, key_header, run_mcp_client};

/// JSON-RPC error code of an upstream failure.
const UPSTREAM_CODE: i64 = -32004;
const SESSION: &str = "no-upstream";

#[tokio::test]
async fn allowed_call_without_upstream_returns_502() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions::default())?;
    let body = json!({"model_id": FULL_MODEL, "session_id": SESSION, "tool_name": "echo", "input": {"message": "hi"}});

    let reply = gateway.rest_call(Some(FULL_KEY), &body).await?;
    assert_eq!(reply.status, 502, "an allowed call without an upstream returns 502: {}", reply.text);
    assert_eq!(reply.json["status"], "upstream_error", "the reply has status `upstream_error`: {}", reply.text);
    let reason = reply.json["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("TOOL_SERVER_URL"), "the reason says to set TOOL_SERVER_URL: {}", reply.text);
    let Some(event_id) = reply.json["event_id"].as_str() else {
        anyhow::bail!("the reply names no audit event: {}", reply.text);
    };

    let events = gateway.trace_events(SESSION).await?;
    assert_eq!(events.len(), 1, "the trace records the call: {events:?}");
    assert_eq!(events[0]["event_id"], event_id, "the trace event has the event id of the reply: {}", events[0]);
    assert_eq!(events[0]["decision"], "allow", "the call was allowed before it failed: {}", events[0]);
    assert_eq!(events[0]["tool_name"], "echo", "the trace event names the tool: {}", events[0]);
    let upstream = &events[0]["upstream"];
    assert_eq!(upstream["status"], "error", "the trace records the upstream failure: {}", events[0]);
    let error = upstream["error"].as_str().unwrap_or_default();
    assert!(error.contains("TOOL_SERVER_URL"), "the recorded error says to set TOOL_SERVER_URL: {}", events[0]);

    let ops = json!([{"op": "list_tools"}, {"op": "call_tool", "name": "echo", "arguments": {"message": "hi"}}]);
    let run = run_mcp_client(&gateway.mcp_url(), &[key_header(FULL_KEY)], &ops).await?;
    assert!(run.tools(0)?.is_empty(), "tools/list without an upstream is empty: {}", run.output);
    let error = run.call_error(1)?;
    assert_eq!(error["code"], UPSTREAM_CODE, "an MCP call without an upstream has code {UPSTREAM_CODE}: {error}");
    assert_eq!(error["data"]["status"], "upstream_error", "the error data has status `upstream_error`: {error}");
    assert!(
        error["message"].as_str().is_some_and(|message| message.contains("TOOL_SERVER_URL")),
        "the error says to set TOOL_SERVER_URL: {error}"
    );
    Ok(())
}
