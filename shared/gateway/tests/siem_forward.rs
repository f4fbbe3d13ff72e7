//! The SIEM forwarder and the alert webhook against a real HTTP receiver on 127.0.0.1 that
//! records every request and replies as each test sets it up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use mcpsec_gateway::audit::{Anomaly, AnomalyScope, AuditEvent, Detector, EventKind, Outcome, Route, UpstreamOutcome};
use mcpsec_gateway::siem::{
    AlertWebhook, BATCH_ID_HEADER, ForwardError, OCSF_VERSION, SIGNATURE_HEADER, SiemFormat, SiemForwarder,
    SiemSettings, TIMESTAMP_HEADER, ToolInput,
};
use reqwest::Url;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::net::TcpListener;

/// A time limit that no healthy local request comes near.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The time of the first sample event; later events are 1 ms apart.
const START: OffsetDateTime = datetime!(2026-03-02 09:15:30.250 UTC);

// ---------------------------------------------------------------------------------------------
// The receiver

/// The receiver's reply to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Ok,
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    RetryAfter(u64),
    /// Never answers.
    Hang,
}

/// One request as received, and whether the receiver replied 200.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    accepted: bool,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn batch_count(&self) -> Option<usize> {
        batch_count(&self.headers)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Returns the event count from the `<body hash>+<count>` batch id.
fn batch_count(headers: &HeaderMap) -> Option<usize> {
    headers.get(BATCH_ID_HEADER)?.to_str().ok()?.rsplit_once('+')?.1.parse().ok()
}

#[derive(Debug)]
struct Script {
    /// Replies to the next requests, in order.
    replies: VecDeque<Reply>,
    /// The reply once `replies` is empty.
    fallback: Reply,
    /// Reply 413 to a batch of more events than this.
    max_batch: Option<usize>,
    received: Vec<Received>,
}

#[derive(Debug, Clone)]
struct Receiver {
    script: Arc<Mutex<Script>>,
    url: Url,
}

impl Receiver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Returns the event ids of the requests that the receiver accepted with 200, in order.
    fn accepted_ids(&self, format: SiemFormat) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for received in self.received().iter().filter(|received| received.accepted) {
            ids.extend(event_ids(format, &received.body)?);
        }
        Ok(ids)
    }
}

async fn handle(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut script = receiver.lock();
        let count = batch_count(&headers).unwrap_or(1);
        let reply = match script.max_batch {
            Some(max) if count > max => Reply::Status(413),
            _ => {
                let fallback = script.fallback;
                script.replies.pop_front().unwrap_or(fallback)
            }
        };
        script.received.push(Received { headers, body, accepted: reply == Reply::Ok });
        reply
    };

    match reply {
        Reply::Ok => (StatusCode::OK, axum::Json(json!({ "text": "Success", "code": 0 }))).into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT).into_response(),
        Reply::RetryAfter(seconds) => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, seconds.to_string())]).into_response()
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}

/// Starts a receiver on `listener` that replies `replies` in order, then `fallback`.
fn serve(listener: TcpListener, replies: &[Reply], fallback: Reply) -> anyhow::Result<Receiver> {
    let address = listener.local_addr()?;
    let script = Script { replies: replies.iter().copied().collect(), fallback, max_batch: None, received: Vec::new() };
    let receiver =
        Receiver { script: Arc::new(Mutex::new(script)), url: Url::parse(&format!("http://{address}/ingest"))? };
    let router = Router::new().route("/ingest", post(handle)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(receiver)
}

async fn receiver(replies: &[Reply], fallback: Reply) -> anyhow::Result<Receiver> {
    serve(TcpListener::bind("127.0.0.1:0").await?, replies, fallback)
}

// ---------------------------------------------------------------------------------------------
// Events and settings

fn event_id(n: u32) -> String {
    format!("0195a1b2-c3d4-7e5f-8a6b-{n:012}")
}

fn at(n: u32) -> OffsetDateTime {
    START + Duration::from_millis(u64::from(n))
}

/// Returns an allowed call of `search.docs` with the upstream's outcome.
fn allowed(n: u32) -> AuditEvent {
    AuditEvent {
        event_id: event_id(n),
        time: at(n),
        session_id: "sess-7f3a".to_owned(),
        model_id: "support-bot".to_owned(),
        key_id: Some("key-sb-01".to_owned()),
        route: Route::Mcp,
        tool_name: "search.docs".to_owned(),
        input: Some(json!({ "query": "refund policy", "limit": 3 })),
        decision: Outcome::Allow,
        reason: "allowed by rule `support-search`".to_owned(),
        rule: Some("support-search".to_owned()),
        rules: vec!["support-search".to_owned()],
        shadow: None,
        upstream: Some(UpstreamOutcome {
            upstream: "docs".to_owned(),
            status: "ok".to_owned(),
            latency_ms: 41.5,
            response_bytes: 1832,
            error: None,
        }),
        latency_ms: 44.25,
        kind: EventKind::ToolCall,
        anomaly: None,
    }
}

/// Returns a denied call, recorded once, without an upstream outcome.
fn denied(n: u32) -> AuditEvent {
    AuditEvent {
        tool_name: "calendar.delete_event".to_owned(),
        input: Some(json!({ "id": "evt-1" })),
        decision: Outcome::Deny,
        reason: "denied by rule `no-deletes`".to_owned(),
        rule: Some("no-deletes".to_owned()),
        rules: vec!["no-deletes".to_owned()],
        upstream: None,
        latency_ms: 0.8,
        ..allowed(n)
    }
}

fn anomaly(n: u32, detector: Detector) -> AuditEvent {
    let details = Anomaly {
        detector,
        scope: AnomalyScope::Model,
        subject: "support-bot".to_owned(),
        observed: 12,
        threshold: 10,
        window_seconds: 60,
        window_start: datetime!(2026-03-02 09:15:00 UTC),
        baseline: None,
        trigger_event_id: event_id(1),
        tools: vec!["calendar.delete_event".to_owned()],
        quarantined_until: None,
    };
    AuditEvent {
        session_id: String::new(),
        key_id: None,
        route: Route::Gateway,
        tool_name: String::new(),
        input: None,
        decision: Outcome::Alert,
        reason: "12 denied calls of model `support-bot` within 60 s, above 10".to_owned(),
        rule: None,
        rules: Vec::new(),
        upstream: None,
        latency_ms: 0.0,
        kind: EventKind::Anomaly,
        anomaly: Some(details),
        ..allowed(n)
    }
}

fn settings(url: &Url, format: SiemFormat) -> SiemSettings {
    let mut settings = SiemSettings::new(url.clone(), format);
    settings.timeout = TIMEOUT;
    settings.max_attempts = 3;
    if format == SiemFormat::Splunk {
        settings.token = Some("hec-token-1".to_owned());
    }
    settings
}

fn forwarder(settings: SiemSettings) -> anyhow::Result<SiemForwarder> {
    SiemForwarder::new(settings).map_err(anyhow::Error::msg)
}

// ---------------------------------------------------------------------------------------------
// Parsing bodies

/// Splits a body into its event objects: lines, concatenated objects or array items.
fn objects(format: SiemFormat, body: &[u8]) -> anyhow::Result<Vec<Value>> {
    match format {
        SiemFormat::Jsonl => {
            let text = std::str::from_utf8(body)?;
            if !text.ends_with('\n') {
                bail!("a jsonl body ends with a newline");
            }
            text.lines().map(|line| Ok(serde_json::from_str(line)?)).collect()
        }
        SiemFormat::Splunk => {
            let stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
            Ok(stream.collect::<Result<Vec<_>, _>>()?)
        }
        SiemFormat::Ocsf => match serde_json::from_slice(body)? {
            Value::Array(items) => Ok(items),
            other => bail!("an OCSF body is an array, got {other}"),
        },
    }
}

/// Returns the audit event id of each object of a body.
fn event_ids(format: SiemFormat, body: &[u8]) -> anyhow::Result<Vec<String>> {
    let pointer = match format {
        SiemFormat::Jsonl => "/event_id",
        SiemFormat::Splunk => "/event/event_id",
        SiemFormat::Ocsf => "/metadata/uid",
    };
    objects(format, body)?
        .iter()
        .map(|object| object.pointer(pointer).and_then(Value::as_str).map(str::to_owned).context("event id"))
        .collect()
}

fn text_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn int_at(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

// ---------------------------------------------------------------------------------------------
// Formats

#[tokio::test]
async fn jsonl_body_holds_every_event() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let events = [allowed(1), denied(2), anomaly(3, Detector::DenialSpike)];
    forwarder(settings(&receiver.url, SiemFormat::Jsonl))?.forward(&events).await?;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
    assert!(request.header("user-agent").is_some_and(|agent| agent.starts_with("mcpsec-gateway/")));
    assert_eq!(request.header("authorization"), None);

    let lines = objects(SiemFormat::Jsonl, &request.body)?;
    let ids: Vec<_> = lines.iter().filter_map(|line| text_at(line, "/event_id")).collect();
    assert_eq!(ids, [event_id(1), event_id(2), event_id(3)]);
    let versions: Vec<_> = lines.iter().filter_map(|line| int_at(line, "/event_version")).collect();
    assert_eq!(versions, [2, 1, 1]);
    for line in &lines {
        assert_eq!(text_at(line, "/source"), Some("mcpsec-gateway"), "line {line}");
    }
    assert_eq!(text_at(&lines[1], "/decision"), Some("deny"));
    assert_eq!(text_at(&lines[0], "/upstream/status"), Some("ok"));
    assert_eq!(text_at(&lines[2], "/kind"), Some("anomaly"));
    assert_eq!(text_at(&lines[2], "/anomaly/detector"), Some("denial_spike"));
    Ok(())
}

#[tokio::test]
async fn splunk_body_wraps_events() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let mut settings = settings(&receiver.url, SiemFormat::Splunk);
    settings.splunk_index = Some("mcp_audit".to_owned());
    forwarder(settings)?.forward(&[allowed(1), anomaly(2, Detector::ScopeProbing)]).await?;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.header("authorization"), Some("Splunk hec-token-1"));
    assert_eq!(request.header("content-type"), Some("application/json"));

    let wrapped = objects(SiemFormat::Splunk, &request.body)?;
    assert_eq!(wrapped.len(), 2);
    for (object, n) in wrapped.iter().zip([1, 2]) {
        assert_eq!(text_at(object, "/source"), Some("mcpsec-gateway"));
        assert_eq!(text_at(object, "/sourcetype"), Some("mcpsec:audit"));
        assert_eq!(text_at(object, "/index"), Some("mcp_audit"));
        assert_eq!(text_at(object, "/event/event_id"), Some(event_id(n).as_str()));
        let expected_seconds = (at(n).unix_timestamp_nanos() / 1_000_000) as f64 / 1000.0;
        assert_eq!(object.get("time").and_then(Value::as_f64), Some(expected_seconds));
    }
    assert_eq!(int_at(&wrapped[0], "/event/event_version"), Some(2));
    Ok(())
}

#[tokio::test]
async fn splunk_without_index_leaves_it_out() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let mut settings = settings(&receiver.url, SiemFormat::Splunk);
    settings.splunk_sourcetype = "mcp:custom".to_owned();
    forwarder(settings)?.forward(&[allowed(1)]).await?;

    let wrapped = objects(SiemFormat::Splunk, &receiver.received()[0].body)?;
    assert_eq!(wrapped[0].get("index"), None);
    assert_eq!(text_at(&wrapped[0], "/sourcetype"), Some("mcp:custom"));
    Ok(())
}

#[tokio::test]
async fn ocsf_tool_calls_are_api_activity() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let mut pending = allowed(3);
    pending.upstream = None;
    let mut failed = allowed(4);
    failed.upstream = Some(UpstreamOutcome {
        status: "timeout".to_owned(),
        error: Some("no reply in 30 s".to_owned()),
        ..failed.upstream.clone().context("upstream")?
    });
    let mut unauthorized = denied(5);
    unauthorized.decision = Outcome::Unauthorized;
    let events = [allowed(1), denied(2), pending, failed, unauthorized];
    forwarder(settings(&receiver.url, SiemFormat::Ocsf))?.forward(&events).await?;

    let body = &receiver.received()[0].body;
    let items = objects(SiemFormat::Ocsf, body)?;
    // (status_id, severity_id, authorization decision) per event.
    let expected = [(1, 1, "allow"), (2, 2, "deny"), (0, 1, "allow"), (2, 1, "allow"), (2, 3, "unauthorized")];
    assert_eq!(items.len(), expected.len());
    for ((item, event), (status_id, severity_id, decision)) in items.iter().zip(&events).zip(expected) {
        let id = event.event_id.as_str();
        assert_eq!(int_at(item, "/class_uid"), Some(6003), "{id}");
        assert_eq!(int_at(item, "/category_uid"), Some(6), "{id}");
        assert_eq!(int_at(item, "/activity_id"), Some(99), "{id}");
        assert_eq!(int_at(item, "/type_uid"), Some(600_399), "{id}");
        assert_eq!(int_at(item, "/status_id"), Some(status_id), "{id}");
        assert_eq!(int_at(item, "/severity_id"), Some(severity_id), "{id}");
        assert_eq!(int_at(item, "/time"), Some((event.time.unix_timestamp_nanos() / 1_000_000) as i64), "{id}");
        assert_eq!(text_at(item, "/metadata/uid"), Some(id));
        assert_eq!(text_at(item, "/metadata/version"), Some(OCSF_VERSION));
        assert_eq!(text_at(item, "/metadata/product/name"), Some("MCP-Sec Gateway"));
        assert_eq!(text_at(item, "/metadata/product/vendor_name"), Some("MCP-Sec"));
        assert_eq!(text_at(item, "/actor/user/uid"), Some("support-bot"), "{id}");
        assert_eq!(text_at(item, "/actor/user/credential_uid"), Some("key-sb-01"), "{id}");
        assert_eq!(text_at(item, "/actor/session/uid"), Some("sess-7f3a"), "{id}");
        assert_eq!(text_at(item, "/actor/authorizations/0/decision"), Some(decision), "{id}");
        assert_eq!(text_at(item, "/api/operation"), Some("tools/call"), "{id}");
        assert_eq!(text_at(item, "/api/request/uid"), Some(id));
        assert_eq!(text_at(item, "/resources/0/name"), Some(event.tool_name.as_str()), "{id}");
        assert_eq!(text_at(item, "/message"), Some(event.reason.as_str()), "{id}");
        assert_eq!(int_at(item, "/unmapped/event_version"), Some(i64::from(event.version())), "{id}");
        assert!(item.pointer("/unmapped/latency_ms").is_some(), "{id}");
        assert!(!item.to_string().contains("null"), "no null attributes in {item}");
    }
    assert_eq!(text_at(&items[0], "/api/service/name"), Some("docs"));
    assert_eq!(items[1].pointer("/api/service"), None);
    assert_eq!(text_at(&items[1], "/unmapped/rule"), Some("no-deletes"));
    assert_eq!(text_at(&items[3], "/status_detail"), Some("no reply in 30 s"));
    Ok(())
}

#[tokio::test]
async fn ocsf_anomalies_are_detection_findings() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let detectors = [
        (Detector::DenialSpike, 4, "denial_spike"),
        (Detector::ScopeProbing, 4, "scope_probing"),
        (Detector::CallRateSpike, 3, "call_rate_spike"),
        (Detector::FirstToolUse, 1, "first_tool_use"),
    ];
    let events: Vec<AuditEvent> =
        detectors.iter().zip(1..).map(|((detector, _, _), n)| anomaly(n, *detector)).collect();
    forwarder(settings(&receiver.url, SiemFormat::Ocsf))?.forward(&events).await?;

    let items = objects(SiemFormat::Ocsf, &receiver.received()[0].body)?;
    assert_eq!(items.len(), detectors.len());
    for ((item, event), (_, severity_id, name)) in items.iter().zip(&events).zip(detectors) {
        assert_eq!(int_at(item, "/class_uid"), Some(2004), "{name}");
        assert_eq!(int_at(item, "/category_uid"), Some(2), "{name}");
        assert_eq!(int_at(item, "/activity_id"), Some(1), "{name}");
        assert_eq!(int_at(item, "/type_uid"), Some(200_401), "{name}");
        assert_eq!(int_at(item, "/severity_id"), Some(severity_id), "{name}");
        assert_eq!(int_at(item, "/status_id"), Some(1), "{name}");
        assert_eq!(text_at(item, "/finding_info/uid"), Some(event.event_id.as_str()), "{name}");
        assert_eq!(text_at(item, "/finding_info/types/0"), Some(name));
        assert!(text_at(item, "/finding_info/title").is_some_and(|title| title.contains("support-bot")), "{name}");
        assert!(text_at(item, "/finding_info/desc").is_some_and(|desc| desc.contains("12")), "{name}");
        assert_eq!(text_at(item, "/finding_info/related_events/0/uid"), Some(event_id(1).as_str()));
        assert_eq!(text_at(item, "/unmapped/detector"), Some(name));
        assert_eq!(int_at(item, "/unmapped/observed"), Some(12), "{name}");
        assert_eq!(int_at(item, "/unmapped/threshold"), Some(10), "{name}");
        assert_eq!(text_at(item, "/resources/0/name"), Some("calendar.delete_event"), "{name}");
        assert_eq!(int_at(item, "/disposition_id"), Some(15), "{name}");
        assert_eq!(text_at(item, "/actor/user/uid"), Some("support-bot"), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn ocsf_quarantine_revokes_access() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let mut event = anomaly(1, Detector::DenialSpike);
    if let Some(details) = event.anomaly.as_mut() {
        details.quarantined_until = Some(datetime!(2026-03-02 10:15:30 UTC));
    }
    forwarder(settings(&receiver.url, SiemFormat::Ocsf))?.forward(&[event]).await?;

    let items = objects(SiemFormat::Ocsf, &receiver.received()[0].body)?;
    assert_eq!(int_at(&items[0], "/action_id"), Some(2));
    assert_eq!(int_at(&items[0], "/disposition_id"), Some(24));
    assert_eq!(text_at(&items[0], "/unmapped/quarantined_until"), Some("2026-03-02T10:15:30Z"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batching

#[tokio::test]
async fn batch_ids_differ_for_new_versions_of_an_event() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let first = allowed(1);
    let mut second = first.clone();
    second.reason = "allowed, and the upstream answered".to_owned();
    let forwarder = forwarder(settings(&receiver.url, SiemFormat::Jsonl))?;
    forwarder.forward(std::slice::from_ref(&first)).await?;
    forwarder.forward(std::slice::from_ref(&second)).await?;
    forwarder.forward(std::slice::from_ref(&first)).await?;

    let received = receiver.received();
    let ids: Vec<_> = received.iter().filter_map(|request| request.header(BATCH_ID_HEADER)).collect();
    assert_eq!(ids.len(), 3);
    assert_ne!(ids[0], ids[1], "another version of one event is another batch");
    assert_eq!(ids[0], ids[2], "the same body is the same batch");
    Ok(())
}

#[tokio::test]
async fn batches_split_by_count() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let events: Vec<_> = (1..=7).map(allowed).collect();
    let mut settings = settings(&receiver.url, SiemFormat::Jsonl);
    settings.batch_events = 3;
    forwarder(settings)?.forward(&events).await?;

    let received = receiver.received();
    let sizes: Vec<_> = received
        .iter()
        .map(|request| event_ids(SiemFormat::Jsonl, &request.body).map(|ids| ids.len()))
        .collect::<Result<_, _>>()?;
    assert_eq!(sizes, [3, 3, 1]);
    let batch_ids: Vec<_> = received.iter().filter_map(|request| request.header(BATCH_ID_HEADER)).collect();
    let counts: Vec<_> = batch_ids.iter().filter_map(|id| id.rsplit_once('+').map(|(_, count)| count)).collect();
    assert_eq!(counts, ["3", "3", "1"], "batch ids {batch_ids:?}");
    let distinct: std::collections::BTreeSet<_> = batch_ids.iter().collect();
    assert_eq!(distinct.len(), 3, "each batch has its own id: {batch_ids:?}");
    let expected: Vec<_> = (1..=7).map(event_id).collect();
    assert_eq!(receiver.accepted_ids(SiemFormat::Jsonl)?, expected);
    Ok(())
}

#[tokio::test]
async fn batches_split_by_bytes() -> anyhow::Result<()> {
    for format in [SiemFormat::Jsonl, SiemFormat::Splunk, SiemFormat::Ocsf] {
        let receiver = receiver(&[], Reply::Ok).await?;
        let events: Vec<_> =
            (1..=12).map(|n| AuditEvent { input: Some(json!({ "text": "x".repeat(900) })), ..allowed(n) }).collect();
        let mut settings = settings(&receiver.url, format);
        settings.batch_bytes = 4096;
        settings.tool_input = ToolInput::Keep;
        forwarder(settings)?.forward(&events).await?;

        let received = receiver.received();
        assert!(received.len() > 3, "{format:?}: {} requests", received.len());
        for request in &received {
            assert!(request.body.len() <= 4096, "{format:?}: body of {} bytes", request.body.len());
        }
        let expected: Vec<_> = (1..=12).map(event_id).collect();
        assert_eq!(receiver.accepted_ids(format)?, expected, "{format:?}");
    }
    Ok(())
}

#[tokio::test]
async fn empty_slice_sends_nothing() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    forwarder(settings(&receiver.url, SiemFormat::Jsonl))?.forward(&[]).await?;
    assert!(receiver.received().is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Retries and failures

#[tokio::test]
async fn retries_503_then_delivers() -> anyhow::Result<()> {
    let receiver = receiver(&[Reply::Status(503), Reply::Status(503)], Reply::Ok).await?;
    let events: Vec<_> = (1..=4).map(allowed).collect();
    forwarder(settings(&receiver.url, SiemFormat::Jsonl))?.forward(&events).await?;

    let received = receiver.received();
    assert_eq!(received.len(), 3, "two failed attempts and one delivered");
    let batch_ids: Vec<_> = received.iter().map(|request| request.header(BATCH_ID_HEADER)).collect();
    assert!(batch_ids.iter().all(|id| id.is_some() && *id == batch_ids[0]), "batch ids {batch_ids:?}");
    assert!(received.iter().all(|request| request.body == received[0].body));
    let expected: Vec<_> = (1..=4).map(event_id).collect();
    assert_eq!(receiver.accepted_ids(SiemFormat::Jsonl)?, expected);
    Ok(())
}

#[tokio::test]
async fn retries_stop_at_max_attempts() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Status(500)).await?;
    let mut settings = settings(&receiver.url, SiemFormat::Jsonl);
    settings.max_attempts = 2;
    let result = forwarder(settings)?.forward(&[allowed(1)]).await;

    let Err(ForwardError { delivered, reason }) = result else { bail!("expected a failure") };
    assert_eq!(delivered, 0);
    assert!(reason.contains("500"), "reason {reason}");
    assert_eq!(receiver.received().len(), 2);
    Ok(())
}

#[tokio::test]
async fn honours_retry_after() -> anyhow::Result<()> {
    let receiver = receiver(&[Reply::RetryAfter(1)], Reply::Ok).await?;
    let started = Instant::now();
    forwarder(settings(&receiver.url, SiemFormat::Jsonl))?.forward(&[allowed(1)]).await?;

    assert!(started.elapsed() >= Duration::from_secs(1), "waited {:?}", started.elapsed());
    assert_eq!(receiver.received().len(), 2);
    Ok(())
}

#[tokio::test]
async fn receiver_down_then_up() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    drop(listener);
    let url = Url::parse(&format!("http://{address}/ingest"))?;
    let mut settings = settings(&url, SiemFormat::Jsonl);
    settings.max_attempts = 2;
    let forwarder = forwarder(settings)?;
    let events: Vec<_> = (1..=5).map(allowed).collect();

    let Err(error) = forwarder.forward(&events).await else { bail!("expected a failure while the port is closed") };
    assert_eq!(error.delivered, 0);
    assert!(!error.reason.is_empty());

    let receiver = serve(TcpListener::bind(address).await?, &[], Reply::Ok)?;
    forwarder.forward(&events).await?;
    let expected: Vec<_> = (1..=5).map(event_id).collect();
    assert_eq!(receiver.accepted_ids(SiemFormat::Jsonl)?, expected);
    Ok(())
}

#[tokio::test]
async fn hanging_receiver_times_out() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Hang).await?;
    let mut settings = settings(&receiver.url, SiemFormat::Jsonl);
    settings.timeout = Duration::from_millis(200);
    settings.max_attempts = 2;
    let started = Instant::now();
    let result = forwarder(settings)?.forward(&[allowed(1)]).await;

    // Two 200 ms attempts and one backoff of at most 200 ms, with a wide margin.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let Err(error) = result else { bail!("expected a timeout") };
    assert_eq!(error.delivered, 0);
    assert_eq!(receiver.received().len(), 2);
    Ok(())
}

#[tokio::test]
async fn too_large_splits_batch() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    receiver.lock().max_batch = Some(2);
    let events: Vec<_> = (1..=5).map(allowed).collect();
    forwarder(settings(&receiver.url, SiemFormat::Ocsf))?.forward(&events).await?;

    let counts: Vec<_> = receiver.received().iter().filter_map(Received::batch_count).collect();
    assert_eq!(counts, [5, 2, 3, 1, 2], "the batch, its first half, its second half, and that one's halves");
    let expected: Vec<_> = (1..=5).map(event_id).collect();
    assert_eq!(receiver.accepted_ids(SiemFormat::Ocsf)?, expected);
    Ok(())
}

#[tokio::test]
async fn too_large_single_event_fails() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Status(413)).await?;
    let result = forwarder(settings(&receiver.url, SiemFormat::Jsonl))?.forward(&[allowed(1), allowed(2)]).await;

    let Err(error) = result else { bail!("expected a failure") };
    assert_eq!(error.delivered, 0);
    assert!(error.reason.contains(&event_id(1)), "reason {}", error.reason);
    assert_eq!(receiver.received().len(), 2, "the pair, then the first event alone");
    Ok(())
}

#[tokio::test]
async fn bad_request_is_permanent() -> anyhow::Result<()> {
    let receiver = receiver(&[Reply::Ok, Reply::Status(400)], Reply::Ok).await?;
    let events: Vec<_> = (1..=5).map(allowed).collect();
    let mut settings = settings(&receiver.url, SiemFormat::Splunk);
    settings.batch_events = 2;
    let result = forwarder(settings)?.forward(&events).await;

    let Err(error) = result else { bail!("expected a failure") };
    assert_eq!(error.delivered, 2, "the first request was acknowledged");
    assert!(error.reason.contains("400"), "reason {}", error.reason);
    assert_eq!(receiver.received().len(), 2, "a 400 is not retried");
    Ok(())
}

#[tokio::test]
async fn redirect_is_not_followed() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Status(307)).await?;
    let result = forwarder(settings(&receiver.url, SiemFormat::Jsonl))?.forward(&[allowed(1)]).await;

    let Err(error) = result else { bail!("expected a failure") };
    assert!(error.reason.contains("redirects are not followed"), "reason {}", error.reason);
    assert_eq!(receiver.received().len(), 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Signing and secrets

fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> anyhow::Result<String> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

#[tokio::test]
async fn signature_verifies_with_secret() -> anyhow::Result<()> {
    let receiver = receiver(&[Reply::Status(502)], Reply::Ok).await?;
    let mut settings = settings(&receiver.url, SiemFormat::Ocsf);
    settings.hmac_secret = Some("shared-signing-secret".to_owned());
    forwarder(settings)?.forward(&[allowed(1), denied(2)]).await?;

    let received = receiver.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        let timestamp = request.header(TIMESTAMP_HEADER).context("timestamp header")?;
        let signature = request.header(SIGNATURE_HEADER).context("signature header")?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let sent: i64 = timestamp.parse()?;
        assert!((now - sent).abs() < 60, "timestamp {sent}, now {now}");
        assert_eq!(signature, expected_signature("shared-signing-secret", timestamp, &request.body)?);
        assert_ne!(signature, expected_signature("another-secret", timestamp, &request.body)?);
    }
    Ok(())
}

#[tokio::test]
async fn unsigned_without_secret() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    forwarder(settings(&receiver.url, SiemFormat::Jsonl))?.forward(&[allowed(1)]).await?;

    let request = &receiver.received()[0];
    assert_eq!(request.header(TIMESTAMP_HEADER), None);
    assert_eq!(request.header(SIGNATURE_HEADER), None);
    Ok(())
}

#[tokio::test]
async fn secrets_never_in_body() -> anyhow::Result<()> {
    const MODEL_KEY: &str = "mk_live_CANARY_0d9f3b";
    const TOKEN: &str = "hec-CANARY-token-77a1";
    const SECRET: &str = "hmac-CANARY-secret-5c2e";
    let events = [allowed(1), denied(2), anomaly(3, Detector::DenialSpike)];
    for event in &events {
        assert!(!serde_json::to_string(event)?.contains(MODEL_KEY), "the event itself has no key");
    }

    for format in [SiemFormat::Jsonl, SiemFormat::Splunk, SiemFormat::Ocsf] {
        let receiver = receiver(&[], Reply::Ok).await?;
        let mut settings = settings(&receiver.url, format);
        settings.token = Some(TOKEN.to_owned());
        settings.hmac_secret = Some(SECRET.to_owned());
        forwarder(settings)?.forward(&events).await?;

        let request = &receiver.received()[0];
        let body = request.text();
        for canary in [MODEL_KEY, TOKEN, SECRET] {
            assert!(!body.contains(canary), "{format:?} body contains {canary}");
        }
        assert!(body.contains("key-sb-01"), "{format:?} body has the key id");
        for (name, value) in &request.headers {
            let value = value.to_str().unwrap_or_default();
            assert!(!value.contains(SECRET), "{format:?} header {name} contains the HMAC secret");
            assert!(!value.contains(MODEL_KEY), "{format:?} header {name} contains the model key");
            if value.contains(TOKEN) {
                assert_eq!(name, header::AUTHORIZATION, "{format:?} token outside Authorization");
            }
        }
        let scheme = if format == SiemFormat::Splunk { "Splunk" } else { "Bearer" };
        assert_eq!(request.header("authorization"), Some(format!("{scheme} {TOKEN}").as_str()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tool input and oversized events

async fn forwarded_jsonl(event: AuditEvent, configure: impl FnOnce(&mut SiemSettings)) -> anyhow::Result<Value> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let mut settings = settings(&receiver.url, SiemFormat::Jsonl);
    configure(&mut settings);
    forwarder(settings)?.forward(&[event]).await?;
    let received = receiver.received();
    let request = received.first().context("one request")?;
    let mut lines = objects(SiemFormat::Jsonl, &request.body)?;
    lines.pop().context("one line")
}

#[tokio::test]
async fn tool_input_modes() -> anyhow::Result<()> {
    let small = json!({ "query": "refund policy" });
    let large = json!({ "text": "é".repeat(1500) });
    let cases = [
        (ToolInput::Keep, small.clone(), Some(small.clone())),
        (ToolInput::Keep, large.clone(), Some(large.clone())),
        (ToolInput::Drop, small.clone(), None),
        (ToolInput::Truncate, small.clone(), Some(small.clone())),
    ];
    for (mode, input, expected) in cases {
        let event = AuditEvent { input: Some(input), ..allowed(1) };
        let line = forwarded_jsonl(event, |settings| settings.tool_input = mode).await?;
        assert_eq!(line.get("input"), expected.as_ref(), "{mode:?}");
    }
    Ok(())
}

#[tokio::test]
async fn secret_fields_are_redacted_at_any_depth() -> anyhow::Result<()> {
    let input = json!({
        "query": "refund policy",
        "auth": {"API_KEY": "sk-live-123", "region": "eu"},
        "headers": [{"Authorization": "Bearer abc"}, {"accept": "json"}],
        "password": {"nested": "hunter2"},
        "max_tokens": 200,
    });
    let redacted = json!({
        "query": "refund policy",
        "auth": {"API_KEY": "[redacted]", "region": "eu"},
        "headers": [{"Authorization": "[redacted]"}, {"accept": "json"}],
        "password": "[redacted]",
        "max_tokens": "[redacted]",
    });
    let cases = [
        ("default fields, keep", ToolInput::Keep, None, redacted.clone()),
        ("default fields, truncate", ToolInput::Truncate, None, redacted),
        ("none", ToolInput::Keep, Some(Vec::new()), input.clone()),
        (
            "custom fields",
            ToolInput::Keep,
            Some(vec!["region".to_owned()]),
            json!({
                "query": "refund policy",
                "auth": {"API_KEY": "sk-live-123", "region": "[redacted]"},
                "headers": [{"Authorization": "Bearer abc"}, {"accept": "json"}],
                "password": {"nested": "hunter2"},
                "max_tokens": 200,
            }),
        ),
    ];
    for (case, mode, fields, expected) in cases {
        let event = AuditEvent { input: Some(input.clone()), ..allowed(1) };
        let line = forwarded_jsonl(event, |settings| {
            settings.tool_input = mode;
            if let Some(fields) = fields.clone() {
                settings.redact_fields = fields;
            }
        })
        .await?;
        assert_eq!(line.get("input"), Some(&expected), "{case}");
    }
    Ok(())
}

#[test]
fn plain_http_to_loopback_may_carry_a_token() {
    for url in ["http://127.0.0.1:9000/ingest", "http://[::1]:9000/ingest", "http://localhost:9000/ingest"] {
        let vars = [("SIEM_URL", url), ("SIEM_TOKEN", "t"), ("SIEM_HMAC_SECRET", "s")];
        assert!(SiemSettings::from_env(env(&vars)).is_ok(), "{url}");
    }
}

#[tokio::test]
async fn truncate_replaces_large_input() -> anyhow::Result<()> {
    // 'é' is two bytes, so a cap of 2047 bytes falls inside a character.
    let input = json!({ "text": "é".repeat(1500) });
    let text = input.to_string();
    let event = AuditEvent { input: Some(input), ..allowed(1) };
    let line = forwarded_jsonl(event, |settings| {
        settings.tool_input = ToolInput::Truncate;
        settings.tool_input_bytes = 2047;
    })
    .await?;

    let replaced = line.get("input").context("input")?;
    assert_eq!(replaced.get("truncated"), Some(&json!(true)));
    assert_eq!(replaced.get("bytes").and_then(Value::as_u64), Some(text.len() as u64));
    assert_eq!(text_at(replaced, "/sha256"), Some(hex::encode(Sha256::digest(text.as_bytes())).as_str()));
    let preview = text_at(replaced, "/preview").context("preview")?;
    assert!(preview.len() <= 2047, "preview of {} bytes", preview.len());
    assert!(preview.len() >= 2045, "preview of {} bytes", preview.len());
    assert!(text.starts_with(preview));
    Ok(())
}

#[tokio::test]
async fn oversized_event_drops_input_first() -> anyhow::Result<()> {
    let event = AuditEvent { input: Some(json!({ "text": "x".repeat(10_000) })), ..allowed(1) };
    let line = forwarded_jsonl(event, |settings| {
        settings.tool_input = ToolInput::Keep;
        settings.batch_bytes = 4096;
    })
    .await?;

    assert_eq!(line.get("input"), None);
    assert_eq!(line.get("input_dropped"), Some(&json!(true)));
    assert_eq!(line.get("oversized"), None);
    assert_eq!(text_at(&line, "/reason"), Some("allowed by rule `support-search`"));
    Ok(())
}

#[tokio::test]
async fn oversized_event_sent_minimal() -> anyhow::Result<()> {
    for format in [SiemFormat::Jsonl, SiemFormat::Splunk, SiemFormat::Ocsf] {
        let receiver = receiver(&[], Reply::Ok).await?;
        let huge = AuditEvent { reason: "r".repeat(20_000), rules: vec!["z".repeat(5000)], ..denied(1) };
        let mut settings = settings(&receiver.url, format);
        settings.batch_bytes = 4096;
        forwarder(settings)?.forward(&[allowed(0), huge, allowed(2)]).await?;

        let expected: Vec<_> = [0, 1, 2].into_iter().map(event_id).collect();
        assert_eq!(receiver.accepted_ids(format)?, expected, "{format:?}: no event lost");
        let all: Vec<Value> = receiver
            .received()
            .iter()
            .map(|request| objects(format, &request.body))
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let minimal = &all[1];
        let (marker, reason, decision) = match format {
            SiemFormat::Jsonl => ("/oversized", "/reason", "/decision"),
            SiemFormat::Splunk => ("/event/oversized", "/event/reason", "/event/decision"),
            SiemFormat::Ocsf => ("/unmapped/oversized", "/message", "/unmapped/decision"),
        };
        assert_eq!(minimal.pointer(marker), Some(&json!(true)), "{format:?}");
        assert_eq!(text_at(minimal, decision), Some("deny"), "{format:?}");
        let reason = text_at(minimal, reason).context("reason")?;
        assert!(reason.len() <= 1024, "{format:?}: reason of {} bytes", reason.len());
        assert!(reason.starts_with("rrr"), "{format:?}: reason {reason}");
        assert!(minimal.to_string().len() <= 4096, "{format:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Alert webhook

#[tokio::test]
async fn webhook_posts_escaped_slack_json() -> anyhow::Result<()> {
    let receiver = receiver(&[Reply::Status(500)], Reply::Ok).await?;
    let webhook = AlertWebhook::new(receiver.url.clone(), TIMEOUT, 3).map_err(anyhow::Error::msg)?;
    let mut event = anomaly(1, Detector::ScopeProbing);
    if let Some(details) = event.anomaly.as_mut() {
        details.scope = AnomalyScope::Session;
        details.subject = "<!channel> & <@U123>".to_owned();
        details.tools = vec!["<script>".to_owned(), "calendar.delete_event".to_owned()];
    }
    webhook.send(&event).await.map_err(anyhow::Error::msg)?;

    let received = receiver.received();
    assert_eq!(received.len(), 2, "one retry after the 500");
    let message: Value = serde_json::from_slice(&received[1].body)?;
    assert_eq!(received[1].header("content-type"), Some("application/json"));
    let text = text_at(&message, "/text").context("text")?;
    assert!(text.contains("scope_probing"), "text {text}");
    assert!(text.contains("&lt;!channel&gt; &amp; &lt;@U123&gt;"), "text {text}");
    assert!(text.contains("12 distinct denied tools > 10"), "text {text}");
    assert!(text.contains("within 60 s"), "text {text}");
    assert!(text.contains("2026-03-02T09:15:30.251Z"), "text {text}");
    assert_eq!(text_at(&message, "/blocks/0/type"), Some("section"));
    assert_eq!(text_at(&message, "/blocks/0/text/type"), Some("mrkdwn"));
    let details = text_at(&message, "/blocks/0/text/text").context("section text")?;
    assert!(details.contains("&lt;script&gt;"), "details {details}");
    assert!(!details.contains('<'), "an unescaped < in {details}");
    assert!(!text.contains('<'), "an unescaped < in {text}");
    Ok(())
}

#[tokio::test]
async fn webhook_rejects_tool_call() -> anyhow::Result<()> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let webhook = AlertWebhook::new(receiver.url.clone(), TIMEOUT, 1).map_err(anyhow::Error::msg)?;

    let error = webhook.send(&allowed(1)).await.err().context("expected an error")?;
    assert!(error.contains("not an anomaly"), "error {error}");
    assert!(receiver.received().is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Settings

/// Environment variables of one case, as name and value.
type Vars = &'static [(&'static str, &'static str)];

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name| map.get(name).cloned()
}

#[test]
fn from_env_off_without_url() -> anyhow::Result<()> {
    assert!(SiemSettings::from_env(env(&[]))?.is_none());
    assert!(SiemSettings::from_env(env(&[("SIEM_URL", "  ")]))?.is_none());
    assert!(AlertWebhook::from_env(env(&[("SIEM_URL", "https://siem.example/ingest")]))?.is_none());
    Ok(())
}

#[test]
fn from_env_defaults() -> anyhow::Result<()> {
    let settings = SiemSettings::from_env(env(&[("SIEM_URL", "https://siem.example/ingest")]))?.context("settings")?;
    assert_eq!(settings.format, SiemFormat::Jsonl);
    assert_eq!(settings.batch_events, 100);
    assert_eq!(settings.batch_bytes, 1_048_576);
    assert_eq!(settings.timeout, Duration::from_secs(5));
    assert_eq!(settings.max_attempts, 5);
    assert_eq!(settings.tool_input, ToolInput::Truncate);
    assert_eq!(settings.tool_input_bytes, 2048);
    assert_eq!(settings.splunk_index, None);
    assert_eq!(settings.splunk_sourcetype, "mcpsec:audit");
    assert_eq!(settings.token, None);
    Ok(())
}

#[test]
fn from_env_reads_every_variable() -> anyhow::Result<()> {
    let settings = SiemSettings::from_env(env(&[
        ("SIEM_URL", "https://splunk.example:8088/services/collector/event"),
        ("SIEM_FORMAT", "splunk"),
        ("SIEM_TOKEN", "tok"),
        ("SIEM_HMAC_SECRET", "sec"),
        ("SIEM_BATCH_EVENTS", "10000"),
        ("SIEM_BATCH_BYTES", "4096"),
        ("SIEM_TIMEOUT", "750ms"),
        ("SIEM_MAX_ATTEMPTS", "1"),
        ("SIEM_TOOL_INPUT", "drop"),
        ("SIEM_TOOL_INPUT_BYTES", "0"),
        ("SIEM_SPLUNK_INDEX", "mcp"),
        ("SIEM_SPLUNK_SOURCETYPE", "mcp:audit"),
    ]))?
    .context("settings")?;
    assert_eq!(settings.format, SiemFormat::Splunk);
    assert_eq!(settings.token.as_deref(), Some("tok"));
    assert_eq!(settings.hmac_secret.as_deref(), Some("sec"));
    assert_eq!(settings.batch_events, 10_000);
    assert_eq!(settings.batch_bytes, 4096);
    assert_eq!(settings.timeout, Duration::from_millis(750));
    assert_eq!(settings.max_attempts, 1);
    assert_eq!(settings.tool_input, ToolInput::Drop);
    assert_eq!(settings.tool_input_bytes, 0);
    assert_eq!(settings.splunk_index.as_deref(), Some("mcp"));
    assert_eq!(settings.splunk_sourcetype, "mcp:audit");
    Ok(())
}

#[test]
fn from_env_errors_name_variable() {
    const URL: (&str, &str) = ("SIEM_URL", "https://siem.example/ingest");
    let cases: &[(Vars, &str, &str)] = &[
        (&[("SIEM_URL", "not a url")], "SIEM_URL", "http or https URL"),
        (&[("SIEM_URL", "ftp://siem.example/ingest")], "SIEM_URL", "scheme `ftp`"),
        (&[URL, ("SIEM_FORMAT", "xml")], "SIEM_FORMAT", "`xml` is not `jsonl`, `splunk` or `ocsf`"),
        (&[URL, ("SIEM_BATCH_EVENTS", "0")], "SIEM_BATCH_EVENTS", "outside 1 to 10000"),
        (&[URL, ("SIEM_BATCH_EVENTS", "10001")], "SIEM_BATCH_EVENTS", "outside 1 to 10000"),
        (&[URL, ("SIEM_BATCH_EVENTS", "ten")], "SIEM_BATCH_EVENTS", "`ten` is not a whole number"),
        (&[URL, ("SIEM_BATCH_BYTES", "4095")], "SIEM_BATCH_BYTES", "minimum of 4096"),
        (&[URL, ("SIEM_TIMEOUT", "soon")], "SIEM_TIMEOUT", "`soon` is not a duration"),
        (&[URL, ("SIEM_TIMEOUT", "0s")], "SIEM_TIMEOUT", "longer than zero"),
        (&[URL, ("SIEM_MAX_ATTEMPTS", "0")], "SIEM_MAX_ATTEMPTS", "minimum of 1"),
        (&[URL, ("SIEM_MAX_ATTEMPTS", "-2")], "SIEM_MAX_ATTEMPTS", "not a whole number"),
        (&[URL, ("SIEM_TOOL_INPUT", "hash")], "SIEM_TOOL_INPUT", "`keep`, `truncate` or `drop`"),
        (&[URL, ("SIEM_TOOL_INPUT_BYTES", "2k")], "SIEM_TOOL_INPUT_BYTES", "not a size in bytes"),
        (&[URL, ("SIEM_FORMAT", "splunk")], "SIEM_TOKEN", "needs the HTTP Event Collector token"),
        (&[URL, ("SIEM_TOKEN", "a\nb")], "SIEM_TOKEN", "HTTP header"),
        (&[("SIEM_URL", "http://siem.example/ingest"), ("SIEM_TOKEN", "t")], "SIEM_URL", "use `https://`"),
        (&[("SIEM_URL", "http://10.0.0.9/ingest"), ("SIEM_HMAC_SECRET", "s")], "SIEM_URL", "use `https://`"),
        (&[URL, ("SIEM_REDACT_FIELDS", "token,[z-a]")], "SIEM_REDACT_FIELDS", "not a valid pattern"),
    ];
    for (vars, name, message) in cases {
        let error = SiemSettings::from_env(env(vars)).err();
        let Some(error) = error else {
            panic!("{vars:?} was accepted");
        };
        assert_eq!(error.name, *name, "{vars:?}");
        let text = error.to_string();
        assert!(text.contains(&format!("`{name}`")), "{text}");
        assert!(text.contains(message), "{vars:?}: {text}");
    }
}

#[test]
fn webhook_from_env_errors_name_variable() {
    let cases: &[(Vars, &str)] = &[
        (&[("ALERT_WEBHOOK_URL", "hooks.slack.example/T1/B2/secret")], "ALERT_WEBHOOK_URL"),
        (&[("ALERT_WEBHOOK_URL", "https://hooks.example/x"), ("SIEM_TIMEOUT", "later")], "SIEM_TIMEOUT"),
        (&[("ALERT_WEBHOOK_URL", "https://hooks.example/x"), ("SIEM_MAX_ATTEMPTS", "0")], "SIEM_MAX_ATTEMPTS"),
    ];
    for (vars, name) in cases {
        let error = AlertWebhook::from_env(env(vars)).err();
        assert_eq!(error.map(|error| error.name), Some(*name), "{vars:?}");
    }
    let error = AlertWebhook::from_env(env(cases[0].0)).err().map(|error| error.to_string()).unwrap_or_default();
    assert!(!error.contains("secret"), "the webhook URL is a credential: {error}");
}

#[test]
fn debug_hides_secrets() -> anyhow::Result<()> {
    let settings = SiemSettings::from_env(env(&[
        ("SIEM_URL", "https://user:pass@siem.example:8443/ingest?key=query-secret"),
        ("SIEM_TOKEN", "token-secret"),
        ("SIEM_HMAC_SECRET", "hmac-secret"),
    ]))?
    .context("settings")?;
    let debug = format!("{settings:?}");
    for secret in ["token-secret", "hmac-secret", "pass", "query-secret"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("https://siem.example:8443/ingest"), "{debug}");

    let webhook = AlertWebhook::from_env(env(&[("ALERT_WEBHOOK_URL", "https://hooks.example/T1/B2/path-secret")]))?
        .context("webhook")?;
    let debug = format!("{webhook:?}");
    assert!(!debug.contains("path-secret"), "{debug}");
    assert!(debug.contains("https://hooks.example"), "{debug}");
    Ok(())
}

#[test]
fn forwarder_checks_settings_built_in_code() -> anyhow::Result<()> {
    let url = Url::parse("http://127.0.0.1:9/ingest")?;
    let mut zero_batch = SiemSettings::new(url.clone(), SiemFormat::Jsonl);
    zero_batch.batch_events = 0;
    let error = SiemForwarder::new(zero_batch).err().context("zero batch accepted")?;
    assert!(error.contains("SIEM_BATCH_EVENTS"), "{error}");

    let splunk = SiemSettings::new(url, SiemFormat::Splunk);
    let error = SiemForwarder::new(splunk).err().context("splunk without token accepted")?;
    assert!(error.contains("SIEM_TOKEN"), "{error}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Samples in docs/siem

/// Returns the sample events of the docs: one allowed call and one denial-spike anomaly that
/// quarantines the model.
fn sample_events() -> [AuditEvent; 2] {
    let mut spike = anomaly(2, Detector::DenialSpike);
    spike.time = datetime!(2026-03-02 09:15:41.007 UTC);
    spike.event_id = "0195a1b2-d9e0-7c11-9f20-3b4c5d6e7f80".to_owned();
    if let Some(details) = spike.anomaly.as_mut() {
        details.quarantined_until = Some(datetime!(2026-03-02 10:15:41 UTC));
    }
    [allowed(1), spike]
}

/// Returns each object of the sample events' body in `format`, pretty-printed.
async fn sample_objects(format: SiemFormat) -> anyhow::Result<Vec<String>> {
    let receiver = receiver(&[], Reply::Ok).await?;
    let mut settings = settings(&receiver.url, format);
    if format == SiemFormat::Splunk {
        settings.splunk_index = Some("mcp_audit".to_owned());
    }
    forwarder(settings)?.forward(&sample_events()).await?;
    let received = receiver.received();
    let request = received.first().context("one request")?;
    let objects = objects(format, &request.body)?;
    objects.iter().map(|object| Ok(serde_json::to_string_pretty(object)?)).collect()
}

#[tokio::test]
async fn doc_samples_match_output() -> anyhow::Result<()> {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/siem");
    let mut missing = Vec::new();
    for (format, file) in
        [(SiemFormat::Jsonl, "jsonl.md"), (SiemFormat::Splunk, "splunk.md"), (SiemFormat::Ocsf, "ocsf.md")]
    {
        let text = std::fs::read_to_string(docs.join(file)).unwrap_or_default();
        for object in sample_objects(format).await? {
            if !text.contains(&object) {
                missing.push(format!("--- docs/siem/{file} lacks this output:\n{object}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    Ok(())
}
