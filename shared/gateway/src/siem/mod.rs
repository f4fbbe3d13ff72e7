//! Forwarding of audit events to a SIEM, and anomaly alerts to a chat webhook.
//!
//! # What is forwarded
//!
//! Every [`AuditEvent`](crate::audit::AuditEvent) that the caller passes to
//! [`SiemForwarder::forward`]: tool calls and anomalies, with ids, decision, reason, rules,
//! upstream outcome and latency. Events carry the public id of a model key, never the key, and
//! the forwarder adds none of the gateway's own secrets to a body or header. The tool input is
//! kept, dropped, or replaced by its size, SHA-256 and a preview when longer than a cap
//! ([`ToolInput`]).
//!
//! # Delivery guarantee
//!
//! At least once. A request counts as delivered when the receiver returns a 2xx status. A
//! request whose response was lost is sent again, by a retry or by the caller's next call from
//! its cursor, so receivers see duplicates. Each event has a unique `event_id` and an `event_version`: 1
//! before the upstream outcome is known and 2 with it. Receivers drop duplicates by
//! `event_id` and keep the highest `event_version`. Each request also carries an
//! `X-Mcpsec-Batch-Id` header (a hash of the body and the event count) that is the same on
//! every retry.
//!
//! Each request is tried up to `SIEM_MAX_ATTEMPTS` times, with exponential backoff from
//! 200 ms, capped at 30 s, with full jitter. Connection errors, timeouts, 408, 429 (honouring
//! `Retry-After` in seconds) and 5xx are retried. A 413 splits the request in half, down to one
//! event. Another 4xx or a redirect stops the call, and [`ForwardError::delivered`] tells the
//! caller how many events at the front of its slice were acknowledged.
//!
//! # Formats
//!
//! * `jsonl`: one audit event per line, with `event_version` and `source`
//!   (`application/x-ndjson`).
//! * `splunk`: Splunk HTTP Event Collector events `{"time", "source", "sourcetype", "index",
//!   "event"}`, concatenated, with `Authorization: Splunk <token>`.
//! * `ocsf`: a JSON array of OCSF 1.1.0 objects, API Activity (6003) for tool calls and
//!   Detection Finding (2004) for anomalies.
//!
//! # Signing
//!
//! With `SIEM_HMAC_SECRET` set, each attempt carries `X-Mcpsec-Timestamp: <Unix seconds>` and
//! `X-Mcpsec-Signature: sha256=<hex>`, the HMAC-SHA256 with the secret as key over the
//! timestamp, a `.` and the exact body bytes. A receiver recomputes the HMAC over the raw body
//! before parsing it, compares in constant time, and rejects timestamps too far from its clock
//! to limit replays.
//!
//! # Why this is written here
//!
//! No Rust crate found covers Splunk HEC, OCSF and request signing together. The `splunk` crate
//! (0.1, which its README calls a start) covers HEC only. Each part is small: a JSON mapping per
//! format and one retry loop on `reqwest`, which the gateway already uses.

mod delivery;
mod format;
mod forward;
mod jsonl;
mod ocsf;
mod settings;
mod splunk;
pub mod webhook;

pub use delivery::{BATCH_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
pub use forward::{ForwardError, SiemForwarder};
pub use settings::{
    DEFAULT_BATCH_BYTES, DEFAULT_BATCH_EVENTS, DEFAULT_MAX_ATTEMPTS, DEFAULT_SPLUNK_SOURCETYPE, DEFAULT_TIMEOUT,
    DEFAULT_TOOL_INPUT_BYTES, MAX_BATCH_EVENTS, MIN_BATCH_BYTES, SiemFormat, SiemSettings, ToolInput,
};
pub use webhook::AlertWebhook;

/// The OCSF schema version of the `ocsf` format (`metadata.version`).
pub const OCSF_VERSION: &str = ocsf::OCSF_VERSION;
