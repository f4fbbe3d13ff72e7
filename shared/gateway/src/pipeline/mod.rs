//! What happens to audit events after they are stored, off the tool-call path: forwarding
//! to the SIEM, anomaly detection, and alerts.
//!
//! Both deployments run the same steps in a different loop:
//!
//! * In the container, [`outbox`] follows the embedded store's change feeds with a saved
//!   position for each consumer, so events written before a crash are handled after it.
//! * On AWS, the `stream` function receives the audit table's DynamoDB stream
//!   ([`crate::lambda::stream`]), and Lambda keeps the position.
//!
//! [`AnomalyRaiser`] is the step they share: it counts events and stores each anomaly it
//! finds with an insert-if-absent write, which also quarantines the model when the policy
//! sets a quarantine.

#[cfg(feature = "container")]
pub mod outbox;

use std::sync::Arc;

use mcpsec_policy::AnomalySettings;

use crate::anomaly::{CounterStore, Detector};
use crate::audit::AuditEvent;
use crate::store::{AuditStore, StoreError};
use crate::toolcall::QUARANTINE_RULE;

/// The detector with its counters, and what to do with an anomaly it finds.
pub struct AnomalyRaiser {
    detector: Detector,
    counters: Arc<dyn CounterStore>,
}

impl AnomalyRaiser {
    /// Creates a raiser that counts in `counters`: memory in the container, DynamoDB on AWS.
    pub fn new(counters: Arc<dyn CounterStore>) -> Self {
        Self { detector: Detector::new(), counters }
    }

    /// Counts `events` and raises the anomalies they cause, in order; returns those that were
    /// raised now, not those another process or an earlier attempt raised already.
    pub async fn process(
        &self,
        settings: &AnomalySettings,
        events: &[AuditEvent],
        audit: &dyn AuditStore,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let candidates = self.count(settings, events).await?;
        self.raise(candidates, audit).await
    }

    /// Counts `events` and returns the anomalies they may cause, without storing them.
    ///
    /// Calls denied because their model was quarantined are left out of the counts: they are
    /// the effect of an anomaly, and counting them would extend the quarantine for as long as
    /// the model keeps calling.
    pub async fn count(
        &self,
        settings: &AnomalySettings,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let counted: Vec<AuditEvent> =
            events.iter().filter(|event| event.rule.as_deref() != Some(QUARANTINE_RULE)).cloned().collect();
        self.detector.observe(settings, &counted, self.counters.as_ref()).await
    }

    /// Stores each candidate anomaly unless it is stored already, with its quarantine, and
    /// returns the ones stored now. Safe to call again with the same candidates after a
    /// failure, because each is written only if absent.
    pub async fn raise(
        &self,
        candidates: Vec<AuditEvent>,
        audit: &dyn AuditStore,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut raised = Vec::new();
        for anomaly in candidates {
            // The store applies the anomaly's quarantine in the same write.
            if audit.record_new(&anomaly).await? {
                log_anomaly(&anomaly);
                if let Some(details) = &anomaly.anomaly {
                    crate::metrics::metrics().record_anomaly(details.detector);
                }
                raised.push(anomaly.clone());
            }
            self.detector.mark_emitted([anomaly.event_id.as_str()]);
        }
        Ok(raised)
    }
}

/// Returns how far back the detectors count: the longest window of any enabled detector,
/// with the call-rate baseline included.
pub fn longest_window(settings: &AnomalySettings) -> std::time::Duration {
    let denial = settings.denial_spike.map(|spike| spike.window);
    let probing = settings.scope_probing.map(|probing| probing.window);
    let rate =
        settings.call_rate_spike.map(|spike| spike.window.saturating_mul(spike.baseline_windows.saturating_add(1)));
    [denial, probing, rate].into_iter().flatten().max().unwrap_or_default()
}

fn log_anomaly(anomaly: &AuditEvent) {
    let details = anomaly.anomaly.as_ref();
    let detector = details.map_or("unknown", |details| details.detector.as_str());
    let quarantined_until = details
        .and_then(|details| details.quarantined_until)
        .and_then(|until| until.format(&time::format_description::well_known::Rfc3339).ok());
    tracing::warn!(
        anomaly.id = %anomaly.event_id,
        detector,
        model.id = %anomaly.model_id,
        session.id = %anomaly.session_id,
        quarantined_until,
        reason = %anomaly.reason,
        "anomaly raised"
    );
}
