//! The stream function: audit events from the DynamoDB stream of the sessions table to the
//! SIEM, the anomaly detectors and the alert webhook.
//!
//! Each new or replaced item of the sessions table carries one [`AuditEvent`] as JSON in its
//! `event` attribute. [`handle_batch`] decodes the new image of every record, then, in order:
//!
//! 1. hands every decoded event to the [`EventSink`] (the SIEM, or the log without one);
//! 2. counts the tool calls of `INSERT` records in the anomaly detectors and stores the
//!    anomalies they raise, which come back through the stream as events of their own;
//! 3. posts each anomaly of an `INSERT` record to the alert webhook.
//!
//! A record fails when it cannot be decoded or a step fails on it; it is then reported as a
//! batch item failure. The event source mapping enables `ReportBatchItemFailures`, so Lambda
//! retries from the first failed record on, and after its retries sends the batch's
//! description to the dead-letter queue. Records after a failed one are still forwarded, so
//! one bad record does not hold the others back from the SIEM, which drops the duplicates of
//! the retry by event id. Steps 2 and 3 only handle the records before the first failure,
//! because the records from it on are delivered again: counting them now would count them
//! twice.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_dynamo::AttributeValue;
use time::format_description::well_known::Rfc3339;

use crate::anomaly::DynamoCounters;
use crate::audit::AuditEvent;
use crate::pipeline::AnomalyRaiser;
use crate::siem::{AlertWebhook, SiemForwarder, SiemSettings};
use crate::state::AppState;

/// Attribute of a sessions table item that contains the audit event as JSON.
pub const EVENT_ATTRIBUTE: &str = "event";

/// The failure of a sink to take every event it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFailure {
    /// How many events at the front were delivered.
    pub delivered: usize,
    /// What failed.
    pub reason: String,
}

/// A destination for the audit events that the stream function reads.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Delivers `events` in order. On failure, the events from
    /// [`SinkFailure::delivered`] on are reported as batch item failures, which Lambda retries.
    async fn deliver(&self, events: &[AuditEvent]) -> Result<(), SinkFailure>;
}

/// The SIEM as a sink.
#[async_trait]
impl EventSink for SiemForwarder {
    async fn deliver(&self, events: &[AuditEvent]) -> Result<(), SinkFailure> {
        self.forward(events).await.map_err(|error| SinkFailure { delivered: error.delivered, reason: error.reason })
    }
}

/// A sink that logs each event as one structured `info` line with the target
/// `mcpsec::audit`, for a deployment without a SIEM. It never fails. The tool input is left
/// out of the line.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

#[async_trait]
impl EventSink for LogSink {
    async fn deliver(&self, events: &[AuditEvent]) -> Result<(), SinkFailure> {
        events.iter().for_each(log_event);
        Ok(())
    }
}

fn log_event(event: &AuditEvent) {
    let upstream_status = event.upstream.as_ref().map(|upstream| upstream.status.as_str());
    let upstream_name = event.upstream.as_ref().map(|upstream| upstream.upstream.as_str());
    let time = event.time.format(&Rfc3339).unwrap_or_default();
    tracing::event!(
        target: "mcpsec::audit",
        tracing::Level::INFO,
        event.id = %event.event_id,
        event.time = %time,
        event.kind = ?event.kind,
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
}

/// The anomaly detectors with the state that gives them the policy and the stores.
pub struct Detection {
    /// The detectors and their shared counters.
    pub raiser: AnomalyRaiser,
    /// The policy (for thresholds) and the stores (to store anomalies and quarantine models).
    pub state: AppState,
}

/// Everything [`handle_batch`] sends events to.
pub struct StreamPipeline {
    /// The destination of every event, or `None` when another function forwards them.
    pub sink: Option<Box<dyn EventSink>>,
    /// The anomaly detectors; `None` turns detection off.
    pub detection: Option<Detection>,
    /// The destination of anomalies, or `None` to turn alerts off.
    pub webhook: Option<AlertWebhook>,
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

/// A decoded record.
struct Decoded {
    /// Index of the record in the batch.
    index: usize,
    event: AuditEvent,
    /// Whether the item is new (`INSERT`) rather than a new version (`MODIFY`).
    inserted: bool,
}

/// Runs the batch through `pipeline` and returns the records that failed.
///
/// `budget` is how long the batch may take, if limited: the SIEM delivery and each webhook
/// post stop when it runs out, and their records are reported as failed, so the function
/// returns before Lambda's timeout would fail the whole batch.
///
/// `REMOVE` records (such as deletions by the table's time to live) and `MODIFY` records
/// without a new image are skipped. A failure is identified by the record's
/// `SequenceNumber`, as Lambda expects for DynamoDB streams.
pub async fn handle_batch(event: Event, pipeline: &StreamPipeline, budget: Option<Duration>) -> DynamoDbEventResponse {
    let deadline = budget.map(|budget| Instant::now() + budget);
    let records = &event.records;
    let mut failed = vec![false; records.len()];
    let mut decoded = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match decode(record) {
            Ok(None) => {
                tracing::debug!(stream.event_id = %record.event_id, stream.event_name = %record.event_name, "stream record skipped");
            }
            Ok(Some(event)) => decoded.push(Decoded { index, event, inserted: record.event_name == "INSERT" }),
            Err(error) => {
                tracing::error!(stream.event_id = %record.event_id, stream.sequence_number = record.change.sequence_number.as_deref(), error = %error, "stream record could not be decoded; it is retried and then sent to the dead-letter queue");
                mark_failed(&mut failed, index);
            }
        }
    }

    if let Some(sink) = &pipeline.sink {
        forward(sink.as_ref(), &decoded, &mut failed, deadline).await;
    }

    let first_failed = failed.iter().position(|failed| *failed).unwrap_or(records.len());
    let settled: Vec<&Decoded> =
        decoded.iter().filter(|record| record.index < first_failed && record.inserted).collect();
    if let Some(detection) = &pipeline.detection {
        detect(detection, &settled, &mut failed).await;
    }
    if let Some(webhook) = &pipeline.webhook {
        alert(webhook, &settled, &mut failed, deadline).await;
    }

    let mut response = DynamoDbEventResponse::default();
    for (record, _) in records.iter().zip(&failed).filter(|(_, failed)| **failed) {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = record.change.sequence_number.clone();
        response.batch_item_failures.push(failure);
    }
    response
}

fn mark_failed(failed: &mut [bool], index: usize) {
    if let Some(flag) = failed.get_mut(index) {
        *flag = true;
    }
}

/// Hands every decoded event to the sink; the events it did not take fail their records.
async fn forward(sink: &dyn EventSink, decoded: &[Decoded], failed: &mut [bool], deadline: Option<Instant>) {
    let events: Vec<AuditEvent> = decoded.iter().map(|record| record.event.clone()).collect();
    let delivered = match deadline {
        None => sink.deliver(&events).await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), sink.deliver(&events)).await {
            Ok(result) => result,
            // What was delivered before the time ran out is unknown, so every record is retried.
            Err(_) => Err(SinkFailure { delivered: 0, reason: "the batch ran out of time".to_owned() }),
        },
    };
    if let Err(failure) = delivered {
        tracing::error!(delivered = failure.delivered, pending = events.len().saturating_sub(failure.delivered), error = %failure.reason, "audit event sink failed; the records are retried");
        for record in decoded.iter().skip(failure.delivered) {
            mark_failed(failed, record.index);
        }
    }
}

/// Counts the settled tool calls; when that fails, every one of them fails, so that the
/// retry counts them.
async fn detect(detection: &Detection, settled: &[&Decoded], failed: &mut [bool]) {
    let calls: Vec<AuditEvent> =
        settled.iter().filter(|record| !record.event.is_anomaly()).map(|record| record.event.clone()).collect();
    if calls.is_empty() {
        return;
    }
    let result = match detection.state.policy().await {
        Ok(policy) => {
            let stores = detection.state.stores();
            detection
                .raiser
                .process(policy.anomalies(), &calls, stores.audit.as_ref())
                .await
                .map_err(|error| error.to_string())
        }
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        tracing::error!(events = calls.len(), error = %error, "anomaly detection failed; the records are retried");
        for record in settled.iter().filter(|record| !record.event.is_anomaly()) {
            mark_failed(failed, record.index);
        }
    }
}

/// Posts the settled anomalies to the webhook, stopping at the first failure.
async fn alert(webhook: &AlertWebhook, settled: &[&Decoded], failed: &mut [bool], deadline: Option<Instant>) {
    let mut failing = false;
    for record in settled.iter().filter(|record| record.event.is_anomaly()) {
        if failing {
            mark_failed(failed, record.index);
            continue;
        }
        let sent = match deadline {
            None => webhook.send(&record.event).await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), webhook.send(&record.event))
                .await
                .unwrap_or_else(|_| Err("the batch ran out of time".to_owned())),
        };
        if let Err(error) = sent {
            tracing::error!(event.id = %record.event.event_id, error = %error, "alert webhook failed; the record is retried");
            mark_failed(failed, record.index);
            failing = true;
        }
    }
}

/// Builds the pipeline from the environment.
///
/// `STREAM_STEPS` chooses the steps, comma-separated: `forward` (to the SIEM named by
/// `SIEM_*`, see [`SiemSettings`], or to the log without `SIEM_URL`), `detect` (the anomaly
/// detectors, with their shared counters in `COUNTERS_TABLE` and the stores of the HTTP
/// functions) and `alert` (`ALERT_WEBHOOK_URL`). The default is all three. The SAM template
/// runs `forward` and `detect,alert` as two functions on the same stream, so that a SIEM
/// that is down holds back neither detection nor alerts.
pub async fn pipeline_from_env() -> Result<StreamPipeline, String> {
    let var = |name: &str| std::env::var(name).ok();
    let steps = Steps::parse(var("STREAM_STEPS").as_deref())?;

    let sink: Option<Box<dyn EventSink>> = if steps.forward {
        match SiemSettings::from_env(var).map_err(|error| error.to_string())? {
            Some(settings) => Some(Box::new(SiemForwarder::new(settings)?)),
            None => {
                tracing::warn!("SIEM_URL is not set; audit events go to the log only");
                Some(Box::new(LogSink))
            }
        }
    } else {
        None
    };
    let webhook = if steps.alert { AlertWebhook::from_env(var).map_err(|error| error.to_string())? } else { None };

    let detection = if steps.detect {
        let Some(table) = var("COUNTERS_TABLE").map(|name| name.trim().to_owned()).filter(|name| !name.is_empty())
        else {
            return Err("invalid environment variable `COUNTERS_TABLE`: missing; set it to the name of the DynamoDB table of anomaly counters, or leave `detect` out of `STREAM_STEPS`".to_owned());
        };
        let state = super::stream_state_from_env().await?;
        let client = aws_sdk_dynamodb::Client::new(&crate::store::aws::setup::load_sdk_config().await);
        let counters = DynamoCounters::new(client, table);
        Some(Detection { raiser: AnomalyRaiser::new(Arc::new(counters)), state })
    } else {
        None
    };
    Ok(StreamPipeline { sink, detection, webhook })
}

/// The steps of `STREAM_STEPS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// Forward every event to the SIEM.
    pub forward: bool,
    /// Count calls in the anomaly detectors.
    pub detect: bool,
    /// Post anomalies to the alert webhook.
    pub alert: bool,
}

impl Steps {
    /// Parses a comma-separated list of `forward`, `detect` and `alert`; unset or blank means
    /// all three.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        let Some(value) = value.filter(|value| !value.trim().is_empty()) else {
            return Ok(Self { forward: true, detect: true, alert: true });
        };
        let mut steps = Self { forward: false, detect: false, alert: false };
        for step in value.split(',').map(str::trim).filter(|step| !step.is_empty()) {
            match step {
                "forward" => steps.forward = true,
                "detect" => steps.detect = true,
                "alert" => steps.alert = true,
                other => {
                    return Err(format!(
                        "invalid environment variable `STREAM_STEPS`: `{other}` is not `forward`, `detect` or `alert`; write a comma-separated list of them"
                    ));
                }
            }
        }
        Ok(steps)
    }
}

/// Runs [`handle_batch`] with `pipeline` under the Lambda runtime until the runtime stops
/// the process.
pub async fn run(pipeline: StreamPipeline) -> Result<(), lambda_runtime::Error> {
    let pipeline = &pipeline;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Event>| async move {
        let budget = match time_left(event.context.deadline) {
            Some(left) if left > DEADLINE_MARGIN => Some(left - DEADLINE_MARGIN),
            _ => {
                // Lambda sets the deadline when the invocation starts, so this happens only
                // under an emulator that sets none; the function then runs without a limit.
                tracing::warn!(
                    deadline_ms = event.context.deadline,
                    "the invocation's deadline has passed or is too close; the batch runs without a time budget"
                );
                None
            }
        };
        Ok::<_, Infallible>(handle_batch(event.payload, pipeline, budget).await)
    }))
    .await
}

/// Time kept back from the invocation's deadline to report the failed records.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// Returns the time until `deadline`, in milliseconds since the Unix epoch as Lambda gives it.
fn time_left(deadline: u64) -> Option<Duration> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(Duration::from_millis(deadline).saturating_sub(now))
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
