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
    /// Raised by the gateway itself, such as an anomaly; no caller sent it.
    Gateway,
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
    /// Not a call: an anomaly that the gateway detected (see [`Anomaly`]).
    Alert,
}

impl Route {
    /// Returns the name used in stored and forwarded events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Mcp => "mcp",
            Self::Gateway => "gateway",
        }
    }
}

impl Outcome {
    /// Returns the name used in stored and forwarded events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Unauthorized => "unauthorized",
            Self::Error => "error",
            Self::Alert => "alert",
        }
    }
}

impl Detector {
    /// Returns the name used in stored and forwarded events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DenialSpike => "denial_spike",
            Self::CallRateSpike => "call_rate_spike",
            Self::ScopeProbing => "scope_probing",
            Self::FirstToolUse => "first_tool_use",
        }
    }
}

impl AnomalyScope {
    /// Returns the name used in stored and forwarded events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Session => "session",
            Self::All => "all",
        }
    }
}

/// The kind of record an audit event is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// One tool call, allowed or not.
    #[default]
    ToolCall,
    /// An anomaly detected on the flow of tool calls.
    Anomaly,
}

/// The detector that raised an anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// More denied or unauthorized calls than the threshold within the window.
    DenialSpike,
    /// A model's calls in one window far above its own recent average.
    CallRateSpike,
    /// One session denied on more distinct tools than the threshold within the window.
    ScopeProbing,
    /// A model's first allowed call of a tool.
    FirstToolUse,
}

/// The set of calls an anomaly counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyScope {
    /// The calls of one model; the subject is the model id.
    Model,
    /// The calls of one session; the subject is the session id.
    Session,
    /// Every call; the subject is `*`.
    All,
}

/// The details of an anomaly event ([`EventKind::Anomaly`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The detector that raised it.
    pub detector: Detector,
    /// The set of calls counted.
    pub scope: AnomalyScope,
    /// The model id, session id or `*` that was counted.
    pub subject: String,
    /// The count that crossed the threshold: calls, denials or distinct tools.
    pub observed: u64,
    /// The anomaly is raised when `observed` is greater than this.
    pub threshold: u64,
    /// Length of the counting window in seconds; 0 for a first use.
    pub window_seconds: u64,
    /// Start of the window that the anomaly is raised once for.
    #[serde(with = "time::serde::rfc3339")]
    pub window_start: OffsetDateTime,
    /// For a call-rate spike: the model's mean calls per window over the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The call that crossed the threshold.
    pub trigger_event_id: String,
    /// For scope probing: the distinct tools denied, sorted, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// When the policy quarantines the model after this anomaly: until when.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub quarantined_until: Option<OffsetDateTime>,
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
    /// A tool call or an anomaly; events stored before anomalies existed are tool calls.
    #[serde(default, skip_serializing_if = "is_tool_call")]
    pub kind: EventKind,
    /// The details, for an anomaly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<Anomaly>,
}

impl AuditEvent {
    /// Returns the version of this event for receivers that drop duplicates: 1 for an event
    /// without an upstream outcome, 2 for one with it.
    ///
    /// An allowed call may be recorded twice with the same id, before it is forwarded and
    /// again with the upstream's outcome. Receivers keep the highest version of an event id.
    pub fn version(&self) -> u8 {
        if self.upstream.is_some() { 2 } else { 1 }
    }

    /// Returns whether the event is an anomaly rather than a tool call.
    pub fn is_anomaly(&self) -> bool {
        self.kind == EventKind::Anomaly
    }
}

fn is_tool_call(kind: &EventKind) -> bool {
    *kind == EventKind::ToolCall
}
