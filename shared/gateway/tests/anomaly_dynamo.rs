//! The anomaly detectors against the DynamoDB counter store, on moto's emulator on
//! 127.0.0.1 with a counters table of their own, created by `ensure_counters_table`.
//!
//! Install the emulator with `bash infra/install-test-deps.sh`. Clients use static
//! credentials and the loopback endpoint, so nothing reaches AWS.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]

#[path = "common/calls.rs"]
mod calls;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use calls::{BASE, call};
use mcpsec_gateway::anomaly::{
    CounterStore, CounterUpdate, CounterValue, Detector, DynamoCounters, ensure_counters_table, window_anomaly_id,
};
use mcpsec_gateway::audit::{AnomalyScope, AuditEvent, Detector as Kind, Outcome};
use mcpsec_gateway::store::StoreError;
use mcpsec_policy::{AnomalySettings, CallRateSpike, DenialSpike, ScopeProbing};

#[path = "common/moto.rs"]
mod moto;

fn client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&moto::config())
}

/// Creates a counters table that no other test uses, and returns its name.
async fn counters_table() -> String {
    let table = format!("counters-{}", moto::unique_names().sessions_table);
    ensure_counters_table(&client(), &table).await.unwrap();
    table
}

fn denials(count: i64, start: i64) -> Vec<AuditEvent> {
    (0..count).map(|index| call(start + index, "m", "s", "read_file", Outcome::Deny)).collect()
}

fn off() -> AnomalySettings {
    AnomalySettings {
        denial_spike: None,
        call_rate_spike: None,
        scope_probing: None,
        first_tool_use: false,
        quarantine: None,
    }
}

fn denials_only() -> AnomalySettings {
    AnomalySettings { denial_spike: Some(DenialSpike::default()), ..off() }
}

fn scopes(anomalies: &[AuditEvent]) -> Vec<AnomalyScope> {
    let mut scopes: Vec<_> = anomalies.iter().map(|event| event.anomaly.as_ref().unwrap().scope).collect();
    scopes.sort();
    scopes
}

async fn item(table: &str, key: &str) -> HashMap<String, AttributeValue> {
    let output = client()
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    output.item.unwrap_or_default()
}

#[tokio::test]
async fn ensure_counters_table_is_idempotent() {
    let table = format!("counters-{}", moto::unique_names().sessions_table);

    let first = ensure_counters_table(&client(), &table).await.unwrap();
    let second = ensure_counters_table(&client(), &table).await.unwrap();

    assert_eq!(
        first,
        [
            format!("created table `{table}` with on-demand capacity"),
            format!("turned on the time to live of table `{table}` on `ttl`"),
        ]
    );
    assert_eq!(
        second,
        [format!("table `{table}` already exists"), format!("table `{table}` already has its time to live on `ttl`")]
    );
}

#[tokio::test]
async fn denial_spike_raises_above_threshold_on_dynamodb() {
    let table = counters_table().await;
    for (count, expected) in [(10, vec![]), (11, vec![AnomalyScope::Model, AnomalyScope::Session, AnomalyScope::All])] {
        let counters = DynamoCounters::new(client(), &table);
        // A window of its own for each case, so that the cases share no counter.
        let start = BASE + 1200 * count;
        let anomalies = Detector::new().observe(&denials_only(), &denials(count, start), &counters).await.unwrap();
        assert_eq!(scopes(&anomalies), expected, "{count} denials");
    }
}

#[tokio::test]
async fn denial_spike_counts_two_detectors_with_their_own_clients_together() {
    let table = counters_table().await;
    let shard_a = (Detector::new(), DynamoCounters::new(client(), &table));
    let shard_b = (Detector::new(), DynamoCounters::new(client(), &table));
    let events = denials(11, BASE);

    let from_a = shard_a.0.observe(&denials_only(), &events[..6], &shard_a.1).await.unwrap();
    let from_b = shard_b.0.observe(&denials_only(), &events[6..], &shard_b.1).await.unwrap();

    assert!(from_a.is_empty(), "{from_a:?}");
    assert_eq!(scopes(&from_b), [AnomalyScope::Model, AnomalyScope::Session, AnomalyScope::All]);
    let model = from_b.iter().find(|event| event.model_id == "m" && event.session_id.is_empty()).unwrap();
    assert_eq!(model.event_id, window_anomaly_id(Kind::DenialSpike, AnomalyScope::Model, "m", BASE));
    assert_eq!(model.anomaly.as_ref().unwrap().observed, 11);
}

#[tokio::test]
async fn denial_spike_window_edges_on_dynamodb() {
    let table = counters_table().await;
    let trigger = BASE + 119;
    let cases = [("just inside", "m-in", trigger - 119, true), ("just outside", "m-out", trigger - 120, false)];
    for (case, model, first, raised) in cases {
        let mut events = vec![call(first, model, "", "t", Outcome::Deny)];
        events.extend((0..10).map(|index| call(trigger - 9 + index, model, "", "t", Outcome::Deny)));
        let counters = DynamoCounters::new(client(), &table);
        let anomalies = Detector::new().observe(&denials_only(), &events, &counters).await.unwrap();
        let per_model = anomalies.iter().any(|event| event.model_id == model);
        assert_eq!(per_model, raised, "{case}");
    }
}

#[tokio::test]
async fn scope_probing_counts_distinct_tools_on_dynamodb() {
    let table = counters_table().await;
    let settings = AnomalySettings { scope_probing: Some(ScopeProbing::default()), ..off() };
    let tools: Vec<String> = (0..6).map(|index| format!("tool_{index}")).collect();
    let probe = |session: &str, tools: &[String], start: i64| -> Vec<AuditEvent> {
        tools
            .iter()
            .enumerate()
            .map(|(index, tool)| call(start + index as i64, "m", session, tool, Outcome::Deny))
            .collect()
    };
    let counters = DynamoCounters::new(client(), &table);
    let detector = Detector::new();

    let repeated: Vec<String> = tools[..5].iter().chain(&tools[..5]).cloned().collect();
    let five = detector.observe(&settings, &probe("s", &repeated, BASE), &counters).await.unwrap();
    assert!(five.is_empty(), "five distinct tools, each twice: {five:?}");

    let six = detector.observe(&settings, &probe("s", &tools[5..], BASE + 100), &counters).await.unwrap();
    let six: Vec<AuditEvent> =
        six.into_iter().filter(|event| event.anomaly.as_ref().unwrap().scope == AnomalyScope::Session).collect();
    assert_eq!(six.len(), 1);
    let anomaly = six[0].anomaly.as_ref().unwrap();
    assert_eq!(anomaly.observed, 6);
    assert_eq!(anomaly.tools, tools);

    let stored = item(&table, "scope_probing|session|s").await;
    let bucket = format!("b{}", BASE / 50);
    assert!(matches!(stored.get(&bucket), Some(AttributeValue::Ss(members)) if members.len() == 5), "{stored:?}");
}

#[tokio::test]
async fn call_rate_spike_on_dynamodb() {
    let table = counters_table().await;
    let settings = AnomalySettings { call_rate_spike: Some(CallRateSpike::default()), ..off() };
    let counters = DynamoCounters::new(client(), &table);
    let detector = Detector::new();
    let allowed = |model: &str, count: i64, start: i64| -> Vec<AuditEvent> {
        (0..count).map(|index| call(start + index % 60, model, "s", "t", Outcome::Allow)).collect()
    };

    // No history: the threshold is `min_calls`, 30.
    let thirty = detector.observe(&settings, &allowed("new", 30, BASE), &counters).await.unwrap();
    assert!(thirty.is_empty());
    let more = detector.observe(&settings, &allowed("new", 1, BASE + 59), &counters).await.unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].anomaly.as_ref().unwrap().threshold, 30);

    // Ten calls in each of the 30 windows before: the threshold is 5 × 10.
    let baseline: Vec<AuditEvent> = (1..=30).flat_map(|window| allowed("m", 10, BASE - window * 60)).collect();
    assert!(detector.observe(&settings, &baseline, &counters).await.unwrap().is_empty());
    let fifty = detector.observe(&settings, &allowed("m", 50, BASE), &counters).await.unwrap();
    assert!(fifty.is_empty(), "{fifty:?}");
    let burst = detector.observe(&settings, &allowed("m", 1, BASE + 30), &counters).await.unwrap();
    assert_eq!(burst.len(), 1);
    let anomaly = burst[0].anomaly.as_ref().unwrap();
    assert_eq!((anomaly.observed, anomaly.threshold, anomaly.baseline), (51, 50, Some(10.0)));
}

#[tokio::test]
async fn old_buckets_are_removed_and_the_item_has_a_ttl() {
    let table = counters_table().await;
    let counters = DynamoCounters::new(client(), &table);
    let update = |bucket: i64, oldest_bucket: i64, expires_at: i64| CounterUpdate {
        key: "k".to_owned(),
        bucket,
        value: CounterValue::Count(1),
        oldest_bucket,
        expires_at,
        event_time: expires_at - 100,
    };

    counters.apply(vec![update(100, 90, 5_000), update(101, 90, 5_000)]).await.unwrap();
    let stored = item(&table, "k").await;
    assert!(stored.contains_key("b100"), "{stored:?}");
    assert!(stored.contains_key("b101"), "{stored:?}");

    let states = counters.apply(vec![update(200, 101, 6_000)]).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].buckets.keys().copied().collect::<Vec<_>>(), [101, 200]);

    let stored = item(&table, "k").await;
    assert!(!stored.contains_key("b100"), "old bucket kept: {stored:?}");
    assert!(stored.contains_key("b101"));
    assert_eq!(stored.get("b200"), Some(&AttributeValue::N("1".to_owned())));
    assert_eq!(stored.get("ttl"), Some(&AttributeValue::N("6000".to_owned())));
}

#[tokio::test]
async fn detector_counters_have_a_ttl() {
    let table = counters_table().await;
    let counters = DynamoCounters::new(client(), &table);
    Detector::new().observe(&denials_only(), &denials(3, BASE), &counters).await.unwrap();

    let stored = item(&table, "denial_spike|all|*").await;
    // Twice the 12 buckets of 10 s of the default window, after the last event.
    let expected = (BASE + 2 + 240).to_string();
    assert_eq!(stored.get("ttl"), Some(&AttributeValue::N(expected)));
    assert_eq!(stored.get(&format!("b{}", BASE / 10)), Some(&AttributeValue::N("3".to_owned())));
}

#[tokio::test]
async fn missing_table_is_unavailable_and_named() {
    let counters = DynamoCounters::new(client(), "counters-missing");
    let error = Detector::new().observe(&denials_only(), &denials(1, BASE), &counters).await.unwrap_err();
    let StoreError::Unavailable(message) = &error else { panic!("expected unavailable, got {error:?}") };
    assert!(message.contains("table `counters-missing` not found"), "{message}");
    assert!(message.contains("update counter"), "{message}");
}
