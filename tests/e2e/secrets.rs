//! Model keys never leave the gateway. A canary key, a key that differs from it in its last
//! character, and a key that an admin creates through `POST /api/keys` are used on every
//! path: REST and MCP success, denial, out-of-scope, wrong key, upstream error, debug logs in
//! JSON, SIEM forwarding, the dashboard and the admin API. Then every byte that the gateways
//! produced is searched for them: their stdout and stderr, every file in their data folders,
//! every request the SIEM receiver and the upstream got, and every HTTP reply.
//!
//! What is searched for: each key's plaintext, its base64 and hex encodings, a 12-character
//! fragment of the canary, and the hex SHA-256 of each key. The raw 32-byte SHA-256 is the
//! form the store keeps, so it must be in the SQLite files and nowhere else. Only the public
//! key id (`k_` and 12 hex digits of the hash) may appear in events and logs.
//!
//! Unknown models and wrong keys also get byte-identical replies, so a caller cannot tell which
//! model ids exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::fault_proxy::FaultProxy;
use crate::support::gateway::Reply;
use crate::support::observed::{FileSizeSignal, ObservedGateway};
use crate::support::receiver::Receiver;
use crate::support::{ADMIN_KEY, DENY_RULE, Gateway, GatewayOptions, ReferenceServer, TEST_POLICY};

/// The value returned for a JSON pointer that matches nothing.
static NULL: Value = Value::Null;

/// Returns the value at a JSON pointer such as `/error/code`, or `null` when there is none.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&NULL)
}

/// The canary: model `canary`'s key. It must appear nowhere but in the test's own requests.
const CANARY_KEY: &str = "cnry-e2e-7QxV2m9RkZ4p-SECRET-a1";
/// A fragment of the canary, to catch a key that is logged cut short.
const CANARY_FRAGMENT: &str = "7QxV2m9RkZ4p";
/// A wrong key that is right but for its last character.
const NEAR_MISS_KEY: &str = "cnry-e2e-7QxV2m9RkZ4p-SECRET-a2";
/// A key that no model has.
const UNKNOWN_KEY: &str = "unknown-e2e-Lw3T8s-SECRET";

/// Keys with the canary model (scope: echo, get-sum, get-env) and model `full`.
const CANARY_KEYS: &str = r#"models:
  canary:
    key: "cnry-e2e-7QxV2m9RkZ4p-SECRET-a1"
    tools: ["echo", "get-sum", "get-env"]
  full:
    key: "e2e-key-full"
    tools: ["*"]
"#;

/// A tool of the reference server outside the canary's scope.
const OUT_OF_SCOPE_TOOL: &str = "get-tiny-image";
/// Text in the input of the canary's successful REST call, to find that call upstream.
const ECHO_MARKER: &str = "secrets-echo-marker";
const SIEM_PATH: &str = "/siem";
const JSON: &str = "application/json";
const MCP_ACCEPT: &str = "application/json, text/event-stream";
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every HTTP reply the test received, by a label that names the request.
#[derive(Default)]
struct Transcript {
    replies: Vec<(String, Reply)>,
}

impl Transcript {
    /// Keeps `reply` and checks its status.
    fn expect(&mut self, label: &str, reply: Reply, status: u16) -> Result<Value> {
        ensure!(reply.status == status, "{label}: expected HTTP {status}, got {}: {}", reply.status, reply.text);
        let json = reply.json.clone();
        self.replies.push((label.to_owned(), reply));
        Ok(json)
    }
}

fn secrets_options(upstream_url: String, siem_url: String) -> GatewayOptions {
    let env = [
        ("LOG_LEVEL", "debug"),
        ("LOG_FORMAT", "json"),
        ("SIEM_URL", siem_url.as_str()),
        ("SIEM_TOOL_INPUT", "keep"),
        ("CACHE_TTL", "0s"),
    ];
    GatewayOptions {
        keys_and_policy: Some((CANARY_KEYS, TEST_POLICY)),
        upstream_url: Some(upstream_url),
        extra_env: env.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect(),
        ..GatewayOptions::default()
    }
}

fn rest_body(model_id: &str, session_id: &str, tool_name: &str, input: Value) -> Value {
    json!({"model_id": model_id, "session_id": session_id, "tool_name": tool_name, "input": input})
}

fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

fn initialize_message() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mcpsec-e2e", "version": "0"}
        }
    })
}

/// Sends `initialize` with `key_header` and returns the `Mcp-Session-Id`.
async fn initialize(
    gateway: &ObservedGateway,
    transcript: &mut Transcript,
    label: &str,
    key_header: (&str, &str),
) -> Result<String> {
    let reply = gateway.post_json("/mcp", &[("accept", MCP_ACCEPT), key_header], &initialize_message()).await?;
    let session = reply.headers.get("mcp-session-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
    transcript.expect(label, reply, 200)?;
    session.with_context(|| format!("{label}: no Mcp-Session-Id header"))
}

/// Sends one MCP message in `session` with `key_header`.
async fn mcp(gateway: &ObservedGateway, session: &str, key_header: (&str, &str), message: &Value) -> Result<Reply> {
    let headers =
        [("accept", MCP_ACCEPT), ("mcp-session-id", session), ("mcp-protocol-version", "2025-11-25"), key_header];
    gateway.post_json("/mcp", &headers, message).await
}

/// Returns a free loopback port with nothing listening on it.
fn dead_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("failed to bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Returns the origin `http://127.0.0.1:PORT` of an MCP endpoint URL.
fn origin(url: &str) -> Result<String> {
    url.strip_suffix("/mcp").map(str::to_owned).with_context(|| format!("`{url}` does not end in /mcp"))
}

fn sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Returns the public id that the gateway shows for a key.
fn key_id(key: &str) -> String {
    format!("k_{}", hex::encode(sha256(key).get(..6).unwrap_or_default()))
}

/// The forms of a secret key that must appear nowhere.
fn forbidden_forms(name: &str, key: &str) -> Vec<(String, Vec<u8>)> {
    let digest = sha256(key);
    vec![
        (format!("{name} plaintext"), key.as_bytes().to_vec()),
        (format!("{name} base64"), base64::engine::general_purpose::STANDARD.encode(key).into_bytes()),
        (format!("{name} base64url"), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key).into_bytes()),
        (format!("{name} hex"), hex::encode(key).into_bytes()),
        (format!("{name} SHA-256 hex"), hex::encode(digest).into_bytes()),
        (format!("{name} SHA-256 hex, upper case"), hex::encode_upper(digest).into_bytes()),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

/// Returns every regular file below `folder`.
fn files_below(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("failed to list `{}`", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Reads every file of the data folders. `when` names the moment in each haystack's name.
fn data_files(data_dirs: &[&Path], when: &str) -> Result<Vec<Haystack>> {
    let mut haystacks = Vec::new();
    for data_dir in data_dirs {
        for file in files_below(data_dir)? {
            let bytes = std::fs::read(&file).with_context(|| format!("failed to read `{}`", file.display()))?;
            let name = format!("{} ({when})", file.display());
            haystacks.push(Haystack { name, bytes, is_store: is_sqlite_file(&file) });
        }
    }
    Ok(haystacks)
}

fn is_sqlite_file(path: &Path) -> bool {
    path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("gateway.sqlite3"))
}

fn headers_text(headers: &reqwest::header::HeaderMap) -> String {
    headers.iter().map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes()))).collect()
}

/// One named source of bytes that the gateways produced.
struct Haystack {
    name: String,
    bytes: Vec<u8>,
    /// Whether it is a SQLite file of a data folder, where the raw hash is expected.
    is_store: bool,
}

fn haystack(name: impl Into<String>, bytes: Vec<u8>) -> Haystack {
    Haystack { name: name.into(), bytes, is_store: false }
}

/// Makes the canary's calls on the gateway with an upstream: REST and MCP, allowed, denied,
/// out of scope, wrong key, key of another model, unknown model and a malformed body.
async fn canary_calls(gateway: &ObservedGateway, transcript: &mut Transcript) -> Result<()> {
    let canary = ("x-model-key", CANARY_KEY);
    let session = "secrets-rest";

    let body = rest_body("canary", session, "echo", json!({"message": ECHO_MARKER}));
    let reply = transcript.expect("REST success", gateway.post_json("/mcp/toolcall", &[canary], &body).await?, 200)?;
    ensure!(at(&reply, "/status") == "ok", "REST success: {reply}");
    let body = rest_body("canary", session, "get-env", json!({}));
    let reply = transcript.expect("REST denied", gateway.post_json("/mcp/toolcall", &[canary], &body).await?, 403)?;
    ensure!(*at(&reply, "/rules") == json!([DENY_RULE]), "REST denied by the policy rule: {reply}");
    let body = rest_body("canary", session, OUT_OF_SCOPE_TOOL, json!({}));
    transcript.expect("REST out of scope", gateway.post_json("/mcp/toolcall", &[canary], &body).await?, 403)?;

    let rejected = [
        ("REST near-miss key", "canary", NEAR_MISS_KEY),
        ("REST canary key for another model", "full", CANARY_KEY),
        ("REST canary key for an unknown model", "ghost", CANARY_KEY),
    ];
    for (label, model_id, key) in rejected {
        let body = rest_body(model_id, session, "echo", json!({"message": "rejected"}));
        transcript.expect(label, gateway.post_json("/mcp/toolcall", &[("x-model-key", key)], &body).await?, 401)?;
    }
    let malformed = br#"{"model_id": "canary", "session_id": "#.to_vec();
    let headers = [("content-type", JSON), canary];
    let reply = gateway.send(Method::POST, "/mcp/toolcall", &headers, malformed).await?;
    transcript.expect("REST malformed body", reply, 400)?;

    let mcp_session = initialize(gateway, transcript, "MCP initialize (X-Model-Key)", canary).await?;
    let listed =
        mcp(gateway, &mcp_session, canary, &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await?;
    transcript.expect("MCP tools/list", listed, 200)?;
    let cases = [
        ("MCP success", tool_call(3, "echo", json!({"message": "mcp"})), None),
        ("MCP denied", tool_call(4, "get-env", json!({})), Some(-32003)),
        ("MCP out of scope", tool_call(5, OUT_OF_SCOPE_TOOL, json!({})), Some(-32003)),
    ];
    for (label, message, error_code) in cases {
        let reply = transcript.expect(label, mcp(gateway, &mcp_session, canary, &message).await?, 200)?;
        match error_code {
            None => ensure!(at(&reply, "/result/content").is_array(), "{label}: a CallToolResult: {reply}"),
            Some(code) => ensure!(at(&reply, "/error/code") == code, "{label}: error {code}: {reply}"),
        }
    }
    let near_miss =
        mcp(gateway, &mcp_session, ("x-model-key", NEAR_MISS_KEY), &tool_call(6, "echo", json!({}))).await?;
    transcript.expect("MCP near-miss key", near_miss, 401)?;

    let bearer = format!("Bearer {CANARY_KEY}");
    let bearer_header = ("authorization", bearer.as_str());
    let bearer_session = initialize(gateway, transcript, "MCP initialize (Bearer)", bearer_header).await?;
    let reply =
        mcp(gateway, &bearer_session, bearer_header, &tool_call(7, "echo", json!({"message": "bearer"}))).await?;
    transcript.expect("MCP success (Bearer)", reply, 200)?;
    Ok(())
}

/// Creates model `minted` through the admin API and makes its calls. Returns its key, which
/// the creation reply shows once.
async fn minted_key_calls(gateway: &ObservedGateway, transcript: &mut Transcript) -> Result<String> {
    let request = json!({"model_id": "minted", "tools": ["echo"]});
    let created = gateway.post_json("/api/keys", &[("x-admin-key", ADMIN_KEY)], &request).await?;
    ensure!(created.status == 201, "POST /api/keys: {}", created.text);
    let key = at(&created.json, "/key").as_str().with_context(|| format!("no `key` in {}", created.text))?.to_owned();
    // The creation reply is the one place the key may appear, so it is kept out of the transcript.

    let minted = ("x-model-key", key.as_str());
    let body = rest_body("minted", "secrets-minted", "echo", json!({"message": "minted"}));
    transcript.expect("REST success (minted key)", gateway.post_json("/mcp/toolcall", &[minted], &body).await?, 200)?;
    let body = rest_body("minted", "secrets-minted", "get-sum", json!({"a": 1, "b": 2}));
    transcript.expect(
        "REST out of scope (minted key)",
        gateway.post_json("/mcp/toolcall", &[minted], &body).await?,
        403,
    )?;
    let session = initialize(gateway, transcript, "MCP initialize (minted key)", minted).await?;
    let reply = mcp(gateway, &session, minted, &tool_call(2, "echo", json!({"message": "minted"}))).await?;
    transcript.expect("MCP success (minted key)", reply, 200)?;
    Ok(key)
}

/// Makes the canary's calls on the gateway whose upstream port is closed.
async fn upstream_error_calls(gateway: &ObservedGateway, transcript: &mut Transcript) -> Result<()> {
    let canary = ("x-model-key", CANARY_KEY);
    let body = rest_body("canary", "secrets-dead-upstream", "echo", json!({"message": "dead"}));
    let reply =
        transcript.expect("REST upstream error", gateway.post_json("/mcp/toolcall", &[canary], &body).await?, 502)?;
    ensure!(at(&reply, "/status") == "upstream_error", "REST upstream error: {reply}");

    let session = initialize(gateway, transcript, "MCP initialize (dead upstream)", canary).await?;
    let reply = mcp(gateway, &session, canary, &tool_call(2, "echo", json!({"message": "dead"}))).await?;
    let reply = transcript.expect("MCP upstream error", reply, 200)?;
    ensure!(at(&reply, "/error/code") == -32004, "MCP upstream error: {reply}");
    Ok(())
}

/// Reads every admin page and route that shows keys, events or metrics.
async fn admin_reads(gateway: &ObservedGateway, name: &str, transcript: &mut Transcript) -> Result<Vec<Value>> {
    let audit = gateway.admin_get("/api/audit?limit=5000").await?;
    let events = at(&audit.json, "/events").as_array().cloned().unwrap_or_default();
    transcript.expect(&format!("{name} GET /api/audit"), audit, 200)?;

    let sessions: BTreeSet<String> =
        events.iter().filter_map(|event| event["session_id"].as_str()).map(str::to_owned).collect();
    for session in &sessions {
        let path = format!("/api/session/{session}");
        let reply = gateway.admin_get(&path).await?;
        transcript.expect(&format!("{name} GET {path}"), reply, 200)?;
    }
    let routes = ["/api/keys", "/api/sessions", "/api/alerts", "/api/config", "/metrics", "/readyz", "/healthz"];
    for path in routes.into_iter().chain(["/dash", "/dash/app.js", "/dash/app.css"]) {
        let reply = gateway.admin_get(path).await?;
        let status = if path == "/readyz" { reply.status } else { 200 };
        transcript.expect(&format!("{name} GET {path}"), reply, status)?;
    }
    Ok(events)
}

/// Waits until the receiver at `path` has every event id of `events`.
async fn wait_for_siem(receiver: &Receiver, path: &str, events: &[Value]) -> Result<()> {
    let expected: BTreeSet<&str> = events.iter().filter_map(|event| event["event_id"].as_str()).collect();
    receiver
        .wait_for_lines(path, DELIVERY_TIMEOUT, |lines| {
            let received: BTreeSet<&str> = lines.iter().filter_map(|line| line["event_id"].as_str()).collect();
            expected.is_subset(&received)
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_keys_appear_in_no_output() -> Result<()> {
    ensure!(CANARY_KEYS.contains(CANARY_KEY), "the keys file holds the canary");
    let reference = ReferenceServer::start()?;
    let upstream = FaultProxy::start(&origin(reference.url())?).await?;
    let receiver = Receiver::start().await?;
    let folders = (tempfile::tempdir()?, tempfile::tempdir()?);

    let options = secrets_options(upstream.url("/mcp"), receiver.url(SIEM_PATH));
    let mut gateway = ObservedGateway::start(&options, folders.0.path(), FileSizeSignal::Default)?;
    let dead_url = format!("http://127.0.0.1:{}/mcp", dead_port()?);
    let dead_options = secrets_options(dead_url, receiver.url("/siem-dead"));
    let mut dead_gateway = ObservedGateway::start(&dead_options, folders.1.path(), FileSizeSignal::Default)?;

    let mut transcript = Transcript::default();
    canary_calls(&gateway, &mut transcript).await?;
    let minted_key = minted_key_calls(&gateway, &mut transcript).await?;
    upstream_error_calls(&dead_gateway, &mut transcript).await?;
    let events = admin_reads(&gateway, "gateway", &mut transcript).await?;
    let dead_events = admin_reads(&dead_gateway, "dead-upstream gateway", &mut transcript).await?;
    wait_for_siem(&receiver, SIEM_PATH, &events).await?;
    wait_for_siem(&receiver, "/siem-dead", &dead_events).await?;

    // The data folders are read while the gateways run, when the WAL contains the newest pages,
    // and again after a clean stop, which checkpoints the WAL and flushes the logs.
    let mut haystacks = data_files(&[gateway.data_dir(), dead_gateway.data_dir()], "while running")?;
    assert_eq!(gateway.terminate(Duration::from_secs(30))?, 0, "the gateway stops cleanly");
    assert_eq!(dead_gateway.terminate(Duration::from_secs(30))?, 0, "the dead-upstream gateway stops cleanly");
    haystacks.extend(data_files(&[gateway.data_dir(), dead_gateway.data_dir()], "after the stop")?);
    assert!(
        haystacks.iter().any(|stack| stack.is_store && stack.name.contains("gateway.sqlite3-wal")),
        "the WAL of a running gateway is searched"
    );

    let canary_events: Vec<&Value> = events.iter().filter(|event| event["model_id"] == "canary").collect();
    assert!(canary_events.len() >= 6, "the canary's calls are recorded: {canary_events:?}");
    for event in &canary_events {
        if event["decision"] != "unauthorized" {
            assert_eq!(event["key_id"], key_id(CANARY_KEY), "an authenticated event names the key id: {event}");
        }
    }

    haystacks.push(haystack("gateway stdout and stderr", gateway.output()));
    haystacks.push(haystack("dead-upstream gateway stdout and stderr", dead_gateway.output()));
    for path in [SIEM_PATH, "/siem-dead"] {
        for (index, request) in receiver.requests(path).iter().enumerate() {
            let mut bytes = headers_text(&request.headers).into_bytes();
            bytes.extend_from_slice(&request.body);
            haystacks.push(haystack(format!("SIEM request {index} to {path}"), bytes));
        }
    }
    for (index, request) in upstream.requests().iter().enumerate() {
        let mut bytes = format!("{} {}\n{}", request.method, request.path, headers_text(&request.headers)).into_bytes();
        bytes.extend_from_slice(&request.body);
        haystacks.push(haystack(format!("upstream request {index}"), bytes));
    }
    for (label, reply) in &transcript.replies {
        let text = format!("{}\n{}{}", reply.status, headers_text(&reply.headers), reply.text);
        haystacks.push(haystack(format!("reply to {label}"), text.into_bytes()));
    }

    let mut forbidden = forbidden_forms("canary key", CANARY_KEY);
    forbidden.extend(forbidden_forms("near-miss key", NEAR_MISS_KEY));
    forbidden.extend(forbidden_forms("unknown key", UNKNOWN_KEY));
    forbidden.extend(forbidden_forms("admin-created key", &minted_key));
    forbidden.push(("canary fragment".to_owned(), CANARY_FRAGMENT.as_bytes().to_vec()));
    let stored_forms = [
        ("canary key raw SHA-256", sha256(CANARY_KEY), true),
        ("admin-created key raw SHA-256", sha256(&minted_key), true),
        ("near-miss key raw SHA-256", sha256(NEAR_MISS_KEY), false),
    ];

    let mut leaks = Vec::new();
    for stack in &haystacks {
        for (name, needle) in &forbidden {
            if contains(&stack.bytes, needle) {
                leaks.push(format!("{name} in {}", stack.name));
            }
        }
        for (name, digest, is_stored) in &stored_forms {
            if contains(&stack.bytes, digest) && !(stack.is_store && *is_stored) {
                leaks.push(format!("{name} in {}", stack.name));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets found in the gateways' output:\n{}", leaks.join("\n"));

    let store: Vec<&Haystack> = haystacks.iter().filter(|stack| stack.is_store).collect();
    assert!(!store.is_empty(), "the data folders hold SQLite files");
    for (name, digest, _) in stored_forms.iter().filter(|(_, _, is_stored)| *is_stored) {
        assert!(store.iter().any(|stack| contains(&stack.bytes, digest)), "the store keeps the {name}");
    }
    let audit_log = haystacks.iter().find(|stack| stack.name.contains("audit.log")).context("no audit.log")?;
    assert!(contains(&audit_log.bytes, key_id(CANARY_KEY).as_bytes()), "audit.log names the canary's key id");
    let siem_lines = receiver.json_lines(SIEM_PATH)?;
    assert!(siem_lines.iter().any(|line| line["key_id"] == key_id(CANARY_KEY)), "the SIEM gets the canary's key id");
    let upstream_bodies: Vec<String> =
        upstream.requests().iter().map(|request| String::from_utf8_lossy(&request.body).into_owned()).collect();
    assert!(upstream_bodies.iter().any(|body| body.contains(ECHO_MARKER)), "the upstream got the canary's echo call");
    for request in upstream.requests() {
        for header in ["x-model-key", "authorization"] {
            assert!(
                request.headers.get(header).is_none(),
                "the upstream got a `{header}` header: {:?}",
                request.headers
            );
        }
    }
    let output = gateway.output_text();
    assert!(output.contains("\"level\":\"DEBUG\""), "the gateway logged at debug level in JSON");
    Ok(())
}

/// One rejected request, and the gateway route it goes to.
struct Rejected {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

fn rest_rejected(name: &'static str, model_id: &str, key: &str) -> Rejected {
    let body = rest_body(model_id, "secrets-alike", "echo", json!({"message": "probe"}));
    Rejected { name, path: "/mcp/toolcall", headers: vec![("x-model-key", key.to_owned())], body }
}

fn mcp_rejected(name: &'static str, header: &'static str, value: String, body: Value) -> Rejected {
    let headers = vec![(header, value), ("accept", MCP_ACCEPT.to_owned())];
    Rejected { name, path: "/mcp", headers, body }
}

/// The status, every header but `date`, and the body of a reply.
type Comparable = (u16, Vec<(String, String)>, String);

/// Returns the parts of a reply that two rejections must share.
fn comparable(reply: &Reply) -> Comparable {
    let headers = reply
        .headers
        .iter()
        .filter(|(name, _)| name.as_str() != "date")
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    (reply.status, headers, reply.text.clone())
}

#[tokio::test]
async fn unknown_model_and_wrong_key_answer_alike() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions {
        keys_and_policy: Some((CANARY_KEYS, TEST_POLICY)),
        ..GatewayOptions::default()
    })?;
    let bearer = |key: &str| format!("Bearer {key}");
    let call = tool_call(9, "echo", json!({"message": "probe"}));
    let groups = [
        vec![
            rest_rejected("REST unknown model with the canary key", "ghost", CANARY_KEY),
            rest_rejected("REST unknown model with an unknown key", "ghost", UNKNOWN_KEY),
            rest_rejected("REST canary model with the near-miss key", "canary", NEAR_MISS_KEY),
            rest_rejected("REST canary model with an unknown key", "canary", UNKNOWN_KEY),
            rest_rejected("REST model full with the canary key", "full", CANARY_KEY),
        ],
        vec![
            mcp_rejected(
                "MCP tools/call with the near-miss key",
                "x-model-key",
                NEAR_MISS_KEY.to_owned(),
                call.clone(),
            ),
            mcp_rejected("MCP tools/call with an unknown key", "x-model-key", UNKNOWN_KEY.to_owned(), call.clone()),
            mcp_rejected(
                "MCP tools/call with the near-miss key as Bearer",
                "authorization",
                bearer(NEAR_MISS_KEY),
                call.clone(),
            ),
            mcp_rejected("MCP tools/call with an unknown key as Bearer", "authorization", bearer(UNKNOWN_KEY), call),
        ],
        vec![
            mcp_rejected(
                "MCP initialize with the near-miss key",
                "x-model-key",
                NEAR_MISS_KEY.to_owned(),
                initialize_message(),
            ),
            mcp_rejected(
                "MCP initialize with an unknown key",
                "x-model-key",
                UNKNOWN_KEY.to_owned(),
                initialize_message(),
            ),
        ],
    ];

    for group in groups {
        let mut first: Option<(&str, Comparable)> = None;
        for case in group {
            let mut headers: Vec<(&str, &str)> = vec![("content-type", JSON)];
            headers.extend(case.headers.iter().map(|(name, value)| (*name, value.as_str())));
            let reply = gateway.post(case.path, &headers, serde_json::to_vec(&case.body)?).await?;
            assert_eq!(reply.status, 401, "{}: rejected with 401: {}", case.name, reply.text);
            let seen = comparable(&reply);
            match &first {
                None => first = Some((case.name, seen)),
                Some((first_name, expected)) => {
                    assert_eq!(&seen, expected, "`{}` answers exactly like `{first_name}`", case.name);
                }
            }
        }
    }

    let events = gateway.trace_events("secrets-alike").await?;
    let reasons: BTreeSet<&str> = events.iter().filter_map(|event| event["reason"].as_str()).collect();
    let expected_reasons = ["unknown model `ghost`", "wrong key for model `canary`", "wrong key for model `full`"];
    assert_eq!(reasons, expected_reasons.into_iter().collect(), "the audit trail keeps the precise reasons");
    Ok(())
}
