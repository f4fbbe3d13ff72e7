//! Allowed calls return the reference server's result unchanged, over MCP and over REST.

use anyhow::Result;
use serde_json::{Value, json};

use crate::support::{FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, ReferenceServer, key_header, run_mcp_client};

/// Tool calls that model `full` may make, with their arguments. The last two fail inside the
/// tool (`isError: true`), which the gateway must pass through like any other result.
fn allowed_calls() -> Vec<(&'static str, Value)> {
    vec![
        ("echo", json!({"message": "h\u{e9}llo \"quoted\" \u{2603}"})),
        ("get-sum", json!({"a": 2.5, "b": -7})),
        ("get-structured-content", json!({"location": "New York"})),
        ("get-sum", json!({"a": "not a number"})),
        ("no-such-tool", json!({})),
    ]
}

#[tokio::test]
async fn allowed_calls_return_upstream_results_unchanged() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway =
        Gateway::start(GatewayOptions { upstream_url: Some(reference.url().to_owned()), ..GatewayOptions::default() })?;
    let calls = allowed_calls();
    let ops: Vec<Value> = calls
        .iter()
        .map(|(name, arguments)| json!({"op": "call_tool", "name": name, "arguments": arguments}))
        .collect();
    let ops = Value::Array(ops);
    let url = gateway.mcp_url();
    let full_key = [key_header(FULL_KEY)];
    let (direct, through_gateway) =
        tokio::try_join!(run_mcp_client(reference.url(), &[], &ops), run_mcp_client(&url, &full_key, &ops))?;

    for (index, (name, arguments)) in calls.iter().enumerate() {
        let expected = direct.call_result(index)?;
        let over_mcp = through_gateway.call_result(index)?;
        assert_eq!(over_mcp, expected, "MCP tools/call `{name}` {arguments} returns the reference server's result");

        let body = json!({"model_id": FULL_MODEL, "session_id": "tool-calls", "tool_name": name, "input": arguments});
        let reply = gateway.rest_call(Some(FULL_KEY), &body).await?;
        assert_eq!(reply.status, 200, "REST call `{name}` {arguments} returns 200: {}", reply.text);
        assert_eq!(reply.json["status"], "ok", "REST call `{name}` has status `ok`: {}", reply.text);
        assert!(
            reply.json["event_id"].as_str().is_some_and(|id| !id.is_empty()),
            "REST call `{name}` names its audit event: {}",
            reply.text
        );
        assert_eq!(
            &reply.json["result"], expected,
            "REST call `{name}` {arguments} returns the reference server's result"
        );
    }

    let tool_error = direct.call_result(3)?;
    assert_eq!(
        tool_error["isError"], true,
        "invalid arguments to `get-sum` are a tool error on the reference server: {tool_error}"
    );
    Ok(())
}
