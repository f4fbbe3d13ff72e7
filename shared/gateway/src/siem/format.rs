//! The parts that the three formats share: tool input handling, the reduced forms of an
//! oversized event, framing of a request body, and names of the audit enums.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::settings::{SiemFormat, SiemSettings, ToolInput};
use super::{jsonl, ocsf, splunk};
use crate::audit::{Anomaly, AuditEvent, Detector, UpstreamOutcome};
use mcpsec_policy::glob::Pattern;

/// Value of the `source` field in every format.
pub(super) const SOURCE: &str = "mcpsec-gateway";

/// Maximum bytes kept of each id and name in the minimal form of an oversized event.
const MINIMAL_ID_BYTES: usize = 128;
/// Maximum bytes kept of the reason in the minimal form of an oversized event.
const MINIMAL_REASON_BYTES: usize = 1024;

/// How much of an event a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reduction {
    /// The whole event, with the tool input handled as configured.
    None,
    /// The event without its tool input, marked `"input_dropped": true`.
    InputDropped,
    /// Ids, decision and a shortened reason only, marked `"oversized": true`.
    Minimal,
}

impl Reduction {
    /// Adds this reduction's marker to `object`.
    pub(super) fn mark(self, object: &mut Map<String, Value>) {
        match self {
            Self::None => {}
            Self::InputDropped => {
                object.insert("input_dropped".to_owned(), Value::Bool(true));
            }
            Self::Minimal => {
                object.insert("oversized".to_owned(), Value::Bool(true));
            }
        }
    }
}

/// One event, encoded for the body of a request.
#[derive(Debug)]
pub(super) struct Record {
    /// The audit event id.
    pub(super) event_id: String,
    /// The encoded event, without framing.
    pub(super) bytes: Vec<u8>,
    /// How much of the event the record carries.
    pub(super) reduction: Reduction,
}

/// Encodes events in the configured format.
#[derive(Debug, Clone)]
pub(super) struct Encoder {
    format: SiemFormat,
    tool_input: ToolInput,
    tool_input_bytes: usize,
    redact: Vec<Pattern>,
    splunk: splunk::Options,
}

impl Encoder {
    pub(super) fn new(settings: &SiemSettings) -> Self {
        let splunk =
            splunk::Options { index: settings.splunk_index.clone(), sourcetype: settings.splunk_sourcetype.clone() };
        Self {
            format: settings.format,
            tool_input: settings.tool_input,
            tool_input_bytes: settings.tool_input_bytes,
            // The settings checked every pattern, so none is left out here.
            redact: settings.redact_fields.iter().filter_map(|field| Pattern::new(field).ok()).collect(),
            splunk,
        }
    }

    /// Encodes `event` so that a request with this record alone fits in `max_body_bytes`:
    /// first whole, then without its tool input, then in its minimal form.
    ///
    /// The minimal form is returned even when it is still too large, so that the event is sent
    /// rather than lost. It fits whenever `max_body_bytes` is at least the 4096 bytes that the
    /// settings require, unless escaping of control characters inflates the kept text.
    pub(super) fn encode(&self, event: &AuditEvent, max_body_bytes: usize) -> Result<Record, serde_json::Error> {
        let mut event = event.clone();
        event.input = event.input.take().and_then(|input| self.handle_input(input));

        let bytes = self.render(&event, Reduction::None)?;
        if self.body_len(1, bytes.len()) <= max_body_bytes {
            return Ok(self.record(&event, bytes, Reduction::None));
        }

        if event.input.is_some() {
            event.input = None;
            let bytes = self.render(&event, Reduction::InputDropped)?;
            if self.body_len(1, bytes.len()) <= max_body_bytes {
                return Ok(self.record(&event, bytes, Reduction::InputDropped));
            }
        }

        let bytes = self.render(&minimal(&event), Reduction::Minimal)?;
        Ok(self.record(&event, bytes, Reduction::Minimal))
    }

    fn record(&self, event: &AuditEvent, bytes: Vec<u8>, reduction: Reduction) -> Record {
        Record { event_id: event.event_id.clone(), bytes, reduction }
    }

    fn handle_input(&self, mut input: Value) -> Option<Value> {
        if self.tool_input == ToolInput::Drop {
            return None;
        }
        redact(&mut input, &self.redact);
        match self.tool_input {
            ToolInput::Truncate => Some(truncate_input(input, self.tool_input_bytes)),
            ToolInput::Keep | ToolInput::Drop => Some(input),
        }
    }

    fn render(&self, event: &AuditEvent, reduction: Reduction) -> Result<Vec<u8>, serde_json::Error> {
        let value = match self.format {
            SiemFormat::Jsonl => jsonl::record(event, reduction)?,
            SiemFormat::Splunk => splunk::record(event, reduction, &self.splunk)?,
            SiemFormat::Ocsf => ocsf::record(event, reduction),
        };
        serde_json::to_vec(&value)
    }

    /// Returns the size of a body of `count` records whose sizes add up to `record_bytes`.
    pub(super) fn body_len(&self, count: usize, record_bytes: usize) -> usize {
        match self.format {
            SiemFormat::Jsonl => record_bytes + count,
            SiemFormat::Splunk => record_bytes,
            SiemFormat::Ocsf => record_bytes + 2 + count.saturating_sub(1),
        }
    }

    /// Frames `records` as one request body: lines, concatenated objects or a JSON array.
    pub(super) fn body(&self, records: &[Record]) -> Vec<u8> {
        let record_bytes = records.iter().map(|record| record.bytes.len()).sum();
        let mut body = Vec::with_capacity(self.body_len(records.len(), record_bytes));
        match self.format {
            SiemFormat::Jsonl => {
                for record in records {
                    body.extend_from_slice(&record.bytes);
                    body.push(b'\n');
                }
            }
            SiemFormat::Splunk => {
                for record in records {
                    body.extend_from_slice(&record.bytes);
                }
            }
            SiemFormat::Ocsf => {
                body.push(b'[');
                for (index, record) in records.iter().enumerate() {
                    if index > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(&record.bytes);
                }
                body.push(b']');
            }
        }
        body
    }
}

/// Replaces `input` when its compact JSON text is longer than `max_bytes` with its size,
/// SHA-256 and the first `max_bytes` of the text, cut at a character boundary.
/// The value that replaces a redacted field.
pub(super) const REDACTED: &str = "[redacted]";

/// Replaces, at any depth, the value of every object field whose lowercase name matches one of
/// `fields`.
pub(super) fn redact(value: &mut Value, fields: &[Pattern]) {
    match value {
        Value::Object(map) => {
            for (name, field) in map.iter_mut() {
                let lowercase = name.to_lowercase();
                if fields.iter().any(|pattern| pattern.is_match(&lowercase)) {
                    *field = Value::String(REDACTED.to_owned());
                } else {
                    redact(field, fields);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, fields)),
        _ => {}
    }
}

pub(super) fn truncate_input(input: Value, max_bytes: usize) -> Value {
    let text = input.to_string();
    if text.len() <= max_bytes {
        return input;
    }

    let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    json!({
        "truncated": true,
        "bytes": text.len(),
        "sha256": sha256,
        "preview": prefix(&text, max_bytes),
    })
}

/// Returns the longest prefix of `text` of at most `max_bytes` bytes that ends at a character
/// boundary.
pub(super) fn prefix(text: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Returns the minimal form of `event`: every id and the decision, the reason shortened, and
/// none of the tool input, shadow decision, rule list, upstream error or anomaly tool list.
/// The upstream outcome stays, shortened, so that the event keeps its version.
fn minimal(event: &AuditEvent) -> AuditEvent {
    let short = |text: &str| prefix(text, MINIMAL_ID_BYTES).to_owned();
    let upstream = event.upstream.as_ref().map(|upstream| UpstreamOutcome {
        upstream: short(&upstream.upstream),
        status: short(&upstream.status),
        latency_ms: upstream.latency_ms,
        response_bytes: upstream.response_bytes,
        error: None,
    });
    let anomaly = event.anomaly.as_ref().map(|anomaly| Anomaly {
        subject: short(&anomaly.subject),
        trigger_event_id: short(&anomaly.trigger_event_id),
        tools: Vec::new(),
        ..anomaly.clone()
    });

    AuditEvent {
        event_id: event.event_id.clone(),
        time: event.time,
        session_id: short(&event.session_id),
        model_id: short(&event.model_id),
        key_id: event.key_id.as_deref().map(short),
        route: event.route,
        tool_name: short(&event.tool_name),
        input: None,
        decision: event.decision,
        reason: prefix(&event.reason, MINIMAL_REASON_BYTES).to_owned(),
        rule: event.rule.as_deref().map(short),
        rules: Vec::new(),
        shadow: None,
        upstream,
        latency_ms: event.latency_ms,
        kind: event.kind,
        anomaly,
    }
}

/// Returns `time` as RFC 3339 text, or as Unix seconds for a year that RFC 3339 cannot write.
pub(super) fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_else(|_| time.unix_timestamp().to_string())
}

/// Returns `time` in milliseconds since the Unix epoch.
pub(super) fn epoch_millis(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Returns a detector's name for titles and messages.
pub(super) fn detector_caption(detector: Detector) -> &'static str {
    match detector {
        Detector::DenialSpike => "Denial spike",
        Detector::CallRateSpike => "Call-rate spike",
        Detector::ScopeProbing => "Scope probing",
        Detector::FirstToolUse => "First tool use",
    }
}

/// Returns what a detector counts, for messages.
pub(super) fn counted(detector: Detector) -> &'static str {
    match detector {
        Detector::DenialSpike => "denied or unauthorized calls",
        Detector::CallRateSpike => "calls",
        Detector::ScopeProbing => "distinct denied tools",
        Detector::FirstToolUse => "first allowed calls of a tool",
    }
}
