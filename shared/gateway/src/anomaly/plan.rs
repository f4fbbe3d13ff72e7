//! From a batch of events to counter updates, and from the counters after the update to the
//! thresholds crossed ([`super::judge`] has the thresholds).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mcpsec_policy::AnomalySettings;
use sha2::{Digest, Sha256};

use super::cache::BoundedSet;
use super::counters::{CounterState, CounterUpdate, CounterValue};
use super::event::{Finding, MAX_LISTED_TOOLS};
use super::judge::{judge_call_rate, judge_denials, judge_probing};
use super::window::{FixedWindows, SlidingWindow};
use crate::audit::{AnomalyScope, AuditEvent, Detector, Outcome};

/// Maximum length of a counter key in bytes. A longer key has its subject replaced by a hash,
/// because DynamoDB allows partition keys of at most 2,048 bytes.
const MAX_KEY_BYTES: usize = 1024;
/// Maximum length in bytes of a tool name stored as a member. Longer names are cut at a
/// character boundary, so two names that share their first 256 bytes count as one tool.
const MAX_MEMBER_BYTES: usize = 256;

/// The detector and thresholds that judge a counter after the update.
#[derive(Debug, Clone, Copy)]
pub(super) enum Check {
    Denials { window: SlidingWindow, threshold: u64, quarantine: Option<Duration> },
    CallRate { windows: FixedWindows, factor: f64, min_calls: u64 },
    Probing { window: SlidingWindow, distinct_tools: u64 },
}

impl Check {
    pub(super) fn detector(self) -> Detector {
        match self {
            Self::Denials { .. } => Detector::DenialSpike,
            Self::CallRate { .. } => Detector::CallRateSpike,
            Self::Probing { .. } => Detector::ScopeProbing,
        }
    }

    fn bucket(self, time: i64) -> i64 {
        match self {
            Self::Denials { window, .. } | Self::Probing { window, .. } => window.bucket(time),
            Self::CallRate { windows, .. } => windows.bucket(time),
        }
    }

    fn oldest_kept(self, bucket: i64) -> i64 {
        match self {
            Self::Denials { window, .. } | Self::Probing { window, .. } => window.oldest_kept(bucket),
            Self::CallRate { windows, .. } => windows.oldest_kept(bucket),
        }
    }

    fn expires_at(self, time: i64) -> i64 {
        match self {
            Self::Denials { window, .. } | Self::Probing { window, .. } => window.expires_at(time),
            Self::CallRate { windows, .. } => windows.expires_at(time),
        }
    }
}

/// One counter that the batch updates.
#[derive(Debug)]
pub(super) struct Counted<'a> {
    pub(super) check: Check,
    pub(super) scope: AnomalyScope,
    pub(super) subject: String,
    /// The last event of the batch counted here. Its time chooses the window judged.
    pub(super) trigger: &'a AuditEvent,
    /// Values to add, by bucket.
    buckets: BTreeMap<i64, CounterValue>,
}

/// The counters that one batch of events updates.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    counters: BTreeMap<String, Counted<'a>>,
    /// Maximum members that one bucket of a scope-probing counter needs: enough to cross the
    /// threshold and to list [`MAX_LISTED_TOOLS`].
    member_cap: usize,
}

/// The thresholds crossed, and the scope-probing buckets that contain all the members they need.
#[derive(Debug)]
pub(super) struct Judgement<'a> {
    pub(super) findings: Vec<Finding<'a>>,
    pub(super) full_buckets: Vec<(String, i64)>,
}

impl<'a> Plan<'a> {
    /// Collects the counter updates of `events`, which must not contain anomalies. Members are
    /// not added to the buckets in `full_buckets`.
    pub(super) fn build(
        settings: &AnomalySettings,
        events: &[&'a AuditEvent],
        full_buckets: &BoundedSet<(String, i64)>,
    ) -> Self {
        let distinct_tools = settings.scope_probing.map_or(0, |probing| probing.distinct_tools);
        let needed = usize::try_from(distinct_tools.saturating_add(1)).unwrap_or(usize::MAX);
        let mut plan = Self { counters: BTreeMap::new(), member_cap: needed.max(MAX_LISTED_TOOLS) };

        for event in events {
            plan.count_denial(settings, event);
            plan.count_call(settings, event);
            plan.count_probe(settings, event, full_buckets);
        }
        plan
    }

    pub(super) fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    fn count_denial(&mut self, settings: &AnomalySettings, event: &'a AuditEvent) {
        let Some(spike) = settings.denial_spike else { return };
        if !matches!(event.decision, Outcome::Deny | Outcome::Unauthorized) {
            return;
        }

        let check = Check::Denials {
            window: SlidingWindow::new(spike.window),
            threshold: spike.threshold,
            quarantine: settings.quarantine,
        };
        // A failed-key call names a model it could not prove to be, so it counts for its
        // session and overall only: anyone could otherwise raise a spike, and with it a
        // quarantine, for a model whose key they do not have.
        let model = if authenticated(event) { event.model_id.as_str() } else { "" };
        let subjects = [(AnomalyScope::Model, model), (AnomalyScope::Session, event.session_id.as_str())];
        for (scope, subject) in subjects {
            if !subject.is_empty() {
                self.count(check, scope, subject, event, Some(CounterValue::Count(1)));
            }
        }
        self.count(check, AnomalyScope::All, "*", event, Some(CounterValue::Count(1)));
    }

    fn count_call(&mut self, settings: &AnomalySettings, event: &'a AuditEvent) {
        let Some(spike) = settings.call_rate_spike else { return };
        if event.model_id.is_empty() || !authenticated(event) {
            return;
        }

        let check = Check::CallRate {
            windows: FixedWindows::new(spike.window, spike.baseline_windows),
            factor: spike.factor,
            min_calls: spike.min_calls,
        };
        self.count(check, AnomalyScope::Model, &event.model_id, event, Some(CounterValue::Count(1)));
    }

    fn count_probe(
        &mut self,
        settings: &AnomalySettings,
        event: &'a AuditEvent,
        full_buckets: &BoundedSet<(String, i64)>,
    ) {
        let Some(probing) = settings.scope_probing else { return };
        if event.decision != Outcome::Deny || event.session_id.is_empty() || event.tool_name.is_empty() {
            return;
        }

        let check =
            Check::Probing { window: SlidingWindow::new(probing.window), distinct_tools: probing.distinct_tools };
        // Per model too, because a REST caller picks its session id and could spread its
        // probes over many sessions. A denial is always authenticated.
        let subjects =
            [(AnomalyScope::Session, event.session_id.as_str()), (AnomalyScope::Model, event.model_id.as_str())];
        for (scope, subject) in subjects {
            if subject.is_empty() {
                continue;
            }
            let key = counter_key(check.detector(), scope, subject);
            let bucket = check.bucket(event.time.unix_timestamp());
            let tool = truncate(&event.tool_name, MAX_MEMBER_BYTES);

            let batch_value = self.counters.get(&key).and_then(|counted| counted.buckets.get(&bucket));
            let in_batch = batch_value.map_or(0, |value| value.members().count());
            let known = batch_value.is_some_and(|value| value.members().any(|member| member == tool));
            let room = in_batch < self.member_cap && !full_buckets.contains(&(key, bucket));

            let value = (known || room).then(|| CounterValue::Members(BTreeSet::from([tool.to_owned()])));
            self.count(check, scope, subject, event, value);
        }
    }

    /// Adds `value` to the counter of `scope` and `subject` in the bucket of `event`, and makes
    /// `event` its trigger. Without a value the counter is still read back and judged.
    fn count(
        &mut self,
        check: Check,
        scope: AnomalyScope,
        subject: &str,
        event: &'a AuditEvent,
        value: Option<CounterValue>,
    ) {
        let key = counter_key(check.detector(), scope, subject);
        let counted = self.counters.entry(key).or_insert_with(|| Counted {
            check,
            scope,
            subject: subject.to_owned(),
            trigger: event,
            buckets: BTreeMap::new(),
        });
        counted.trigger = event;

        let Some(value) = value else { return };
        let bucket = check.bucket(event.time.unix_timestamp());
        match counted.buckets.get_mut(&bucket) {
            Some(CounterValue::Count(count)) => *count = count.saturating_add(value.count()),
            Some(CounterValue::Members(members)) => members.extend(value.members().cloned()),
            None => {
                counted.buckets.insert(bucket, value);
            }
        }
    }

    /// Returns the updates of every counter. A counter without values gets an empty set in
    /// its trigger's bucket, so that the store still returns its state.
    pub(super) fn updates(&self) -> Vec<CounterUpdate> {
        let mut updates = Vec::new();
        for (key, counted) in &self.counters {
            let time = counted.trigger.time.unix_timestamp();
            let oldest_bucket = counted.check.oldest_kept(counted.check.bucket(time));
            let expires_at = counted.check.expires_at(time);
            let update = |bucket: i64, value: CounterValue| CounterUpdate {
                key: key.clone(),
                bucket,
                value,
                oldest_bucket,
                expires_at,
                event_time: time,
            };

            if counted.buckets.is_empty() {
                updates.push(update(counted.check.bucket(time), CounterValue::Members(BTreeSet::new())));
            }
            for (bucket, value) in &counted.buckets {
                updates.push(update(*bucket, value.clone()));
            }
        }
        updates
    }

    /// Judges each counter of the plan on its state after the update.
    pub(super) fn judge(&self, states: &[CounterState]) -> Judgement<'a> {
        let mut judgement = Judgement { findings: Vec::new(), full_buckets: Vec::new() };
        for state in states {
            let Some(counted) = self.counters.get(&state.key) else { continue };
            let finding = match counted.check {
                Check::Denials { window, threshold, quarantine } => {
                    judge_denials(counted, state, window, threshold, quarantine)
                }
                Check::CallRate { windows, factor, min_calls } => {
                    judge_call_rate(counted, state, windows, factor, min_calls)
                }
                Check::Probing { window, distinct_tools } => {
                    judgement.full_buckets.extend(self.full_buckets(state));
                    judge_probing(counted, state, window, distinct_tools)
                }
            };
            judgement.findings.extend(finding);
        }
        judgement
    }

    /// Returns the buckets of a scope-probing counter that contain all the members it needs.
    fn full_buckets<'s>(&self, state: &'s CounterState) -> impl Iterator<Item = (String, i64)> + 's {
        let cap = self.member_cap;
        state
            .buckets
            .iter()
            .filter(move |(_, value)| value.members().count() >= cap)
            .map(|(bucket, _)| (state.key.clone(), *bucket))
    }
}

/// Returns the key of the counter of `detector` on `scope` and `subject`:
/// `<detector>|<scope>|<subject>`, or `<detector>|<scope>|sha256:<hex>` for a subject that
/// would make the key longer than [`MAX_KEY_BYTES`].
pub(super) fn counter_key(detector: Detector, scope: AnomalyScope, subject: &str) -> String {
    let key = format!("{}|{}|{subject}", detector.as_str(), scope.as_str());
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let digest = hex::encode(Sha256::digest(subject.as_bytes()));
    format!("{}|{}|sha256:{digest}", detector.as_str(), scope.as_str())
}

/// Returns the longest prefix of `text` of at most `max_bytes` bytes that ends at a character
/// boundary.
fn truncate(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Returns whether a key authenticated the event's caller, so its model id is proven.
fn authenticated(event: &AuditEvent) -> bool {
    event.key_id.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_key_names_detector_scope_and_subject() {
        assert_eq!(counter_key(Detector::DenialSpike, AnomalyScope::All, "*"), "denial_spike|all|*");
        assert_eq!(counter_key(Detector::ScopeProbing, AnomalyScope::Session, "s-1"), "scope_probing|session|s-1");
    }

    #[test]
    fn counter_key_hashes_a_long_subject() {
        let key = counter_key(Detector::DenialSpike, AnomalyScope::Session, &"s".repeat(2000));
        assert!(key.starts_with("denial_spike|session|sha256:"));
        assert_eq!(key.len(), "denial_spike|session|sha256:".len() + 64);
    }

    #[test]
    fn truncate_stops_at_a_character_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
