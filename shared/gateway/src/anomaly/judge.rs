//! Judging a counter after the update: the thresholds of each detector.

use std::collections::BTreeSet;
use std::time::Duration;

use time::OffsetDateTime;

use super::counters::{CounterState, CounterValue};
use super::event::{Finding, MAX_LISTED_TOOLS};
use super::plan::Counted;
use super::window::{FixedWindows, SlidingWindow};
use crate::audit::AnomalyScope;

pub(super) fn judge_denials<'a>(
    counted: &Counted<'a>,
    state: &CounterState,
    window: SlidingWindow,
    threshold: u64,
    quarantine: Option<Duration>,
) -> Option<Finding<'a>> {
    let time = counted.trigger.time.unix_timestamp();
    let bucket = window.bucket(time);
    let observed = state
        .buckets
        .range(window.first_bucket(bucket)..=bucket)
        .fold(0_u64, |sum, (_, value)| sum.saturating_add(value.count()));
    if observed <= threshold {
        return None;
    }

    let quarantined_until = match counted.scope {
        AnomalyScope::Model => quarantine.and_then(|duration| add_duration(counted.trigger.time, duration)),
        AnomalyScope::Session | AnomalyScope::All => None,
    };
    Some(Finding {
        window_start: window.window_start(time),
        window_seconds: window.seconds(),
        quarantined_until,
        ..finding(counted, observed, threshold)
    })
}

pub(super) fn judge_call_rate<'a>(
    counted: &Counted<'a>,
    state: &CounterState,
    windows: FixedWindows,
    factor: f64,
    min_calls: u64,
) -> Option<Finding<'a>> {
    let bucket = windows.bucket(counted.trigger.time.unix_timestamp());
    let observed = state.buckets.get(&bucket).map_or(0, CounterValue::count);
    let baseline_windows = windows.baseline_windows();
    let baseline_sum = state
        .buckets
        .range(bucket.saturating_sub(baseline_windows)..bucket)
        .fold(0_u64, |sum, (_, value)| sum.saturating_add(value.count()));

    let (sum, windows_count) = (baseline_sum as f64, baseline_windows.max(1) as f64);
    let mean = sum / windows_count;
    let threshold = min_calls.max(ceil_to_u64(factor * sum / windows_count));
    if observed <= threshold {
        return None;
    }

    Some(Finding {
        window_start: windows.start(bucket),
        window_seconds: windows.seconds(),
        baseline: Some(mean),
        ..finding(counted, observed, threshold)
    })
}

pub(super) fn judge_probing<'a>(
    counted: &Counted<'a>,
    state: &CounterState,
    window: SlidingWindow,
    distinct_tools: u64,
) -> Option<Finding<'a>> {
    let time = counted.trigger.time.unix_timestamp();
    let bucket = window.bucket(time);
    let tools: BTreeSet<&String> =
        state.buckets.range(window.first_bucket(bucket)..=bucket).flat_map(|(_, value)| value.members()).collect();
    let observed = u64::try_from(tools.len()).unwrap_or(u64::MAX);
    if observed <= distinct_tools {
        return None;
    }

    Some(Finding {
        window_start: window.window_start(time),
        window_seconds: window.seconds(),
        tools: tools.into_iter().take(MAX_LISTED_TOOLS).cloned().collect(),
        ..finding(counted, observed, distinct_tools)
    })
}

/// Returns the finding of `counted` with the fields that every detector sets the same way.
fn finding<'a>(counted: &Counted<'a>, observed: u64, threshold: u64) -> Finding<'a> {
    Finding {
        detector: counted.check.detector(),
        scope: counted.scope,
        subject: counted.subject.clone(),
        observed,
        threshold,
        window_seconds: 0,
        window_start: 0,
        baseline: None,
        tools: Vec::new(),
        quarantined_until: None,
        trigger: counted.trigger,
    }
}

/// Rounds up to a whole count, ignoring floating-point error below 1e-9, so that a factor
/// of 1.1 on a baseline of 100 gives 110 and not 111.
fn ceil_to_u64(value: f64) -> u64 {
    // `as` saturates at u64::MAX, and turns NaN into 0.
    (value - 1e-9).ceil().max(0.0) as u64
}

fn add_duration(time: OffsetDateTime, duration: Duration) -> Option<OffsetDateTime> {
    time.checked_add(time::Duration::try_from(duration).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_ignores_floating_point_error() {
        assert_eq!(ceil_to_u64(1.1 * 100.0), 110);
        assert_eq!(ceil_to_u64(30.2), 31);
        assert_eq!(ceil_to_u64(-1.0), 0);
    }
}
