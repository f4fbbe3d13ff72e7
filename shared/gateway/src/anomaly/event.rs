//! Anomaly events and their deterministic ids.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{Anomaly, AnomalyScope, AuditEvent, Detector, EventKind, Outcome, Route};

/// Maximum number of tools listed in a scope-probing anomaly.
pub(super) const MAX_LISTED_TOOLS: usize = 20;

/// Returns the event id of the anomaly that `detector` raises on `subject` in the window that
/// starts at `window_start` (Unix seconds).
///
/// The id is a UUID v8 made of the first 16 bytes of the SHA-256 of
/// `<detector>|<scope>|<subject>|<window_start>`, such as `denial_spike|model|m-1|1700000040`.
/// The detector and scope are in snake case, as serialized. Every process derives the same id
/// for the same anomaly.
pub fn window_anomaly_id(detector: Detector, scope: AnomalyScope, subject: &str, window_start: i64) -> String {
    let name = format!("{}|{}|{subject}|{window_start}", detector.as_str(), scope.as_str());
    uuid_from_name(&name)
}

/// Returns the event id of the anomaly raised on the first allowed call of `tool` by `model`:
/// a UUID v8 from the first 16 bytes of the SHA-256 of `first_tool_use|model|<model>|<tool>`.
///
/// NOTE: a model id that contains `|` can give two pairs the same id, such as model `a|b` with
/// tool `c` and model `a` with tool `b|c`. The second of them is then never stored.
pub fn first_use_anomaly_id(model: &str, tool: &str) -> String {
    uuid_from_name(&format!("first_tool_use|model|{model}|{tool}"))
}

fn uuid_from_name(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let bytes: [u8; 16] = digest.first_chunk().copied().unwrap_or_default();
    Uuid::new_v8(bytes).to_string()
}

/// A threshold crossed by a windowed counter, before it becomes an event.
#[derive(Debug, Clone)]
pub(super) struct Finding<'a> {
    pub(super) detector: Detector,
    pub(super) scope: AnomalyScope,
    pub(super) subject: String,
    pub(super) observed: u64,
    pub(super) threshold: u64,
    pub(super) window_seconds: u64,
    /// Start of the window that the anomaly is raised once for, in Unix seconds.
    pub(super) window_start: i64,
    pub(super) baseline: Option<f64>,
    pub(super) tools: Vec<String>,
    pub(super) quarantined_until: Option<OffsetDateTime>,
    /// The last counted event of the subject in the batch.
    pub(super) trigger: &'a AuditEvent,
}

impl Finding<'_> {
    pub(super) fn into_event(self) -> AuditEvent {
        let event_id = window_anomaly_id(self.detector, self.scope, &self.subject, self.window_start);
        let reason = self.reason();
        let (session_id, model_id) = match self.scope {
            AnomalyScope::Model => (String::new(), self.subject.clone()),
            AnomalyScope::Session => (self.subject.clone(), self.trigger.model_id.clone()),
            AnomalyScope::All => (String::new(), String::new()),
        };
        // The window starts at or before the trigger's time, which is a valid date, so the
        // fallback is never taken.
        let window_start = OffsetDateTime::from_unix_timestamp(self.window_start).unwrap_or(self.trigger.time);

        let anomaly = Anomaly {
            detector: self.detector,
            scope: self.scope,
            subject: self.subject,
            observed: self.observed,
            threshold: self.threshold,
            window_seconds: self.window_seconds,
            window_start,
            baseline: self.baseline,
            trigger_event_id: self.trigger.event_id.clone(),
            tools: self.tools,
            quarantined_until: self.quarantined_until,
        };
        anomaly_event(event_id, self.trigger.time, session_id, model_id, String::new(), reason, anomaly)
    }

    /// Returns the one-line description of the anomaly, for the event's `reason`.
    fn reason(&self) -> String {
        let Self { observed, threshold, window_seconds: window, subject, .. } = self;
        match (self.detector, self.scope) {
            (Detector::DenialSpike, AnomalyScope::Model) => format!(
                "denial spike: {observed} denied calls by model `{subject}` within {window} s, more than the threshold of {threshold}"
            ),
            (Detector::DenialSpike, AnomalyScope::Session) => format!(
                "denial spike: {observed} denied calls in session `{subject}` within {window} s, more than the threshold of {threshold}"
            ),
            (Detector::DenialSpike, AnomalyScope::All) => format!(
                "denial spike: {observed} denied calls across all models within {window} s, more than the threshold of {threshold}"
            ),
            (Detector::CallRateSpike, _) => format!(
                "call-rate spike: {observed} calls by model `{subject}` within {window} s, more than the threshold of {threshold} (baseline {:.1} calls per window)",
                self.baseline.unwrap_or(0.0)
            ),
            (Detector::ScopeProbing, _) => format!(
                "scope probing: {observed} distinct tools denied in session `{subject}` within {window} s, more than the threshold of {threshold}"
            ),
            (Detector::FirstToolUse, _) => format!("first tool use: `{subject}` called a tool for the first time"),
        }
    }
}

/// Returns the anomaly event of the first allowed call of the trigger's tool by its model.
pub(super) fn first_use_event(trigger: &AuditEvent) -> AuditEvent {
    let model = &trigger.model_id;
    let tool = &trigger.tool_name;
    let anomaly = Anomaly {
        detector: Detector::FirstToolUse,
        scope: AnomalyScope::Model,
        subject: model.clone(),
        observed: 1,
        threshold: 0,
        window_seconds: 0,
        window_start: trigger.time,
        baseline: None,
        trigger_event_id: trigger.event_id.clone(),
        tools: Vec::new(),
        quarantined_until: None,
    };
    let reason = format!("first tool use: model `{model}` called tool `{tool}` for the first time");
    let event_id = first_use_anomaly_id(model, tool);
    anomaly_event(event_id, trigger.time, String::new(), model.clone(), tool.clone(), reason, anomaly)
}

fn anomaly_event(
    event_id: String,
    time: OffsetDateTime,
    session_id: String,
    model_id: String,
    tool_name: String,
    reason: String,
    anomaly: Anomaly,
) -> AuditEvent {
    let rule = format!("anomaly:{}", anomaly.detector.as_str());
    AuditEvent {
        event_id,
        time,
        session_id,
        model_id,
        key_id: None,
        route: Route::Gateway,
        tool_name,
        input: None,
        decision: Outcome::Alert,
        reason,
        rule: Some(rule),
        rules: Vec::new(),
        shadow: None,
        upstream: None,
        latency_ms: 0.0,
        kind: EventKind::Anomaly,
        anomaly: Some(anomaly),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_anomaly_id_is_a_uuid_v8_of_the_name() {
        let id = window_anomaly_id(Detector::DenialSpike, AnomalyScope::Model, "m-1", 1_700_000_040);
        let parsed = Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
        assert_eq!(id, uuid_from_name("denial_spike|model|m-1|1700000040"));
        assert_ne!(id, window_anomaly_id(Detector::DenialSpike, AnomalyScope::Model, "m-1", 1_700_000_160));
    }

    #[test]
    fn first_use_anomaly_id_depends_on_model_and_tool() {
        let id = first_use_anomaly_id("m-1", "read_file");
        assert_eq!(id, uuid_from_name("first_tool_use|model|m-1|read_file"));
        assert_ne!(id, first_use_anomaly_id("m-2", "read_file"));
    }
}
