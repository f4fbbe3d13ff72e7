//! Call counting for rate limits.
//!
//! The policy decides whether a limit is reached from counts the caller supplies through
//! [`CallCounts`], so the decision stays pure. [`WindowCounters`] is an exact in-memory
//! sliding-window counter for callers that count in one process; callers that share counts
//! between processes implement [`CallCounts`] over their store.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use time::OffsetDateTime;

use crate::policy::Per;

/// Identifies one counter: a limit and the session or model it counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey {
    /// The limit's id in the policy.
    pub limit_id: String,
    /// Whether `subject` is a session id or a model id.
    pub per: Per,
    /// The session id or model id.
    pub subject: String,
}

/// A counter that an allowed call must be added to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedLimit {
    /// Which counter.
    pub key: LimitKey,
    /// The limit's window.
    pub window: Duration,
    /// The limit's maximum number of calls in the window.
    pub max_calls: u64,
}

/// Source of the number of earlier calls counted against a limit.
pub trait CallCounts {
    /// Returns how many calls were recorded for `key` in the `window` that ends at `now`.
    fn calls(&self, key: &LimitKey, window: Duration, now: OffsetDateTime) -> u64;
}

/// Counts nothing: every limit sees zero earlier calls. For one-off checks such as the
/// command line, where there is no traffic to count.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCalls;

impl CallCounts for NoCalls {
    fn calls(&self, _key: &LimitKey, _window: Duration, _now: OffsetDateTime) -> u64 {
        0
    }
}

/// Exact sliding-window counters kept in memory.
///
/// Each counter keeps the instants of its most recent calls, at most `max_calls` of them,
/// so memory is bounded by the number of active counters times their limits.
#[derive(Debug)]
pub struct WindowCounters {
    counters: HashMap<LimitKey, Counter>,
    /// Number of counters at which [`WindowCounters::record_and_prune`] prunes next.
    prune_at: usize,
}

/// The recent calls of one counter and the window they are counted in.
#[derive(Debug, Default)]
struct Counter {
    calls: VecDeque<OffsetDateTime>,
    window: Duration,
}

/// Fewest counters at which pruning starts.
const MIN_PRUNE_AT: usize = 1024;

impl Default for WindowCounters {
    fn default() -> Self {
        Self { counters: HashMap::new(), prune_at: MIN_PRUNE_AT }
    }
}

impl WindowCounters {
    /// Creates empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one call at `now` to each counter in `limits`.
    pub fn record(&mut self, limits: &[CountedLimit], now: OffsetDateTime) {
        for limit in limits {
            let counter = self.counters.entry(limit.key.clone()).or_default();
            counter.window = limit.window;
            drop_older_than(&mut counter.calls, now - limit.window);
            // A call may be recorded after a later one (its time was taken before it waited
            // for the lock, or the clock stepped back), so it counts at the newest time to keep
            // the times sorted for the binary search in `calls`.
            let at = counter.calls.back().map_or(now, |last| (*last).max(now));
            counter.calls.push_back(at);
            let cap = usize::try_from(limit.max_calls).unwrap_or(usize::MAX).max(1);
            while counter.calls.len() > cap {
                counter.calls.pop_front();
            }
        }
    }

    /// Adds one call at `now` to each counter in `limits`, and forgets idle counters whenever
    /// their number has doubled since the last pruning. Memory then follows the counters with
    /// a call inside their window, at a constant amortized cost per call. Without it, every
    /// new session id would leave a counter behind forever.
    pub fn record_and_prune(&mut self, limits: &[CountedLimit], now: OffsetDateTime) {
        self.record(limits, now);
        if self.counters.len() >= self.prune_at {
            self.prune(now);
            self.prune_at = (self.counters.len() * 2).max(MIN_PRUNE_AT);
        }
    }

    /// Forgets counters with no call inside their window ending at `now`.
    pub fn prune(&mut self, now: OffsetDateTime) {
        self.counters.retain(|_, counter| counter.calls.back().is_some_and(|last| *last > now - counter.window));
    }

    /// Number of live counters.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether no counter is live.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

impl CallCounts for WindowCounters {
    fn calls(&self, key: &LimitKey, window: Duration, now: OffsetDateTime) -> u64 {
        let Some(counter) = self.counters.get(key) else {
            return 0;
        };
        // `record` keeps the times sorted, so a binary search finds the first one inside the
        // window in O(log n) for limits of thousands of calls.
        let horizon = now - window;
        let recent = counter.calls.len() - counter.calls.partition_point(|instant| *instant <= horizon);
        u64::try_from(recent).unwrap_or(u64::MAX)
    }
}

fn drop_older_than(calls: &mut VecDeque<OffsetDateTime>, horizon: OffsetDateTime) {
    while calls.front().is_some_and(|instant| *instant <= horizon) {
        calls.pop_front();
    }
}
