//! Headers, MCP sessions and the upstream transport: header names in any case, repeated
//! headers, content types, session ids that are missing, unknown, expired or another model's,
//! client credentials kept from the upstream, and every kind of upstream reply and fault. Each
//! case gives a correct result or an explicit error, and never an empty success.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::gateway::Reply;
use crate::support::hostile_upstream::{
    HTTP_500_BODY, HostileUpstream, Mode, RPC_ERROR_CODE, RPC_ERROR_MESSAGE, UPSTREAM_SESSION_ID,
};
use crate::support::{ADMIN_KEY, FULL_KEY, FULL_MODEL, Gateway, GatewayOptions, NARROW_KEY, NARROW_MODEL};

pub(crate) const JSON: &str = "application/json";
const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");

/// JSON-RPC error codes of the gateway.
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const UNKNOWN_SESSION: i64 = -32002;
pub(crate) const DENIED: i64 = -32003;
pub(crate) const UPSTREAM_FAILED: i64 = -32004;

/// Upstream timeout of the fault tests; [`Mode::Slow`] waits longer.
const UPSTREAM_TIMEOUT: &str = "2s";
/// Upstream reply limit of the fault tests, below the size of the oversized replies.
const MAX_RESPONSE_BYTES: usize = 65_536;

/// Builds the `initialize` request.
pub(crate) fn initialize_message() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "mcpsec-e2e", "version": "0"}}
    })
}

/// Builds a `tools/call` request.
pub(crate) fn tool_call(id: Value, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

/// Sends `initialize` with `key` in `X-Model-Key` and returns the session id it issues.
pub(crate) async fn initialize(gateway: &Gateway, key: &str) -> Result<String> {
    let reply = mcp_post(gateway, key, None, &initialize_message()).await?;
    if reply.status != 200 {
        bail!("initialize returned {}: {}", reply.status, reply.text);
    }
    match reply.headers.get("mcp-session-id").and_then(|value| value.to_str().ok()) {
        Some(session_id) => Ok(session_id.to_owned()),
        None => bail!("initialize sent no Mcp-Session-Id header: {:?}", reply.headers),
    }
}

/// Sends one JSON-RPC message to `POST /mcp` with `key` in `X-Model-Key` and, when given, the
/// session id.
pub(crate) async fn mcp_post(gateway: &Gateway, key: &str, session_id: Option<&str>, message: &Value) -> Result<Reply> {
    let mut headers = vec![("content-type", JSON), ACCEPT, ("x-model-key", key)];
    if let Some(session_id) = session_id {
        headers.push(("mcp-session-id", session_id));
    }
    gateway.post("/mcp", &headers, message.to_string().into_bytes()).await
}

/// Builds a REST tool call body.
pub(crate) fn rest_body(model_id: &str, session_id: &str, tool_name: &str, input: Value) -> Value {
    json!({"model_id": model_id, "session_id": session_id, "tool_name": tool_name, "input": input})
}

/// Returns the last event of a session trace.
pub(crate) async fn last_event(gateway: &Gateway, session_id: &str) -> Result<Value> {
    let events = gateway.trace_events(session_id).await?;
    events.last().cloned().with_context(|| format!("session `{session_id}` has no events"))
}

/// A reply read from a raw HTTP/1.1 exchange.
struct RawReply {
    status: u16,
    /// Header names in lowercase, with their values.
    headers: Vec<(String, String)>,
    json: Value,
    text: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
    }
}

/// Sends a POST over a plain TCP connection, so that the header names reach the gateway in
/// exactly the case given; HTTP clients send them in lowercase.
async fn raw_post(gateway: &Gateway, path: &str, headers: &[(&str, &str)], body: &str) -> Result<RawReply> {
    let base = gateway.url("");
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.with_context(|| format!("connect to {address}"))?;

    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.context("failed to send the raw request")?;

    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.context("failed to read the raw reply")?;
    parse_raw_reply(&String::from_utf8_lossy(&response))
}

fn parse_raw_reply(response: &str) -> Result<RawReply> {
    let Some((head, text)) = response.split_once("\r\n\r\n") else { bail!("reply has no end of headers: {response}") };
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let Some(status) = status_line.split(' ').nth(1).and_then(|status| status.parse().ok()) else {
        bail!("reply has no status: {status_line}")
    };
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let json = serde_json::from_str(text).unwrap_or(Value::Null);
    Ok(RawReply { status, headers, json, text: text.to_owned() })
}

/// A hostile upstream, a second upstream that is down, and a gateway in front of both with
/// [`UPSTREAM_TIMEOUT`] and [`MAX_RESPONSE_BYTES`]. Tools are `hostile.<mode>` and `down.<mode>`.
struct FaultSetup {
    gateway: Gateway,
    upstream: HostileUpstream,
    _down: HostileUpstream,
    _folder: TempDir,
}

impl FaultSetup {
    async fn start(extra_env: &[(&str, &str)]) -> Result<Self> {
        let upstream = HostileUpstream::start().await?;
        let mut down = HostileUpstream::start().await?;
        down.stop();

        let folder = tempfile::tempdir().context("failed to create a temporary folder")?;
        let upstreams_file = write_upstreams_file(folder.path(), &upstream.url(), &down.url())?;
        let mut env = vec![("UPSTREAMS_FILE".to_owned(), upstreams_file)];
        env.extend(extra_env.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
        let gateway = Gateway::start(GatewayOptions { extra_env: env, ..GatewayOptions::default() })?;
        Ok(Self { gateway, upstream, _down: down, _folder: folder })
    }
}

fn write_upstreams_file(folder: &Path, hostile_url: &str, down_url: &str) -> Result<String> {
    let text = format!(
        "upstreams:
  - name: hostile
    url: {hostile_url}
    prefix: hostile
    timeout: {UPSTREAM_TIMEOUT}
    max_response_bytes: {MAX_RESPONSE_BYTES}
  - name: down
    url: {down_url}
    prefix: down
    timeout: {UPSTREAM_TIMEOUT}
"
    );
    let path = folder.join("upstreams.yaml");
    std::fs::write(&path, text).with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(path.to_string_lossy().into_owned())
}

fn hostile(mode: Mode) -> String {
    format!("hostile.{}", mode.tool_name())
}

#[tokio::test]
async fn header_names_match_in_any_case() -> Result<()> {
    let setup = FaultSetup::start(&[]).await?;
    let gateway = &setup.gateway;
    let tool = hostile(Mode::Json);

    let body = rest_body(FULL_MODEL, "header-case", &tool, json!({"route": "rest"})).to_string();
    let rest = raw_post(gateway, "/mcp/toolcall", &[("X-MODEL-KEY", FULL_KEY), ("Content-TYPE", JSON)], &body).await?;
    assert_eq!(rest.status, 200, "REST accepts header names in upper and mixed case: {}", rest.text);
    assert_eq!(rest.json["status"], "ok", "the REST call succeeds: {}", rest.text);

    let init = initialize_message().to_string();
    let initialized =
        raw_post(gateway, "/mcp", &[("x-MoDeL-kEy", FULL_KEY), ("CONTENT-TYPE", JSON), ("Accept", ACCEPT.1)], &init)
            .await?;
    assert_eq!(initialized.status, 200, "initialize accepts a mixed-case key header: {}", initialized.text);
    let Some(session_id) = initialized.header("mcp-session-id").map(str::to_owned) else {
        bail!("initialize sent no session id: {:?}", initialized.headers);
    };

    let bearer = format!("bearer {FULL_KEY}");
    let call = tool_call(json!(2), &tool, json!({"route": "mcp"})).to_string();
    let headers = [("AUTHORIZATION", bearer.as_str()), ("MCP-SESSION-ID", session_id.as_str()), ("content-type", JSON)];
    let called = raw_post(gateway, "/mcp", &headers, &call).await?;
    assert_eq!(called.status, 200, "MCP accepts upper-case session and authorization headers: {}", called.text);
    assert_eq!(
        called.json["result"]["content"][0]["text"],
        json!({"route": "mcp"}).to_string(),
        "the MCP call returns the upstream result: {}",
        called.text
    );
    assert_eq!(setup.upstream.tool_calls().len(), 2, "both calls reached the upstream");
    Ok(())
}

#[tokio::test]
async fn content_type_parameters_and_case_are_accepted() -> Result<()> {
    let setup = FaultSetup::start(&[]).await?;
    let gateway = &setup.gateway;
    let tool = hostile(Mode::Json);
    let session_id = initialize(gateway, FULL_KEY).await?;

    let cases = [
        ("application/json; charset=utf-8", true),
        ("application/json;charset=UTF-8", true),
        ("Application/JSON", true),
        ("APPLICATION/JSON ; charset=\"utf-8\"", true),
        ("application/jsonx", false),
        ("application/json-patch+json", false),
        ("text/json", false),
        ("application/json, text/plain", false),
        ("", false),
    ];
    for (content_type, accepted) in cases {
        let rest_session = "content-types";
        let input = json!({"content_type": content_type});
        let body = rest_body(FULL_MODEL, rest_session, &tool, input.clone()).to_string().into_bytes();
        let rest =
            gateway.post("/mcp/toolcall", &[("x-model-key", FULL_KEY), ("content-type", content_type)], body).await?;

        let call = tool_call(json!(3), &tool, input.clone()).to_string().into_bytes();
        let headers = [("x-model-key", FULL_KEY), ("content-type", content_type), ("mcp-session-id", &session_id)];
        let mcp = gateway.post("/mcp", &headers, call).await?;

        if accepted {
            assert_eq!(rest.status, 200, "REST accepts `{content_type}`: {}", rest.text);
            assert_eq!(mcp.status, 200, "MCP accepts `{content_type}`: {}", mcp.text);
            assert_eq!(
                mcp.json["result"]["content"][0]["text"],
                input.to_string(),
                "MCP with `{content_type}` returns the result: {}",
                mcp.text
            );
        } else {
            assert_eq!(rest.status, 415, "REST rejects `{content_type}`: {}", rest.text);
            assert_eq!(rest.json["status"], "invalid_request", "REST names the rejection: {}", rest.text);
            assert!(
                rest.json["reason"].as_str().is_some_and(|reason| reason.contains("application/json")),
                "REST says which content type to send: {}",
                rest.text
            );
            assert_eq!(mcp.status, 415, "MCP rejects `{content_type}`: {}", mcp.text);
            assert_eq!(mcp.json["error"]["code"], INVALID_REQUEST, "MCP error code for `{content_type}`: {}", mcp.text);
        }
    }

    let expected = cases.iter().filter(|(_, accepted)| *accepted).count() * 2;
    assert_eq!(setup.upstream.tool_calls().len(), expected, "only the accepted calls reached the upstream");
    Ok(())
}

/// One request with repeated headers and the rejection it must get.
struct RepeatedCase {
    name: &'static str,
    /// Every header of the request besides `Content-Type` and `Accept`.
    headers: Vec<(&'static str, String)>,
    /// The header that the rejection must name.
    named: &'static str,
    /// Whether the case applies to REST, which reads only `X-Model-Key` and `Content-Type`.
    rest: bool,
}

#[tokio::test]
async fn repeated_headers_are_rejected_by_name() -> Result<()> {
    let setup = FaultSetup::start(&[]).await?;
    let gateway = &setup.gateway;
    let tool = hostile(Mode::Json);
    let session_id = initialize(gateway, FULL_KEY).await?;
    let key = |value: &str| ("x-model-key", value.to_owned());
    let session = |value: &str| ("mcp-session-id", value.to_owned());
    let bearer = |value: &str| ("authorization", format!("Bearer {value}"));
    let case = |name, headers, named, rest| RepeatedCase { name, headers, named, rest };

    let cases = vec![
        case("model key twice", vec![key(FULL_KEY), key(FULL_KEY), session(&session_id)], "X-Model-Key", true),
        case("keys of two models", vec![key(FULL_KEY), key(NARROW_KEY), session(&session_id)], "X-Model-Key", true),
        case(
            "comma-joined model keys",
            vec![key(&format!("{FULL_KEY}, {NARROW_KEY}")), session(&session_id)],
            "X-Model-Key",
            true,
        ),
        case(
            "content type twice",
            vec![key(FULL_KEY), ("content-type", JSON.to_owned()), session(&session_id)],
            "Content-Type",
            true,
        ),
        case(
            "session id twice",
            vec![key(FULL_KEY), session(&session_id), session(&session_id)],
            "Mcp-Session-Id",
            false,
        ),
        case(
            "comma-joined session ids",
            vec![key(FULL_KEY), session(&format!("{session_id},{session_id}"))],
            "Mcp-Session-Id",
            false,
        ),
        case(
            "authorization twice",
            vec![bearer(FULL_KEY), bearer(NARROW_KEY), session(&session_id)],
            "Authorization",
            false,
        ),
    ];

    for case in &cases {
        let name = case.name;
        let mut headers = vec![("content-type", JSON), ACCEPT];
        headers.extend(case.headers.iter().map(|(header, value)| (*header, value.as_str())));

        if case.rest {
            let body = rest_body(FULL_MODEL, "repeated-headers", &tool, json!({"case": name}));
            let reply = gateway.post("/mcp/toolcall", &headers, body.to_string().into_bytes()).await?;
            assert_eq!(reply.status, 400, "{name}: REST rejects the request: {}", reply.text);
            assert_eq!(reply.json["status"], "invalid_request", "{name}: REST names the rejection: {}", reply.text);
            assert!(
                reply.json["reason"].as_str().is_some_and(|reason| reason.contains(case.named)),
                "{name}: the REST reason names `{}`: {}",
                case.named,
                reply.text
            );
        }

        let call = tool_call(json!(4), &tool, json!({"case": name}));
        let reply = gateway.post("/mcp", &headers, call.to_string().into_bytes()).await?;
        assert_eq!(reply.status, 400, "{name}: MCP rejects the request: {}", reply.text);
        assert_eq!(reply.json["error"]["code"], INVALID_REQUEST, "{name}: MCP error code: {}", reply.text);
        assert!(
            reply.json["error"]["message"].as_str().is_some_and(|message| message.contains(case.named)),
            "{name}: the MCP error names `{}`: {}",
            case.named,
            reply.text
        );
    }

    assert!(setup.upstream.tool_calls().is_empty(), "no request with repeated headers reached the upstream");
    let sessions = gateway.sessions().await?;
    assert!(sessions.is_empty(), "no rejected request is recorded as a call: {sessions:?}");
    Ok(())
}

#[tokio::test]
async fn model_key_header_takes_precedence_over_bearer() -> Result<()> {
    let setup = FaultSetup::start(&[]).await?;
    let gateway = &setup.gateway;
    let tool = hostile(Mode::Json);

    let cases = [(NARROW_KEY, FULL_KEY, NARROW_MODEL, false), (FULL_KEY, NARROW_KEY, FULL_MODEL, true)];
    for (model_key, bearer_key, model, allowed) in cases {
        let bearer = format!("Bearer {bearer_key}");
        let headers = [("content-type", JSON), ACCEPT, ("x-model-key", model_key), ("authorization", bearer.as_str())];
        let init = gateway.post("/mcp", &headers, initialize_message().to_string().into_bytes()).await?;
        assert_eq!(init.status, 200, "initialize as `{model}`: {}", init.text);
        let Some(session_id) = init.headers.get("mcp-session-id").and_then(|value| value.to_str().ok()) else {
            bail!("initialize sent no session id: {:?}", init.headers);
        };

        let mut call_headers = headers.to_vec();
        call_headers.push(("mcp-session-id", session_id));
        let call = tool_call(json!(5), &tool, json!({"as": model}));
        let reply = gateway.post("/mcp", &call_headers, call.to_string().into_bytes()).await?;
        if allowed {
            assert!(reply.json["result"].is_object(), "`{model}` may call `{tool}`: {}", reply.text);
        } else {
            assert_eq!(reply.json["error"]["code"], DENIED, "`{model}` may not call `{tool}`: {}", reply.text);
        }
        let event = last_event(gateway, session_id).await?;
        assert_eq!(event["model_id"], model, "the event names the model of `X-Model-Key`: {event}");
    }
    Ok(())
}

/// One presented session id and the rejection it must get.
struct SessionCase {
    name: &'static str,
    session_id: Option<String>,
    status: u16,
    message_contains: &'static str,
}

#[tokio::test]
async fn bad_session_ids_are_rejected() -> Result<()> {
    let setup = FaultSetup::start(&[]).await?;
    let gateway = &setup.gateway;
    let tool = hostile(Mode::Json);
    let full_session = initialize(gateway, FULL_KEY).await?;
    let narrow_session = initialize(gateway, NARROW_KEY).await?;

    let mut tampered = full_session.clone();
    let last = if tampered.ends_with('0') { "1" } else { "0" };
    tampered.pop();
    tampered.push_str(last);
    let (uuid, rest) = full_session.split_once('.').unwrap_or_default();
    let reissued = format!("{}.{rest}", uuid.replace(|c: char| c.is_ascii_hexdigit(), "a"));

    let case = |name, session_id: Option<&str>, status, message_contains| SessionCase {
        name,
        session_id: session_id.map(str::to_owned),
        status,
        message_contains,
    };
    let cases = [
        case("missing", None, 400, "missing Mcp-Session-Id"),
        case("unknown", Some("not-a-session"), 404, "unknown session id"),
        case("tampered tag", Some(&tampered), 404, "unknown session id"),
        case("another uuid with the same tag", Some(&reissued), 404, "unknown session id"),
        case("another model's", Some(&narrow_session), 404, "unknown session id"),
    ];

    for case in &cases {
        let name = case.name;
        for message in [
            tool_call(json!(6), &tool, json!({"case": name})),
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}),
        ] {
            let method = &message["method"];
            let reply = mcp_post(gateway, FULL_KEY, case.session_id.as_deref(), &message).await?;
            assert_eq!(reply.status, case.status, "{name} session, {method}: status: {}", reply.text);
            assert_eq!(reply.json["error"]["code"], UNKNOWN_SESSION, "{name} session, {method}: code: {}", reply.text);
            assert_eq!(
                reply.json["id"], message["id"],
                "{name} session, {method}: the error keeps the id: {}",
                reply.text
            );
            assert!(
                reply.json["error"]["message"].as_str().is_some_and(|text| text.contains(case.message_contains)),
                "{name} session, {method}: message contains `{}`: {}",
                case.message_contains,
                reply.text
            );
        }
    }
    assert!(setup.upstream.tool_calls().is_empty(), "no call with a rejected session reached the upstream");

    let reply = mcp_post(gateway, FULL_KEY, Some(&full_session), &tool_call(json!(8), &tool, json!({}))).await?;
    assert!(reply.json["result"].is_object(), "the session issued to `full` still works: {}", reply.text);
    let events = gateway.trace_events(&full_session).await?;
    assert_eq!(events.len(), 1, "the session trace holds only the accepted call: {events:?}");

    // Each rejected `tools/call` is recorded as a denial of model `full` under the session id
    // it presented, or under `none` when it sent none; `tools/list` leaves no record.
    for (name, recorded_under) in [
        ("missing", "none"),
        ("unknown", "not-a-session"),
        ("tampered tag", tampered.as_str()),
        ("another uuid with the same tag", reissued.as_str()),
        ("another model's", narrow_session.as_str()),
    ] {
        let events = gateway.trace_events(recorded_under).await?;
        let rejected: Vec<&Value> = events.iter().filter(|event| event["input"]["case"] == name).collect();
        assert_eq!(rejected.len(), 1, "{name} session: one event under `{recorded_under}`: {events:?}");
        let event = rejected.first().copied().unwrap_or(&Value::Null);
        assert_eq!(event["decision"], "deny", "{name} session: decision: {event}");
        assert_eq!(event["rule"], "session", "{name} session: rule: {event}");
        assert_eq!(event["model_id"], FULL_MODEL, "{name} session: the key's model: {event}");
    }
    Ok(())
}

#[tokio::test]
async fn expired_session_id_is_rejected() -> Result<()> {
    let setup = FaultSetup::start(&[("SESSION_TTL", "1s")]).await?;
    let gateway = &setup.gateway;
    let tool = hostile(Mode::Json);
    let session_id = initialize(gateway, FULL_KEY).await?;

    // Session ages are counted in whole seconds and must exceed the lifetime of 1 s.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let reply = mcp_post(gateway, FULL_KEY, Some(&session_id), &tool_call(json!(9), &tool, json!({}))).await?;
    assert_eq!(reply.status, 404, "an expired session returns 404 so that the client starts again: {}", reply.text);
    assert_eq!(reply.json["error"]["code"], UNKNOWN_SESSION, "expired session error code: {}", reply.text);
    assert!(
        reply.json["error"]["message"].as_str().is_some_and(|message| message.contains("session expired")),
        "the error says that the session expired: {}",
        reply.text
    );
    assert!(setup.upstream.tool_calls().is_empty(), "the call in an expired session did not reach the upstream");

    let renewed = initialize(gateway, FULL_KEY).await?;
    let reply = mcp_post(gateway, FULL_KEY, Some(&renewed), &tool_call(json!(10), &tool, json!({}))).await?;
    assert!(reply.json["result"].is_object(), "a new session works at once: {}", reply.text);
    Ok(())
}

#[tokio::test]
async fn client_credentials_never_reach_the_upstream() -> Result<()> {
    let setup = FaultSetup::start(&[]).await?;
    let gateway = &setup.gateway;
    let tool = hostile(Mode::Json);
    let cookie = "session=client-cookie-secret";
    let bearer = format!("Bearer {FULL_KEY}");

    let rest_session = "credentials-rest";
    let body = rest_body(FULL_MODEL, rest_session, &tool, json!({"route": "rest"}));
    let rest_headers = [
        ("content-type", JSON),
        ("x-model-key", FULL_KEY),
        ("authorization", bearer.as_str()),
        ("x-admin-key", ADMIN_KEY),
        ("cookie", cookie),
    ];
    let reply = gateway.post("/mcp/toolcall", &rest_headers, body.to_string().into_bytes()).await?;
    assert_eq!(reply.status, 200, "the REST call succeeds: {}", reply.text);

    let headers = [
        ("content-type", JSON),
        ACCEPT,
        ("authorization", bearer.as_str()),
        ("x-admin-key", ADMIN_KEY),
        ("cookie", cookie),
    ];
    let init = gateway.post("/mcp", &headers, initialize_message().to_string().into_bytes()).await?;
    let Some(session_id) = init.headers.get("mcp-session-id").and_then(|value| value.to_str().ok()) else {
        bail!("initialize sent no session id: {}", init.text);
    };
    let mut call_headers = headers.to_vec();
    call_headers.push(("mcp-session-id", session_id));
    call_headers.push(("x-model-key", FULL_KEY));
    let mut call = tool_call(json!("client-request-id"), &tool, json!({"route": "mcp"}));
    call["params"]["_meta"] = json!({"progressToken": "client-progress-token"});
    let reply = gateway.post("/mcp", &call_headers, call.to_string().into_bytes()).await?;
    assert!(reply.json["result"].is_object(), "the MCP call succeeds: {}", reply.text);

    let requests = setup.upstream.requests();
    assert!(requests.len() >= 4, "the upstream saw initialize, its notification and the calls: {}", requests.len());
    let secrets =
        [FULL_KEY, ADMIN_KEY, session_id, "client-cookie-secret", "client-request-id", "client-progress-token"];
    for request in &requests {
        let method = &request.json["method"];
        for name in ["authorization", "x-model-key", "x-admin-key", "cookie"] {
            assert!(
                request.headers.get(name).is_none(),
                "{method}: header `{name}` is not forwarded: {:?}",
                request.headers
            );
        }
        for (name, value) in &request.headers {
            let value = value.to_str().unwrap_or_default();
            for secret in secrets {
                assert!(!value.contains(secret), "{method}: header `{name}` does not carry `{secret}`");
            }
        }
        for secret in secrets {
            assert!(!request.body.contains(secret), "{method}: the body does not carry `{secret}`: {}", request.body);
        }
        if request.json["method"] != "initialize" {
            assert_eq!(
                request.headers.get("mcp-session-id").and_then(|value| value.to_str().ok()),
                Some(UPSTREAM_SESSION_ID),
                "{method}: the gateway sends the upstream's own session id"
            );
        }
    }

    let calls = setup.upstream.tool_calls();
    assert_eq!(calls.len(), 2, "both calls reached the upstream: {calls:?}");
    for call in &calls {
        let mut params: Vec<&String> =
            call["params"].as_object().map(|params| params.keys().collect()).unwrap_or_default();
        params.sort();
        assert_eq!(params, ["arguments", "name"], "only the tool name and arguments are forwarded: {call}");
        assert_eq!(call["params"]["name"], Mode::Json.tool_name(), "the upstream gets its own tool name: {call}");
    }
    Ok(())
}

/// The expected outcome of one upstream reply.
enum Expected {
    /// The call succeeds with the upstream's result.
    Result,
    /// The call fails, as a timeout when `timeout` is true, with a reason that contains the text.
    Failure { timeout: bool, reason_contains: String },
}

fn upstream_cases() -> Vec<(String, Expected)> {
    let failure = |reason: &str| Expected::Failure { timeout: false, reason_contains: reason.to_owned() };
    let limit = format!("exceeds the limit of {MAX_RESPONSE_BYTES} bytes");
    vec![
        (hostile(Mode::Json), Expected::Result),
        (hostile(Mode::SseEvents), Expected::Result),
        (hostile(Mode::Unlisted), Expected::Result),
        (hostile(Mode::JsonAsSse), failure("labelled `text/event-stream` but its body is plain JSON")),
        (hostile(Mode::SseTruncated), failure("ended in the middle of an event")),
        (hostile(Mode::SseDropped), failure("reading the reply body failed")),
        (hostile(Mode::Hangup), failure("the connection failed before a reply arrived")),
        (hostile(Mode::OversizedJson), failure(&limit)),
        (hostile(Mode::OversizedSse), failure(&limit)),
        (
            hostile(Mode::Slow),
            Expected::Failure { timeout: true, reason_contains: "did not reply within 2s".to_owned() },
        ),
        (hostile(Mode::Http500), failure(&format!("HTTP status 500 Internal Server Error: {HTTP_500_BODY}"))),
        (hostile(Mode::Garbage), failure("reply is not valid JSON")),
        (hostile(Mode::EmptyBody), failure("reply is not valid JSON")),
        (hostile(Mode::Accepted), failure("HTTP 202 but sent no response")),
        (hostile(Mode::WrongId), failure("does not contain the response to request")),
        (hostile(Mode::RpcError), failure(&format!("JSON-RPC error {RPC_ERROR_CODE}: {RPC_ERROR_MESSAGE}"))),
        (hostile(Mode::EmptyResult), failure("`content`")),
        (hostile(Mode::StringResult), failure("result is not a JSON object")),
        (format!("down.{}", Mode::Json.tool_name()), failure("upstream `down` is unreachable")),
    ]
}

#[tokio::test]
async fn upstream_reply_is_result_or_explicit_error() -> Result<()> {
    let setup = FaultSetup::start(&[]).await?;
    let gateway = &setup.gateway;
    let rest_session = "upstream-replies";
    let mcp_session = initialize(gateway, FULL_KEY).await?;

    for (index, (tool, expected)) in upstream_cases().into_iter().enumerate() {
        let input = json!({"case": tool, "index": index});
        let rest =
            gateway.rest_call(Some(FULL_KEY), &rest_body(FULL_MODEL, rest_session, &tool, input.clone())).await?;
        let rest_event = last_event(gateway, rest_session).await?;
        let call = tool_call(json!(index), &tool, input.clone());
        let mcp = mcp_post(gateway, FULL_KEY, Some(&mcp_session), &call).await?;
        let mcp_event = last_event(gateway, &mcp_session).await?;

        for (route, event) in [("REST", &rest_event), ("MCP", &mcp_event)] {
            assert_eq!(event["tool_name"], tool.as_str(), "{tool} over {route}: the event is this call's: {event}");
            assert_eq!(event["input"], input, "{tool} over {route}: the event keeps the input: {event}");
            assert_eq!(event["decision"], "allow", "{tool} over {route}: the call was allowed: {event}");
        }
        assert_eq!(mcp.status, 200, "{tool}: a JSON-RPC reply has HTTP status 200: {}", mcp.text);
        assert_eq!(mcp.json["id"], index, "{tool}: the MCP reply keeps the request id: {}", mcp.text);

        match expected {
            Expected::Result => {
                let text = input.to_string();
                assert_eq!(rest.status, 200, "{tool}: REST succeeds: {}", rest.text);
                assert_eq!(rest.json["result"]["content"][0]["text"], text, "{tool}: REST result: {}", rest.text);
                assert_eq!(mcp.json["result"]["content"][0]["text"], text, "{tool}: MCP result: {}", mcp.text);
                for (route, event) in [("REST", &rest_event), ("MCP", &mcp_event)] {
                    assert_eq!(event["upstream"]["status"], "ok", "{tool} over {route}: recorded as ok: {event}");
                }
            }
            Expected::Failure { timeout, reason_contains } => {
                let (status, label, recorded) =
                    if timeout { (504, "upstream_timeout", "timeout") } else { (502, "upstream_error", "error") };
                assert_eq!(rest.status, status, "{tool}: REST status: {}", rest.text);
                assert_eq!(rest.json["status"], label, "{tool}: REST label: {}", rest.text);
                let reason = rest.json["reason"].as_str().unwrap_or_default();
                assert!(
                    reason.contains(&reason_contains),
                    "{tool}: REST reason contains `{reason_contains}`: {reason}"
                );
                assert_eq!(
                    rest.json["event_id"], rest_event["event_id"],
                    "{tool}: REST names its event: {}",
                    rest.text
                );

                assert!(mcp.json.get("result").is_none(), "{tool}: MCP has no result: {}", mcp.text);
                assert_eq!(mcp.json["error"]["code"], UPSTREAM_FAILED, "{tool}: MCP error code: {}", mcp.text);
                assert_eq!(mcp.json["error"]["data"]["status"], label, "{tool}: MCP error label: {}", mcp.text);
                let message = mcp.json["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(&reason_contains),
                    "{tool}: MCP message contains `{reason_contains}`: {message}"
                );
                assert_eq!(mcp.json["error"]["data"]["event_id"], mcp_event["event_id"], "{tool}: MCP names its event");

                for (route, event) in [("REST", &rest_event), ("MCP", &mcp_event)] {
                    let upstream = &event["upstream"];
                    assert_eq!(upstream["status"], recorded, "{tool} over {route}: recorded as {recorded}: {event}");
                    let error = upstream["error"].as_str().unwrap_or_default();
                    assert!(
                        error.contains(&reason_contains),
                        "{tool} over {route}: the recorded error contains `{reason_contains}`: {event}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn client_that_hangs_up_leaves_the_call_recorded() -> Result<()> {
    // With one audit write per call, the record is written after the upstream replies; a client
    // that hangs up before then must not take the record with it.
    let setup = FaultSetup::start(&[("AUDIT_WRITES", "once")]).await?;
    let gateway = &setup.gateway;
    let session = "hang-up";
    let body = rest_body(FULL_MODEL, session, &hostile(Mode::Slow), json!({"case": "hang-up"}));
    let impatient = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(300)).build()?;
    let sent = impatient.post(gateway.url("/mcp/toolcall")).header("x-model-key", FULL_KEY).json(&body).send().await;
    assert!(sent.is_err(), "the client gives up before the upstream replies: {sent:?}");

    // The gateway times the upstream out after UPSTREAM_TIMEOUT (2 s) and then records the call.
    let mut events = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = gateway.session_trace(session).await?;
        if reply.status == 200 {
            events = reply.json["events"].as_array().cloned().unwrap_or_default();
            if !events.is_empty() {
                break;
            }
        }
    }
    assert_eq!(events.len(), 1, "the forwarded call has its one event: {events:?}");
    let event = events.first().cloned().unwrap_or_default();
    assert_eq!(event["decision"], "allow", "decision: {event}");
    assert_eq!(event["upstream"]["status"], "timeout", "the outcome is recorded: {event}");
    assert_eq!(setup.upstream.tool_calls().len(), 1, "the call reached the upstream once");
    Ok(())
}
