//! The sessions table: one item per audit event, under the partition of its session.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use super::error::{Failure, Resource, unavailable};
use super::layout::{
    ALERT_DAY, ALERTS_INDEX, ANOMALY_PREFIX, DAY, DECISION, EVENT, EVENT_PREFIX, MODEL_ID, PK, QUARANTINED_UNTIL,
    SESSION_ID, SESSION_PREFIX, SK, TIME, TIME_NS, TTL,
};
use crate::audit::AuditEvent;
use crate::store::StoreError;

/// Maximum length in bytes of a DynamoDB partition key.
const MAX_PARTITION_KEY_BYTES: usize = 2048;

/// Maximum size of the event JSON in bytes. DynamoDB rejects items over 400 KB, and the
/// other attributes of an event item need far less than the 10 KB left.
const MAX_EVENT_JSON_BYTES: usize = 390 * 1024;

/// Stores `event` with one conditional `PutItem`, the only write of a call.
///
/// The condition lets the put through when the event id is new or its stored JSON differs,
/// so a newer version of the event (such as one with the upstream outcome) replaces the old
/// one in place. A failed condition means that the same content is already stored, which is
/// the success of a retry.
pub(super) async fn record(
    client: &Client,
    table: &str,
    retention: Option<Duration>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    let (item, json) = encode_event(event, retention)?;

    let result = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk) OR #event <> :event")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#event", EVENT)
        .expression_attribute_values(":event", AttributeValue::S(json))
        .send()
        .await;

    match result {
        Ok(_) => Ok(()),
        Err(error) if error.as_service_error().is_some_and(|error| error.is_conditional_check_failed_exception()) => {
            Ok(())
        }
        Err(error) => Err(Failure::new(&error)
            .unavailable(&format!("store audit event `{}`", event.event_id), Resource::Table(table))),
    }
}

/// Stores `event` only if its key is free, and returns whether it was.
///
/// An anomaly that quarantines a model is written with `TransactWriteItems`, together with
/// the model's `quarantined_until` in `keys_table`, so that neither is stored without the
/// other. When the model does not exist, the anomaly is stored alone.
pub(super) async fn record_new(
    client: &Client,
    table: &str,
    keys_table: &str,
    retention: Option<Duration>,
    event: &AuditEvent,
) -> Result<bool, StoreError> {
    let (item, _) = encode_event(event, retention)?;
    if let Some(until) = event.anomaly.as_ref().and_then(|anomaly| anomaly.quarantined_until) {
        match record_with_quarantine(client, table, keys_table, item.clone(), event, until).await? {
            Transacted::Stored => return Ok(true),
            Transacted::AlreadyStored => return Ok(false),
            Transacted::NoSuchModel => {}
        }
    }

    let result = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", PK)
        .send()
        .await;

    match result {
        Ok(_) => Ok(true),
        Err(error) if error.as_service_error().is_some_and(|error| error.is_conditional_check_failed_exception()) => {
            Ok(false)
        }
        Err(error) => Err(Failure::new(&error)
            .unavailable(&format!("store new audit event `{}`", event.event_id), Resource::Table(table))),
    }
}

/// The outcome of writing an anomaly with its quarantine.
enum Transacted {
    Stored,
    AlreadyStored,
    NoSuchModel,
}

async fn record_with_quarantine(
    client: &Client,
    table: &str,
    keys_table: &str,
    item: HashMap<String, AttributeValue>,
    event: &AuditEvent,
    until: OffsetDateTime,
) -> Result<Transacted, StoreError> {
    let operation = format!("store anomaly `{}` with the quarantine of model `{}`", event.event_id, event.model_id);
    let build = |error: aws_sdk_dynamodb::error::BuildError| {
        StoreError::Unavailable(format!("failed to build the request to {operation}: {error}"))
    };
    let until = until.format(&Rfc3339).map_err(|error| {
        StoreError::Unavailable(format!("quarantine end `{until}` cannot be written as RFC 3339: {error}"))
    })?;

    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", PK)
        .build()
        .map_err(build)?;
    let update = Update::builder()
        .table_name(keys_table)
        .key(MODEL_ID, AttributeValue::S(event.model_id.clone()))
        .update_expression("SET #until = :until")
        .condition_expression("attribute_exists(#model_id)")
        .expression_attribute_names("#until", QUARANTINED_UNTIL)
        .expression_attribute_names("#model_id", MODEL_ID)
        .expression_attribute_values(":until", AttributeValue::S(until))
        .build()
        .map_err(build)?;
    let result = client
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().put(put).build())
        .transact_items(TransactWriteItem::builder().update(update).build())
        .send()
        .await;

    let error = match result {
        Ok(_) => return Ok(Transacted::Stored),
        Err(error) => error,
    };
    let failed_condition = |index: usize| match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(canceled)) => {
            canceled.cancellation_reasons().get(index).and_then(|reason| reason.code())
                == Some("ConditionalCheckFailed")
        }
        _ => false,
    };
    if failed_condition(0) {
        return Ok(Transacted::AlreadyStored);
    }
    if failed_condition(1) {
        return Ok(Transacted::NoSuchModel);
    }
    Err(Failure::new(&error).unavailable(&operation, Resource::Table(table)))
}

/// Returns the newest `limit` anomaly events with `since <= time < until`, newest first,
/// from the index of anomalies, one UTC day at a time from the day of `until` back, for at
/// most `max_days` days.
pub(super) async fn alerts(
    client: &Client,
    table: &str,
    since: OffsetDateTime,
    until: OffsetDateTime,
    limit: usize,
    max_days: u16,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut events = Vec::new();
    if limit == 0 || since >= until {
        return Ok(events);
    }
    let since_ns = clamp_nanos(since);
    let last_ns = clamp_nanos(until).saturating_sub(1);
    let first_day = since.to_offset(UtcOffset::UTC).date();
    let mut day = until.to_offset(UtcOffset::UTC).date();

    for _ in 0..max_days {
        let key = day_key(day)?;
        let operation = format!("list the anomalies of {key} through index `{ALERTS_INDEX}`");
        let mut items = client
            .query()
            .table_name(table)
            .index_name(ALERTS_INDEX)
            .key_condition_expression("#day = :day AND #time_ns BETWEEN :since AND :last")
            .expression_attribute_names("#day", ALERT_DAY)
            .expression_attribute_names("#time_ns", TIME_NS)
            .expression_attribute_values(":day", AttributeValue::S(key))
            .expression_attribute_values(":since", AttributeValue::N(since_ns.to_string()))
            .expression_attribute_values(":last", AttributeValue::N(last_ns.to_string()))
            .scan_index_forward(false)
            .into_paginator()
            .items()
            .send();
        while events.len() < limit {
            let Some(item) = items.next().await else { break };
            let item = item.map_err(unavailable(&operation, Resource::Table(table)))?;
            events.push(decode_event(&item)?);
        }
        if events.len() >= limit || day <= first_day {
            break;
        }
        let Some(previous) = day.previous_day() else { break };
        day = previous;
    }
    Ok(events)
}

/// Returns `time` in Unix nanoseconds, clamped to the range of `i64` that stored times use.
fn clamp_nanos(time: OffsetDateTime) -> i64 {
    let nanos = time.unix_timestamp_nanos().clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    i64::try_from(nanos).unwrap_or_default()
}

/// Returns the events of a session in the order of their ids, which are UUID v7 and so
/// ordered by the time they were created.
pub(super) async fn session_trace(
    client: &Client,
    table: &str,
    session_id: &str,
) -> Result<Vec<AuditEvent>, StoreError> {
    let partition = session_partition(session_id);
    if partition.len() > MAX_PARTITION_KEY_BYTES {
        // No event can have been stored under a key that DynamoDB rejects.
        return Ok(Vec::new());
    }

    let operation = format!("read the trace of session `{session_id}`");
    let items = client
        .query()
        .table_name(table)
        .consistent_read(true)
        .key_condition_expression("#pk = :pk")
        .projection_expression("#sk, #event")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#sk", SK)
        .expression_attribute_names("#event", EVENT)
        .expression_attribute_values(":pk", AttributeValue::S(partition))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(unavailable(&operation, Resource::Table(table)))?;

    items.iter().map(decode_event).collect()
}

/// Returns the partition key of a session's events.
pub(super) fn session_partition(session_id: &str) -> String {
    format!("{SESSION_PREFIX}{session_id}")
}

/// Formats `date` as `YYYY-MM-DD`, the partition key of the index by day.
pub(super) fn day_key(date: Date) -> Result<String, StoreError> {
    let format = format_description!("[year]-[month]-[day]");
    date.format(&format)
        .map_err(|error| StoreError::Unavailable(format!("date {date} cannot be written as YYYY-MM-DD: {error}")))
}

/// Encodes the item of `event`, and returns it with the event's JSON for the condition.
fn encode_event(
    event: &AuditEvent,
    retention: Option<Duration>,
) -> Result<(HashMap<String, AttributeValue>, String), StoreError> {
    let id = &event.event_id;
    let json = serde_json::to_string(event)
        .map_err(|error| StoreError::Unavailable(format!("failed to encode audit event `{id}` as JSON: {error}")))?;
    check_sizes(event, &json)?;

    let time_ns = i64::try_from(event.time.unix_timestamp_nanos()).map_err(|_| {
        StoreError::Unavailable(format!(
            "time {} of audit event `{id}` is outside 1677-09-21 to 2262-04-11 UTC; check the clock",
            event.time
        ))
    })?;
    let time = event.time.format(&Rfc3339).map_err(|error| {
        StoreError::Unavailable(format!(
            "time {} of audit event `{id}` cannot be written as RFC 3339: {error}",
            event.time
        ))
    })?;
    let day = day_key(event.time.to_offset(UtcOffset::UTC).date())?;

    let mut item = HashMap::from([
        (SK.to_owned(), AttributeValue::S(format!("{EVENT_PREFIX}{id}"))),
        (EVENT.to_owned(), AttributeValue::S(json.clone())),
        (MODEL_ID.to_owned(), AttributeValue::S(event.model_id.clone())),
        (DECISION.to_owned(), AttributeValue::S(event.decision.as_str().to_owned())),
        (TIME.to_owned(), AttributeValue::S(time)),
        (TIME_NS.to_owned(), AttributeValue::N(time_ns.to_string())),
    ]);
    if event.is_anomaly() {
        // Not under the session's partition nor in the index by day: an anomaly is not a
        // call, and session traces and listings count calls only.
        item.insert(PK.to_owned(), AttributeValue::S(format!("{ANOMALY_PREFIX}{id}")));
        item.insert(ALERT_DAY.to_owned(), AttributeValue::S(day));
    } else {
        item.insert(PK.to_owned(), AttributeValue::S(session_partition(&event.session_id)));
        item.insert(SESSION_ID.to_owned(), AttributeValue::S(event.session_id.clone()));
        item.insert(DAY.to_owned(), AttributeValue::S(day));
    }
    if let Some(retention) = retention {
        item.insert(TTL.to_owned(), AttributeValue::N(expiry_seconds(event.time, retention).to_string()));
    }
    Ok((item, json))
}

/// Rejects an event that DynamoDB would reject, with a message that names what to change.
fn check_sizes(event: &AuditEvent, json: &str) -> Result<(), StoreError> {
    let id = &event.event_id;
    if session_partition(&event.session_id).len() > MAX_PARTITION_KEY_BYTES {
        return Err(StoreError::Unavailable(format!(
            "session id of audit event `{id}` is longer than {} bytes, the maximum for a DynamoDB partition key",
            MAX_PARTITION_KEY_BYTES - SESSION_PREFIX.len()
        )));
    }
    if json.len() > MAX_EVENT_JSON_BYTES {
        // NOTE: DynamoDB items hold at most 400 KB, so such a call fails closed on AWS while
        // the SQLite store accepts it. Dropping tool inputs from audit events avoids it.
        return Err(StoreError::Unavailable(format!(
            "audit event `{id}` is {} bytes of JSON, over the maximum of {MAX_EVENT_JSON_BYTES} for a DynamoDB item; set `AUDIT_TOOL_INPUT=drop` or send smaller tool inputs",
            json.len()
        )));
    }
    Ok(())
}

/// Returns the Unix second at which an event recorded at `time` expires.
fn expiry_seconds(time: OffsetDateTime, retention: Duration) -> i64 {
    let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    time.unix_timestamp().saturating_add(retention)
}

pub(super) fn decode_event(item: &HashMap<String, AttributeValue>) -> Result<AuditEvent, StoreError> {
    let key = item.get(SK).and_then(|value| value.as_s().ok()).map_or("?", String::as_str);
    let json = item
        .get(EVENT)
        .and_then(|value| value.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("audit item `{key}` has no string `{EVENT}`")))?;

    serde_json::from_str(json)
        .map_err(|error| StoreError::Corrupt(format!("audit item `{key}` is not a valid event: {error}")))
}
