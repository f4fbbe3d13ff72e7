//! The smoke scenario of the README: `mcpsec serve --demo-tools` with the shipped example keys
//! and policy, driven over REST.

use anyhow::Result;
use serde_json::{Value, json};

use crate::support::{Gateway, GatewayOptions};

const GPT_KEY: &str = "modelkey-abc123";
const MISTRAL_KEY: &str = "modelkey-def456";
const SESSION: &str = "demo-1";

fn call(model_id: &str, tool_name: &str, input: Value) -> Value {
    json!({"model_id": model_id, "session_id": SESSION, "tool_name": tool_name, "input": input})
}

#[tokio::test]
async fn readme_smoke_scenario_with_demo_tools() -> Result<()> {
    let gateway =
        Gateway::start(GatewayOptions { keys_and_policy: None, demo_tools: true, ..GatewayOptions::default() })?;
    let event = json!({"title": "Standup", "start": "2026-01-05T09:00:00Z", "end": "2026-01-05T09:15:00Z", "attendees": ["ana@example.com"]});

    let created = gateway.rest_call(Some(GPT_KEY), &call("gpt-4o", "calendar.create_event", event.clone())).await?;
    assert_eq!(created.status, 200, "gpt-4o may create an event: {}", created.text);
    assert_eq!(created.json["status"], "ok", "the created event has status `ok`: {}", created.text);
    assert!(created.json["result"]["content"].is_array(), "the result is the tool's CallToolResult: {}", created.text);
    assert_ne!(created.json["result"]["isError"], true, "the demo calendar accepts the event: {}", created.text);
    assert!(created.json["event_id"].is_string(), "the reply names its audit event: {}", created.text);

    let deleted =
        gateway.rest_call(Some(GPT_KEY), &call("gpt-4o", "calendar.delete_event", json!({"id": "evt-1"}))).await?;
    assert_eq!(deleted.status, 403, "the example policy denies deleting events: {}", deleted.text);
    assert_eq!(deleted.json["status"], "denied", "the delete has status `denied`: {}", deleted.text);
    assert_eq!(
        deleted.json["rules"],
        json!(["no-calendar-deletes"]),
        "the delete names rule `no-calendar-deletes`: {}",
        deleted.text
    );

    let out_of_scope =
        gateway.rest_call(Some(MISTRAL_KEY), &call("mistral-open", "calendar.create_event", event.clone())).await?;
    assert_eq!(
        out_of_scope.status, 403,
        "mistral-open (scope `search.*`) may not create events: {}",
        out_of_scope.text
    );
    assert_eq!(
        out_of_scope.json["status"], "denied",
        "the out-of-scope call has status `denied`: {}",
        out_of_scope.text
    );

    let wrong_key = gateway.rest_call(Some("modelkey-wrong"), &call("gpt-4o", "calendar.create_event", event)).await?;
    assert_eq!(wrong_key.status, 401, "a wrong key returns 401: {}", wrong_key.text);

    let events = gateway.trace_events(SESSION).await?;
    let decisions: Vec<(&str, &str)> = events
        .iter()
        .map(|event| (event["tool_name"].as_str().unwrap_or_default(), event["decision"].as_str().unwrap_or_default()))
        .collect();
    let expected = [
        ("calendar.create_event", "allow"),
        ("calendar.delete_event", "deny"),
        ("calendar.create_event", "deny"),
        ("calendar.create_event", "unauthorized"),
    ];
    assert_eq!(decisions, expected, "the trace of `{SESSION}` lists the four calls in order");
    Ok(())
}
