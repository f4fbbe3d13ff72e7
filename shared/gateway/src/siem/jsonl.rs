//! The `jsonl` format: the audit event as stored, plus its version and source, one per line.

use serde_json::Value;

use super::format::{Reduction, SOURCE};
use crate::audit::AuditEvent;

/// Returns the JSON object of `event`: its stored fields, `event_version`, `source`, and the
/// marker of `reduction`.
pub(super) fn record(event: &AuditEvent, reduction: Reduction) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(event)?;
    if let Value::Object(object) = &mut value {
        object.insert("event_version".to_owned(), Value::from(event.version()));
        object.insert("source".to_owned(), Value::from(SOURCE));
        reduction.mark(object);
    }
    Ok(value)
}
