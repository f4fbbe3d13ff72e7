//! The counter store: counts and member sets in time buckets, shared by every process that
//! runs the detectors.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::store::StoreError;

/// The value of one bucket, or the amount an update adds to it.
///
/// All buckets of one counter contain the same kind of value, and a store rejects a mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterValue {
    /// A number of events.
    Count(u64),
    /// Distinct members, such as tool names.
    Members(BTreeSet<String>),
}

impl CounterValue {
    /// Returns the count, or 0 for a set of members.
    pub fn count(&self) -> u64 {
        match self {
            Self::Count(count) => *count,
            Self::Members(_) => 0,
        }
    }

    /// Returns the members, or nothing for a count.
    pub fn members(&self) -> impl Iterator<Item = &String> {
        let members = match self {
            Self::Count(_) => None,
            Self::Members(members) => Some(members),
        };
        members.into_iter().flatten()
    }

    /// Adds `other` to this value: counts add up and member sets are joined. Fails when one is
    /// a count and the other a set.
    pub(super) fn merge(&mut self, other: CounterValue, key: &str, bucket: i64) -> Result<(), StoreError> {
        match (self, other) {
            (Self::Count(count), Self::Count(more)) => *count = count.saturating_add(more),
            (Self::Members(members), Self::Members(more)) => members.extend(more),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "counter `{key}` mixes a count and a set of members in bucket {bucket}"
                )));
            }
        }
        Ok(())
    }
}

/// One change to a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterUpdate {
    /// The counter, such as `denial_spike|model|<model id>`. DynamoDB allows at most 2,048
    /// bytes.
    pub key: String,
    /// The time bucket that `value` is added to.
    pub bucket: i64,
    /// The count or members to add.
    pub value: CounterValue,
    /// The oldest bucket that the caller still needs. The store may drop older ones.
    pub oldest_bucket: i64,
    /// Unix seconds after which the store may delete the counter if no update came since.
    pub expires_at: i64,
    /// Unix seconds of the newest event that the update counts. The memory store measures
    /// idle counters against it instead of the wall clock, so that replayed events expire
    /// nothing too early.
    pub event_time: i64,
}

/// A counter after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterState {
    /// The counter's key.
    pub key: String,
    /// Every bucket from the update's oldest bucket on, by bucket index.
    pub buckets: BTreeMap<i64, CounterValue>,
}

/// Counters shared by every process that runs the detectors.
#[async_trait]
pub trait CounterStore: Send + Sync {
    /// Applies `updates` and returns the state of each counter they name after them, one per
    /// key, sorted by key.
    ///
    /// Updates of the same key and bucket add up. The result contains no bucket older than
    /// the highest `oldest_bucket` among the key's updates. An update is not atomic across keys:
    /// after a failure some keys may be updated and others not.
    async fn apply(&self, updates: Vec<CounterUpdate>) -> Result<Vec<CounterState>, StoreError>;
}

/// All updates of one counter in one call, merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyUpdate {
    pub(super) key: String,
    /// Values to add, without buckets older than `oldest_bucket`.
    pub(super) buckets: BTreeMap<i64, CounterValue>,
    pub(super) oldest_bucket: i64,
    pub(super) expires_at: i64,
    pub(super) event_time: i64,
}

/// Merges `updates` into one update per key, sorted by key. Values for buckets older than the
/// key's oldest bucket are dropped, since the store would drop them right after.
pub(super) fn merge_updates(updates: Vec<CounterUpdate>) -> Result<Vec<KeyUpdate>, StoreError> {
    let mut merged: BTreeMap<String, KeyUpdate> = BTreeMap::new();
    for update in updates {
        let entry = merged.entry(update.key.clone()).or_insert_with(|| KeyUpdate {
            key: update.key.clone(),
            buckets: BTreeMap::new(),
            oldest_bucket: update.oldest_bucket,
            expires_at: update.expires_at,
            event_time: update.event_time,
        });
        entry.oldest_bucket = entry.oldest_bucket.max(update.oldest_bucket);
        entry.expires_at = entry.expires_at.max(update.expires_at);
        entry.event_time = entry.event_time.max(update.event_time);
        add_value(&mut entry.buckets, &update.key, update.bucket, update.value)?;
    }

    let mut merged: Vec<KeyUpdate> = merged.into_values().collect();
    for update in &mut merged {
        update.buckets = update.buckets.split_off(&update.oldest_bucket);
    }
    Ok(merged)
}

/// Adds `value` to `bucket` of `buckets`.
pub(super) fn add_value(
    buckets: &mut BTreeMap<i64, CounterValue>,
    key: &str,
    bucket: i64,
    value: CounterValue,
) -> Result<(), StoreError> {
    match buckets.entry(bucket) {
        Entry::Vacant(vacant) => {
            vacant.insert(value);
            Ok(())
        }
        Entry::Occupied(mut occupied) => occupied.get_mut().merge(value, key, bucket),
    }
}
