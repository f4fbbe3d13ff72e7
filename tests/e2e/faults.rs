//! Store, SIEM and process faults. The gateway fails closed when its store fails: every tool
//! call gets 503 with the reason and none reaches the upstream, and calls work again once the
//! store does. A hanging SIEM loses no event, and a gateway killed under load keeps the audit
//! event of every call whose reply a client received.
//!
//! The AWS store faults come from a proxy between the gateway and the AWS emulator. The SQLite
//! store fails as on a full disk: the gateway runs with `SIGXFSZ` ignored, and `prlimit` sets its
//! file size limit to 0, so every write to its files fails with `EFBIG` until the limit is lifted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::support::fault_proxy::{Fault, FaultProxy, Requests};
use crate::support::gateway::Reply;
use crate::support::moto::Moto;
use crate::support::observed::{FileSizeSignal, ObservedGateway};
use crate::support::receiver::Receiver;
use crate::support::{ADMIN_KEY, DENIED_TOOL, FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, ReferenceServer};

/// The value returned for a JSON pointer that matches nothing.
static NULL: Value = Value::Null;

/// Returns the value at a JSON pointer such as `/error/code`, or `null` when there is none.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&NULL)
}

const JSON: &str = "application/json";
const MCP_ACCEPT: &str = "application/json, text/event-stream";
/// JSON-RPC error code of a call the gateway could not decide or record.
const UNAVAILABLE_CODE: i64 = -32603;
const WRONG_KEY: &str = "e2e-key-wrong";

/// How a store fault is injected.
#[derive(Debug, Clone, Copy)]
enum Injected {
    /// The proxy replies to the matching requests with a fault.
    Answer(Fault, Requests),
    /// The proxy stops listening.
    Refuse,
}

/// One AWS store fault and what the calls during it must show.
struct StoreFault {
    name: &'static str,
    injected: Injected,
    /// `CACHE_TTL` of the gateway. `1h` keeps keys and policy cached, so the audit write is the
    /// only store request of a call, and `0s` reads them from the store on every call.
    cache_ttl: &'static str,
    /// Text that the reason of every 503 contains.
    reason_contains: &'static str,
    /// The only DynamoDB operations that may reach the store during the fault, when checked.
    operations: Option<&'static [&'static str]>,
    /// Most scans of the keys table during the fault, when checked. Calls that wait for a key
    /// load that fails share its error, so five calls need fewer scans than five loads of three
    /// attempts each.
    max_key_scans: Option<usize>,
}

fn store_faults() -> Vec<StoreFault> {
    vec![
        StoreFault {
            name: "audit write throttled",
            injected: Injected::Answer(
                Fault::Throttle("ProvisionedThroughputExceededException"),
                Requests::DynamoDb("PutItem"),
            ),
            cache_ttl: "1h",
            reason_contains: "ProvisionedThroughputExceededException",
            operations: Some(&["PutItem"]),
            max_key_scans: None,
        },
        StoreFault {
            name: "every store request throttled",
            injected: Injected::Answer(Fault::Throttle("ThrottlingException"), Requests::All),
            cache_ttl: "0s",
            reason_contains: "ThrottlingException",
            operations: None,
            max_key_scans: Some(9),
        },
        StoreFault {
            name: "store refuses connections",
            injected: Injected::Refuse,
            cache_ttl: "0s",
            reason_contains: "store unavailable",
            operations: None,
            max_key_scans: None,
        },
        StoreFault {
            name: "store never answers",
            injected: Injected::Answer(Fault::Hang, Requests::All),
            cache_ttl: "1h",
            reason_contains: "timeout",
            operations: Some(&["PutItem"]),
            max_key_scans: None,
        },
    ]
}

fn rest_body(session: &str, tool_name: &str) -> Value {
    json!({"model_id": FULL_MODEL, "session_id": session, "tool_name": tool_name, "input": {"message": "fault"}})
}

fn tool_call(id: u64, name: &str) -> Value {
    let params = json!({"name": name, "arguments": {"message": "fault"}});
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// Returns the origin `http://127.0.0.1:PORT` of an MCP endpoint URL.
fn origin(url: &str) -> Result<String> {
    url.strip_suffix("/mcp").map(str::to_owned).with_context(|| format!("`{url}` does not end in /mcp"))
}

/// Sends `initialize` with [`FULL_KEY`] and returns the `Mcp-Session-Id`.
async fn initialize(gateway: &Gateway) -> Result<String> {
    let message = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mcpsec-e2e", "version": "0"}
        }
    });
    let headers = [("content-type", JSON), ("accept", MCP_ACCEPT), ("x-model-key", FULL_KEY)];
    let reply = gateway.post("/mcp", &headers, message.to_string().into_bytes()).await?;
    ensure!(reply.status == 200, "initialize returned {}: {}", reply.status, reply.text);
    let session = reply.headers.get("mcp-session-id").and_then(|value| value.to_str().ok());
    session.map(str::to_owned).with_context(|| format!("initialize sent no Mcp-Session-Id: {:?}", reply.headers))
}

/// Sends one `tools/call` over MCP with `key` in `session`.
async fn mcp_call(gateway: &Gateway, session: &str, key: &str, message: &Value) -> Result<Reply> {
    let headers = [
        ("content-type", JSON),
        ("accept", MCP_ACCEPT),
        ("x-model-key", key),
        ("mcp-session-id", session),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    gateway.post("/mcp", &headers, message.to_string().into_bytes()).await
}

/// Makes one call of each kind at the same time, all of which must fail closed during a store
/// fault: REST allowed, denied and wrong key, MCP allowed and wrong key. Returns them by name.
async fn calls_of_every_kind(
    gateway: &Gateway,
    session: &str,
    mcp_session: &str,
) -> Result<Vec<(&'static str, Reply)>> {
    let allowed = rest_body(session, "echo");
    let denied = rest_body(session, DENIED_TOOL);
    let (mcp_echo, mcp_wrong_key_echo) = (tool_call(2, "echo"), tool_call(3, "echo"));
    let (rest_allowed, rest_denied, rest_wrong_key, mcp_allowed, mcp_wrong_key) = tokio::join!(
        gateway.rest_call(Some(FULL_KEY), &allowed),
        gateway.rest_call(Some(FULL_KEY), &denied),
        gateway.rest_call(Some(WRONG_KEY), &allowed),
        mcp_call(gateway, mcp_session, FULL_KEY, &mcp_echo),
        mcp_call(gateway, mcp_session, WRONG_KEY, &mcp_wrong_key_echo),
    );
    Ok(vec![
        ("REST allowed", rest_allowed?),
        ("REST denied", rest_denied?),
        ("REST wrong key", rest_wrong_key?),
        ("MCP allowed", mcp_allowed?),
        ("MCP wrong key", mcp_wrong_key?),
    ])
}

/// Checks that a call made during a store fault got HTTP 503 with a reason that contains
/// `reason_contains`.
fn assert_fails_closed(fault: &str, call: &str, reply: &Reply, reason_contains: &str) {
    assert_eq!(reply.status, 503, "{fault}: {call} gets 503: {}", reply.text);
    let reason = if call.starts_with("MCP") {
        assert_eq!(at(&reply.json, "/error/code"), UNAVAILABLE_CODE, "{fault}: {call}: JSON-RPC error: {}", reply.text);
        assert_eq!(at(&reply.json, "/error/data/status"), "unavailable", "{fault}: {call}: {}", reply.text);
        assert!(reply.json.get("result").is_none(), "{fault}: {call} has no result: {}", reply.text);
        at(&reply.json, "/error/message").as_str().unwrap_or_default()
    } else {
        assert_eq!(at(&reply.json, "/status"), "unavailable", "{fault}: {call}: status: {}", reply.text);
        assert!(reply.json.get("event_id").is_none(), "{fault}: {call} names no unstored event: {}", reply.text);
        at(&reply.json, "/reason").as_str().unwrap_or_default()
    };
    assert!(reason.contains(reason_contains), "{fault}: {call}: the reason names `{reason_contains}`: {reason}");
    assert!(reason.contains("not forwarded"), "{fault}: {call}: the reason says nothing was forwarded: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_store_faults_fail_closed() -> Result<()> {
    let moto = Moto::start()?;
    let reference = ReferenceServer::start()?;
    let upstream = FaultProxy::start(&origin(reference.url())?).await?;

    for (index, case) in store_faults().into_iter().enumerate() {
        let suffix = format!("fault{index}");
        moto.aws_init(&suffix)?;
        let (endpoint, mut extra_env): (Vec<_>, Vec<_>) =
            moto.gateway_env(&suffix).into_iter().partition(|(name, _)| name == "AWS_ENDPOINT_URL");
        let (_, moto_url) = endpoint.first().context("the emulator's environment has no AWS_ENDPOINT_URL")?;
        let mut store = FaultProxy::start(moto_url).await?;
        extra_env.push(("AWS_ENDPOINT_URL".to_owned(), store.url("")));
        extra_env.push(("CACHE_TTL".to_owned(), case.cache_ttl.to_owned()));
        let options =
            GatewayOptions { upstream_url: Some(upstream.url("/mcp")), extra_env, ..GatewayOptions::default() };
        let gateway = Gateway::start(options)?;
        let session = format!("store-fault-{index}");
        let mcp_session = initialize(&gateway).await?;
        let warm_up = gateway.rest_call(Some(FULL_KEY), &rest_body(&session, "echo")).await?;
        assert_eq!(warm_up.status, 200, "{}: a call before the fault succeeds: {}", case.name, warm_up.text);

        let upstream_mark = upstream.request_count();
        let store_mark = store.request_count();
        match case.injected {
            Injected::Answer(fault, requests) => store.set_fault(fault, requests),
            Injected::Refuse => store.refuse_connections(),
        }
        for (call, reply) in calls_of_every_kind(&gateway, &session, &mcp_session).await? {
            assert_fails_closed(case.name, call, &reply, case.reason_contains);
        }
        let forwarded = upstream.requests_since(upstream_mark);
        assert!(forwarded.is_empty(), "{}: the upstream got {} requests during the fault", case.name, forwarded.len());
        let during = store.requests_since(store_mark);
        if let Injected::Answer(..) = case.injected {
            assert!(
                during.iter().any(|request| request.faulted),
                "{}: the fault answered the store requests",
                case.name
            );
        }
        if let Some(max) = case.max_key_scans {
            let scans = during.iter().filter(|request| request.operation.as_deref() == Some("Scan")).count();
            assert!(scans <= max, "{}: {scans} scans of the keys table for 5 calls, expected at most {max}", case.name);
        }
        if let Some(operations) = case.operations {
            for request in &during {
                let operation = request.operation.as_deref().unwrap_or("an S3 request");
                assert!(
                    operations.contains(&operation),
                    "{}: {operation} reached the store during the fault",
                    case.name
                );
            }
        }

        match case.injected {
            Injected::Answer(..) => store.set_fault(Fault::None, Requests::All),
            Injected::Refuse => store.listen_again().await?,
        }
        let after = gateway.rest_call(Some(FULL_KEY), &rest_body(&session, "echo")).await?;
        assert_eq!(after.status, 200, "{}: a call after the fault succeeds: {}", case.name, after.text);
        let reply = mcp_call(&gateway, &mcp_session, FULL_KEY, &tool_call(4, "echo")).await?;
        assert!(
            reply.json["result"]["content"].is_array(),
            "{}: an MCP call after the fault succeeds: {}",
            case.name,
            reply.text
        );
        let events = gateway.trace_events(&session).await?;
        let ids: Vec<&Value> = events.iter().map(|event| &event["event_id"]).collect();
        assert_eq!(
            ids,
            [&warm_up.json["event_id"], &after.json["event_id"]],
            "{}: the trace holds the answered calls",
            case.name
        );
    }
    Ok(())
}

/// Sets the soft file size limit of process `pid` with `prlimit`; `None` lifts it.
fn set_file_size_limit(pid: u32, bytes: Option<u64>) -> Result<()> {
    let soft = bytes.map_or_else(|| "unlimited".to_owned(), |bytes| bytes.to_string());
    let limit = format!("--fsize={soft}:unlimited");
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &limit])
        .status()
        .context("failed to run `prlimit` (util-linux)")?;
    ensure!(status.success(), "`prlimit --pid {pid} {limit}` failed with {status}");
    Ok(())
}

/// Returns the event ids of the lines of `audit.log` in `data_dir`.
fn audit_log_ids(data_dir: &Path) -> Result<BTreeSet<String>> {
    let path = data_dir.join("audit.log");
    let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let mut ids = BTreeSet::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).with_context(|| format!("invalid audit.log line: {line}"))?;
        ids.insert(at(&event, "/event_id").as_str().context("audit.log line without event_id")?.to_owned());
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_on_full_disk_fails_closed() -> Result<()> {
    let reference = ReferenceServer::start()?;
    let upstream = FaultProxy::start(&origin(reference.url())?).await?;
    let folder = tempfile::tempdir()?;
    let options = GatewayOptions { upstream_url: Some(upstream.url("/mcp")), ..GatewayOptions::default() };
    let gateway = ObservedGateway::start(&options, folder.path(), FileSizeSignal::Ignored)?;
    let key = [("x-model-key", FULL_KEY)];
    let session = "full-disk";

    let mut answered = Vec::new();
    for (tool, status) in [("echo", 200), (DENIED_TOOL, 403)] {
        let reply = gateway.post_json("/mcp/toolcall", &key, &rest_body(session, tool)).await?;
        assert_eq!(reply.status, status, "{tool} before the disk is full: {}", reply.text);
        answered.push(reply.json["event_id"].as_str().context("no event_id")?.to_owned());
    }

    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mcpsec-e2e", "version": "0"}
        }
    });
    let initialized = gateway.post_json("/mcp", &[("accept", MCP_ACCEPT), key[0]], &initialize).await?;
    let mcp_session = initialized.headers.get("mcp-session-id").and_then(|value| value.to_str().ok());
    let mcp_session =
        mcp_session.with_context(|| format!("initialize sent no Mcp-Session-Id: {}", initialized.text))?;
    let mcp_headers = [("accept", MCP_ACCEPT), ("mcp-session-id", mcp_session), key[0]];

    set_file_size_limit(gateway.pid(), Some(0))?;
    let upstream_mark = upstream.request_count();
    let wrong_key = [("x-model-key", WRONG_KEY)];
    let during = [
        ("REST allowed", gateway.post_json("/mcp/toolcall", &key, &rest_body(session, "echo")).await?),
        ("REST denied", gateway.post_json("/mcp/toolcall", &key, &rest_body(session, DENIED_TOOL)).await?),
        ("REST wrong key", gateway.post_json("/mcp/toolcall", &wrong_key, &rest_body(session, "echo")).await?),
        ("MCP allowed", gateway.post_json("/mcp", &mcp_headers, &tool_call(2, "echo")).await?),
    ];
    set_file_size_limit(gateway.pid(), None)?;
    for (call, reply) in &during {
        assert_fails_closed("full disk", call, reply, "disk I/O error");
    }
    let forwarded = upstream.requests_since(upstream_mark);
    assert!(forwarded.is_empty(), "the upstream got {} requests while the disk was full", forwarded.len());

    let reply = gateway.post_json("/mcp/toolcall", &key, &rest_body(session, "echo")).await?;
    assert_eq!(reply.status, 200, "a call after the disk has room again succeeds: {}", reply.text);
    answered.push(reply.json["event_id"].as_str().context("no event_id")?.to_owned());

    let trace = gateway.admin_get(&format!("/api/session/{session}")).await?;
    let stored: Vec<&str> =
        trace.json["events"].as_array().into_iter().flatten().filter_map(|event| event["event_id"].as_str()).collect();
    assert_eq!(stored, answered, "the store holds exactly the answered calls: {}", trace.text);

    // The writer appends the lines that failed within a second of the log being writable.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logged = audit_log_ids(gateway.data_dir())?;
        if answered.iter().all(|id| logged.contains(id)) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "audit.log lacks answered events {answered:?} 20 s after the disk has room; output:\n{}",
                gateway.output_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Makes `count` calls in `session`, alternating an allowed demo tool and a denied one, and
/// returns their event ids.
async fn alternating_calls(gateway: &Gateway, session: &str, count: usize) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for index in 0..count {
        let (tool, expected) = if index % 2 == 0 { ("calendar.list_events", 200) } else { (DENIED_TOOL, 403) };
        let body = json!({"model_id": FULL_MODEL, "session_id": session, "tool_name": tool, "input": {}});
        let reply = gateway.rest_call(Some(FULL_KEY), &body).await?;
        ensure!(reply.status == expected, "call {index} ({tool}) answered {}: {}", reply.status, reply.text);
        ids.push(
            at(&reply.json, "/event_id").as_str().with_context(|| format!("no event_id in {}", reply.text))?.to_owned(),
        );
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_siem_gets_every_event_once_it_answers() -> Result<()> {
    let receiver = Receiver::start().await?;
    receiver.set_hang(true);
    let siem_env = [
        ("SIEM_URL", receiver.url("/siem")),
        ("SIEM_TIMEOUT", "1s".to_owned()),
        ("SIEM_MAX_ATTEMPTS", "2".to_owned()),
        ("SIEM_BATCH_EVENTS", "5".to_owned()),
    ];
    let options = GatewayOptions {
        demo_tools: true,
        extra_env: siem_env.into_iter().map(|(name, value)| (name.to_owned(), value)).collect(),
        ..GatewayOptions::default()
    };
    let gateway = Gateway::start(options)?;

    let mut ids = alternating_calls(&gateway, "siem-hang", 10).await?;
    // Two held requests show that the forwarder timed out on the first one and tried again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.held() < 2 {
        ensure!(
            Instant::now() < deadline,
            "the gateway did not retry the hanging SIEM; output:\n{}",
            gateway.recent_output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ids.extend(alternating_calls(&gateway, "siem-hang", 10).await?);
    assert!(receiver.json_lines("/siem")?.is_empty(), "the hanging SIEM answered no request");

    receiver.set_hang(false);
    let lines = receiver
        .wait_for_lines("/siem", Duration::from_secs(60), |lines| {
            let received: BTreeSet<&str> = lines.iter().filter_map(|line| line["event_id"].as_str()).collect();
            ids.iter().all(|id| received.contains(id.as_str()))
        })
        .await
        .with_context(|| format!("gateway output:\n{}", gateway.recent_output()))?;

    let stored = gateway.admin_get("/api/audit?limit=5000", Some(ADMIN_KEY)).await?;
    let stored_ids: BTreeSet<&str> =
        stored.json["events"].as_array().into_iter().flatten().filter_map(|event| event["event_id"].as_str()).collect();
    let received: BTreeSet<&str> = lines.iter().filter_map(|line| line["event_id"].as_str()).collect();
    let missing: Vec<&&str> = stored_ids.difference(&received).collect();
    assert_eq!(stored_ids.len(), ids.len(), "the store holds one event per call");
    assert!(missing.is_empty(), "stored events that never reached the SIEM: {missing:?}");
    eprintln!(
        "the SIEM held {} requests and then received {} lines for {} events",
        receiver.held(),
        lines.len(),
        ids.len()
    );
    Ok(())
}

/// Number of concurrent clients of the kill test.
const KILL_CLIENTS: usize = 4;
/// Answers seen before the gateway is killed.
const ANSWERS_BEFORE_KILL: usize = 200;
/// Upper bound of calls per client, so that a kill that never happens ends the test.
const MAX_CALLS_PER_CLIENT: usize = 5_000;

/// What one client of the kill test saw.
#[derive(Debug, Default)]
struct ClientRun {
    /// Event id and status of each answered call.
    answered: Vec<(String, u16)>,
    /// The error that ended the run, if one did.
    ended_by: Option<String>,
}

/// Calls the gateway at `base_url` until a request fails or [`MAX_CALLS_PER_CLIENT`] calls were
/// made, alternating allowed and denied calls in `session`.
async fn load_client(base_url: String, session: String, answers: Arc<AtomicUsize>) -> ClientRun {
    let mut run = ClientRun::default();
    let http = match reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build() {
        Ok(http) => http,
        Err(error) => {
            run.ended_by = Some(format!("failed to build the client: {error}"));
            return run;
        }
    };
    for index in 0..MAX_CALLS_PER_CLIENT {
        let tool = if index % 2 == 0 { "calendar.list_events" } else { DENIED_TOOL };
        let body = json!({"model_id": FULL_MODEL, "session_id": session, "tool_name": tool, "input": {}});
        let request = http.post(format!("{base_url}/mcp/toolcall")).header("x-model-key", FULL_KEY).json(&body);
        let reply = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.json::<Value>().await.map(|json| (status, json))
            }
            Err(error) => Err(error),
        };
        match reply {
            Ok((status, json)) => {
                let Some(id) = at(&json, "/event_id").as_str() else {
                    run.ended_by = Some(format!("answer {status} without event_id: {json}"));
                    return run;
                };
                run.answered.push((id.to_owned(), status));
                answers.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => {
                run.ended_by = Some(error.to_string());
                return run;
            }
        }
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gateway_keeps_every_answered_call() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let options = GatewayOptions { demo_tools: true, ..GatewayOptions::default() };
    let gateway = Gateway::start_in(options.clone(), folder.path())?;

    let answers = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..KILL_CLIENTS)
        .map(|client| tokio::spawn(load_client(gateway.url(""), format!("kill-{client}"), Arc::clone(&answers))))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answers.load(Ordering::SeqCst) < ANSWERS_BEFORE_KILL {
        ensure!(Instant::now() < deadline, "the load got too few answers; output:\n{}", gateway.recent_output());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Dropping the gateway kills it with SIGKILL while the clients have calls in flight.
    drop(gateway);

    let mut runs = BTreeMap::new();
    for (client, handle) in clients.into_iter().enumerate() {
        let run = handle.await.context("a load client panicked")?;
        assert!(run.ended_by.is_some(), "client {client} was still calling when the gateway died");
        runs.insert(format!("kill-{client}"), run);
    }

    let gateway = Gateway::start_in(options, folder.path())?;
    let mut answered_total = 0;
    let mut stored_total = 0;
    for (session, run) in &runs {
        let events = gateway.trace_events(session).await?;
        let stored: BTreeMap<&str, &Value> =
            events.iter().filter_map(|event| Some((event["event_id"].as_str()?, event))).collect();
        for (id, status) in &run.answered {
            let event =
                stored.get(id.as_str()).with_context(|| format!("answered call {id} ({status}) is not stored"))?;
            match status {
                200 => {
                    assert_eq!(event["decision"], "allow", "answered 200: {event}");
                    assert_eq!(event["upstream"]["status"], "ok", "answered 200 with the upstream's outcome: {event}");
                }
                403 => assert_eq!(event["decision"], "deny", "answered 403: {event}"),
                other => bail!("call {id} answered {other}, expected 200 or 403"),
            }
        }
        answered_total += run.answered.len();
        stored_total += stored.len();
    }

    let logged = audit_log_ids(&folder.path().join("data"))?;
    let unlogged: Vec<&String> =
        runs.values().flat_map(|run| &run.answered).map(|(id, _)| id).filter(|id| !logged.contains(*id)).collect();
    assert!(unlogged.is_empty(), "answered calls missing from audit.log after the restart: {unlogged:?}");
    eprintln!(
        "killed under load: {answered_total} calls answered, {stored_total} stored, all answered ones stored and logged"
    );
    Ok(())
}
