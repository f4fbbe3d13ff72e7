//! A bounded soak of the container binary on loopback: a fixed number of calls from several
//! concurrent clients, mixing allowed calls over REST and MCP with denied, out-of-scope,
//! wrong-key and malformed ones, against the reference MCP server. Every reply must be the one
//! its kind expects, the gateway must log no error, its memory must stay flat, and afterwards
//! the store must hold exactly one audit event per recorded call, counted per session and
//! decision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::support::observed::{FileSizeSignal, ObservedGateway, rss_kib};
use crate::support::{
    DENIED_TOOL, DENY_RULE, FULL_KEY, FULL_MODEL, GatewayOptions, NARROW_KEY, NARROW_MODEL, ReferenceServer,
};

/// The value returned for a JSON pointer that matches nothing.
static NULL: Value = Value::Null;

/// Returns the value at a JSON pointer such as `/error/code`, or `null` when there is none.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&NULL)
}

/// Concurrent clients.
const CLIENTS: usize = 4;
/// Calls per client. The 20,000 calls took 61 s (327 calls/s) against the debug binary on 2
/// shared cores, with no other test running.
const CALLS_PER_CLIENT: usize = 5_000;
/// The order in which each client makes its calls, repeated: half of them allowed.
const KINDS: [Kind; 12] = [
    Kind::RestAllowed,
    Kind::McpAllowed,
    Kind::RestDenied,
    Kind::RestAllowed,
    Kind::McpDenied,
    Kind::RestOutOfScope,
    Kind::McpAllowed,
    Kind::RestWrongKey,
    Kind::RestAllowed,
    Kind::RestMalformed,
    Kind::McpWrongKey,
    Kind::McpMalformed,
];
/// Share of the calls, from the start, after which the memory is taken as warmed up.
const WARM_UP_SHARE: f64 = 0.1;
/// How far the peak RSS of the last quarter of the calls after warm-up may exceed that of the
/// first quarter, in MiB. The gateway keeps no per-call state: sessions are a fixed set, the
/// policy sets no limits, and the anomaly windows cover minutes. What may still grow is SQLite's
/// page cache (up to 2 MiB per connection by default) and the allocator's arenas. The growth
/// measured with the figures of [`CALLS_PER_CLIENT`] was 0.4 MiB, while a leak of 1 KiB per
/// call would add about 13 MiB between the two peaks, which are some 13,500 calls apart.
const MAX_RSS_GROWTH_MIB: u64 = 8;
/// How often the RSS is sampled.
const RSS_INTERVAL: Duration = Duration::from_millis(200);
const WRONG_KEY: &str = "e2e-soak-wrong-key";
const MCP_ACCEPT: &str = "application/json, text/event-stream";

/// One kind of call and the reply it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `echo` over REST: 200.
    RestAllowed,
    /// `echo` over MCP: a `CallToolResult`.
    McpAllowed,
    /// The denied tool over REST: 403 naming the deny rule.
    RestDenied,
    /// The denied tool over MCP: JSON-RPC error -32003.
    McpDenied,
    /// Model `narrow` calling a tool outside its scope over REST: 403.
    RestOutOfScope,
    /// A wrong key over REST: 401.
    RestWrongKey,
    /// A wrong key over MCP: 401 with JSON-RPC error -32001.
    McpWrongKey,
    /// A REST body that is not JSON: 400, not recorded.
    RestMalformed,
    /// A JSON-RPC batch over MCP: 400, not recorded.
    McpMalformed,
}

/// The sessions of one client.
struct Sessions {
    rest: String,
    mcp: String,
    mcp_wrong_key: String,
}

/// What a call's reply means for the store: the session and decision of its audit event, or
/// `None` for a call that is rejected before it is recorded.
type Recorded = Option<(String, &'static str)>;

impl Kind {
    /// Sends the call and checks its reply.
    async fn call(self, client: &Client, index: usize) -> Result<Recorded> {
        let sessions = &client.sessions;
        let input = json!({"message": format!("soak {index}")});
        let rest = |model: &str, tool: &str| {
            let session = &sessions.rest;
            json!({"model_id": model, "session_id": session, "tool_name": tool, "input": input})
        };
        let mcp_call = |tool: &str| {
            let params = json!({"name": tool, "arguments": input});
            json!({"jsonrpc": "2.0", "id": index, "method": "tools/call", "params": params})
        };
        match self {
            Self::RestAllowed => {
                let (status, body) = client.rest(FULL_KEY, &rest(FULL_MODEL, "echo")).await?;
                ensure!(status == 200 && at(&body, "/status") == "ok", "{self:?}: {status} {body}");
                Ok(Some((sessions.rest.clone(), "allow")))
            }
            Self::RestDenied => {
                let (status, body) = client.rest(FULL_KEY, &rest(FULL_MODEL, DENIED_TOOL)).await?;
                ensure!(status == 403 && *at(&body, "/rules") == json!([DENY_RULE]), "{self:?}: {status} {body}");
                Ok(Some((sessions.rest.clone(), "deny")))
            }
            Self::RestOutOfScope => {
                let (status, body) = client.rest(NARROW_KEY, &rest(NARROW_MODEL, "get-tiny-image")).await?;
                ensure!(status == 403 && at(&body, "/status") == "denied", "{self:?}: {status} {body}");
                Ok(Some((sessions.rest.clone(), "deny")))
            }
            Self::RestWrongKey => {
                let (status, body) = client.rest(WRONG_KEY, &rest(FULL_MODEL, "echo")).await?;
                ensure!(status == 401 && at(&body, "/status") == "unauthorized", "{self:?}: {status} {body}");
                Ok(Some((sessions.rest.clone(), "unauthorized")))
            }
            Self::RestMalformed => {
                let (status, body) =
                    client.post("/mcp/toolcall", &[("x-model-key", FULL_KEY)], b"{\"model_id\": ".to_vec()).await?;
                ensure!(status == 400 && at(&body, "/status") == "invalid_request", "{self:?}: {status} {body}");
                Ok(None)
            }
            Self::McpAllowed => {
                let (status, body) = client.mcp(FULL_KEY, &sessions.mcp, &mcp_call("echo")).await?;
                ensure!(status == 200 && at(&body, "/result/content").is_array(), "{self:?}: {status} {body}");
                Ok(Some((sessions.mcp.clone(), "allow")))
            }
            Self::McpDenied => {
                let (status, body) = client.mcp(FULL_KEY, &sessions.mcp, &mcp_call(DENIED_TOOL)).await?;
                ensure!(status == 200 && at(&body, "/error/code") == -32003, "{self:?}: {status} {body}");
                Ok(Some((sessions.mcp.clone(), "deny")))
            }
            Self::McpWrongKey => {
                let (status, body) = client.mcp(WRONG_KEY, &sessions.mcp_wrong_key, &mcp_call("echo")).await?;
                ensure!(status == 401 && at(&body, "/error/code") == -32001, "{self:?}: {status} {body}");
                Ok(Some((sessions.mcp_wrong_key.clone(), "unauthorized")))
            }
            Self::McpMalformed => {
                let batch = serde_json::to_vec(&json!([mcp_call("echo"), mcp_call("echo")]))?;
                let headers = [("x-model-key", FULL_KEY), ("mcp-session-id", sessions.mcp.as_str())];
                let (status, body) = client.post("/mcp", &headers, batch).await?;
                ensure!(status == 400 && at(&body, "/error/code") == -32600, "{self:?}: {status} {body}");
                Ok(None)
            }
        }
    }
}

/// One soak client: an HTTP client with its own connections, and its sessions.
struct Client {
    http: reqwest::Client,
    base_url: String,
    sessions: Sessions,
}

impl Client {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .header("accept", MCP_ACCEPT)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.with_context(|| format!("POST {path} failed"))?;
        let status = response.status().as_u16();
        let text = response.text().await.context("failed to read a reply")?;
        let body = serde_json::from_str(&text).with_context(|| format!("reply {status} is not JSON: {text}"))?;
        Ok((status, body))
    }

    async fn rest(&self, key: &str, body: &Value) -> Result<(u16, Value)> {
        self.post("/mcp/toolcall", &[("x-model-key", key)], serde_json::to_vec(body)?).await
    }

    async fn mcp(&self, key: &str, session: &str, message: &Value) -> Result<(u16, Value)> {
        let headers = [("x-model-key", key), ("mcp-session-id", session), ("mcp-protocol-version", "2025-11-25")];
        self.post("/mcp", &headers, serde_json::to_vec(message)?).await
    }

    /// Sends `initialize` and returns the `Mcp-Session-Id`.
    async fn initialize(http: &reqwest::Client, base_url: &str) -> Result<String> {
        let message = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "mcpsec-soak", "version": "0"}
            }
        });
        let response = http
            .post(format!("{base_url}/mcp"))
            .header("content-type", "application/json")
            .header("accept", MCP_ACCEPT)
            .header("x-model-key", FULL_KEY)
            .body(serde_json::to_vec(&message)?)
            .send()
            .await
            .context("initialize failed")?;
        let session = response.headers().get("mcp-session-id").and_then(|value| value.to_str().ok());
        session
            .map(str::to_owned)
            .with_context(|| format!("initialize returned {} without a session", response.status()))
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientReport {
    answers: BTreeMap<Kind, usize>,
    /// Expected audit events per session and decision.
    recorded: BTreeMap<(String, &'static str), usize>,
    /// Unexpected replies and failed requests, the first ones in full.
    unexpected: Vec<String>,
    unexpected_count: usize,
}

async fn run_client(client: Client, done: Arc<AtomicUsize>) -> ClientReport {
    let mut report = ClientReport::default();
    for index in 0..CALLS_PER_CLIENT {
        let kind = KINDS.get(index % KINDS.len()).copied().unwrap_or(Kind::RestAllowed);
        match kind.call(&client, index).await {
            Ok(recorded) => {
                *report.answers.entry(kind).or_default() += 1;
                if let Some(key) = recorded {
                    *report.recorded.entry(key).or_default() += 1;
                }
            }
            Err(error) => {
                report.unexpected_count += 1;
                if report.unexpected.len() < 10 {
                    report.unexpected.push(format!("call {index}: {error:#}"));
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    report
}

/// Samples the RSS of `pid` with the number of calls done, until `stop` is set.
async fn sample_rss(pid: u32, done: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> Result<Vec<(usize, u64)>> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        samples.push((done.load(Ordering::Relaxed), rss_kib(pid)?));
        tokio::time::sleep(RSS_INTERVAL).await;
    }
    Ok(samples)
}

/// Returns the peak RSS in KiB of the samples taken while the calls done were in `range`.
fn peak_kib(samples: &[(usize, u64)], range: std::ops::Range<usize>) -> Result<u64> {
    let peak = samples.iter().filter(|(done, _)| range.contains(done)).map(|(_, kib)| *kib).max();
    peak.with_context(|| format!("no RSS sample while calls {range:?} were made; raise the call count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_keeps_memory_flat_and_loses_no_event() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let folder = tempfile::tempdir()?;
    let options = GatewayOptions {
        upstream_url: Some(reference.url().to_owned()),
        extra_env: vec![("LOG_FORMAT".to_owned(), "json".to_owned())],
        ..GatewayOptions::default()
    };
    let gateway = ObservedGateway::start(&options, folder.path(), FileSizeSignal::Default)?;
    let base_url = gateway.url("");

    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rss(gateway.pid(), Arc::clone(&done), Arc::clone(&stop)));
    let started = Instant::now();
    let mut handles = Vec::new();
    for index in 0..CLIENTS {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
        let mcp = Client::initialize(&http, &base_url).await?;
        let sessions =
            Sessions { rest: format!("soak-rest-{index}"), mcp, mcp_wrong_key: format!("soak-mcp-wrong-key-{index}") };
        let client = Client { http, base_url: base_url.clone(), sessions };
        handles.push(tokio::spawn(run_client(client, Arc::clone(&done))));
    }
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.await.context("a soak client panicked")?);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.context("the RSS sampler panicked")??;

    let unexpected: Vec<&String> = reports.iter().flat_map(|report| &report.unexpected).collect();
    let unexpected_count: usize = reports.iter().map(|report| report.unexpected_count).sum();
    assert_eq!(unexpected_count, 0, "unexpected answers, the first ones: {unexpected:#?}");
    let mut answers: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut recorded: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    for report in &reports {
        for (kind, count) in &report.answers {
            *answers.entry(*kind).or_default() += count;
        }
        for (key, count) in &report.recorded {
            *recorded.entry(key.clone()).or_default() += count;
        }
    }
    let total: usize = answers.values().sum();
    assert_eq!(total, CLIENTS * CALLS_PER_CLIENT, "every call was answered");

    let output = gateway.output_text();
    let errors: Vec<&str> = output.lines().filter(|line| line.contains("\"level\":\"ERROR\"")).collect();
    assert!(errors.is_empty(), "the gateway logged errors: {errors:#?}");

    let stored = stored_counts(&gateway, &recorded).await?;
    assert_eq!(stored, recorded, "the store holds one audit event per recorded call, by session and decision");
    let sessions = gateway.admin_get("/api/sessions?limit=1000").await?;
    let listed: usize = sessions.json["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|session| session["calls"].as_u64())
        .map(|calls| calls as usize)
        .sum();
    let expected_events: usize = recorded.values().sum();
    assert_eq!(listed, expected_events, "no audit event outside the soak's sessions");

    let warm_up = (total as f64 * WARM_UP_SHARE) as usize;
    let quarter = (total - warm_up) / 4;
    let first = peak_kib(&samples, warm_up..warm_up + quarter)?;
    let last = peak_kib(&samples, total - quarter..total + 1)?;
    let rate = total as f64 / elapsed.as_secs_f64();
    eprintln!(
        "soak: {total} calls in {elapsed:.1?} ({rate:.0}/s) from {CLIENTS} clients, {expected_events} audit \
         events; answers {answers:?}; RSS samples {}, peak after warm-up: first quarter {first} KiB, last \
         quarter {last} KiB",
        samples.len()
    );
    assert!(
        last <= first + MAX_RSS_GROWTH_MIB * 1024,
        "RSS grew from a peak of {first} KiB in the first quarter to {last} KiB in the last, \
         more than {MAX_RSS_GROWTH_MIB} MiB"
    );
    Ok(())
}

/// Counts the stored audit events of each session of `recorded` by decision.
async fn stored_counts(
    gateway: &ObservedGateway,
    recorded: &BTreeMap<(String, &'static str), usize>,
) -> Result<BTreeMap<(String, &'static str), usize>> {
    let mut counts = BTreeMap::new();
    let sessions: std::collections::BTreeSet<&String> = recorded.keys().map(|(session, _)| session).collect();
    for session in sessions {
        let reply = gateway.admin_get(&format!("/api/session/{session}")).await?;
        let Some(events) = at(&reply.json, "/events").as_array() else {
            bail!("GET /api/session/{session} returned {}: {}", reply.status, reply.text);
        };
        for event in events {
            let decision = match event["decision"].as_str() {
                Some("allow") => "allow",
                Some("deny") => "deny",
                Some("unauthorized") => "unauthorized",
                other => bail!("event with decision {other:?} in session `{session}`: {event}"),
            };
            *counts.entry((session.clone(), decision)).or_default() += 1;
        }
    }
    Ok(counts)
}
