//! The counter store of one process, for the container.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::counters::{CounterState, CounterStore, CounterUpdate, CounterValue, KeyUpdate, add_value, merge_updates};
use crate::store::StoreError;

/// Default maximum number of counters that [`MemoryCounters`] keeps.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Counters in memory, behind one mutex.
///
/// Old buckets are dropped on each update of their counter. A counter whose `expires_at` is
/// older than the newest `event_time` seen is dropped, and when `max_keys` counters exist, a
/// new one replaces the counter with the oldest `expires_at`.
#[derive(Debug)]
pub struct MemoryCounters {
    inner: Mutex<Counters>,
    max_keys: usize,
}

#[derive(Debug, Default)]
struct Counters {
    by_key: HashMap<String, Counter>,
    /// Every key by its `expires_at`, oldest first, to find idle and stale counters.
    by_expiry: BTreeSet<(i64, String)>,
    /// The newest event time of any update, in Unix seconds.
    clock: i64,
}

#[derive(Debug)]
struct Counter {
    buckets: BTreeMap<i64, CounterValue>,
    expires_at: i64,
}

impl MemoryCounters {
    /// Returns an empty store that keeps at most [`DEFAULT_MAX_KEYS`] counters.
    pub fn new() -> Self {
        Self::with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// Returns an empty store that keeps at most `max_keys` counters (at least 1).
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self { inner: Mutex::new(Counters { clock: i64::MIN, ..Counters::default() }), max_keys: max_keys.max(1) }
    }

    /// Returns the number of counters kept.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Returns whether no counter is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the counters. A panic while the lock was held leaves them consistent, since every
    /// change is a plain map update, so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryCounters {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl CounterStore for MemoryCounters {
    async fn apply(&self, updates: Vec<CounterUpdate>) -> Result<Vec<CounterState>, StoreError> {
        let merged = merge_updates(updates)?;
        let mut counters = self.lock();

        let newest = merged.iter().map(|update| update.event_time).max().unwrap_or(i64::MIN);
        counters.clock = counters.clock.max(newest);
        counters.drop_idle();

        merged.into_iter().map(|update| counters.apply(update, self.max_keys)).collect()
    }
}

impl Counters {
    fn apply(&mut self, update: KeyUpdate, max_keys: usize) -> Result<CounterState, StoreError> {
        if !self.by_key.contains_key(&update.key) {
            self.make_room(max_keys);
        }

        let counter = self
            .by_key
            .entry(update.key.clone())
            .or_insert_with(|| Counter { buckets: BTreeMap::new(), expires_at: i64::MIN });
        self.by_expiry.remove(&(counter.expires_at, update.key.clone()));

        let added: Result<(), StoreError> = update
            .buckets
            .into_iter()
            .try_for_each(|(bucket, value)| add_value(&mut counter.buckets, &update.key, bucket, value));
        counter.buckets = counter.buckets.split_off(&update.oldest_bucket);
        counter.expires_at = counter.expires_at.max(update.expires_at);
        // Indexed again before the error returns, so that a failed counter still expires.
        self.by_expiry.insert((counter.expires_at, update.key.clone()));
        added?;

        Ok(CounterState { key: update.key, buckets: counter.buckets.clone() })
    }

    /// Drops the counters that expired before the newest event time.
    fn drop_idle(&mut self) {
        while let Some((expires_at, _)) = self.by_expiry.first()
            && *expires_at < self.clock
        {
            self.drop_first();
        }
    }

    /// Drops the counters with the oldest expiry until there is room for one more.
    fn make_room(&mut self, max_keys: usize) {
        while self.by_key.len() >= max_keys && !self.by_expiry.is_empty() {
            self.drop_first();
        }
    }

    fn drop_first(&mut self) {
        if let Some((_, key)) = self.by_expiry.pop_first() {
            self.by_key.remove(&key);
        }
    }
}
