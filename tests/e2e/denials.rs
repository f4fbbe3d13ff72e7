//! Calls outside a model's scope, calls that a rule denies, and bad keys fail as specified
//! over MCP and REST.

use anyhow::Result;
use serde_json::{Value, json};

use crate::support::client::EXIT_INITIALIZE_FAILED;
use crate::support::{
    DENIED_TOOL, DENY_REASON, DENY_RULE, FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, NARROW_KEY, NARROW_MODEL,
    ReferenceServer, key_header, run_mcp_client,
};

/// JSON-RPC error code of a call denied by scope, policy or a limit.
const DENIED_CODE: i64 = -32003;
/// JSON-RPC error code of a rejected model key.
const UNAUTHORIZED_CODE: i64 = -32001;

fn upstream_gateway(reference: &ReferenceServer) -> Result<Gateway> {
    Gateway::start(GatewayOptions { upstream_url: Some(reference.url().to_owned()), ..GatewayOptions::default() })
}

#[tokio::test]
async fn mcp_denied_calls_fail_with_code_32003() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = upstream_gateway(&reference)?;
    let out_of_scope =
        json!([{"op": "call_tool", "name": "get-structured-content", "arguments": {"location": "Paris"}}]);
    let hidden = json!([{"op": "call_tool", "name": DENIED_TOOL, "arguments": {}}]);
    let url = gateway.mcp_url();
    let (narrow_key, full_key) = ([key_header(NARROW_KEY)], [key_header(FULL_KEY)]);
    let (narrow, full) =
        tokio::try_join!(run_mcp_client(&url, &narrow_key, &out_of_scope), run_mcp_client(&url, &full_key, &hidden))?;

    let error = narrow.call_error(0)?;
    assert_eq!(error["kind"], "jsonrpc", "an out-of-scope call is a JSON-RPC error: {error}");
    assert_eq!(error["code"], DENIED_CODE, "an out-of-scope call has code {DENIED_CODE}: {error}");
    assert_eq!(error["data"]["status"], "denied", "error data of an out-of-scope call has status `denied`: {error}");
    assert_eq!(error["data"]["rules"], json!([]), "no rule matched an out-of-scope call: {error}");
    let reason = error["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("scope"), "the reason of an out-of-scope call names the scope: {error}");
    assert!(
        is_event_id(&error["data"]["event_id"]),
        "error data of an out-of-scope call names its audit event: {error}"
    );

    let error = full.call_error(0)?;
    assert_eq!(error["kind"], "jsonrpc", "a call that a rule denies is a JSON-RPC error: {error}");
    assert_eq!(error["code"], DENIED_CODE, "a call that a rule denies has code {DENIED_CODE}: {error}");
    assert_eq!(error["data"]["status"], "denied", "error data of a rule denial has status `denied`: {error}");
    assert_eq!(error["data"]["rules"], json!([DENY_RULE]), "error data of a rule denial lists the rule: {error}");
    assert_eq!(error["data"]["reason"], DENY_REASON, "error data of a rule denial carries the rule's reason: {error}");
    assert!(is_event_id(&error["data"]["event_id"]), "error data of a rule denial names its audit event: {error}");
    Ok(())
}

#[tokio::test]
async fn rest_denied_calls_return_403_with_rules() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let gateway = upstream_gateway(&reference)?;

    let body = json!({"model_id": NARROW_MODEL, "session_id": "denials", "tool_name": "get-structured-content", "input": {"location": "Paris"}});
    let reply = gateway.rest_call(Some(NARROW_KEY), &body).await?;
    assert_eq!(reply.status, 403, "an out-of-scope REST call returns 403: {}", reply.text);
    assert_eq!(reply.json["status"], "denied", "an out-of-scope REST call has status `denied`: {}", reply.text);
    assert_eq!(reply.json["rules"], json!([]), "no rule matched an out-of-scope REST call: {}", reply.text);
    assert!(
        reply.json["reason"].as_str().is_some_and(|reason| reason.contains("scope")),
        "the reason names the scope: {}",
        reply.text
    );
    assert!(is_event_id(&reply.json["event_id"]), "an out-of-scope REST call names its audit event: {}", reply.text);

    let body = json!({"model_id": FULL_MODEL, "session_id": "denials", "tool_name": DENIED_TOOL, "input": {}});
    let reply = gateway.rest_call(Some(FULL_KEY), &body).await?;
    assert_eq!(reply.status, 403, "a REST call that a rule denies returns 403: {}", reply.text);
    assert_eq!(reply.json["status"], "denied", "a REST rule denial has status `denied`: {}", reply.text);
    assert_eq!(reply.json["rules"], json!([DENY_RULE]), "a REST rule denial lists the rule: {}", reply.text);
    assert_eq!(reply.json["reason"], DENY_REASON, "a REST rule denial carries the rule's reason: {}", reply.text);
    assert!(is_event_id(&reply.json["event_id"]), "a REST rule denial names its audit event: {}", reply.text);
    Ok(())
}

#[tokio::test]
async fn bad_keys_are_rejected_over_mcp_and_rest() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions::default())?;
    let list = json!([{"op": "list_tools"}]);

    let url = gateway.mcp_url();
    let wrong_key_header = [key_header("e2e-key-wrong")];
    let (wrong_key, no_key) =
        tokio::try_join!(run_mcp_client(&url, &wrong_key_header, &list), run_mcp_client(&url, &[], &list))?;
    for (case, run) in [("a wrong key", &wrong_key), ("no key", &no_key)] {
        assert_eq!(run.exit_code, EXIT_INITIALIZE_FAILED, "MCP initialize with {case} fails: {}", run.output);
        assert!(
            run.output["initialize_error"].is_string(),
            "the client reports initialize_error for {case}: {}",
            run.output
        );
        assert_eq!(run.output["http_status"], 401, "MCP initialize with {case} returns HTTP 401: {}", run.output);
        assert_eq!(
            run.output["error"]["code"], UNAUTHORIZED_CODE,
            "MCP initialize with {case} has code {UNAUTHORIZED_CODE}: {}",
            run.output
        );
    }

    let call = |model_id: &str| json!({"model_id": model_id, "session_id": "bad-keys", "tool_name": "echo", "input": {"message": "hi"}});
    let wrong_key = gateway.rest_call(Some("e2e-key-wrong"), &call(FULL_MODEL)).await?;
    let other_models_key = gateway.rest_call(Some(NARROW_KEY), &call(FULL_MODEL)).await?;
    let unknown_model = gateway.rest_call(Some(FULL_KEY), &call("no-such-model")).await?;
    let unknown_model_and_key = gateway.rest_call(Some("e2e-key-wrong"), &call("no-such-model")).await?;
    let missing_key = gateway.rest_call(None, &call(FULL_MODEL)).await?;

    assert_eq!(wrong_key.status, 401, "a wrong key returns 401: {}", wrong_key.text);
    assert_eq!(wrong_key.json["status"], "unauthorized", "a wrong key has status `unauthorized`: {}", wrong_key.text);
    assert!(
        wrong_key.json["reason"].as_str().is_some_and(|reason| !reason.is_empty()),
        "a wrong key has a reason: {}",
        wrong_key.text
    );
    assert_eq!(other_models_key.status, 401, "another model's key returns 401: {}", other_models_key.text);
    assert_eq!(other_models_key.json, wrong_key.json, "another model's key gets the same body as a wrong key");
    assert_eq!(unknown_model.status, 401, "an unknown model returns 401: {}", unknown_model.text);
    assert_eq!(unknown_model.json, wrong_key.json, "an unknown model gets the same body as a wrong key");
    assert_eq!(
        unknown_model_and_key.json, wrong_key.json,
        "an unknown model with an unknown key gets the same body as a wrong key"
    );
    assert_eq!(missing_key.status, 401, "a missing key returns 401: {}", missing_key.text);
    assert_eq!(
        missing_key.json["status"], "unauthorized",
        "a missing key has status `unauthorized`: {}",
        missing_key.text
    );
    Ok(())
}

fn is_event_id(value: &Value) -> bool {
    value.as_str().is_some_and(|id| !id.is_empty())
}
