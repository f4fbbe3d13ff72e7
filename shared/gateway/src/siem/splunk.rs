//! The `splunk` format: HTTP Event Collector events whose `event` is the `jsonl` object.

use serde_json::{Map, Value};

use super::format::{Reduction, SOURCE};
use super::jsonl;
use crate::audit::AuditEvent;

/// The fields that Splunk adds around each event.
#[derive(Debug, Clone)]
pub(super) struct Options {
    /// `index`, left out when unset so that the token's default index applies.
    pub(super) index: Option<String>,
    /// `sourcetype`.
    pub(super) sourcetype: String,
}

/// Returns the collector object of `event`: `time` in Unix seconds with milliseconds, `source`,
/// `sourcetype`, `index` when set, and `event`.
pub(super) fn record(event: &AuditEvent, reduction: Reduction, options: &Options) -> Result<Value, serde_json::Error> {
    let millis = event.time.unix_timestamp_nanos() / 1_000_000;
    // Whole milliseconds since 1970 stay below 2^53, so the f64 represents them exactly.
    let seconds = millis as f64 / 1000.0;

    let mut object = Map::new();
    object.insert("time".to_owned(), Value::from(seconds));
    object.insert("source".to_owned(), Value::from(SOURCE));
    object.insert("sourcetype".to_owned(), Value::from(options.sourcetype.as_str()));
    if let Some(index) = &options.index {
        object.insert("index".to_owned(), Value::from(index.as_str()));
    }
    object.insert("event".to_owned(), jsonl::record(event, reduction)?);
    Ok(Value::Object(object))
}
