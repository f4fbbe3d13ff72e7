//! The stream function: audit events from the DynamoDB stream of the sessions table to a sink.
//!
//! Each new or replaced item of the sessions table carries one [`AuditEvent`] as JSON in its
//! `event` attribute. [`handle_batch`] decodes the new image of every record and hands the
//! event to an [`EventSink`]. A record that cannot be decoded, or that the sink fails on, is
//! reported as a batch item failure. The event source mapping must enable
//! `ReportBatchItemFailures`, and Lambda then retries the batch from the first failed record
//! on, so events after it can reach the sink again. Receivers drop duplicates by
//! [`AuditEvent::event_id`].

use std::convert::Infallible;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_dynamo::AttributeValue;
use time::format_description::well_known::Rfc3339;

use crate::audit::AuditEvent;

/// Attribute of a sessions table item that contains the audit event as JSON.
pub const EVENT_ATTRIBUTE: &str = "event";

/// The error a sink returns for an event it could not take.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// A destination for the audit events that the stream function reads.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Delivers one event. An error makes its record a batch item failure, which Lambda
    /// retries.
    async fn deliver(&self, event: &AuditEvent) -> Result<(), SinkError>;
}

/// A sink that logs each event as one structured `info` line with the target
/// `mcpsec::audit`. It never fails. The tool input is left out of the line.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

#[async_trait]
impl EventSink for LogSink {
    async fn deliver(&self, event: &AuditEvent) -> Result<(), SinkError> {
        let upstream_status = event.upstream.as_ref().map(|upstream| upstream.status.as_str());
        let upstream_name = event.upstream.as_ref().map(|upstream| upstream.upstream.as_str());
        let time = event.time.format(&Rfc3339).unwrap_or_default();
        tracing::event!(
            target: "mcpsec::audit",
            tracing::Level::INFO,
            event.id = %event.event_id,
            event.time = %time,
            session.id = %event.session_id,
            model.id = %event.model_id,
            key.id = event.key_id.as_deref(),
            route = ?event.route,
            tool.name = %event.tool_name,
            decision = ?event.decision,
            reason = %event.reason,
            rule.id = event.rule.as_deref(),
            rule.ids = ?event.rules,
            upstream.name = upstream_name,
            upstream.status = upstream_status,
            latency_ms = event.latency_ms,
            "audit event"
        );
        Ok(())
    }
}

/// An error decoding the audit event of a stream record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// An `INSERT` without a new image.
    #[error(
        "the record has no new image; set the stream view type of the sessions table to `NEW_IMAGE` or `NEW_AND_OLD_IMAGES`"
    )]
    MissingNewImage,
    /// The new image has no `event` attribute.
    #[error("the new image has no `event` attribute, so the item is not an audit event")]
    MissingEvent,
    /// The `event` attribute is not a string.
    #[error("the `event` attribute is not a string (type `S`)")]
    EventNotString,
    /// The `event` attribute is not the JSON of an audit event.
    #[error("the `event` attribute is not a valid audit event: {0}")]
    InvalidEvent(#[from] serde_json::Error),
}

/// Hands the audit event of each record in `event` to `sink`, in order, and returns the
/// records that failed.
///
/// `REMOVE` records (such as deletions by the table's time to live) and `MODIFY` records
/// without a new image are skipped. A record fails when it cannot be decoded or the sink
/// returns an error; the records after it are still delivered. A failure is identified by
/// the record's `SequenceNumber`, as Lambda expects for DynamoDB streams.
pub async fn handle_batch(event: Event, sink: &dyn EventSink) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    for record in &event.records {
        let failed = match decode(record) {
            Ok(None) => {
                tracing::debug!(stream.event_id = %record.event_id, stream.event_name = %record.event_name, "stream record skipped");
                false
            }
            Ok(Some(audit)) => deliver(record, &audit, sink).await,
            Err(error) => {
                tracing::error!(stream.event_id = %record.event_id, stream.sequence_number = record.change.sequence_number.as_deref(), error = %error, "stream record could not be decoded");
                true
            }
        };
        if failed {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = record.change.sequence_number.clone();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// Runs [`handle_batch`] with `sink` under the Lambda runtime until the runtime stops the
/// process.
pub async fn run(sink: impl EventSink + 'static) -> Result<(), lambda_runtime::Error> {
    let sink = &sink;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Event>| async move {
        Ok::<_, Infallible>(handle_batch(event.payload, sink).await)
    }))
    .await
}

/// Decodes the audit event of one record; `None` for a record to skip.
fn decode(record: &EventRecord) -> Result<Option<AuditEvent>, RecordError> {
    let image = &record.change.new_image;
    if record.event_name == "REMOVE" || (record.event_name == "MODIFY" && image.is_empty()) {
        return Ok(None);
    }
    if image.is_empty() {
        return Err(RecordError::MissingNewImage);
    }

    match image.get(EVENT_ATTRIBUTE) {
        None => Err(RecordError::MissingEvent),
        Some(AttributeValue::S(json)) => Ok(Some(serde_json::from_str(json)?)),
        Some(_) => Err(RecordError::EventNotString),
    }
}

/// Delivers one event and returns whether it failed.
async fn deliver(record: &EventRecord, event: &AuditEvent, sink: &dyn EventSink) -> bool {
    match sink.deliver(event).await {
        Ok(()) => false,
        Err(error) => {
            tracing::error!(stream.event_id = %record.event_id, event.id = %event.event_id, error = %error, "audit event sink failed; the record is retried");
            true
        }
    }
}
