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
//! [`AnomalyRaiser`] is the step they share: it counts events, stores each anomaly it finds
//! with an insert-if-absent write, and quarantines a model when the policy asks for it.

pub mod outbox;

use std::sync::Arc;

use mcpsec_policy::AnomalySettings;

use crate::anomaly::{CounterStore, Detector};
use crate::audit::AuditEvent;
use crate::store::{AuditStore, KeyStore, StoreError};
use crate::toolcall::QUARANTINE_RULE;

/// The detector with its counters, and what to do with an anomaly it finds.
pub struct AnomalyRaiser {
    detector: Detector,
    counters: Arc<dyn CounterStore>,
}

impl AnomalyRaiser {
    /// A raiser that counts in `counters`: memory in the container, DynamoDB on AWS.
    pub fn new(counters: Arc<dyn CounterStore>) -> Self {
        Self { detector: Detector::new(), counters }
    }

    /// Counts `events` and raises the anomalies they cause, in order; returns those that were
    /// raised now, not those another process or an earlier attempt raised already.
    ///
    /// Calls denied because their model was quarantined are left out of the counts: they are
    /// the effect of an anomaly, and counting them would extend the quarantine for as long as
    /// the model keeps calling.
    pub async fn process(
        &self,
        settings: &AnomalySettings,
        events: &[AuditEvent],
        audit: &dyn AuditStore,
        keys: &dyn KeyStore,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let counted: Vec<AuditEvent> =
            events.iter().filter(|event| event.rule.as_deref() != Some(QUARANTINE_RULE)).cloned().collect();
        let candidates = self.detector.observe(settings, &counted, self.counters.as_ref()).await?;

        let mut raised = Vec::new();
        for anomaly in candidates {
            if audit.record_new(&anomaly).await? {
                log_anomaly(&anomaly);
                quarantine(keys, &anomaly).await?;
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

/// Applies the quarantine that an anomaly carries, if any.
async fn quarantine(keys: &dyn KeyStore, anomaly: &AuditEvent) -> Result<(), StoreError> {
    let Some(until) = anomaly.anomaly.as_ref().and_then(|details| details.quarantined_until) else {
        return Ok(());
    };
    if keys.set_quarantine(&anomaly.model_id, Some(until)).await? {
        tracing::warn!(model.id = %anomaly.model_id, until = %until, event.id = %anomaly.event_id, "model quarantined after a denial spike");
    } else {
        tracing::info!(model.id = %anomaly.model_id, "denial spike of an unknown model id; nothing to quarantine");
    }
    Ok(())
}

fn log_anomaly(anomaly: &AuditEvent) {
    let detector = anomaly.anomaly.as_ref().map(|details| details.detector);
    tracing::warn!(
        anomaly.id = %anomaly.event_id,
        detector = ?detector,
        model.id = %anomaly.model_id,
        session.id = %anomaly.session_id,
        reason = %anomaly.reason,
        "anomaly raised"
    );
}
