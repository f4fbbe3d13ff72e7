//! The anomaly detectors against the in-memory counter store. Every event time is chosen by
//! the test, so each case sits exactly at, just below or just above a threshold or a window
//! edge.
//!
//! Times start at [`BASE`], a multiple of 600 s, so it starts a fixed window of every
//! default length (60 s, 120 s and 600 s) and a bucket of every sliding window.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]

#[path = "common/calls.rs"]
mod calls;

use std::collections::BTreeSet;
use std::time::Duration;

use calls::{BASE, call};
use mcpsec_gateway::anomaly::{
    CounterState, CounterStore, CounterUpdate, CounterValue, Detector, MemoryCounters, first_use_anomaly_id,
    window_anomaly_id,
};
use mcpsec_gateway::audit::{AnomalyScope, AuditEvent, Detector as Kind, EventKind, Outcome, Route};
use mcpsec_gateway::store::StoreError;
use mcpsec_policy::{AnomalySettings, CallRateSpike, DenialSpike, ScopeProbing};
use time::OffsetDateTime;

fn deny(time: i64, model: &str, session: &str) -> AuditEvent {
    call(time, model, session, "read_file", Outcome::Deny)
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

fn call_rate_only() -> AnomalySettings {
    AnomalySettings { call_rate_spike: Some(CallRateSpike::default()), ..off() }
}

fn probing_only() -> AnomalySettings {
    AnomalySettings { scope_probing: Some(ScopeProbing::default()), ..off() }
}

fn first_use_only() -> AnomalySettings {
    AnomalySettings { first_tool_use: true, ..off() }
}

async fn observe(
    detector: &Detector,
    settings: &AnomalySettings,
    events: &[AuditEvent],
    counters: &MemoryCounters,
) -> Vec<AuditEvent> {
    detector.observe(settings, events, counters).await.unwrap()
}

/// Returns the detector, scope and subject of each anomaly, sorted.
fn subjects(anomalies: &[AuditEvent]) -> Vec<(Kind, AnomalyScope, String)> {
    let mut subjects: Vec<_> = anomalies
        .iter()
        .map(|event| {
            let anomaly = event.anomaly.as_ref().unwrap();
            (anomaly.detector, anomaly.scope, anomaly.subject.clone())
        })
        .collect();
    subjects.sort();
    subjects
}

fn unix(time: OffsetDateTime) -> i64 {
    time.unix_timestamp()
}

// Denial spike ------------------------------------------------------------------------------

/// One case of the denial-spike table: `denials` denials, the i-th by `model_of(i)` in
/// `session_of(i)`.
struct DenialCase {
    name: &'static str,
    denials: usize,
    model_of: fn(usize) -> String,
    session_of: fn(usize) -> String,
    expected: Vec<(Kind, AnomalyScope, String)>,
}

#[tokio::test]
async fn denial_spike_raises_above_threshold_per_model_session_and_overall() {
    let same: fn(usize) -> String = |_| "m".to_owned();
    let distinct: fn(usize) -> String = |index| format!("x{index}");
    let model = (Kind::DenialSpike, AnomalyScope::Model, "m".to_owned());
    let session = (Kind::DenialSpike, AnomalyScope::Session, "m".to_owned());
    let all = (Kind::DenialSpike, AnomalyScope::All, "*".to_owned());
    let case =
        |name, denials, model_of, session_of, expected| DenialCase { name, denials, model_of, session_of, expected };

    let cases = [
        case("ten by one model in one session", 10, same, same, vec![]),
        case("eleven by one model in one session", 11, same, same, vec![model.clone(), session.clone(), all.clone()]),
        case("eleven by one model in many sessions", 11, same, distinct, vec![model.clone(), all.clone()]),
        case("eleven by many models in one session", 11, distinct, same, vec![session.clone(), all.clone()]),
        case("eleven by many models in many sessions", 11, distinct, distinct, vec![all.clone()]),
        case("ten by many models in many sessions", 10, distinct, distinct, vec![]),
    ];

    for case in cases {
        let events: Vec<_> = (0..case.denials)
            .map(|index| deny(BASE + index as i64, &(case.model_of)(index), &(case.session_of)(index)))
            .collect();
        let anomalies = observe(&Detector::new(), &denials_only(), &events, &MemoryCounters::new()).await;
        let mut expected = case.expected;
        expected.sort();
        assert_eq!(subjects(&anomalies), expected, "{}", case.name);
    }
}

#[tokio::test]
async fn denial_spike_counts_unauthorized_but_not_allowed_or_errors() {
    // (decision, spikes of model `m`, spikes overall). A failed key proves no model, so it
    // counts overall (and per session) but never for the model it claims.
    let cases = [(Outcome::Unauthorized, 0, 1), (Outcome::Deny, 1, 1), (Outcome::Allow, 0, 0), (Outcome::Error, 0, 0)];
    for (decision, per_model, overall) in cases {
        let events: Vec<_> = (0..11).map(|index| call(BASE + index, "m", "", "t", decision)).collect();
        let anomalies = observe(&Detector::new(), &denials_only(), &events, &MemoryCounters::new()).await;
        let scopes: Vec<AnomalyScope> =
            anomalies.iter().filter_map(|event| event.anomaly.as_ref().map(|anomaly| anomaly.scope)).collect();
        let count = |scope| scopes.iter().filter(|found| **found == scope).count();
        assert_eq!(count(AnomalyScope::Model), per_model, "{decision:?} per model");
        assert_eq!(count(AnomalyScope::All), overall, "{decision:?} overall");
    }
}

#[tokio::test]
async fn failed_keys_never_quarantine_the_claimed_model() {
    let settings = AnomalySettings { quarantine: Some(Duration::from_secs(600)), ..denials_only() };
    let events: Vec<_> = (0..20).map(|index| call(BASE + index, "victim", "s", "t", Outcome::Unauthorized)).collect();
    let anomalies = observe(&Detector::new(), &settings, &events, &MemoryCounters::new()).await;
    assert!(!anomalies.is_empty(), "the failed keys raise a spike for their session and overall");
    for event in &anomalies {
        let anomaly = event.anomaly.as_ref().unwrap();
        assert_ne!(anomaly.scope, AnomalyScope::Model, "{event:?}");
        assert_eq!(anomaly.quarantined_until, None, "{event:?}");
    }
}

#[tokio::test]
async fn denial_spike_window_edges() {
    // The trigger is at the last second of a 10 s bucket, so its window is exactly the 120 s
    // ending at it: from `trigger - 119` on.
    let trigger = BASE + 119;
    let cases =
        [("first denial just inside", trigger - 119, true), ("first denial just outside", trigger - 120, false)];
    for (case, first, raised) in cases {
        let mut events = vec![deny(first, "m", "s")];
        events.extend((0..10).map(|index| deny(trigger - 9 + index, "m", "s")));
        let anomalies = observe(&Detector::new(), &denials_only(), &events, &MemoryCounters::new()).await;
        let model = anomalies.iter().any(|event| event.anomaly.as_ref().unwrap().scope == AnomalyScope::Model);
        assert_eq!(model, raised, "{case}");
    }
}

#[tokio::test]
async fn denial_spike_fields_describe_the_anomaly() {
    let events: Vec<_> = (0..12).map(|index| deny(BASE + 30 + index, "m-1", "s-1")).collect();
    let anomalies = observe(&Detector::new(), &denials_only(), &events, &MemoryCounters::new()).await;
    let trigger = events.last().unwrap();

    let by_scope = |scope| anomalies.iter().find(|event| event.anomaly.as_ref().unwrap().scope == scope).unwrap();
    let model = by_scope(AnomalyScope::Model);
    let anomaly = model.anomaly.as_ref().unwrap();
    assert_eq!(model.event_id, window_anomaly_id(Kind::DenialSpike, AnomalyScope::Model, "m-1", BASE));
    assert_eq!(model.time, trigger.time);
    assert_eq!(model.session_id, "");
    assert_eq!(model.model_id, "m-1");
    assert_eq!(model.key_id, None);
    assert_eq!(model.route, Route::Gateway);
    assert_eq!(model.tool_name, "");
    assert_eq!(model.decision, Outcome::Alert);
    assert_eq!(model.kind, EventKind::Anomaly);
    assert_eq!(model.rule.as_deref(), Some("anomaly:denial_spike"));
    assert!(model.rules.is_empty());
    assert_eq!(model.latency_ms, 0.0);
    assert_eq!(
        model.reason,
        "denial spike: 12 denied calls by model `m-1` within 120 s, more than the threshold of 10"
    );
    assert_eq!(anomaly.subject, "m-1");
    assert_eq!(anomaly.observed, 12);
    assert_eq!(anomaly.threshold, 10);
    assert_eq!(anomaly.window_seconds, 120);
    assert_eq!(unix(anomaly.window_start), BASE);
    assert_eq!(anomaly.trigger_event_id, trigger.event_id);
    assert_eq!(anomaly.baseline, None);
    assert_eq!(anomaly.quarantined_until, None);

    let session = by_scope(AnomalyScope::Session);
    assert_eq!(session.session_id, "s-1");
    assert_eq!(session.model_id, "m-1");
    assert!(session.reason.contains("in session `s-1`"), "{}", session.reason);

    let all = by_scope(AnomalyScope::All);
    assert_eq!(all.session_id, "");
    assert_eq!(all.model_id, "");
    assert_eq!(all.anomaly.as_ref().unwrap().subject, "*");
}

#[tokio::test]
async fn denial_spike_once_per_fixed_window() {
    let detector = Detector::new();
    let counters = MemoryCounters::new();
    let settings = AnomalySettings {
        denial_spike: Some(DenialSpike { threshold: 10, window: Duration::from_secs(120) }),
        ..off()
    };
    let model_ids = |anomalies: &[AuditEvent]| -> Vec<String> {
        anomalies
            .iter()
            .filter(|event| event.anomaly.as_ref().unwrap().scope == AnomalyScope::Model)
            .map(|event| event.event_id.clone())
            .collect()
    };

    let spike: Vec<_> = (0..11).map(|index| deny(BASE + 50 + index, "m", "s")).collect();
    let first = model_ids(&observe(&detector, &settings, &spike, &counters).await);
    assert_eq!(first.len(), 1);

    let again = model_ids(&observe(&detector, &settings, &[deny(BASE + 100, "m", "s")], &counters).await);
    assert_eq!(again, first, "a second spike in the same window has the same id");

    detector.mark_emitted(first.iter().map(String::as_str));
    let marked = model_ids(&observe(&detector, &settings, &[deny(BASE + 110, "m", "s")], &counters).await);
    assert!(marked.is_empty(), "an emitted anomaly is not returned again: {marked:?}");

    let next = observe(&detector, &settings, &[deny(BASE + 120, "m", "s")], &counters).await;
    let next_ids = model_ids(&next);
    assert_eq!(next_ids.len(), 1);
    assert_ne!(next_ids, first, "the next window has a new id");
    let anomaly = next.iter().find(|event| event.event_id == next_ids[0]).unwrap().anomaly.clone().unwrap();
    assert_eq!(unix(anomaly.window_start), BASE + 120);
    assert_eq!(anomaly.observed, 14);
}

#[tokio::test]
async fn denial_spike_counts_batches_like_one() {
    let detector = Detector::new();
    let counters = MemoryCounters::new();
    let events: Vec<_> = (0..11).map(|index| deny(BASE + index, "m", "s")).collect();

    let first = observe(&detector, &denials_only(), &events[..4], &counters).await;
    let second = observe(&detector, &denials_only(), &events[4..10], &counters).await;
    let third = observe(&detector, &denials_only(), &events[10..], &counters).await;

    assert!(first.is_empty());
    assert!(second.is_empty());
    assert_eq!(third.len(), 3);
    let single = observe(&Detector::new(), &denials_only(), &events, &MemoryCounters::new()).await;
    let ids = |anomalies: &[AuditEvent]| anomalies.iter().map(|event| event.event_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&third), ids(&single));
}

#[tokio::test]
async fn denial_spike_counts_two_detectors_on_one_store_together() {
    let counters = MemoryCounters::new();
    let (shard_a, shard_b) = (Detector::new(), Detector::new());
    let events: Vec<_> = (0..11).map(|index| deny(BASE + index, "m", "s")).collect();

    let from_a = observe(&shard_a, &denials_only(), &events[..6], &counters).await;
    let from_b = observe(&shard_b, &denials_only(), &events[6..], &counters).await;

    assert!(from_a.is_empty());
    assert_eq!(subjects(&from_b).len(), 3);
}

#[tokio::test]
async fn quarantine_applies_only_to_model_denial_spikes() {
    let quarantine = Duration::from_secs(900);
    let settings = AnomalySettings { quarantine: Some(quarantine), ..denials_only() };
    let events: Vec<_> = (0..11).map(|index| deny(BASE + index, "m", "s")).collect();
    let trigger = events.last().unwrap().time;

    let anomalies = observe(&Detector::new(), &settings, &events, &MemoryCounters::new()).await;
    assert_eq!(anomalies.len(), 3);
    for event in &anomalies {
        let anomaly = event.anomaly.as_ref().unwrap();
        let expected = (anomaly.scope == AnomalyScope::Model).then(|| trigger + quarantine);
        assert_eq!(anomaly.quarantined_until, expected, "{:?}", anomaly.scope);
    }

    let without = observe(&Detector::new(), &denials_only(), &events, &MemoryCounters::new()).await;
    assert!(without.iter().all(|event| event.anomaly.as_ref().unwrap().quarantined_until.is_none()));
}

// Call-rate spike ---------------------------------------------------------------------------

/// Ten calls of `model` in each of the 30 windows of 60 s before `BASE`.
fn flat_baseline(model: &str) -> Vec<AuditEvent> {
    (1..=30)
        .flat_map(|window| (0..10).map(move |index| BASE - window * 60 + index))
        .map(|time| call(time, model, "s", "t", Outcome::Allow))
        .collect()
}

#[tokio::test]
async fn call_rate_spike_against_a_flat_baseline() {
    // A mean of 10 calls per window and a factor of 5 make a threshold of 50.
    for (burst, raised) in [(49, false), (50, false), (51, true)] {
        let detector = Detector::new();
        let counters = MemoryCounters::new();
        let before = observe(&detector, &call_rate_only(), &flat_baseline("m"), &counters).await;
        assert!(before.is_empty(), "the baseline itself raises nothing");

        let calls: Vec<_> = (0..burst).map(|index| call(BASE + index % 60, "m", "s", "t", Outcome::Deny)).collect();
        let anomalies = observe(&detector, &call_rate_only(), &calls, &counters).await;
        assert_eq!(anomalies.len(), usize::from(raised), "burst of {burst}");

        if let Some(event) = anomalies.first() {
            let anomaly = event.anomaly.as_ref().unwrap();
            assert_eq!(anomaly.detector, Kind::CallRateSpike);
            assert_eq!(anomaly.observed, 51);
            assert_eq!(anomaly.threshold, 50);
            assert_eq!(anomaly.baseline, Some(10.0));
            assert_eq!(anomaly.window_seconds, 60);
            assert_eq!(unix(anomaly.window_start), BASE);
            assert_eq!(event.model_id, "m");
            assert_eq!(event.event_id, window_anomaly_id(Kind::CallRateSpike, AnomalyScope::Model, "m", BASE));
            assert_eq!(
                event.reason,
                "call-rate spike: 51 calls by model `m` within 60 s, more than the threshold of 50 (baseline 10.0 calls per window)"
            );
        }
    }
}

#[tokio::test]
async fn call_rate_spike_without_history_uses_min_calls() {
    for (calls, raised) in [(29, false), (30, false), (31, true)] {
        let events: Vec<_> = (0..calls).map(|index| call(BASE + index, "new", "s", "t", Outcome::Allow)).collect();
        let anomalies = observe(&Detector::new(), &call_rate_only(), &events, &MemoryCounters::new()).await;
        assert_eq!(anomalies.len(), usize::from(raised), "{calls} calls");
        if let Some(anomaly) = anomalies.first().and_then(|event| event.anomaly.as_ref()) {
            assert_eq!(anomaly.threshold, 30);
            assert_eq!(anomaly.baseline, Some(0.0));
        }
    }
}

#[tokio::test]
async fn call_rate_spike_counts_only_the_current_window() {
    // 20 calls at the end of one window and 20 at the start of the next: 40 calls within a
    // minute, but no window contains more than 30.
    let mut events: Vec<_> = (0..20).map(|index| call(BASE - 1 - index % 5, "m", "s", "t", Outcome::Allow)).collect();
    events.extend((0..20).map(|index| call(BASE + index % 5, "m", "s", "t", Outcome::Allow)));
    let anomalies = observe(&Detector::new(), &call_rate_only(), &events, &MemoryCounters::new()).await;
    assert!(anomalies.is_empty(), "{anomalies:?}");
}

// Scope probing -----------------------------------------------------------------------------

fn denied_tools(session: &str, tools: &[String], start: i64) -> Vec<AuditEvent> {
    tools
        .iter()
        .enumerate()
        .map(|(index, tool)| call(start + index as i64, "m", session, tool, Outcome::Deny))
        .collect()
}

/// Keeps the anomalies about sessions, leaving out the per-model ones that the same denials
/// raise.
fn per_session(anomalies: Vec<AuditEvent>) -> Vec<AuditEvent> {
    anomalies.into_iter().filter(|event| event.anomaly.as_ref().unwrap().scope == AnomalyScope::Session).collect()
}

fn tool_names(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("tool_{index:02}")).collect()
}

#[tokio::test]
async fn scope_probing_raises_above_distinct_tools() {
    for (distinct, raised) in [(4, false), (5, false), (6, true)] {
        let events = denied_tools("s", &tool_names(distinct), BASE);
        let anomalies = per_session(observe(&Detector::new(), &probing_only(), &events, &MemoryCounters::new()).await);
        assert_eq!(anomalies.len(), usize::from(raised), "{distinct} tools");

        if let Some(event) = anomalies.first() {
            let anomaly = event.anomaly.as_ref().unwrap();
            assert_eq!(anomaly.detector, Kind::ScopeProbing);
            assert_eq!(anomaly.scope, AnomalyScope::Session);
            assert_eq!(anomaly.observed, 6);
            assert_eq!(anomaly.threshold, 5);
            assert_eq!(anomaly.tools, tool_names(6));
            assert_eq!(event.session_id, "s");
            assert_eq!(event.model_id, "m");
            assert_eq!(event.event_id, window_anomaly_id(Kind::ScopeProbing, AnomalyScope::Session, "s", BASE));
        }
    }
}

#[tokio::test]
async fn scope_probing_counts_a_repeated_tool_once() {
    let mut tools = vec!["same".to_owned(); 10];
    tools.extend(tool_names(4));
    let events = denied_tools("s", &tools, BASE);
    let anomalies = observe(&Detector::new(), &probing_only(), &events, &MemoryCounters::new()).await;
    assert!(anomalies.is_empty(), "{anomalies:?}");
}

#[tokio::test]
async fn scope_probing_counts_only_denials() {
    let events: Vec<_> = tool_names(8)
        .iter()
        .enumerate()
        .map(|(index, tool)| call(BASE + index as i64, "m", "s", tool, Outcome::Unauthorized))
        .collect();
    let anomalies = observe(&Detector::new(), &probing_only(), &events, &MemoryCounters::new()).await;
    assert!(anomalies.is_empty(), "{anomalies:?}");
}

#[tokio::test]
async fn scope_probing_lists_at_most_twenty_tools() {
    let events = denied_tools("s", &tool_names(25), BASE);
    let anomalies = observe(&Detector::new(), &probing_only(), &events, &MemoryCounters::new()).await;
    let anomaly = anomalies.first().and_then(|event| event.anomaly.as_ref()).unwrap();
    // All 25 calls fall in one 50 s bucket, which keeps at most max(5 + 1, 20) tools.
    assert_eq!(anomaly.observed, 20);
    assert_eq!(anomaly.tools, tool_names(20));

    let spread: Vec<_> = tool_names(25)
        .iter()
        .enumerate()
        .map(|(index, tool)| call(BASE - 50 * (index as i64 % 2), "m", "s", tool, Outcome::Deny))
        .collect();
    let anomalies = observe(&Detector::new(), &probing_only(), &spread, &MemoryCounters::new()).await;
    let anomaly = anomalies.first().and_then(|event| event.anomaly.as_ref()).unwrap();
    assert_eq!(anomaly.observed, 25, "two buckets keep all 25 tools");
    assert_eq!(anomaly.tools, tool_names(20));
}

#[tokio::test]
async fn scope_probing_still_raises_once_a_bucket_is_full() {
    let detector = Detector::new();
    let counters = MemoryCounters::new();
    let first =
        per_session(observe(&detector, &probing_only(), &denied_tools("s", &tool_names(25), BASE), &counters).await);
    assert_eq!(first.len(), 1);

    // The bucket contains 20 tools, all it needs, so a new tool in it is not stored.
    let late = vec![call(BASE + 40, "m", "s", "zz_late", Outcome::Deny)];
    let second = per_session(observe(&detector, &probing_only(), &late, &counters).await);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event_id, first[0].event_id);
    let anomaly = second[0].anomaly.as_ref().unwrap();
    assert_eq!(anomaly.observed, 20);
    assert_eq!(anomaly.trigger_event_id, late[0].event_id);
}

#[tokio::test]
async fn scope_probing_window_edges() {
    // The trigger is at the last second of a 50 s bucket: its window is the 600 s ending at it.
    let trigger = BASE + 599;
    let cases = [("first tool just inside", trigger - 599, true), ("first tool just outside", trigger - 600, false)];
    for (case, first, raised) in cases {
        let mut events = vec![call(first, "m", "s", "first", Outcome::Deny)];
        events.extend(denied_tools("s", &tool_names(5), trigger - 4));
        let anomalies = observe(&Detector::new(), &probing_only(), &events, &MemoryCounters::new()).await;
        assert_eq!(!anomalies.is_empty(), raised, "{case}");
    }
}

#[tokio::test]
async fn scope_probing_counts_batches_and_detectors_together() {
    let counters = MemoryCounters::new();
    let tools = tool_names(6);
    let from_a = observe(&Detector::new(), &probing_only(), &denied_tools("s", &tools[..3], BASE), &counters).await;
    let from_b = per_session(
        observe(&Detector::new(), &probing_only(), &denied_tools("s", &tools[3..], BASE + 10), &counters).await,
    );
    assert!(from_a.is_empty());
    assert_eq!(from_b.len(), 1);
    assert_eq!(from_b[0].anomaly.as_ref().unwrap().tools, tools);
}

#[tokio::test]
async fn scope_probing_across_sessions_raises_per_model() {
    // One tool per session: no session crosses the threshold, the model does.
    let events: Vec<_> = tool_names(6)
        .iter()
        .enumerate()
        .map(|(index, tool)| call(BASE + index as i64, "m", &format!("s{index}"), tool, Outcome::Deny))
        .collect();
    let anomalies = observe(&Detector::new(), &probing_only(), &events, &MemoryCounters::new()).await;
    let scopes: Vec<(AnomalyScope, String)> = anomalies
        .iter()
        .map(|event| {
            let anomaly = event.anomaly.as_ref().unwrap();
            (anomaly.scope, anomaly.subject.clone())
        })
        .collect();
    assert_eq!(scopes, [(AnomalyScope::Model, "m".to_owned())]);
}

// First tool use ----------------------------------------------------------------------------

#[tokio::test]
async fn first_use_yields_one_candidate_per_pair() {
    let events = vec![
        call(BASE, "m1", "s", "t1", Outcome::Allow),
        call(BASE + 1, "m1", "s", "t1", Outcome::Allow),
        call(BASE + 2, "m1", "s", "t2", Outcome::Allow),
        call(BASE + 3, "m2", "s", "t1", Outcome::Allow),
        call(BASE + 4, "m3", "s", "t1", Outcome::Deny),
    ];
    let detector = Detector::new();
    let counters = MemoryCounters::new();

    let candidates = observe(&detector, &first_use_only(), &events, &counters).await;
    let ids: Vec<_> = candidates.iter().map(|event| event.event_id.clone()).collect();
    let expected =
        [first_use_anomaly_id("m1", "t1"), first_use_anomaly_id("m1", "t2"), first_use_anomaly_id("m2", "t1")];
    assert_eq!(ids, expected);

    let first = &candidates[0];
    let anomaly = first.anomaly.as_ref().unwrap();
    assert_eq!(first.time, events[0].time);
    assert_eq!(first.tool_name, "t1");
    assert_eq!(first.model_id, "m1");
    assert_eq!(first.session_id, "");
    assert_eq!(first.rule.as_deref(), Some("anomaly:first_tool_use"));
    assert_eq!(anomaly.detector, Kind::FirstToolUse);
    assert_eq!(anomaly.window_seconds, 0);
    assert_eq!(anomaly.window_start, events[0].time);
    assert_eq!(anomaly.observed, 1);
    assert_eq!(anomaly.threshold, 0);
    assert_eq!(anomaly.trigger_event_id, events[0].event_id);

    detector.mark_emitted(ids.iter().map(String::as_str));
    let again = observe(&detector, &first_use_only(), &events, &counters).await;
    assert!(again.is_empty(), "{again:?}");

    let fresh = observe(&Detector::new(), &first_use_only(), &events, &counters).await;
    assert_eq!(fresh.len(), 3, "another process returns the candidates again");
}

#[tokio::test]
async fn first_use_off_yields_nothing() {
    let events = vec![call(BASE, "m1", "s", "t1", Outcome::Allow)];
    let anomalies = observe(&Detector::new(), &off(), &events, &MemoryCounters::new()).await;
    assert!(anomalies.is_empty());
}

// All detectors ----------------------------------------------------------------------------

#[tokio::test]
async fn anomaly_events_in_the_input_are_skipped() {
    let mut events: Vec<_> = (0..20).map(|index| deny(BASE + index, "m", "s")).collect();
    for event in &mut events {
        event.kind = EventKind::Anomaly;
    }
    let counters = MemoryCounters::new();
    let settings = AnomalySettings { first_tool_use: true, ..AnomalySettings::default() };

    let anomalies = observe(&Detector::new(), &settings, &events, &counters).await;

    assert!(anomalies.is_empty(), "{anomalies:?}");
    assert!(counters.is_empty());
}

#[tokio::test]
async fn ids_are_deterministic_on_a_fresh_detector() {
    let mut events: Vec<_> = (0..12).map(|index| deny(BASE + index, "m", "s")).collect();
    events.extend(denied_tools("s", &tool_names(7), BASE + 20));
    events.extend((0..40).map(|index| call(BASE + 30 + index % 20, "m", "s", "t", Outcome::Allow)));
    let settings = AnomalySettings::default();

    let first = observe(&Detector::new(), &settings, &events, &MemoryCounters::new()).await;
    let second = observe(&Detector::new(), &settings, &events, &MemoryCounters::new()).await;

    assert_eq!(first, second);
    let detectors: BTreeSet<Kind> = first.iter().map(|event| event.anomaly.as_ref().unwrap().detector).collect();
    let expected = BTreeSet::from([Kind::DenialSpike, Kind::CallRateSpike, Kind::ScopeProbing, Kind::FirstToolUse]);
    assert_eq!(detectors, expected);
}

#[test]
fn observe_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (detector, counters, settings) = (Detector::new(), MemoryCounters::new(), off());
    let future = detector.observe(&settings, &[], &counters);
    assert_send(&future);
}

// Memory counter store ------------------------------------------------------------------------

fn update(key: &str, bucket: i64, value: CounterValue, oldest_bucket: i64, event_time: i64) -> CounterUpdate {
    CounterUpdate { key: key.to_owned(), bucket, value, oldest_bucket, expires_at: event_time + 100, event_time }
}

fn members(names: &[&str]) -> CounterValue {
    CounterValue::Members(names.iter().map(|name| (*name).to_owned()).collect())
}

#[tokio::test]
async fn memory_counters_merge_and_drop_old_buckets() {
    let counters = MemoryCounters::new();
    let states = counters
        .apply(vec![
            update("a", 5, CounterValue::Count(2), 0, 1000),
            update("a", 5, CounterValue::Count(3), 0, 1000),
            update("b", 5, members(&["x"]), 0, 1000),
            update("b", 5, members(&["x", "y"]), 0, 1000),
        ])
        .await
        .unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].buckets.get(&5), Some(&CounterValue::Count(5)));
    assert_eq!(states[1].buckets.get(&5), Some(&members(&["x", "y"])));

    let states = counters.apply(vec![update("a", 20, CounterValue::Count(1), 10, 1010)]).await.unwrap();
    let expected = CounterState { key: "a".to_owned(), buckets: [(20, CounterValue::Count(1))].into() };
    assert_eq!(states, [expected]);
}

#[tokio::test]
async fn memory_counters_drop_idle_keys_by_event_time() {
    let counters = MemoryCounters::new();
    counters.apply(vec![update("idle", 1, CounterValue::Count(1), 0, 1000)]).await.unwrap();
    counters.apply(vec![update("busy", 1, CounterValue::Count(1), 0, 1100)]).await.unwrap();
    assert_eq!(counters.len(), 2, "`idle` expires at 1100, not before");

    let states = counters.apply(vec![update("busy", 1, CounterValue::Count(1), 0, 1101)]).await.unwrap();
    assert_eq!(counters.len(), 1);
    assert_eq!(states[0].key, "busy");

    let idle = counters.apply(vec![update("idle", 1, CounterValue::Count(1), 0, 1101)]).await.unwrap();
    assert_eq!(idle[0].buckets.get(&1), Some(&CounterValue::Count(1)), "`idle` started over");
}

#[tokio::test]
async fn memory_counters_evict_the_stalest_key_when_full() {
    let counters = MemoryCounters::with_max_keys(2);
    counters.apply(vec![update("old", 1, CounterValue::Count(1), 0, 10)]).await.unwrap();
    counters.apply(vec![update("new", 1, CounterValue::Count(1), 0, 30)]).await.unwrap();
    counters.apply(vec![update("newer", 1, CounterValue::Count(1), 0, 20)]).await.unwrap();
    assert_eq!(counters.len(), 2);

    let old = counters.apply(vec![update("old", 1, CounterValue::Count(1), 0, 30)]).await.unwrap();
    assert_eq!(old[0].buckets.get(&1), Some(&CounterValue::Count(1)), "`old` was evicted");
    let new = counters.apply(vec![update("new", 1, CounterValue::Count(1), 0, 30)]).await.unwrap();
    assert_eq!(new[0].buckets.get(&1), Some(&CounterValue::Count(2)), "`new` was kept");
}

#[tokio::test]
async fn memory_counters_reject_a_count_mixed_with_members() {
    let counters = MemoryCounters::new();
    counters.apply(vec![update("k", 1, CounterValue::Count(1), 0, 10)]).await.unwrap();
    let error = counters.apply(vec![update("k", 1, members(&["x"]), 0, 10)]).await.unwrap_err();
    assert!(matches!(&error, StoreError::Corrupt(message) if message.contains("`k`")), "{error}");
}
