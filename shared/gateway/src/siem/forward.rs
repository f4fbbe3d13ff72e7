//! Delivery of audit events to the SIEM in ordered batches.

use std::collections::VecDeque;
use std::ops::Range;

use sha2::{Digest, Sha256};

use super::delivery::{Delivery, DeliveryError};
use super::format::{Encoder, Record, Reduction};
use super::settings::{SiemFormat, SiemSettings, redact_url};
use crate::audit::AuditEvent;

/// A forwarding call that stopped before every event was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SIEM forwarding stopped after {delivered} events: {reason}")]
pub struct ForwardError {
    /// How many events at the front of the slice the receiver acknowledged with a 2xx status.
    /// The caller advances its cursor by this many and retries the rest later.
    pub delivered: usize,
    /// What failed.
    pub reason: String,
}

/// Sends audit events to a SIEM over HTTP. Build it once: it keeps one HTTP client.
#[derive(Debug)]
pub struct SiemForwarder {
    format: SiemFormat,
    batch_events: usize,
    batch_bytes: usize,
    encoder: Encoder,
    delivery: Delivery,
}

impl SiemForwarder {
    /// Checks `settings` and builds the HTTP client.
    pub fn new(settings: SiemSettings) -> Result<Self, String> {
        settings.check().map_err(|error| format!("invalid SIEM setting `{}`: {}", error.name, error.reason))?;
        let authorization =
            settings.authorization().map_err(|_| "invalid SIEM setting `SIEM_TOKEN`: not a header value".to_owned())?;
        let delivery = Delivery::new(
            "siem",
            redact_url(&settings.url),
            settings.url.clone(),
            settings.timeout,
            settings.max_attempts,
            settings.format.content_type(),
            authorization,
            settings.hmac_secret.as_deref(),
        )?;

        Ok(Self {
            format: settings.format,
            batch_events: settings.batch_events,
            batch_bytes: settings.batch_bytes,
            encoder: Encoder::new(&settings),
            delivery,
        })
    }

    /// Returns the body format.
    pub fn format(&self) -> SiemFormat {
        self.format
    }

    /// Sends `events` in order, in requests of at most `batch_events` events and `batch_bytes`
    /// bytes, one request after another.
    ///
    /// Each request is tried up to `max_attempts` times. A request that the receiver rejects
    /// with 413 is split in half, down to single events. An event too large for a request alone
    /// is sent without its tool input, or else in a minimal form marked `"oversized": true`.
    /// An event that cannot be encoded at all (a time outside the years RFC 3339 can write)
    /// stops the call after the events before it.
    ///
    /// # Errors
    ///
    /// [`ForwardError`] with the number of leading events that the receiver acknowledged.
    pub async fn forward(&self, events: &[AuditEvent]) -> Result<(), ForwardError> {
        let (records, encode_failure) = self.encode(events);

        let mut delivered = 0;
        for batch in self.plan(&records) {
            let batch = records.get(batch).unwrap_or_default();
            if let Err(reason) = self.deliver(batch, &mut delivered).await {
                return Err(ForwardError { delivered, reason });
            }
        }

        match encode_failure {
            Some(reason) => Err(ForwardError { delivered, reason }),
            None => Ok(()),
        }
    }

    /// Encodes events up to the first one that cannot be encoded, and returns why it cannot.
    fn encode(&self, events: &[AuditEvent]) -> (Vec<Record>, Option<String>) {
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            match self.encoder.encode(event, self.batch_bytes) {
                Ok(record) => {
                    log_reduction(&record, self.batch_bytes);
                    records.push(record);
                }
                Err(error) => {
                    let reason = format!("event `{}` cannot be encoded: {error}", event.event_id);
                    return (records, Some(reason));
                }
            }
        }
        (records, None)
    }

    /// Splits `records` in order into ranges of at most `batch_events` records and
    /// `batch_bytes` bytes of body. A record too large for any batch gets one of its own.
    fn plan(&self, records: &[Record]) -> Vec<Range<usize>> {
        let mut batches = Vec::new();
        let mut start = 0;
        let mut record_bytes = 0;
        for (index, record) in records.iter().enumerate() {
            let count = index - start;
            let grown = self.encoder.body_len(count + 1, record_bytes + record.bytes.len());
            if count > 0 && (count == self.batch_events || grown > self.batch_bytes) {
                batches.push(start..index);
                start = index;
                record_bytes = 0;
            }
            record_bytes += record.bytes.len();
        }

        if start < records.len() {
            batches.push(start..records.len());
        }
        batches
    }

    /// Sends one batch, halving it whenever the receiver returns 413, and adds the records
    /// that the receiver acknowledged to `delivered`.
    async fn deliver(&self, records: &[Record], delivered: &mut usize) -> Result<(), String> {
        let mut pending = VecDeque::new();
        pending.push_back(0..records.len());
        while let Some(range) = pending.pop_front() {
            let batch = records.get(range.clone()).unwrap_or_default();
            let body = self.encoder.body(batch);
            match self.delivery.post(&body, Some(&batch_id(&body, batch.len())), batch.len()).await {
                Ok(()) => *delivered += batch.len(),
                Err(DeliveryError::TooLarge) if batch.len() > 1 => {
                    let middle = range.start + range.len() / 2;
                    pending.push_front(middle..range.end);
                    pending.push_front(range.start..middle);
                }
                Err(DeliveryError::TooLarge) => {
                    let event_id = batch.first().map_or("", |record| record.event_id.as_str());
                    return Err(format!(
                        "the receiver rejected event `{event_id}` alone with HTTP 413; raise its size limit or lower \
                         SIEM_BATCH_BYTES or SIEM_TOOL_INPUT_BYTES"
                    ));
                }
                Err(DeliveryError::Failed(reason)) => return Err(reason),
            }
        }
        Ok(())
    }
}

/// Returns `<first 32 hex digits of the body's SHA-256>+<count>`, the same on every attempt of
/// one request. Two versions of one event, or the same events in other batches, give other
/// ids, so a receiver that drops repeated batch ids never drops new content.
fn batch_id(body: &[u8], count: usize) -> String {
    let digest = Sha256::digest(body);
    let prefix: String = digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect();
    format!("{prefix}+{count}")
}

fn log_reduction(record: &Record, batch_bytes: usize) {
    match record.reduction {
        Reduction::None => {}
        Reduction::InputDropped => tracing::warn!(
            event.id = %record.event_id,
            batch_bytes,
            "event larger than SIEM_BATCH_BYTES; forwarded without its tool input",
        ),
        Reduction::Minimal => tracing::warn!(
            event.id = %record.event_id,
            batch_bytes,
            record_bytes = record.bytes.len(),
            "event larger than SIEM_BATCH_BYTES without its tool input; forwarded in minimal form",
        ),
    }
}
