//! The detector: counts a batch of events and returns the anomalies it raises.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use mcpsec_policy::AnomalySettings;

use super::cache::BoundedSet;
use super::counters::CounterStore;
use super::event::{first_use_anomaly_id, first_use_event};
use super::plan::Plan;
use crate::audit::{AuditEvent, Outcome};
use crate::store::StoreError;

/// Number of emitted anomaly ids that a detector remembers.
const EMITTED_CAPACITY: usize = 65_536;
/// Number of full scope-probing buckets that a detector remembers.
const FULL_BUCKETS_CAPACITY: usize = 4_096;

/// The anomaly detectors of one process, with small caches of what they already did.
///
/// The counters live in a [`CounterStore`] shared by every process, so several detectors
/// that observe different parts of the flow count together.
#[derive(Debug)]
pub struct Detector {
    /// Ids of the anomalies that the caller stored, or found stored, which are not returned
    /// again.
    emitted: Mutex<BoundedSet<String>>,
    /// Scope-probing buckets that contain enough members to cross the threshold. No more
    /// members are added to them, which bounds the size of a DynamoDB item.
    full_buckets: Mutex<BoundedSet<(String, i64)>>,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new()
    }
}

impl Detector {
    /// Returns a detector with empty caches.
    pub fn new() -> Self {
        Self {
            emitted: Mutex::new(BoundedSet::new(EMITTED_CAPACITY)),
            full_buckets: Mutex::new(BoundedSet::new(FULL_BUCKETS_CAPACITY)),
        }
    }

    /// Counts `events` in `counters` and returns the anomaly events they raise, sorted by time
    /// and id, without those passed to [`Detector::mark_emitted`].
    ///
    /// Anomaly events in `events` are skipped. All updates of the batch go to the store in one
    /// [`CounterStore::apply`] call, and each counter is judged on its state after it. A
    /// threshold crossed is attributed to the counter's last event in the batch, and that
    /// event's time chooses the window. The same anomaly is returned again, with the same id,
    /// on every later batch that keeps its counter above the threshold in the same window, so
    /// the caller stores each candidate only if its id is absent.
    ///
    /// A batch that is observed again after a failure, such as a stream batch that Lambda
    /// retries, counts its events again, since the store cannot tell them apart.
    pub async fn observe(
        &self,
        settings: &AnomalySettings,
        events: &[AuditEvent],
        counters: &dyn CounterStore,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let calls: Vec<&AuditEvent> = events.iter().filter(|event| !event.is_anomaly()).collect();

        let plan = Plan::build(settings, &calls, &lock(&self.full_buckets));
        let states = if plan.is_empty() { Vec::new() } else { counters.apply(plan.updates()).await? };
        let judgement = plan.judge(&states);
        {
            let mut full_buckets = lock(&self.full_buckets);
            for bucket in judgement.full_buckets {
                full_buckets.insert(bucket);
            }
        }

        let mut candidates: Vec<AuditEvent> =
            judgement.findings.into_iter().map(|finding| finding.into_event()).collect();
        if settings.first_tool_use {
            candidates.extend(first_uses(&calls));
        }

        let emitted = lock(&self.emitted);
        candidates.retain(|candidate| !emitted.contains(&candidate.event_id));
        candidates.sort_by(|left, right| (left.time, &left.event_id).cmp(&(right.time, &right.event_id)));
        Ok(candidates)
    }

    /// Remembers `event_ids` as emitted, so that [`Detector::observe`] does not return them
    /// again. Call it with the ids of the candidates that were stored or found already stored.
    pub fn mark_emitted<I>(&self, event_ids: I)
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut emitted = lock(&self.emitted);
        for event_id in event_ids {
            emitted.insert(event_id.into());
        }
    }
}

/// Returns one first-use candidate for each pair of model and tool allowed in `calls`, at the
/// pair's first call in the batch.
fn first_uses(calls: &[&AuditEvent]) -> Vec<AuditEvent> {
    let mut seen = HashSet::new();
    calls
        .iter()
        .filter(|call| call.decision == Outcome::Allow && !call.model_id.is_empty() && !call.tool_name.is_empty())
        .filter(|call| seen.insert(first_use_anomaly_id(&call.model_id, &call.tool_name)))
        .map(|call| first_use_event(call))
        .collect()
}

/// Locks a cache. A panic while the lock was held leaves a cache consistent, since every
/// change is one set insertion, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
