//! The path of one tool call, shared by the REST and MCP routes: authenticate, authorize,
//! record, forward, record the outcome.
//!
//! The audit event of a call is written before anything is forwarded, so a forwarded call
//! always has its record even if the gateway dies while the upstream works. The outcome is then
//! written under the same event id before the caller gets an answer. When the first write
//! fails, the call is denied and nothing is forwarded. A denied or unauthorized call whose
//! record fails gets the 503 reply of an unavailable gateway, so every event id a caller receives
//! is stored.

use std::time::Instant;

use mcpsec_policy::{AuthError, Decision, Principal, Request, authorize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, EventKind, Outcome, Route, UpstreamOutcome};
use crate::state::{AppState, AuditWrites};
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// A tool call as the routes hand it over.
#[derive(Debug, Clone, Copy)]
pub struct CallRequest<'a> {
    /// REST or MCP.
    pub route: Route,
    /// The session the call belongs to.
    pub session_id: &'a str,
    /// The tool the model requests.
    pub tool_name: &'a str,
    /// The tool's arguments.
    pub arguments: &'a Value,
}

/// The caller: a model id claimed in the body with a key (REST), or a key alone (MCP).
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// The REST route names the model in the body.
    Claimed {
        /// The model id from the body.
        model_id: &'a str,
        /// The presented key.
        key: Option<&'a str>,
    },
    /// The MCP route identifies the model by its key.
    Key(Option<&'a str>),
}

/// The end state of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// The key was missing, unknown, wrong, expired or revoked.
    Unauthorized {
        /// Why, as shown to the caller.
        reason: String,
        /// The audit event.
        event_id: String,
    },
    /// Out of scope, denied by policy or by a limit.
    Denied {
        /// Why.
        reason: String,
        /// Every rule that matched and limit reached.
        rules: Vec<String>,
        /// The audit event.
        event_id: String,
    },
    /// The upstream replied, and `result` is its `CallToolResult`, unchanged.
    Completed {
        /// The upstream's result.
        result: Value,
        /// The audit event.
        event_id: String,
    },
    /// The upstream failed, timed out, or no upstream owns the tool.
    UpstreamFailed {
        /// Why.
        reason: String,
        /// Whether it timed out.
        timeout: bool,
        /// The audit event.
        event_id: String,
    },
    /// The gateway could not decide or record the call, so it was denied and not forwarded.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// Runs one tool call through the gateway.
pub async fn handle(state: &AppState, caller: Caller<'_>, call: CallRequest<'_>) -> CallOutcome {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let mut event = new_event(state, caller, &call, now);

    // The policy is not read when the keys failed, so a call waits for one failing store read.
    let keys = match state.keys().await {
        Ok(keys) => keys,
        Err(reason) => return unavailable(state, event, reason, started).await,
    };
    let policy = match state.policy().await {
        Ok(policy) => policy,
        Err(reason) => return unavailable(state, event, reason, started).await,
    };
    let principal = match authenticate(&keys, caller, now) {
        Ok(principal) => principal,
        Err(error) => return reject_unauthorized(state, event, &error, started).await,
    };
    event.model_id = principal.model_id().to_owned();
    event.key_id = Some(principal.credential.key_id());
    if let Some(until) = principal.entry.quarantine_at(now) {
        fill_quarantine(&mut event, until);
        return reject_denied(state, event, started).await;
    }

    let Some(decision) = decide(state, &principal, &policy, &call, now) else {
        return unavailable(state, event, "call counters are unavailable".to_owned(), started).await;
    };
    fill_decision(&mut event, &decision);
    if !decision.is_allowed() {
        return reject_denied(state, event, started).await;
    }

    if state.options().audit_writes == AuditWrites::Twice {
        event.latency_ms = elapsed_ms(started);
        if let Err(error) = state.audit().record(&event).await {
            tracing::error!(event.id = %event.event_id, error = %error, "audit write failed; call denied");
            return CallOutcome::Unavailable {
                reason: format!("the audit record could not be written ({error}); the call was not forwarded"),
            };
        }
    }
    forward_detached(state, event, call, started).await
}

/// Forwards the call and records its outcome in a task of its own. When the client goes away,
/// the server drops the handler's future; the call may already be at the upstream by then, so
/// its forwarding and its record must not be dropped with it. With `AUDIT_WRITES=once` that
/// record is the only one the call gets.
async fn forward_detached(state: &AppState, event: AuditEvent, call: CallRequest<'_>, started: Instant) -> CallOutcome {
    let state = state.clone();
    let session_id = call.session_id.to_owned();
    let tool_name = call.tool_name.to_owned();
    let arguments = call.arguments.clone();
    let route = call.route;
    let task = tokio::spawn(async move {
        let call = CallRequest { route, session_id: &session_id, tool_name: &tool_name, arguments: &arguments };
        forward(&state, event, &call, started).await
    });
    match task.await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(error = %error, "the task forwarding a tool call failed");
            CallOutcome::Unavailable { reason: "the gateway failed while forwarding the call; see its log".to_owned() }
        }
    }
}

/// Denies a call the gateway could not decide, and tries to record it.
async fn unavailable(state: &AppState, mut event: AuditEvent, reason: String, started: Instant) -> CallOutcome {
    event.decision = Outcome::Error;
    event.reason = format!("{reason}; the call was denied and not forwarded");
    event.latency_ms = elapsed_ms(started);
    if let Err(error) = state.audit().record(&event).await {
        tracing::error!(event.id = %event.event_id, error = %error, "audit write failed for a call the gateway could not decide");
    }
    log_call(&event);
    CallOutcome::Unavailable { reason: event.reason }
}

fn authenticate<'k>(
    keys: &'k mcpsec_policy::KeySet,
    caller: Caller<'_>,
    now: OffsetDateTime,
) -> Result<Principal<'k>, AuthError> {
    match caller {
        Caller::Claimed { model_id, key } => keys.authenticate(model_id, key, now),
        Caller::Key(key) => keys.authenticate_key(key, now),
    }
}

/// Decides the call and, when it is allowed, counts it against its limits, under one lock so
/// that concurrent calls cannot overrun a limit. `None` when the counters are unusable.
fn decide(
    state: &AppState,
    principal: &Principal<'_>,
    policy: &mcpsec_policy::Policy,
    call: &CallRequest<'_>,
    now: OffsetDateTime,
) -> Option<Decision> {
    let mut counters = state.counters()?;
    let request = Request {
        model_id: principal.model_id(),
        session_id: call.session_id,
        tool_name: call.tool_name,
        input: call.arguments,
        calls: &*counters,
    };
    let decision = authorize(principal, policy, &request, now);
    if decision.is_allowed() && !decision.counted.is_empty() {
        counters.record_and_prune(&decision.counted, now);
    }
    Some(decision)
}

async fn forward(state: &AppState, mut event: AuditEvent, call: &CallRequest<'_>, started: Instant) -> CallOutcome {
    let Some((client, upstream_tool)) = state.upstreams().route(call.tool_name) else {
        let reason =
            format!("no upstream MCP server owns tool `{}`; set TOOL_SERVER_URL or UPSTREAMS_FILE", call.tool_name);
        event.upstream = Some(UpstreamOutcome {
            upstream: String::new(),
            status: "error".into(),
            latency_ms: 0.0,
            response_bytes: 0,
            error: Some(reason.clone()),
        });
        return finish(
            state,
            event,
            started,
            CallOutcome::UpstreamFailed { reason, timeout: false, event_id: String::new() },
        )
        .await;
    };

    let upstream_started = Instant::now();
    let result = client.call_tool(&upstream_tool, call.arguments).await;
    let latency_ms = elapsed_ms(upstream_started);
    let upstream = client.name().to_owned();
    let (outcome, summary) = match result {
        Ok(result) => {
            let bytes = serde_json::to_vec(&result).map_or(0, |body| body.len() as u64);
            let status = if result.get("isError").and_then(Value::as_bool) == Some(true) { "tool_error" } else { "ok" };
            let summary =
                UpstreamOutcome { upstream, status: status.into(), latency_ms, response_bytes: bytes, error: None };
            (CallOutcome::Completed { result, event_id: String::new() }, summary)
        }
        Err(error) => upstream_failure(upstream, latency_ms, &error),
    };
    event.upstream = Some(summary);
    finish(state, event, started, outcome).await
}

fn upstream_failure(upstream: String, latency_ms: f64, error: &UpstreamError) -> (CallOutcome, UpstreamOutcome) {
    let timeout = error.is_timeout();
    let status = if timeout { "timeout" } else { "error" };
    let reason = error.to_string();
    let summary =
        UpstreamOutcome { upstream, status: status.into(), latency_ms, response_bytes: 0, error: Some(reason.clone()) };
    (CallOutcome::UpstreamFailed { reason, timeout, event_id: String::new() }, summary)
}

/// Writes the outcome under the call's event id and returns the answer. A failed write is
/// logged but the answer stands, because the call has already happened.
///
/// NOTE: with [`AuditWrites::Once`], a failed write here leaves a forwarded call without a
/// record; the error log line is then its only trace.
async fn finish(state: &AppState, mut event: AuditEvent, started: Instant, outcome: CallOutcome) -> CallOutcome {
    event.latency_ms = elapsed_ms(started);
    if let Err(error) = state.audit().record(&event).await {
        tracing::error!(event.id = %event.event_id, error = %error, "audit outcome write failed");
    }
    log_call(&event);
    with_event_id(outcome, event.event_id)
}

async fn reject_unauthorized(
    state: &AppState,
    mut event: AuditEvent,
    error: &AuthError,
    started: Instant,
) -> CallOutcome {
    event.decision = Outcome::Unauthorized;
    event.reason = error.to_string();
    event.latency_ms = elapsed_ms(started);
    let recorded = state.audit().record(&event).await;
    log_call(&event);
    if let Err(error) = recorded {
        tracing::error!(event.id = %event.event_id, error = %error, "audit write failed for a rejected call");
        return unrecorded_rejection(&error);
    }
    CallOutcome::Unauthorized { reason: public_auth_reason(error), event_id: event.event_id }
}

async fn reject_denied(state: &AppState, mut event: AuditEvent, started: Instant) -> CallOutcome {
    event.latency_ms = elapsed_ms(started);
    let recorded = state.audit().record(&event).await;
    log_call(&event);
    if let Err(error) = recorded {
        tracing::error!(event.id = %event.event_id, error = %error, "audit write failed for a denied call");
        return unrecorded_rejection(&error);
    }
    CallOutcome::Denied { reason: event.reason, rules: event.rules, event_id: event.event_id }
}

/// Records a `tools/call` whose key the MCP route rejected, without ever forwarding it. The key
/// is checked again only for the precise reason; a key that became valid in between (a cache
/// refresh or an admin change) still leaves the call rejected, because the route has answered
/// 401 already.
pub async fn record_unauthorized(state: &AppState, key: Option<&str>, call: CallRequest<'_>) -> CallOutcome {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let event = new_event(state, Caller::Key(key), &call, now);
    let keys = match state.keys().await {
        Ok(keys) => keys,
        Err(reason) => return unavailable(state, event, reason, started).await,
    };
    let error = authenticate(&keys, Caller::Key(key), now).err().unwrap_or(AuthError::UnknownKey);
    reject_unauthorized(state, event, &error, started).await
}

/// The rule id that audit events name for a `tools/call` rejected for its MCP session id.
pub const SESSION_RULE: &str = "session";

/// Records a `tools/call` that the MCP route rejected for its session id (missing, unknown,
/// expired or issued to another model) as a denied call, so that a model trying another
/// model's session shows in the audit trail. The key is checked again to name the model; an
/// unusable key leaves the model empty, as on any unauthorized call.
pub async fn reject_session(state: &AppState, key: Option<&str>, call: CallRequest<'_>, reason: &str) -> CallOutcome {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let mut event = new_event(state, Caller::Key(key), &call, now);
    let keys = match state.keys().await {
        Ok(keys) => keys,
        Err(reason) => return unavailable(state, event, reason, started).await,
    };
    if let Ok(principal) = authenticate(&keys, Caller::Key(key), now) {
        event.model_id = principal.model_id().to_owned();
        event.key_id = Some(principal.credential.key_id());
    }
    event.decision = Outcome::Deny;
    event.reason = reason.to_owned();
    event.rule = Some(SESSION_RULE.to_owned());
    event.rules = vec![SESSION_RULE.to_owned()];
    reject_denied(state, event, started).await
}

/// Returns the outcome of a rejected call whose audit record could not be written. The call
/// stays rejected, but the caller gets no event id, because no event with that id exists.
fn unrecorded_rejection(error: &StoreError) -> CallOutcome {
    CallOutcome::Unavailable {
        reason: format!("the audit record could not be written ({error}); the call was rejected and not forwarded"),
    }
}

/// Returns the reason shown to a caller whose key was not accepted. Unknown models, unknown
/// keys and wrong keys read the same, so a caller cannot probe which model ids exist. The
/// audit event keeps the precise reason.
fn public_auth_reason(error: &AuthError) -> String {
    match error {
        AuthError::MissingKey => error.to_string(),
        AuthError::UnknownModel(_) | AuthError::UnknownKey | AuthError::WrongKey(_) => {
            "invalid model id or key".to_owned()
        }
        AuthError::Expired { .. } => "the model key has expired; ask an admin for a new key".to_owned(),
        AuthError::Revoked { .. } => "the model key has been revoked".to_owned(),
    }
}

fn new_event(state: &AppState, caller: Caller<'_>, call: &CallRequest<'_>, now: OffsetDateTime) -> AuditEvent {
    let claimed = match caller {
        Caller::Claimed { model_id, .. } => model_id.to_owned(),
        Caller::Key(_) => String::new(),
    };
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        time: now,
        session_id: call.session_id.to_owned(),
        model_id: claimed,
        key_id: None,
        route: call.route,
        tool_name: call.tool_name.to_owned(),
        input: state.options().audit_tool_input.then(|| call.arguments.clone()),
        decision: Outcome::Error,
        reason: String::new(),
        rule: None,
        rules: Vec::new(),
        shadow: None,
        upstream: None,
        latency_ms: 0.0,
        kind: EventKind::ToolCall,
        anomaly: None,
    }
}

fn fill_decision(event: &mut AuditEvent, decision: &Decision) {
    event.decision = if decision.is_allowed() { Outcome::Allow } else { Outcome::Deny };
    event.reason.clone_from(&decision.verdict.reason);
    event.rule.clone_from(&decision.verdict.rule);
    event.rules = decision.matched_ids().into_iter().map(str::to_owned).collect();
    event.shadow = decision.shadow.as_ref().and_then(|shadow| serde_json::to_value(shadow).ok());
}

/// The rule id that audit events and denials name for a quarantined model.
pub const QUARANTINE_RULE: &str = "quarantine";

fn fill_quarantine(event: &mut AuditEvent, until: OffsetDateTime) {
    let until = until.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| until.to_string());
    event.decision = Outcome::Deny;
    event.reason = format!(
        "model `{}` is quarantined until {until} after a spike of denied calls; an admin can lift it with DELETE /api/keys/{}/quarantine",
        event.model_id, event.model_id
    );
    event.rule = Some(QUARANTINE_RULE.to_owned());
    event.rules = vec![QUARANTINE_RULE.to_owned()];
}

fn with_event_id(outcome: CallOutcome, id: String) -> CallOutcome {
    match outcome {
        CallOutcome::Completed { result, .. } => CallOutcome::Completed { result, event_id: id },
        CallOutcome::UpstreamFailed { reason, timeout, .. } => {
            CallOutcome::UpstreamFailed { reason, timeout, event_id: id }
        }
        other => other,
    }
}

fn log_call(event: &AuditEvent) {
    crate::metrics::metrics().record_call(event);
    let upstream_status = event.upstream.as_ref().map(|upstream| upstream.status.as_str());
    tracing::info!(
        event.id = %event.event_id,
        session.id = %event.session_id,
        model.id = %event.model_id,
        key.id = event.key_id.as_deref(),
        tool.name = %event.tool_name,
        route = ?event.route,
        decision = ?event.decision,
        rule.ids = ?event.rules,
        upstream.status = upstream_status,
        latency_ms = event.latency_ms,
        "tool call"
    );
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}
