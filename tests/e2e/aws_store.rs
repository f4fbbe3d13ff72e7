//! The container binary on the AWS stores (`GATEWAY_STORE=aws`) against the AWS emulator:
//! two gateways share one state.

use anyhow::{Context, Result};
use serde_json::json;

use crate::support::moto::Moto;
use crate::support::{ADMIN_KEY, FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, ReferenceServer};

fn aws_gateway(moto: &Moto, upstream: &ReferenceServer) -> Result<Gateway> {
    let mut extra_env = moto.gateway_env("shared");
    extra_env.push(("CACHE_TTL".to_owned(), "0s".to_owned()));
    Gateway::start(GatewayOptions {
        upstream_url: Some(upstream.url().to_owned()),
        extra_env,
        ..GatewayOptions::default()
    })
}

#[tokio::test]
async fn aws_init_is_safe_to_run_twice() -> Result<()> {
    let moto = Moto::start()?;
    let first = moto.aws_init("twice")?;
    let second = moto.aws_init("twice")?;
    assert!(first.contains("keys-twice"), "first run names the keys table: {first}");
    assert!(second.contains("keys-twice"), "second run names the keys table: {second}");
    Ok(())
}

#[tokio::test]
async fn two_gateways_share_one_state() -> Result<()> {
    let moto = Moto::start()?;
    moto.aws_init("shared")?;
    let upstream = ReferenceServer::start()?;
    let first = aws_gateway(&moto, &upstream)?;
    let second = aws_gateway(&moto, &upstream)?;

    let call =
        json!({"model_id": FULL_MODEL, "session_id": "shared-1", "tool_name": "echo", "input": {"message": "hi"}});
    let reply = first.rest_call(Some(FULL_KEY), &call).await?;
    assert_eq!(reply.status, 200, "call through the first gateway: {}", reply.text);

    let events = second.trace_events("shared-1").await.context("trace through the second gateway")?;
    assert_eq!(events.len(), 1, "the second gateway sees the first one's call: {events:?}");
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[0]["upstream"]["status"], "ok");

    let deny_echo =
        "default: allow\nrules:\n  - id: no-echo\n    action: deny\n    tools: ['echo']\n    reason: echo is off\n";
    let config = second.admin_get("/api/config", Some(ADMIN_KEY)).await?;
    let base = config.json["version"].as_str().context("current policy version")?.to_owned();
    let body = json!({"policy_yaml": deny_echo, "base_version": base}).to_string();
    let saved = second
        .post("/api/config", &[("content-type", "application/json"), ("x-admin-key", ADMIN_KEY)], body.into_bytes())
        .await?;
    assert_eq!(saved.status, 200, "policy saved through the second gateway: {}", saved.text);

    let reply = first.rest_call(Some(FULL_KEY), &call).await?;
    assert_eq!(reply.status, 403, "the first gateway applies the new policy: {}", reply.text);
    assert_eq!(reply.json["rules"], json!(["no-echo"]));
    Ok(())
}
