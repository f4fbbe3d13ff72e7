//! Tool-call audit events for the anomaly detector tests, with the time, model, session,
//! tool and decision chosen by the test. Include it with `#[path = "common/calls.rs"] mod calls;`.

use std::sync::atomic::{AtomicU64, Ordering};

use mcpsec_gateway::audit::{AuditEvent, EventKind, Outcome, Route};
use time::OffsetDateTime;

/// A Unix time that is a multiple of 600 s, so it starts a fixed window of every default
/// length (60 s, 120 s and 600 s) and a bucket of every sliding window.
pub const BASE: i64 = 1_700_000_400;

/// Returns a call at Unix second `time` with a fresh event id.
pub fn call(time: i64, model: &str, session: &str, tool: &str, decision: Outcome) -> AuditEvent {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    AuditEvent {
        event_id: format!("call-{sequence}"),
        time: OffsetDateTime::from_unix_timestamp(time).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        session_id: session.to_owned(),
        model_id: model.to_owned(),
        // Every decision but `unauthorized` comes from a caller whose key was accepted.
        key_id: (decision != Outcome::Unauthorized).then(|| format!("k_{model}")),
        route: Route::Rest,
        tool_name: tool.to_owned(),
        input: None,
        decision,
        reason: "test".to_owned(),
        rule: None,
        rules: Vec::new(),
        shadow: None,
        upstream: None,
        latency_ms: 1.0,
        kind: EventKind::ToolCall,
        anomaly: None,
    }
}
