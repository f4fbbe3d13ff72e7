//! Recent sessions: found through the index by day, then counted from their own partitions.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt, stream};
use time::{Date, OffsetDateTime};

use super::audit::{day_key, session_partition};
use super::error::{Resource, unavailable};
use super::layout::{BY_DAY_INDEX, DAY, DECISION, MODEL_ID, PK, SESSION_ID, TIME_NS};
use crate::audit::Outcome;
use crate::store::{SessionSummary, StoreError};

/// Number of UTC days searched for recent sessions: today and the days before it. A
/// session whose last call is older is not listed.
pub const RECENT_DAYS: u16 = 7;

/// Maximum number of index items read while looking for recent sessions. When the
/// recent days hold more events than this, the sessions among the older ones are not listed.
pub const MAX_INDEX_ITEMS: usize = 10_000;

/// Number of index items read per request. Smaller pages read less beyond the sessions needed.
const INDEX_PAGE_SIZE: i32 = 1_000;

/// Number of sessions counted at the same time, one query each.
const CONCURRENT_SESSION_QUERIES: usize = 8;

/// Lists up to `limit` sessions with a call in the last [`RECENT_DAYS`] days, the most
/// recently active first, ties ordered by session id.
///
/// The index by day gives the sessions in the order of their latest call. Each listed
/// session is then counted from all of its events, so the counts cover calls older than the
/// days searched. The index is eventually consistent, so a call recorded a moment ago may
/// be missing from the order but not from the counts of a listed session.
pub(super) async fn recent_sessions(
    client: &Client,
    table: &str,
    limit: usize,
    today: Date,
) -> Result<Vec<SessionSummary>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }

    let session_ids = find_recent_sessions(client, table, limit, today).await?;
    let summaries: Vec<Option<SessionSummary>> = stream::iter(session_ids)
        .map(|session_id| summarize_session(client, table, session_id))
        .buffered(CONCURRENT_SESSION_QUERIES)
        .try_collect()
        .await?;

    let mut summaries: Vec<SessionSummary> = summaries.into_iter().flatten().collect();
    summaries.sort_by(|left, right| {
        right.last_seen.cmp(&left.last_seen).then_with(|| left.session_id.cmp(&right.session_id))
    });
    Ok(summaries)
}

/// Returns the ids of up to `limit` sessions in the order of their latest call, newest first,
/// reading the index one day at a time from `today` back.
async fn find_recent_sessions(
    client: &Client,
    table: &str,
    limit: usize,
    today: Date,
) -> Result<Vec<String>, StoreError> {
    let mut found = RecentSessions { limit, ids: Vec::new(), seen: HashSet::new(), items_read: 0 };
    let mut day = today;

    for _ in 0..RECENT_DAYS {
        read_day(client, table, &day_key(day)?, &mut found).await?;
        if found.is_done() {
            break;
        }
        let Some(previous) = day.previous_day() else { break };
        day = previous;
    }
    Ok(found.ids)
}

/// Session ids collected from the index, and the budget left for reading it.
struct RecentSessions {
    limit: usize,
    ids: Vec<String>,
    seen: HashSet<String>,
    items_read: usize,
}

impl RecentSessions {
    fn add(&mut self, item: &HashMap<String, AttributeValue>) {
        self.items_read += 1;
        let Some(session_id) = item.get(SESSION_ID).and_then(|value| value.as_s().ok()) else { return };
        if self.ids.len() < self.limit && self.seen.insert(session_id.clone()) {
            self.ids.push(session_id.clone());
        }
    }

    fn is_done(&self) -> bool {
        self.ids.len() >= self.limit || self.items_read >= MAX_INDEX_ITEMS
    }
}

/// Reads the index items of one day, newest first, until `found` is done.
async fn read_day(client: &Client, table: &str, day: &str, found: &mut RecentSessions) -> Result<(), StoreError> {
    let operation = format!("list the sessions of {day} through index `{BY_DAY_INDEX}`");
    let mut items = client
        .query()
        .table_name(table)
        .index_name(BY_DAY_INDEX)
        .key_condition_expression("#day = :day")
        .projection_expression("#session_id")
        .expression_attribute_names("#day", DAY)
        .expression_attribute_names("#session_id", SESSION_ID)
        .expression_attribute_values(":day", AttributeValue::S(day.to_owned()))
        .scan_index_forward(false)
        .into_paginator()
        .page_size(INDEX_PAGE_SIZE)
        .items()
        .send();

    while let Some(item) = items.next().await {
        let item = item.map_err(unavailable(&operation, Resource::Table(table)))?;
        found.add(&item);
        if found.is_done() {
            break;
        }
    }
    Ok(())
}

/// Counts the calls of one session from its partition. Returns `None` when the session has
/// no events any more, because they expired after the index listed them.
async fn summarize_session(
    client: &Client,
    table: &str,
    session_id: String,
) -> Result<Option<SessionSummary>, StoreError> {
    let operation = format!("count the calls of session `{session_id}`");
    let items = client
        .query()
        .table_name(table)
        .consistent_read(true)
        .key_condition_expression("#pk = :pk")
        .projection_expression("#time_ns, #decision, #model_id")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#time_ns", TIME_NS)
        .expression_attribute_names("#decision", DECISION)
        .expression_attribute_names("#model_id", MODEL_ID)
        .expression_attribute_values(":pk", AttributeValue::S(session_partition(&session_id)))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(unavailable(&operation, Resource::Table(table)))?;

    let mut tally: Option<Tally> = None;
    for item in &items {
        let call = Call::decode(&session_id, item)?;
        match tally.as_mut() {
            Some(tally) => tally.add(call),
            None => tally = Some(Tally::new(call)),
        }
    }
    tally.map(|tally| tally.into_summary(session_id)).transpose()
}

/// The attributes of one event that a session summary needs.
struct Call {
    time_ns: i64,
    denied: bool,
    model_id: String,
}

impl Call {
    fn decode(session_id: &str, item: &HashMap<String, AttributeValue>) -> Result<Self, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("an event of session `{session_id}` has no valid `{what}`"));
        let time_ns = item
            .get(TIME_NS)
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| corrupt(TIME_NS))?;
        let decision = item.get(DECISION).and_then(|value| value.as_s().ok()).ok_or_else(|| corrupt(DECISION))?;
        let model_id = item.get(MODEL_ID).and_then(|value| value.as_s().ok()).ok_or_else(|| corrupt(MODEL_ID))?;

        Ok(Self { time_ns, denied: decision != Outcome::Allow.as_str(), model_id: model_id.clone() })
    }
}

/// Running counts of a session's calls.
struct Tally {
    /// The earliest call; of calls at the same time, the first in event id order.
    first: Call,
    last_seen_ns: i64,
    calls: u64,
    denied: u64,
}

impl Tally {
    fn new(call: Call) -> Self {
        Self { last_seen_ns: call.time_ns, calls: 1, denied: u64::from(call.denied), first: call }
    }

    fn add(&mut self, call: Call) {
        self.calls += 1;
        self.denied += u64::from(call.denied);
        self.last_seen_ns = self.last_seen_ns.max(call.time_ns);
        if call.time_ns < self.first.time_ns {
            self.first = call;
        }
    }

    fn into_summary(self, session_id: String) -> Result<SessionSummary, StoreError> {
        let instant = |nanos: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).map_err(|_| {
                StoreError::Corrupt(format!("session `{session_id}` has an event at an invalid time {nanos} ns"))
            })
        };
        let first_seen = instant(self.first.time_ns)?;
        let last_seen = instant(self.last_seen_ns)?;

        Ok(SessionSummary {
            model_id: self.first.model_id,
            first_seen,
            last_seen,
            calls: self.calls,
            denied: self.denied,
            session_id,
        })
    }
}
