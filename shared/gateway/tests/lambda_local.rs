//! The real `toolcall` and `stream` binaries on cargo-lambda's local Lambda emulator
//! (`cargo lambda watch`), with the AWS stores in moto's emulator and the demo MCP server as
//! the upstream. Every server listens on 127.0.0.1, and the functions get static credentials
//! and a loopback endpoint, so nothing reaches AWS.
//!
//! The stream function forwards to an HTTP receiver on loopback, which stands in for the
//! SIEM and the alert webhook, and counts anomalies in a counters table on moto.
//!
//! `warm_functions_stay_within_request_budget` counts the DynamoDB and S3 requests that
//! the functions send per tool call and per stream record, with moto's request recorder, and
//! prints them as tables under `cargo test -p mcpsec-gateway --test lambda_local --
//! --nocapture`. The cost estimate in `docs/deploy-aws.md` is computed from these counts.
//!
//! Needs `infra/.venv/bin/cargo-lambda` and `infra/.venv/bin/moto_server`, which
//! `bash infra/install-test-deps.sh` installs. The emulator builds each function with
//! `cargo run` on its first invocation. After `cargo build -p mcpsec`, which `infra/test.sh`
//! runs first, that compiles the function's own crate only. On a cold target directory it
//! compiles every dependency, which takes minutes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail by panicking"
)]

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, Record, ShardIteratorType};
use mcpsec_gateway::config::{EXAMPLE_KEYS, EXAMPLE_POLICY};
use mcpsec_gateway::store::aws::setup::aws_init;
use mcpsec_gateway::store::aws::{AwsNames, AwsStores};
use mcpsec_gateway::store::{KeyStore, PolicyStore};
use mcpsec_policy::KeySet;
use serde_json::{Value, json};

#[path = "common/recorder.rs"]
mod recorder;

use recorder::{Access, Recorder, Tally};

const WORKSPACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const VENV_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/.venv/bin");
const SESSION_SECRET: &str = "lambda-local-test-secret-0123456789abcdef";

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one invocation may take, including the emulator's `cargo run` of the function.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(900);

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn log_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn tool(name: &str) -> PathBuf {
    let path = Path::new(VENV_BIN).join(name);
    assert!(path.is_file(), "`{}` not found; install it with `bash infra/install-test-deps.sh`", path.display());
    path
}

/// A process run under a shell that sends it SIGTERM when the shell's standard input closes,
/// which happens when this value is dropped, on success or on a failed assertion.
struct Guarded {
    stdin: Option<ChildStdin>,
    shell: Child,
    log: PathBuf,
}

/// Starts the program and its arguments in the background, waits for standard input to close,
/// then stops the program and waits for it to exit.
const GUARD_SCRIPT: &str = r#""$@" & child=$!; read -r _; kill -TERM "$child"; wait "$child""#;

impl Guarded {
    fn spawn(command: Command, log_name: &str) -> Self {
        let program = command.get_program().to_owned();
        let arguments: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        let log = log_path(log_name);
        let output = File::create(&log).unwrap();

        let mut shell = Command::new("sh");
        shell.arg("-c").arg(GUARD_SCRIPT).arg("guard").arg(&program).args(&arguments);
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => shell.env(name, value),
                None => shell.env_remove(name),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            shell.current_dir(dir);
        }
        let mut shell = shell
            .stdin(Stdio::piped())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {}: {error}", program.display()));
        Self { stdin: shell.stdin.take(), shell, log }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        let _ = File::open(&self.log).and_then(|mut file| file.read_to_string(&mut text));
        text
    }

    /// Returns the last 40 lines of the log, for failure messages.
    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(self.shell.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop within 30 s; see {}", self.shell.id(), self.log.display());
    }
}

/// moto's emulator on a free loopback port.
struct Moto {
    endpoint: String,
    _process: Guarded,
}

/// Starts moto with its log in `{name}-moto.log`. Its request recorder, off until
/// [`Recorder::start`], writes to `{name}-moto-recording.jsonl`: without the variable it would
/// write into the test's working directory, which is the crate's source folder.
fn start_moto(name: &str) -> Moto {
    let mut command = Command::new(tool("moto_server"));
    command
        .args(["-H", "127.0.0.1", "-p", "0"])
        .env("MOTO_RECORDER_FILEPATH", log_path(&format!("{name}-moto-recording.jsonl")));
    let process = Guarded::spawn(command, &format!("{name}-moto.log"));

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = process.log_text();
        if let Some(rest) = text.split("Running on http://127.0.0.1:").nth(1) {
            let port: u16 = rest.split_whitespace().next().unwrap_or_default().parse().unwrap();
            return Moto { endpoint: format!("http://127.0.0.1:{port}"), _process: process };
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not start within {START_TIMEOUT:?}:\n{}",
            process.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SDK configuration for the emulator: static credentials, a fixed region, the loopback endpoint.
fn sdk_config(endpoint: &str) -> SdkConfig {
    let credentials = Credentials::new("test", "test", None, None, "lambda-local-test");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .endpoint_url(endpoint)
        .build()
}

/// Creates the tables and the bucket and imports the example keys and policy.
async fn prepare_stores(sdk: &SdkConfig) -> AwsNames {
    let names = AwsNames::new("lambda-local-keys", "lambda-local-sessions", "lambda-local-policy")
        .with_counters_table("lambda-local-counters");
    aws_init(sdk, &names).await.unwrap();

    let stores = AwsStores::new(sdk, names.clone());
    for entry in KeySet::from_yaml("example keys", EXAMPLE_KEYS).unwrap().entries() {
        stores.put_model(entry).await.unwrap();
    }
    stores.save(EXAMPLE_POLICY, None, "test", None).await.unwrap();
    names
}

async fn start_demo_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(mcpsec_gateway::demo::serve(listener));
    format!("http://{address}{}", mcpsec_gateway::demo::MCP_PATH)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `cargo lambda watch` on a loopback port, serving every binary of the workspace.
struct Watch {
    port: u16,
    process: Guarded,
    http: reqwest::Client,
}

impl Watch {
    /// Starts the emulator with its log in `{name}-watch.log`. The functions get the
    /// variables `extra_env` after the common ones, so `extra_env` can override them.
    fn start(
        moto: &Moto,
        names: &AwsNames,
        upstream: &str,
        receiver: &str,
        name: &str,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let path = format!("{VENV_BIN}:{}", std::env::var("PATH").unwrap_or_default());
        let mut command = Command::new(tool("cargo-lambda"));
        command
            .args(["lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", &port.to_string()])
            .args(["--ignore-changes", "--jobs", "2", "--color", "never"])
            .current_dir(WORKSPACE_DIR)
            .env("PATH", path);
        for name in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ] {
            command.env_remove(name);
        }
        // An empty AWS config and credentials file, so no profile on this machine applies.
        let empty_file = log_path(&format!("{name}-empty-aws-config"));
        std::fs::write(&empty_file, "").unwrap();
        command
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", &empty_file)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty_file)
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("KEYS_TABLE", &names.keys_table)
            .env("SESSIONS_TABLE", &names.sessions_table)
            .env("POLICY_BUCKET", &names.policy_bucket)
            .env("COUNTERS_TABLE", names.counters_table.as_deref().unwrap())
            .env("SESSION_SECRET", SESSION_SECRET)
            .env("TOOL_SERVER_URL", upstream)
            .env("SIEM_URL", format!("{receiver}/siem"))
            .env("ALERT_WEBHOOK_URL", format!("{receiver}/hook"))
            .env("SIEM_MAX_ATTEMPTS", "2")
            // The other setting of lambda_http's stage handling. tests/lambda_events.rs runs
            // the default.
            .env("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true");
        command.envs(extra_env.iter().copied());
        let process = Guarded::spawn(command, &format!("{name}-watch.log"));

        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen within {START_TIMEOUT:?}:\n{}",
                process.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let http = reqwest::Client::builder().no_proxy().timeout(INVOKE_TIMEOUT).build().unwrap();
        Self { port, process, http }
    }

    /// Invokes `function` with `event`, as Lambda's `Invoke` API does, and returns its result.
    async fn invoke(&self, function: &str, event: &str) -> Value {
        let url = format!("http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations", self.port);
        let response = self.http.post(url).body(event.to_owned()).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "invoking {function} returned {status}: {text}\n{}", self.process.log_tail());
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{function} returned no JSON ({error}): {text}"))
    }

    /// Invokes `toolcall` with the HTTP API event of a REST tool call with `body` and the
    /// example key of `gpt-4o`, and returns the HTTP status and the JSON body of its response.
    async fn call_body(&self, body: &Value) -> (u64, Value) {
        let mut event: Value = serde_json::from_str(&fixture("apigw_v2_default_stage_toolcall.json")).unwrap();
        event["body"] = Value::String(body.to_string());
        event["isBase64Encoded"] = Value::Bool(false);
        let response = self.invoke("toolcall", &event.to_string()).await;
        let status = response["statusCode"].as_u64().unwrap();
        (status, serde_json::from_str(response["body"].as_str().unwrap()).unwrap())
    }

    /// Invokes `toolcall` with an API Gateway event fixture and returns the HTTP status and
    /// the JSON body of its response.
    async fn call(&self, fixture_name: &str) -> (u64, Value) {
        let response = self.invoke("toolcall", &fixture(fixture_name)).await;
        let status =
            response["statusCode"].as_u64().unwrap_or_else(|| panic!("{fixture_name}: no statusCode in {response}"));
        let body = response["body"].as_str().unwrap_or_else(|| panic!("{fixture_name}: no text body in {response}"));
        (status, serde_json::from_str(body).unwrap())
    }
}

/// Bodies of the requests an HTTP receiver on loopback accepted, by path.
#[derive(Clone, Default)]
struct Received(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl Received {
    /// Returns every JSON line sent to `path`.
    fn lines(&self, path: &str) -> Vec<Value> {
        let requests = self.0.lock().unwrap();
        requests
            .iter()
            .filter(|(request_path, _)| request_path == path)
            .flat_map(|(_, body)| body.lines().map(|line| serde_json::from_str(line).unwrap()).collect::<Vec<Value>>())
            .collect()
    }
}

/// Starts a receiver that answers 200 to any request and keeps its body; returns its base URL.
async fn start_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
        let received = received.clone();
        async move {
            received.0.lock().unwrap().push((uri.path().to_owned(), body));
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// Returns every record of the sessions table's stream, oldest first.
async fn stream_records(sdk: &SdkConfig, table: &str) -> (String, Vec<Record>) {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let description = dynamodb.describe_table().table_name(table).send().await.unwrap().table.unwrap();
    let stream_arn = description.latest_stream_arn().unwrap().to_owned();

    let streams = aws_sdk_dynamodbstreams::Client::new(sdk);
    let stream = streams.describe_stream().stream_arn(&stream_arn).send().await.unwrap().stream_description.unwrap();
    let mut records = Vec::new();
    for shard in stream.shards() {
        let iterator = streams
            .get_shard_iterator()
            .stream_arn(&stream_arn)
            .shard_id(shard.shard_id().unwrap())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let mut iterator = iterator.shard_iterator;
        while let Some(current) = iterator {
            let output = streams.get_records().shard_iterator(current).send().await.unwrap();
            if output.records().is_empty() {
                break;
            }
            records.extend(output.records().iter().cloned());
            iterator = output.next_shard_iterator;
        }
    }
    (stream_arn, records)
}

/// Builds the Lambda event for stream records, in the shape Lambda delivers them.
fn stream_event(stream_arn: &str, records: &[Record]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|record| {
            let change = record.dynamodb().unwrap();
            json!({
                "eventID": record.event_id(),
                "eventName": record.event_name().unwrap().as_str(),
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": change.approximate_creation_date_time().map_or(0, |time| time.secs()),
                    "Keys": image_json(change.keys()),
                    "NewImage": image_json(change.new_image()),
                    "SequenceNumber": change.sequence_number(),
                    "SizeBytes": change.size_bytes(),
                    "StreamViewType": change.stream_view_type().unwrap().as_str(),
                },
                "eventSourceARN": stream_arn,
            })
        })
        .collect();
    json!({ "Records": records })
}

fn image_json(image: Option<&HashMap<String, StreamValue>>) -> Value {
    image
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.clone(), attribute_json(value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn attribute_json(value: &StreamValue) -> Value {
    match value {
        StreamValue::S(text) => json!({ "S": text }),
        StreamValue::N(number) => json!({ "N": number }),
        StreamValue::Bool(flag) => json!({ "BOOL": flag }),
        StreamValue::Null(flag) => json!({ "NULL": flag }),
        StreamValue::L(items) => json!({ "L": items.iter().map(attribute_json).collect::<Vec<_>>() }),
        StreamValue::M(map) => json!({ "M": image_json(Some(map)) }),
        other => panic!("the sessions table holds no attribute like {other:?}"),
    }
}

fn partition_key(record: &Record) -> Option<&str> {
    let keys = record.dynamodb()?.keys()?;
    keys.get("pk")?.as_s().ok().map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_answer_events_under_cargo_lambda_watch() {
    let moto = start_moto("lambda_local");
    let sdk = sdk_config(&moto.endpoint);
    let names = prepare_stores(&sdk).await;
    let upstream = start_demo_upstream().await;
    let received = Received::default();
    let receiver = start_receiver(received.clone()).await;
    let watch = Watch::start(&moto, &names, &upstream, &receiver, "lambda_local", &[]);

    let (status, body) = watch.call("apigw_v2_default_stage_toolcall.json").await;
    assert_eq!(status, 200, "HTTP API, $default stage: {body}");
    assert_eq!(body["result"]["structuredContent"]["query"], "tool calls", "{body}");

    let (status, body) = watch.call("apigw_v2_prod_stage_toolcall_base64.json").await;
    assert_eq!(status, 200, "HTTP API, stage prod, base64 body: {body}");
    assert_eq!(body["result"]["structuredContent"]["query"], "calendar tool", "{body}");

    let (status, body) = watch.call("apigw_v1_prod_stage_toolcall.json").await;
    assert_eq!(status, 200, "REST API, stage prod: {body}");
    assert_eq!(body["result"]["structuredContent"]["query"], "json-rpc", "{body}");

    let (status, body) = watch.call("apigw_v1_prod_stage_toolcall_wrong_key.json").await;
    assert_eq!(status, 401, "REST API, wrong key: {body}");
    assert_eq!(body["status"], "unauthorized", "{body}");

    let (status, body) = watch.call("apigw_v2_prod_stage_mcp_initialize.json").await;
    assert_eq!(status, 200, "MCP initialize: {body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "mcpsec-gateway", "{body}");

    // AUDIT_WRITES defaults to `once` on Lambda, so an allowed call is one PutItem: one
    // INSERT and no MODIFY in the stream.
    let (_, records) = stream_records(&sdk, &names.sessions_table).await;
    let writes: Vec<&str> = records
        .iter()
        .filter(|record| partition_key(record) == Some("S#sess-http-default"))
        .map(|record| record.event_name().unwrap().as_str())
        .collect();
    assert_eq!(writes, ["INSERT"], "stream records of one allowed call");

    // A poison item: its `event` attribute is not an audit event, so its record can never be
    // decoded. It must be reported alone, and the records around it must still go through.
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    dynamodb
        .put_item()
        .table_name(&names.sessions_table)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("S#poison".to_owned()))
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("E#poison".to_owned()))
        .item("event", aws_sdk_dynamodb::types::AttributeValue::S("{not an audit event".to_owned()))
        .send()
        .await
        .unwrap();
    // Enough denied calls of one model to cross the default denial spike threshold of 10.
    let denied: Vec<Value> = (0..12).map(|_| json!({"model_id": "gpt-4o", "session_id": "sess-spike", "tool_name": "calendar.delete_event", "input": {"event_id": "e1"}})).collect();
    for body in &denied {
        let (status, reply) = watch.call_body(body).await;
        assert_eq!(status, 403, "a denied call: {reply}");
    }

    let (stream_arn, records) = stream_records(&sdk, &names.sessions_table).await;
    let poison: Vec<&str> = records
        .iter()
        .filter(|record| partition_key(record) == Some("S#poison"))
        .map(|record| record.dynamodb().unwrap().sequence_number().unwrap())
        .collect();
    let response = watch.invoke("stream", &stream_event(&stream_arn, &records).to_string()).await;
    assert_eq!(
        response,
        json!({ "batchItemFailures": [{ "itemIdentifier": poison[0] }] }),
        "only the poison record fails; every item the toolcall function wrote is decoded"
    );

    let forwarded: Vec<String> =
        received.lines("/siem").iter().map(|line| line["session_id"].as_str().unwrap_or_default().to_owned()).collect();
    for session in ["sess-http-default", "sess-http-prod", "sess-rest-prod"] {
        assert!(forwarded.iter().any(|forwarded| forwarded == session), "no forwarded event of session {session}");
    }
    let spike_events = forwarded.iter().filter(|session| *session == "sess-spike").count();
    assert_eq!(spike_events, denied.len(), "every denied call reached the SIEM, the ones after the poison record too");

    // Lambda retries from the poison record on; after its retries the poison record goes to
    // the dead-letter queue and the records after it are delivered again, without it. Only
    // then are they counted, so that a retried record is never counted twice.
    let position = records.iter().position(|record| partition_key(record) == Some("S#poison")).unwrap();
    let retried = &records[position + 1..];
    let response = watch.invoke("stream", &stream_event(&stream_arn, retried).to_string()).await;
    assert_eq!(response, json!({ "batchItemFailures": [] }), "the records after the poison record go through");

    // The anomalies are items of their own, which come back through the stream.
    let (stream_arn, records) = stream_records(&sdk, &names.sessions_table).await;
    let anomalies: Vec<Record> =
        records.into_iter().filter(|record| partition_key(record).is_some_and(|key| key.starts_with("A#"))).collect();
    let details: Vec<Value> = anomalies
        .iter()
        .map(|record| {
            let image = record.dynamodb().unwrap().new_image().unwrap();
            let event: Value = serde_json::from_str(image["event"].as_s().unwrap()).unwrap();
            event["anomaly"].clone()
        })
        .collect();
    let mut spikes: Vec<&str> = details
        .iter()
        .filter(|anomaly| anomaly["detector"] == "denial_spike")
        .map(|anomaly| anomaly["scope"].as_str().unwrap())
        .collect();
    spikes.sort_unstable();
    assert_eq!(spikes, ["all", "model", "session"], "one denial spike per model, session and overall: {details:?}");
    assert!(
        details.iter().any(|anomaly| anomaly["detector"] == "first_tool_use" && anomaly["subject"] == "gpt-4o"),
        "the first allowed call of a tool by gpt-4o is an anomaly too: {details:?}"
    );

    let response = watch.invoke("stream", &stream_event(&stream_arn, &anomalies).to_string()).await;
    assert_eq!(response, json!({ "batchItemFailures": [] }), "the anomaly records go through");
    let posted = details.iter().filter(|anomaly| anomaly["detector"] != "first_tool_use").count();
    assert_eq!(received.lines("/hook").len(), posted, "one webhook message per anomaly but first tool use");
    let forwarded_anomalies = received.lines("/siem").iter().filter(|line| line["kind"] == "anomaly").count();
    assert_eq!(forwarded_anomalies, anomalies.len(), "the anomalies reach the SIEM too");

    let counters = dynamodb.scan().table_name(names.counters_table.as_deref().unwrap()).send().await.unwrap();
    assert!(counters.items().iter().all(|item| item.contains_key("ttl")), "every counter item expires");
    assert!(!counters.items().is_empty(), "the detectors counted in the shared counters table");
}

/// Requests of each kind per counted window: enough that one extra AWS request per call
/// shows in the counts.
const CALLS_PER_KIND: usize = 10;

/// `CACHE_TTL` of the functions in the request budget test: longer than the test runs, so
/// that every counted call finds the keys and the policy cached, as a warm instance does
/// within the default 5 s.
const LONG_CACHE_TTL: &str = "1h";

/// The example key of `gpt-4o`.
const MODEL_KEY: &str = "modelkey-abc123";

/// The requests to `toolcall` whose AWS requests the budget test counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    RestAllowed,
    RestDenied,
    RestUnauthorized,
    McpToolsCall,
    McpInitialize,
    McpToolsList,
}

impl CallKind {
    const ALL: [Self; 6] = [
        Self::RestAllowed,
        Self::RestDenied,
        Self::RestUnauthorized,
        Self::McpToolsCall,
        Self::McpInitialize,
        Self::McpToolsList,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::RestAllowed => "REST call, allowed",
            Self::RestDenied => "REST call, denied by policy",
            Self::RestUnauthorized => "REST call, wrong key",
            Self::McpToolsCall => "MCP tools/call, allowed",
            Self::McpInitialize => "MCP initialize",
            Self::McpToolsList => "MCP tools/list",
        }
    }

    /// Returns whether the request is an audited tool call. `initialize` and `tools/list` are not.
    fn is_tool_call(self) -> bool {
        !matches!(self, Self::McpInitialize | Self::McpToolsList)
    }
}

/// Returns the body of a REST tool call by `gpt-4o` in session `sess-budget`.
fn rest_body(tool_name: &str, input: Value) -> Value {
    json!({"model_id": "gpt-4o", "session_id": "sess-budget", "tool_name": tool_name, "input": input})
}

/// Returns the HTTP API event of a REST tool call with `body` and the model key `key`.
fn rest_event(body: &Value, key: &str) -> String {
    let mut event: Value = serde_json::from_str(&fixture("apigw_v2_default_stage_toolcall.json")).unwrap();
    let body = body.to_string();
    event["headers"]["content-length"] = Value::String(body.len().to_string());
    event["headers"]["x-model-key"] = Value::String(key.to_owned());
    event["body"] = Value::String(body);
    event["isBase64Encoded"] = Value::Bool(false);
    event.to_string()
}

/// Returns the HTTP API event of an MCP message with `body`, the example key of `gpt-4o` and,
/// unless it is empty, the session id `session`.
fn mcp_event(body: &Value, session: &str) -> String {
    let mut event: Value = serde_json::from_str(&fixture("apigw_v2_prod_stage_mcp_initialize.json")).unwrap();
    let body = body.to_string();
    event["headers"]["content-length"] = Value::String(body.len().to_string());
    event["headers"]["authorization"] = Value::String(format!("Bearer {MODEL_KEY}"));
    if !session.is_empty() {
        event["headers"]["mcp-session-id"] = Value::String(session.to_owned());
    }
    event["body"] = Value::String(body);
    event.to_string()
}

impl Watch {
    /// Sends one request of `kind` to `toolcall`, with the MCP session id `session` for the
    /// MCP methods that need one, checks its status and returns the Lambda response.
    async fn send(&self, kind: CallKind, session: &str) -> Value {
        let search = json!({"query": "request budget", "limit": 1});
        let (event, expected_status) = match kind {
            CallKind::RestAllowed => (rest_event(&rest_body("search.web", search), MODEL_KEY), 200),
            CallKind::RestDenied => {
                (rest_event(&rest_body("calendar.delete_event", json!({"event_id": "e1"})), MODEL_KEY), 403)
            }
            CallKind::RestUnauthorized => (rest_event(&rest_body("search.web", search), "modelkey-wrong"), 401),
            CallKind::McpToolsCall => {
                let params = json!({"name": "search.web", "arguments": search});
                (mcp_event(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}), session), 200)
            }
            CallKind::McpInitialize => (fixture("apigw_v2_prod_stage_mcp_initialize.json"), 200),
            CallKind::McpToolsList => {
                (mcp_event(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}), session), 200)
            }
        };

        let response = self.invoke("toolcall", &event).await;
        assert_eq!(response["statusCode"], expected_status, "{}: {response}", kind.label());
        if matches!(kind, CallKind::McpToolsCall | CallKind::McpInitialize | CallKind::McpToolsList) {
            let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
            assert!(body["result"].is_object(), "{}: {body}", kind.label());
        }
        response
    }

    /// Invokes the stream function with `records` in one batch and checks that none failed.
    async fn deliver(&self, stream_arn: &str, records: &[Record]) {
        let response = self.invoke("stream", &stream_event(stream_arn, records).to_string()).await;
        assert_eq!(response, json!({ "batchItemFailures": [] }), "a batch of {} stream records", records.len());
    }
}

/// Returns `count` divided by `per`, as requests per call or per record.
fn ratio(count: usize, per: usize) -> f64 {
    count as f64 / per.max(1) as f64
}

/// Prints one row of a request table: the requests of `tally` divided by `per`.
fn print_row(label: &str, per: usize, tally: &Tally) {
    let sizes = tally.put_item_sizes();
    let largest = sizes.iter().max().map_or("-".to_owned(), |size| size.to_string());
    eprintln!(
        "  {label:<38} {per:>4} {:>7.2} {:>6.2} {:>5.2} {:>6.2} {largest:>9}  {}",
        ratio(tally.count(Access::DynamoDbWrite), per),
        ratio(tally.count(Access::DynamoDbRead), per),
        ratio(tally.count(Access::S3), per),
        ratio(tally.count(Access::Other), per),
        tally.describe()
    );
}

/// Prints the title and the column names of a request table. The counts are per request
/// or per record, and `n` is how many were sent.
fn print_header(title: &str) {
    eprintln!("\n{title}");
    eprintln!(
        "  {:<38} {:>4} {:>7} {:>6} {:>5} {:>6} {:>9}  operations (total)",
        "", "n", "writes", "reads", "S3", "other", "PutItem B"
    );
}

/// Returns a label for the audit event of a stream record: its route and decision.
fn record_label(record: &Record) -> String {
    let image = record.dynamodb().unwrap().new_image().unwrap();
    let event: Value = serde_json::from_str(image["event"].as_s().unwrap()).unwrap();
    format!("{} {}", event["route"].as_str().unwrap_or("?"), event["decision"].as_str().unwrap_or("?"))
}

/// Returns the records of audit events of tool calls, leaving out anomalies and anything else.
fn call_records(records: &[Record]) -> Vec<Record> {
    records.iter().filter(|record| partition_key(record).is_some_and(|key| key.starts_with("S#"))).cloned().collect()
}

/// Converts an item that the DynamoDB SDK read into DynamoDB's JSON shape, for
/// [`recorder::item_size`].
fn item_json(item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> serde_json::Map<String, Value> {
    item.iter().map(|(name, value)| (name.clone(), value_json(value))).collect()
}

fn value_json(value: &aws_sdk_dynamodb::types::AttributeValue) -> Value {
    use aws_sdk_dynamodb::types::AttributeValue as Item;
    match value {
        Item::S(text) => json!({ "S": text }),
        Item::N(number) => json!({ "N": number }),
        Item::Ss(texts) => json!({ "SS": texts }),
        Item::Ns(numbers) => json!({ "NS": numbers }),
        Item::Bool(flag) => json!({ "BOOL": flag }),
        Item::Null(flag) => json!({ "NULL": flag }),
        Item::L(items) => json!({ "L": items.iter().map(value_json).collect::<Vec<_>>() }),
        Item::M(map) => json!({ "M": item_json(map) }),
        other => panic!("the counters table holds no attribute like {other:?}"),
    }
}

/// Counters that one batch updates at most when its calls come from one model and its denied
/// calls from one session. They are the model's call rate, the denials of the model, of the
/// session and of all models, and the denied tools of the session and of the model.
const MAX_COUNTERS_PER_BATCH: usize = 6;

/// Checks the requests that `detect` sent for `batches` such batches, and returns how many
/// anomaly items it wrote.
fn check_detect_budget(label: &str, batches: usize, tally: &Tally, names: &AwsNames) -> usize {
    let describe = tally.describe();
    assert_eq!(tally.count(Access::DynamoDbRead), 0, "`detect`, {label}: no reads within CACHE_TTL: {describe}");
    assert_eq!(tally.count(Access::S3), 0, "`detect`, {label}: no S3 request within CACHE_TTL: {describe}");
    assert_eq!(tally.count(Access::Other), 0, "`detect`, {label}: no other AWS request: {describe}");

    let counter_writes = tally.count_on(Access::DynamoDbWrite, names.counters_table.as_deref().unwrap());
    assert!(
        counter_writes <= MAX_COUNTERS_PER_BATCH * batches,
        "`detect`, {label}: at most one update per counter and batch, {batches} batches: {describe}"
    );
    let anomaly_writes = tally.count_on(Access::DynamoDbWrite, &names.sessions_table);
    assert_eq!(
        tally.count(Access::DynamoDbWrite),
        counter_writes + anomaly_writes,
        "`detect`, {label}: no other writes, because the policy sets no quarantine: {describe}"
    );
    anomaly_writes
}

/// Invokes the stream function of `target` with each of `batches` and returns the AWS
/// requests it sent.
async fn count_deliveries(recorder: &Recorder, target: &Watch, stream_arn: &str, batches: &[&[Record]]) -> Tally {
    recorder.start().await;
    for batch in batches {
        target.deliver(stream_arn, batch).await;
    }
    recorder.finish().await
}

/// Counts the DynamoDB and S3 requests that warm functions send to moto, with moto's request
/// recorder, and checks them against the budget that the cost estimate in
/// `docs/deploy-aws.md` assumes. Run it with `-- --nocapture` to see the tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_functions_stay_within_request_budget() {
    let moto = start_moto("lambda_local_budget");
    let sdk = sdk_config(&moto.endpoint);
    let names = prepare_stores(&sdk).await;
    let upstream = start_demo_upstream().await;
    let receiver = start_receiver(Received::default()).await;
    // `stream` forwards only and `detect` detects and alerts, as the SAM template sets
    // STREAM_STEPS. Both are the `stream` binary, so each runs under its own emulator.
    let forward_env = [("CACHE_TTL", LONG_CACHE_TTL), ("STREAM_STEPS", "forward")];
    let watch = Watch::start(&moto, &names, &upstream, &receiver, "lambda_local_budget", &forward_env);
    let detect_env = [("CACHE_TTL", LONG_CACHE_TTL), ("STREAM_STEPS", "detect,alert")];
    let detect = Watch::start(&moto, &names, &upstream, &receiver, "lambda_local_detect", &detect_env);
    let recorder = Recorder::new(&moto.endpoint);
    let sessions_table = names.sessions_table.as_str();
    let counters_table = names.counters_table.clone().unwrap();

    // The first call of a fresh instance loads the keys and the policy.
    recorder.start().await;
    watch.send(CallKind::RestAllowed, "").await;
    let cold = recorder.finish().await;
    assert_eq!(cold.count_on(Access::DynamoDbRead, &names.keys_table), 1, "one keys-table scan: {}", cold.describe());
    assert_eq!(cold.count(Access::S3), 1, "one S3 GET of the policy: {}", cold.describe());
    assert_eq!(cold.count(Access::DynamoDbWrite), 1, "one audit write: {}", cold.describe());

    let initialize = watch.send(CallKind::McpInitialize, "").await;
    let session = initialize["headers"]["mcp-session-id"].as_str().unwrap().to_owned();
    for kind in CallKind::ALL {
        watch.send(kind, &session).await;
    }
    let warm_records = call_records(&stream_records(&sdk, sessions_table).await.1);

    print_header(&format!(
        "AWS requests per request to a warm `toolcall` (AUDIT_WRITES=once, CACHE_TTL={LONG_CACHE_TTL})"
    ));
    print_row("first call of a fresh instance", 1, &cold);
    for kind in CallKind::ALL {
        recorder.start().await;
        for _ in 0..CALLS_PER_KIND {
            watch.send(kind, &session).await;
        }
        let tally = recorder.finish().await;
        print_row(kind.label(), CALLS_PER_KIND, &tally);

        let label = kind.label();
        let writes = tally.count_on(Access::DynamoDbWrite, sessions_table);
        let expected_writes = if kind.is_tool_call() { CALLS_PER_KIND } else { 0 };
        assert_eq!(writes, expected_writes, "{label}: one audit PutItem per tool call: {}", tally.describe());
        assert_eq!(tally.count(Access::DynamoDbWrite), writes, "{label}: no other writes: {}", tally.describe());
        assert_eq!(tally.count(Access::DynamoDbRead), 0, "{label}: no reads within CACHE_TTL: {}", tally.describe());
        assert_eq!(tally.count(Access::S3), 0, "{label}: no S3 request within CACHE_TTL: {}", tally.describe());
        assert_eq!(tally.count(Access::Other), 0, "{label}: no other AWS request: {}", tally.describe());
        for size in tally.put_item_sizes() {
            assert!(size <= 1024, "{label}: an audit item of {size} bytes costs more than 1 WRU");
        }
    }

    let (stream_arn, records) = stream_records(&sdk, sessions_table).await;
    let measured: Vec<Record> = call_records(&records).split_off(warm_records.len());
    assert_eq!(measured.len(), 4 * CALLS_PER_KIND, "one stream record per counted tool call");

    // The first batch warms both stream functions: `detect` reads the policy, and it raises
    // the first use of each tool.
    let mut anomaly_writes = 0;
    let stream_cold = count_deliveries(&recorder, &watch, &stream_arn, &[&warm_records]).await;
    assert_eq!(stream_cold.requests.len(), 0, "`stream` only forwards to the SIEM: {}", stream_cold.describe());
    let detect_cold = count_deliveries(&recorder, &detect, &stream_arn, &[&warm_records]).await;
    anomaly_writes += detect_cold.count_on(Access::DynamoDbWrite, sessions_table);

    print_header(&format!("AWS requests per stream record, one record per batch (CACHE_TTL={LONG_CACHE_TTL})"));
    print_row("`detect`, first batch of an instance", warm_records.len(), &detect_cold);
    let mut labels: Vec<String> = measured.iter().map(record_label).collect();
    labels.dedup();
    for label in &labels {
        let records: Vec<Record> = measured.iter().filter(|record| record_label(record) == *label).cloned().collect();
        let batches: Vec<&[Record]> = records.iter().map(std::slice::from_ref).collect();

        let tally = count_deliveries(&recorder, &watch, &stream_arn, &batches).await;
        print_row(&format!("`stream`, {label}"), records.len(), &tally);
        assert_eq!(tally.requests.len(), 0, "`stream`, {label}: only forwards to the SIEM: {}", tally.describe());

        let tally = count_deliveries(&recorder, &detect, &stream_arn, &batches).await;
        print_row(&format!("`detect`, {label}"), records.len(), &tally);
        anomaly_writes += check_detect_budget(label, batches.len(), &tally, &names);
    }

    // A second round of the same calls, interleaved and in one batch, as Lambda delivers
    // them under load.
    let before = call_records(&stream_records(&sdk, sessions_table).await.1).len();
    for _ in 0..CALLS_PER_KIND {
        for kind in CallKind::ALL.into_iter().filter(|kind| kind.is_tool_call()) {
            watch.send(kind, &session).await;
        }
    }
    let (stream_arn, records) = stream_records(&sdk, sessions_table).await;
    let batch = call_records(&records).split_off(before);
    print_header(&format!("AWS requests per stream record, {} records in one batch", batch.len()));
    let tally = count_deliveries(&recorder, &watch, &stream_arn, &[&batch]).await;
    print_row("`stream`, mixed calls", batch.len(), &tally);
    assert_eq!(tally.requests.len(), 0, "`stream`, mixed calls: only forwards to the SIEM: {}", tally.describe());
    let tally = count_deliveries(&recorder, &detect, &stream_arn, &[&batch]).await;
    print_row("`detect`, mixed calls", batch.len(), &tally);
    anomaly_writes += check_detect_budget("mixed calls", 1, &tally, &names);

    // The anomalies come back through the stream: `stream` forwards them and `detect` posts
    // them to the webhook, neither with an AWS request.
    let (stream_arn, records) = stream_records(&sdk, sessions_table).await;
    let anomalies: Vec<Record> =
        records.into_iter().filter(|record| partition_key(record).is_some_and(|key| key.starts_with("A#"))).collect();
    assert_eq!(anomaly_writes, anomalies.len(), "`detect` writes each anomaly once");
    for (function, target) in [("stream", &watch), ("detect", &detect)] {
        let tally = count_deliveries(&recorder, target, &stream_arn, &[&anomalies]).await;
        print_row(&format!("`{function}`, anomaly records"), anomalies.len(), &tally);
        assert_eq!(tally.requests.len(), 0, "`{function}`, anomaly records: no AWS request: {}", tally.describe());
    }

    let counters = aws_sdk_dynamodb::Client::new(&sdk).scan().table_name(&counters_table).send().await.unwrap();
    let largest = counters.items().iter().map(|item| recorder::item_size(&item_json(item))).max().unwrap_or_default();
    eprintln!("\nlargest item in the counters table: {largest} bytes ({} items)", counters.items().len());
    assert!(largest <= 1024, "a counter item of {largest} bytes costs more than 1 WRU per update");
}
