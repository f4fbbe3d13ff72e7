//! Audit events reach a SIEM receiver on loopback through the container's outbox: all of
//! them, across a receiver outage and a killed gateway, without slowing tool calls; and the
//! anomaly detectors raise alerts, post them to a webhook and quarantine a model.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::{ADMIN_KEY, DENIED_TOOL, FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, TEST_KEYS};

/// Path of the SIEM on the receiver.
const SIEM_PATH: &str = "/siem";
/// Path of the alert webhook on the receiver.
const HOOK_PATH: &str = "/hook";
/// How long the outbox may take to hand over events once the receiver is up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Policy that allows every tool but the denied one, with a denial spike threshold of 3 in a
/// minute and a quarantine of 10 minutes.
const SPIKE_POLICY: &str = r#"version: 1
default: allow
rules:
  - id: no-get-env
    action: deny
    tools: ["get-env"]
    reason: get-env returns the server environment
anomalies:
  denial_spike:
    threshold: 3
    window: 1m
  call_rate_spike:
    enabled: false
  first_tool_use: false
  quarantine: 10m
"#;

fn siem_options(receiver: &Receiver, timeout: &str) -> GatewayOptions {
    GatewayOptions {
        demo_tools: true,
        extra_env: vec![
            ("SIEM_URL".to_owned(), receiver.url(SIEM_PATH)),
            ("SIEM_BATCH_EVENTS".to_owned(), "7".to_owned()),
            ("SIEM_TIMEOUT".to_owned(), timeout.to_owned()),
            ("SIEM_MAX_ATTEMPTS".to_owned(), "2".to_owned()),
            ("SIEM_HMAC_SECRET".to_owned(), "e2e-siem-signing-secret".to_owned()),
        ],
        ..GatewayOptions::default()
    }
}

/// Makes `count` calls in `session`, alternating an allowed demo tool and a denied one, and
/// returns their event ids in call order.
async fn calls(gateway: &Gateway, session: &str, count: usize) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for index in 0..count {
        let (tool, expected) = if index % 2 == 0 { ("calendar.list_events", 200) } else { (DENIED_TOOL, 403) };
        let body = json!({"model_id": FULL_MODEL, "session_id": session, "tool_name": tool, "input": {}});
        let reply = gateway.rest_call(Some(FULL_KEY), &body).await?;
        ensure!(
            reply.status == expected,
            "call {index} of `{session}` ({tool}) answered {}: {}",
            reply.status,
            reply.text
        );
        let id = reply
            .json
            .get("event_id")
            .and_then(Value::as_str)
            .with_context(|| format!("no event_id in {}", reply.text))?;
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// Returns the event ids of the received lines in order of first arrival.
fn first_arrivals(lines: &[Value]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    lines
        .iter()
        .filter_map(|line| line["event_id"].as_str())
        .filter(|id| seen.insert((*id).to_owned()))
        .map(str::to_owned)
        .collect()
}

fn received_all(lines: &[Value], expected: &[String]) -> bool {
    let received: BTreeSet<&str> = lines.iter().filter_map(|line| line["event_id"].as_str()).collect();
    expected.iter().all(|id| received.contains(id.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siem_gets_every_event_across_an_outage_and_a_killed_gateway() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let mut receiver = Receiver::start().await?;
    let options = siem_options(&receiver, "2s");
    let mut sessions: BTreeMap<&str, Vec<String>> = BTreeMap::new();

    let gateway = Gateway::start_in(options.clone(), folder.path())?;
    sessions.insert("before-outage", calls(&gateway, "before-outage", 10).await?);
    let expected: Vec<String> = sessions.values().flatten().cloned().collect();
    receiver.wait_for_lines(SIEM_PATH, DELIVERY_TIMEOUT, |lines| received_all(lines, &expected)).await?;

    receiver.stop();
    sessions.insert("during-outage", calls(&gateway, "during-outage", 12).await?);
    // SIGKILL while the receiver is down, so these events are still in the outbox.
    drop(gateway);

    let gateway = Gateway::start_in(options, folder.path())?;
    sessions.insert("after-restart", calls(&gateway, "after-restart", 6).await?);
    receiver.restart().await?;
    let expected: Vec<String> = sessions.values().flatten().cloned().collect();
    let lines = receiver
        .wait_for_lines(SIEM_PATH, DELIVERY_TIMEOUT, |lines| received_all(lines, &expected))
        .await
        .with_context(|| format!("gateway output:\n{}", gateway.recent_output()))?;

    let arrivals = first_arrivals(&lines);
    let tool_calls: Vec<&String> = arrivals.iter().filter(|id| expected.contains(id)).collect();
    assert_eq!(tool_calls.len(), expected.len(), "each call's event arrived, none is unknown");
    for (session, ids) in &sessions {
        let order: Vec<&String> = arrivals.iter().filter(|id| ids.contains(id)).collect();
        let calls: Vec<&String> = ids.iter().collect();
        assert_eq!(order, calls, "events of session `{session}` arrive in call order");
    }
    for line in &lines {
        assert!(line["event_version"] == 1 || line["event_version"] == 2, "every line has an event_version: {line}");
        assert!(!line.to_string().contains(FULL_KEY), "no model key in a forwarded event: {line}");
    }
    let stored = gateway.admin_get("/api/audit?limit=5000", Some(ADMIN_KEY)).await?;
    let stored_ids: BTreeSet<&str> =
        stored.json["events"].as_array().into_iter().flatten().filter_map(|event| event["event_id"].as_str()).collect();
    let received_ids: BTreeSet<&str> = lines.iter().filter_map(|line| line["event_id"].as_str()).collect();
    let missing: Vec<&&str> = stored_ids.difference(&received_ids).collect();
    assert!(missing.is_empty(), "stored events that never reached the SIEM: {missing:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_every_stored_event_to_the_siem_before_exit() -> Result<()> {
    let receiver = Receiver::start().await?;
    let mut gateway = Gateway::start(siem_options(&receiver, "5s"))?;
    let ids = calls(&gateway, "sigterm", 30).await?;

    let code = gateway.terminate(Duration::from_secs(30))?;

    assert_eq!(code, 0, "a SIGTERM ends the gateway cleanly; output:\n{}", gateway.recent_output());
    let lines = receiver.json_lines(SIEM_PATH)?;
    let received: BTreeSet<&str> = lines.iter().filter_map(|line| line["event_id"].as_str()).collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !received.contains(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "events not forwarded before the gateway exited: {missing:?}; output:\n{}",
        gateway.recent_output()
    );
    for request in receiver.requests(SIEM_PATH) {
        let signature = request.headers.get("x-mcpsec-signature").and_then(|value| value.to_str().ok());
        assert!(signature.is_some_and(|value| value.starts_with("sha256=")), "every request is signed: {signature:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_siem_does_not_hold_calls_back() -> Result<()> {
    let receiver = Receiver::start().await?;
    receiver.set_hang(true);
    // Far longer than any call takes: a call that waited for the SIEM would take this long.
    let siem_timeout = Duration::from_secs(30);
    let gateway = Gateway::start(siem_options(&receiver, "30s"))?;

    let started = Instant::now();
    let ids = calls(&gateway, "hanging-siem", 20).await?;
    let elapsed = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.held() == 0 {
        if Instant::now() >= deadline {
            bail!("the gateway never reached the hanging receiver; output:\n{}", gateway.recent_output());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("20 calls took {elapsed:?} while the SIEM held {} requests unanswered", receiver.held());
    assert_eq!(ids.len(), 20, "every call was answered while the SIEM held its requests");
    assert!(
        elapsed < siem_timeout,
        "20 calls took {elapsed:?} while the SIEM hung; they must not wait for its {siem_timeout:?} timeout"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_spike_alerts_once_and_quarantines_the_model() -> Result<()> {
    let receiver = Receiver::start().await?;
    let options = GatewayOptions {
        demo_tools: true,
        keys_and_policy: Some((TEST_KEYS, SPIKE_POLICY)),
        extra_env: vec![
            ("SIEM_URL".to_owned(), receiver.url(SIEM_PATH)),
            ("ALERT_WEBHOOK_URL".to_owned(), receiver.url(HOOK_PATH)),
        ],
        ..GatewayOptions::default()
    };
    let gateway = Gateway::start(options)?;

    let denied = json!({"model_id": FULL_MODEL, "session_id": "spike", "tool_name": DENIED_TOOL, "input": {}});
    for _ in 0..5 {
        let reply = gateway.rest_call(Some(FULL_KEY), &denied).await?;
        ensure!(reply.status == 403, "a denied call answered {}: {}", reply.status, reply.text);
    }

    let alerts = wait_for_alerts(&gateway, 3).await?;
    let mut subjects: Vec<(String, String)> = alerts
        .iter()
        .map(|alert| {
            (
                alert["anomaly"]["scope"].as_str().unwrap_or("?").to_owned(),
                alert["anomaly"]["subject"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            ("all".to_owned(), "*".to_owned()),
            ("model".to_owned(), FULL_MODEL.to_owned()),
            ("session".to_owned(), "spike".to_owned())
        ],
        "one denial spike per model, session and overall, however many denials crossed it: {alerts:?}"
    );
    for alert in &alerts {
        assert_eq!(alert["anomaly"]["detector"], "denial_spike");
        assert_eq!(alert["kind"], "anomaly");
        assert!(alert["anomaly"]["observed"].as_u64().unwrap_or(0) > 3, "observed is above the threshold: {alert}");
    }

    let hooks = receiver
        .wait_for_lines(HOOK_PATH, DELIVERY_TIMEOUT, |lines| lines.len() >= 3)
        .await
        .with_context(|| format!("gateway output:\n{}", gateway.recent_output()))?;
    for hook in &hooks {
        let text = hook["text"].as_str().unwrap_or_default();
        assert!(!text.is_empty(), "a webhook message has Slack's `text`: {hook}");
    }
    let alert_ids: Vec<&str> = alerts.iter().filter_map(|alert| alert["event_id"].as_str()).collect();
    receiver
        .wait_for_lines(SIEM_PATH, DELIVERY_TIMEOUT, |lines| {
            alert_ids.iter().all(|id| lines.iter().any(|line| line["event_id"] == *id))
        })
        .await
        .context("the anomaly events reach the SIEM too")?;

    // The model is quarantined: even an allowed tool is denied, with the reason.
    let allowed =
        json!({"model_id": FULL_MODEL, "session_id": "after-spike", "tool_name": "calendar.list_events", "input": {}});
    let reply = wait_for_status(&gateway, &allowed, 403).await?;
    assert_eq!(reply["rules"], json!(["quarantine"]), "the denial names the quarantine: {reply}");
    assert!(reply["reason"].as_str().unwrap_or_default().contains("quarantined until"), "{reply}");

    let lift = gateway.delete(&format!("/api/keys/{FULL_MODEL}/quarantine"), ADMIN_KEY).await?;
    assert_eq!(lift.status, 200, "lifting the quarantine: {}", lift.text);
    assert_eq!(lift.json["quarantined_until"], Value::Null);
    let reply = gateway.rest_call(Some(FULL_KEY), &allowed).await?;
    assert_eq!(reply.status, 200, "after the lift the model calls again: {}", reply.text);
    Ok(())
}

/// Polls `GET /api/alerts` until it lists at least `count` alerts.
async fn wait_for_alerts(gateway: &Gateway, count: usize) -> Result<Vec<Value>> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let reply = gateway.admin_get("/api/alerts", Some(ADMIN_KEY)).await?;
        ensure!(reply.status == 200, "GET /api/alerts answered {}: {}", reply.status, reply.text);
        let alerts = reply.json.get("alerts").and_then(Value::as_array).cloned().unwrap_or_default();
        if alerts.len() >= count {
            return Ok(alerts);
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} alerts after {DELIVERY_TIMEOUT:?}: {}; output:\n{}",
                alerts.len(),
                reply.text,
                gateway.recent_output()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Repeats a REST call until it answers `status`, since the quarantine applies once the
/// detector has seen the spike.
async fn wait_for_status(gateway: &Gateway, body: &Value, status: u16) -> Result<Value> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let reply = gateway.rest_call(Some(FULL_KEY), body).await?;
        if reply.status == status {
            return Ok(reply.json);
        }
        if Instant::now() >= deadline {
            bail!("the call still answers {} instead of {status}: {}", reply.status, reply.text);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
