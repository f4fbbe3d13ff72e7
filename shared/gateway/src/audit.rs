//! Audit events: the durable record of every tool call, allowed or not.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// How the call reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// `POST /mcp/toolcall`.
    Rest,
    /// `POST /mcp`, JSON-RPC `tools/call`.
    Mcp,
}

/// The gateway's decision on a call, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Allowed by scope and policy (the upstream result is in [`UpstreamOutcome`]).
    Allow,
    /// Denied by scope, policy or a limit.
    Deny,
    /// The key was missing, wrong, expired or revoked.
    Unauthorized,
    /// The gateway could not decide (store or configuration failure) and denied the call.
    Error,
}

/// What the upstream did with an allowed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamOutcome {
    /// The upstream's configured name.
    pub upstream: String,
    /// `ok`, `tool_error` (a result with `isError: true`), `error` or `timeout`.
    pub status: String,
    /// Time spent waiting for the upstream, in milliseconds.
    pub latency_ms: f64,
    /// Size of the upstream's result, in bytes of JSON.
    pub response_bytes: u64,
    /// The failure, when `status` is `error` or `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One tool call as recorded in the session trace and the audit log.
///
/// A key never appears here, only its public id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique, time-ordered id (UUID v7); SIEM receivers drop duplicates by it.
    pub event_id: String,
    /// When the gateway received the call.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The session the call belongs to.
    pub session_id: String,
    /// The model, as authenticated, or as claimed when authentication failed.
    pub model_id: String,
    /// Public id of the key that authenticated, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// REST or MCP.
    pub route: Route,
    /// The tool the model asked for.
    pub tool_name: String,
    /// The tool input, kept or dropped as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// What the gateway decided.
    pub decision: Outcome,
    /// Why.
    pub reason: String,
    /// The rule or limit that decided, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Every rule that matched and limit reached, sorted by id.
    #[serde(default)]
    pub rules: Vec<String>,
    /// The decision that shadow rules would have made, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Value>,
    /// The upstream's handling of an allowed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamOutcome>,
    /// Time from receiving the call to recording it, in milliseconds.
    pub latency_ms: f64,
}
