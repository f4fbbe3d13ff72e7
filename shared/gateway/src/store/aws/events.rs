//! Audit events of a time range: keys found through the index by day, then each item read.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt, stream};
use time::{Date, OffsetDateTime, UtcOffset};

use super::audit::{day_key, decode_event};
use super::error::{Resource, unavailable};
use super::layout::{BY_DAY_INDEX, DAY, PK, SK, TIME_NS};
use crate::audit::AuditEvent;
use crate::store::StoreError;

/// Maximum number of UTC days searched, from the day of `until` back. Events of older days
/// in a longer range are not returned.
pub const MAX_RANGE_DAYS: u16 = 400;

/// Number of items read at the same time, one `GetItem` each.
const CONCURRENT_READS: usize = 16;

/// The key of an event item and its time, as the index by day returns them.
struct IndexEntry {
    time_ns: i64,
    key: HashMap<String, AttributeValue>,
}

/// Returns the newest `limit` events with `since <= time < until`, oldest first.
///
/// The index by day gives the keys of the newest events, one day at a time from the day of
/// `until` back, for at most [`MAX_RANGE_DAYS`] days. Each event is then read with its own
/// `GetItem`, so a call costs `limit` reads at most. The index is eventually consistent, so
/// an event recorded a moment ago may be missing.
pub(super) async fn events_between(
    client: &Client,
    table: &str,
    since: OffsetDateTime,
    until: OffsetDateTime,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    if limit == 0 || since >= until {
        return Ok(Vec::new());
    }
    let since_ns = clamp_nanos(since);
    let last_ns = clamp_nanos(until).saturating_sub(1);

    let mut entries = Vec::new();
    let first_day = since.to_offset(UtcOffset::UTC).date();
    let mut day = until.to_offset(UtcOffset::UTC).date();
    for _ in 0..MAX_RANGE_DAYS {
        read_day(client, table, day, (since_ns, last_ns), limit, &mut entries).await?;
        if entries.len() >= limit || day <= first_day {
            break;
        }
        let Some(previous) = day.previous_day() else { break };
        day = previous;
    }

    entries.sort_by_key(|entry| entry.time_ns);
    let events: Vec<Option<AuditEvent>> = stream::iter(entries)
        .map(|entry| read_event(client, table, entry.key))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    Ok(events.into_iter().flatten().collect())
}

/// Adds the index entries of one day within `range` (inclusive nanoseconds), newest first,
/// until `entries` contains `limit` of them.
async fn read_day(
    client: &Client,
    table: &str,
    day: Date,
    range: (i64, i64),
    limit: usize,
    entries: &mut Vec<IndexEntry>,
) -> Result<(), StoreError> {
    let day = day_key(day)?;
    let operation = format!("list the audit events of {day} through index `{BY_DAY_INDEX}`");
    let mut items = client
        .query()
        .table_name(table)
        .index_name(BY_DAY_INDEX)
        .key_condition_expression("#day = :day AND #time_ns BETWEEN :since AND :last")
        .projection_expression("#pk, #sk, #time_ns")
        .expression_attribute_names("#day", DAY)
        .expression_attribute_names("#time_ns", TIME_NS)
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#sk", SK)
        .expression_attribute_values(":day", AttributeValue::S(day.clone()))
        .expression_attribute_values(":since", AttributeValue::N(range.0.to_string()))
        .expression_attribute_values(":last", AttributeValue::N(range.1.to_string()))
        .scan_index_forward(false)
        .into_paginator()
        .items()
        .send();

    while entries.len() < limit {
        let Some(item) = items.next().await else { break };
        let item = item.map_err(unavailable(&operation, Resource::Table(table)))?;
        entries.push(index_entry(&item, &day)?);
    }
    Ok(())
}

fn index_entry(item: &HashMap<String, AttributeValue>, day: &str) -> Result<IndexEntry, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("an index item of {day} has no valid `{what}`"));
    let time_ns = item
        .get(TIME_NS)
        .and_then(|value| value.as_n().ok())
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| corrupt(TIME_NS))?;
    let pk = item.get(PK).cloned().ok_or_else(|| corrupt(PK))?;
    let sk = item.get(SK).cloned().ok_or_else(|| corrupt(SK))?;
    Ok(IndexEntry { time_ns, key: HashMap::from([(PK.to_owned(), pk), (SK.to_owned(), sk)]) })
}

/// Reads one event item. Returns `None` when it expired after the index listed it.
async fn read_event(
    client: &Client,
    table: &str,
    key: HashMap<String, AttributeValue>,
) -> Result<Option<AuditEvent>, StoreError> {
    let output = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .send()
        .await
        .map_err(unavailable("read an audit event", Resource::Table(table)))?;
    output.item().map(decode_event).transpose()
}

/// Returns `time` in Unix nanoseconds, clamped to the range of `i64` that stored times use.
fn clamp_nanos(time: OffsetDateTime) -> i64 {
    let nanos = time.unix_timestamp_nanos().clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    i64::try_from(nanos).unwrap_or_default()
}
