//! The `ocsf` format: OCSF 1.1.0 objects, API Activity for tool calls and Detection Finding for
//! anomalies.
//!
//! The target is 1.1.0 because the Amazon Security Lake user guide asks custom sources to be
//! compatible with OCSF 1.1. In that version API Activity has no `disposition_id`, which came with the base event's
//! `security_control` profile in 1.4.0. The gateway's decision is therefore in
//! `actor.authorizations[].decision`, `status_id` and `unmapped.decision`.

use serde_json::{Value, json};

use super::format::{Reduction, SOURCE, counted, detector_caption, epoch_millis, rfc3339};
use crate::audit::{Anomaly, AuditEvent, Detector, Outcome};

/// The OCSF schema version of every object (`metadata.version`).
pub(super) const OCSF_VERSION: &str = "1.1.0";

const PRODUCT_NAME: &str = "MCP-Sec Gateway";
const VENDOR_NAME: &str = "MCP-Sec";
const TOOL_RESOURCE_TYPE: &str = "MCP tool";

/// Returns the OCSF object of `event`: a Detection Finding for an anomaly, an API Activity
/// otherwise.
pub(super) fn record(event: &AuditEvent, reduction: Reduction) -> Value {
    let mut value = if event.is_anomaly() { finding(event) } else { api_activity(event) };
    if let Some(Value::Object(unmapped)) = value.get_mut("unmapped") {
        reduction.mark(unmapped);
    }
    prune_nulls(&mut value);
    value
}

/// Severity of a tool call: informational when allowed, low when denied, medium when the key
/// was rejected or the gateway failed.
fn call_severity(decision: Outcome) -> (u8, &'static str) {
    match decision {
        Outcome::Allow => (1, "Informational"),
        Outcome::Deny => (2, "Low"),
        Outcome::Unauthorized | Outcome::Error | Outcome::Alert => (3, "Medium"),
    }
}

/// Status of a tool call: unknown while an allowed call has no upstream outcome yet, success
/// when the upstream returned a result without error, failure otherwise.
fn call_status(event: &AuditEvent) -> (u8, &'static str) {
    match (event.decision, &event.upstream) {
        (Outcome::Allow, None) => (0, "Unknown"),
        (Outcome::Allow, Some(upstream)) if upstream.status == "ok" => (1, "Success"),
        _ => (2, "Failure"),
    }
}

fn api_activity(event: &AuditEvent) -> Value {
    let (severity_id, severity) = call_severity(event.decision);
    let (status_id, status) = call_status(event);
    let status_code = event.upstream.as_ref().map_or(event.decision.as_str(), |upstream| &upstream.status);

    json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        // A tool can do anything, so no CRUD activity fits: 99 is Other, and `activity_name`
        // carries the source's own name.
        "activity_id": 99,
        "activity_name": "Tool Call",
        "type_uid": 600_399,
        "type_name": "API Activity: Other",
        "time": epoch_millis(event.time),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "status_code": status_code,
        "status_detail": event.upstream.as_ref().and_then(|upstream| upstream.error.as_deref()),
        "message": event.reason,
        "metadata": metadata(event, &[]),
        "actor": actor(event),
        "api": api(event),
        // NOTE: the audit event does not record the caller's network address, and OCSF requires
        // `src_endpoint`, so the endpoint is named after the model.
        "src_endpoint": { "name": non_empty(&event.model_id).unwrap_or("unknown") },
        "dst_endpoint": event.upstream.as_ref().map(|upstream| json!({ "svc_name": upstream.upstream })),
        "resources": [tool_resource(&event.tool_name)],
        "unmapped": call_unmapped(event),
    })
}

fn actor(event: &AuditEvent) -> Value {
    let policy = event.rule.as_ref().map(|rule| json!({ "uid": rule, "name": rule }));
    json!({
        "user": user(event),
        "session": session(event),
        "authorizations": [{ "decision": event.decision.as_str(), "policy": policy }],
    })
}

/// Returns the model as an OCSF user (type 99 Other), or `null` without a model id.
fn user(event: &AuditEvent) -> Value {
    let Some(model_id) = non_empty(&event.model_id) else { return Value::Null };
    json!({
        "uid": model_id,
        "type_id": 99,
        "type": "AI model",
        "credential_uid": event.key_id,
    })
}

fn session(event: &AuditEvent) -> Value {
    non_empty(&event.session_id).map_or(Value::Null, |session_id| json!({ "uid": session_id }))
}

fn api(event: &AuditEvent) -> Value {
    let response = event.upstream.as_ref().map(|upstream| {
        let failed = upstream.status != "ok";
        json!({
            "message": upstream.status,
            "error": failed.then_some(upstream.status.as_str()),
            "error_message": upstream.error,
        })
    });

    json!({
        "operation": "tools/call",
        "service": event.upstream.as_ref().map(|upstream| json!({ "name": upstream.upstream })),
        "request": { "uid": event.event_id, "data": event.input },
        "response": response,
    })
}

fn call_unmapped(event: &AuditEvent) -> Value {
    let upstream = event.upstream.as_ref().map(|upstream| {
        json!({
            "status": upstream.status,
            "latency_ms": upstream.latency_ms,
            "response_bytes": upstream.response_bytes,
        })
    });

    json!({
        "source": SOURCE,
        "event_version": event.version(),
        "kind": "tool_call",
        "decision": event.decision.as_str(),
        "route": event.route.as_str(),
        "rule": event.rule,
        "rules": event.rules,
        "shadow": event.shadow,
        "latency_ms": event.latency_ms,
        "upstream": upstream,
    })
}

/// Severity of an anomaly: high for denial spikes and scope probing, which suggest an attack,
/// medium for a call-rate spike, informational for a first use.
fn finding_severity(detector: Option<Detector>) -> (u8, &'static str) {
    match detector {
        Some(Detector::DenialSpike | Detector::ScopeProbing) => (4, "High"),
        Some(Detector::CallRateSpike) => (3, "Medium"),
        Some(Detector::FirstToolUse) => (1, "Informational"),
        None => (0, "Unknown"),
    }
}

/// Analytic type of a detector: 1 Rule for a fixed threshold, 2 Behavioral for a first use,
/// 3 Statistical for a comparison with a baseline.
fn analytic_type(detector: Option<Detector>) -> (u8, &'static str) {
    match detector {
        Some(Detector::DenialSpike | Detector::ScopeProbing) => (1, "Rule"),
        Some(Detector::FirstToolUse) => (2, "Behavioral"),
        Some(Detector::CallRateSpike) => (3, "Statistical"),
        None => (0, "Unknown"),
    }
}

fn finding(event: &AuditEvent) -> Value {
    let anomaly = event.anomaly.as_ref();
    let detector = anomaly.map(|anomaly| anomaly.detector);
    let (severity_id, severity) = finding_severity(detector);
    let quarantined = anomaly.is_some_and(|anomaly| anomaly.quarantined_until.is_some());
    // The security_control profile: a quarantine revokes the model's access (action 2 Denied,
    // disposition 24 Access Revoked). Otherwise the gateway only reports (1 Allowed, 15 Detected).
    let (action_id, action, disposition_id, disposition) =
        if quarantined { (2, "Denied", 24, "Access Revoked") } else { (1, "Allowed", 15, "Detected") };
    let time = epoch_millis(event.time);

    json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200_401,
        "type_name": "Detection Finding: Create",
        "time": time,
        "start_time": anomaly.map(|anomaly| epoch_millis(anomaly.window_start)),
        "end_time": time,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "action_id": action_id,
        "action": action,
        "disposition_id": disposition_id,
        "disposition": disposition,
        "message": event.reason,
        "metadata": metadata(event, &["security_control"]),
        "actor": finding_actor(event),
        "finding_info": finding_info(event, anomaly),
        "resources": finding_resources(event, anomaly),
        "unmapped": finding_unmapped(event, anomaly),
    })
}

/// Returns the model and session of an anomaly event, or `null` when it names neither.
fn finding_actor(event: &AuditEvent) -> Value {
    let (user, session) = (user(event), session(event));
    if user.is_null() && session.is_null() {
        return Value::Null;
    }
    json!({ "user": user, "session": session })
}

fn finding_info(event: &AuditEvent, anomaly: Option<&Anomaly>) -> Value {
    let detector = anomaly.map(|anomaly| anomaly.detector);
    let name = detector.map_or("unknown", Detector::as_str);
    let (type_id, analytic_type) = analytic_type(detector);
    let time = epoch_millis(event.time);

    json!({
        "uid": event.event_id,
        "title": anomaly.map_or_else(|| "Anomaly".to_owned(), title),
        "desc": anomaly.map(description),
        "types": [name],
        "created_time": time,
        "first_seen_time": anomaly.map(|anomaly| epoch_millis(anomaly.window_start)),
        "last_seen_time": time,
        "analytic": { "name": name, "type_id": type_id, "type": analytic_type },
        "related_events": anomaly.map(|anomaly| json!([{ "uid": anomaly.trigger_event_id }])),
    })
}

/// Returns a title such as "Denial spike: model `m-1`".
fn title(anomaly: &Anomaly) -> String {
    format!("{}: {} `{}`", detector_caption(anomaly.detector), anomaly.scope.as_str(), anomaly.subject)
}

/// Returns a description such as "12 denied or unauthorized calls, above the threshold of 10,
/// within 60 s from 2026-01-01T00:00:00Z".
fn description(anomaly: &Anomaly) -> String {
    let mut text = format!(
        "{} {}, above the threshold of {}, within {} s from {}",
        anomaly.observed,
        counted(anomaly.detector),
        anomaly.threshold,
        anomaly.window_seconds,
        rfc3339(anomaly.window_start),
    );
    if let Some(baseline) = anomaly.baseline {
        text.push_str(&format!("; baseline {baseline:.2} per window"));
    }
    text
}

fn finding_resources(event: &AuditEvent, anomaly: Option<&Anomaly>) -> Value {
    let mut tools: Vec<&str> =
        anomaly.map(|anomaly| anomaly.tools.iter().map(String::as_str).collect()).unwrap_or_default();
    if !event.tool_name.is_empty() && !tools.contains(&event.tool_name.as_str()) {
        tools.insert(0, &event.tool_name);
    }
    if tools.is_empty() {
        return Value::Null;
    }
    Value::Array(tools.into_iter().map(tool_resource).collect())
}

fn finding_unmapped(event: &AuditEvent, anomaly: Option<&Anomaly>) -> Value {
    let mut unmapped = json!({
        "source": SOURCE,
        "event_version": event.version(),
        "kind": "anomaly",
        "decision": event.decision.as_str(),
        "route": event.route.as_str(),
        "model_id": non_empty(&event.model_id),
        "session_id": non_empty(&event.session_id),
        "key_id": event.key_id,
        "rule": event.rule,
        "rules": event.rules,
        "input": event.input,
    });

    if let (Some(anomaly), Value::Object(object)) = (anomaly, &mut unmapped) {
        let details = json!({
            "detector": anomaly.detector.as_str(),
            "scope": anomaly.scope.as_str(),
            "subject": anomaly.subject,
            "observed": anomaly.observed,
            "threshold": anomaly.threshold,
            "window_seconds": anomaly.window_seconds,
            "window_start": rfc3339(anomaly.window_start),
            "baseline": anomaly.baseline,
            "trigger_event_id": anomaly.trigger_event_id,
            "tools": anomaly.tools,
            "quarantined_until": anomaly.quarantined_until.map(rfc3339),
        });
        if let Value::Object(details) = details {
            object.extend(details);
        }
    }
    unmapped
}

fn metadata(event: &AuditEvent, profiles: &[&str]) -> Value {
    json!({
        "uid": event.event_id,
        "version": OCSF_VERSION,
        "product": {
            "name": PRODUCT_NAME,
            "vendor_name": VENDOR_NAME,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "original_time": rfc3339(event.time),
        "profiles": (!profiles.is_empty()).then_some(profiles),
    })
}

fn tool_resource(tool_name: &str) -> Value {
    json!({ "uid": tool_name, "name": tool_name, "type": TOOL_RESOURCE_TYPE })
}

fn non_empty(text: &str) -> Option<&str> {
    if text.is_empty() { None } else { Some(text) }
}

/// Removes every object member whose value is `null`, at any depth, so that unset optional
/// attributes are absent rather than null.
fn prune_nulls(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|_, member| !member.is_null());
            object.values_mut().for_each(prune_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_nulls_removes_nested_members() {
        let mut value = json!({ "a": null, "b": { "c": null, "d": 1 }, "e": [{ "f": null }] });
        prune_nulls(&mut value);
        assert_eq!(value, json!({ "b": { "d": 1 }, "e": [{}] }));
    }
}
