//! One behavioural suite for every store backend. Each case in [`cases`] runs twice: on the
//! embedded SQLite store in a temporary directory (`sqlite::…`), and on the AWS stores
//! against moto's emulator on 127.0.0.1 with tables and a bucket of their own, created by
//! `aws_init` (`aws::…`). The cases in [`aws_only`] check what only the AWS layout has.
//!
//! The AWS tests start `infra/.venv/bin/moto_server` once per test binary; install it with
//! `bash infra/install-test-deps.sh`. The server exits when the test binary does. Clients
//! use static credentials and the loopback endpoint, so nothing reaches AWS.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration as StdDuration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use mcpsec_gateway::audit::{Anomaly, AnomalyScope, AuditEvent, Detector, EventKind, Outcome, Route, UpstreamOutcome};
use mcpsec_gateway::store::aws::setup::aws_init;
use mcpsec_gateway::store::aws::{AwsNames, AwsStores};
use mcpsec_gateway::store::sqlite::SqliteStore;
use mcpsec_gateway::store::{AuditStore, KeyStore, PolicyStore, StoreError};
use mcpsec_policy::keys::hash_key;
use mcpsec_policy::{Credential, ModelEntry, Scope};
use serde_json::json;
use tempfile::TempDir;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn Error>>;

/// The three stores of one backend, fresh for each test.
struct Backend {
    keys: Arc<dyn KeyStore>,
    policy: Arc<dyn PolicyStore>,
    audit: Arc<dyn AuditStore>,
    /// The SQLite data directory, removed when the test ends.
    _dir: Option<TempDir>,
}

fn sqlite_backend() -> Result<Backend, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("data"))?);
    Ok(Backend { keys: store.clone(), policy: store.clone(), audit: store, _dir: Some(dir) })
}

async fn aws_backend() -> Result<Backend, Box<dyn Error>> {
    let (stores, _names) = aws_stores().await?;
    let stores = Arc::new(stores);
    Ok(Backend { keys: stores.clone(), policy: stores.clone(), audit: stores, _dir: None })
}

/// Creates tables and a bucket with names no other test uses, and stores on them.
async fn aws_stores() -> Result<(AwsStores, AwsNames), Box<dyn Error>> {
    let config = moto_config()?;
    let names = unique_names();
    aws_init(&config, &names).await?;
    Ok((AwsStores::new(&config, names.clone()), names))
}

fn unique_names() -> AwsNames {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let suffix = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    AwsNames::new(format!("keys-{suffix}"), format!("sessions-{suffix}"), format!("policy-{suffix}"))
}

/// The secret access key of the static test credentials, which no message may contain.
const STATIC_SECRET: &str = "store-contract-secret";

/// SDK configuration for the emulator: static credentials, a fixed region and the loopback
/// endpoint, so that no credential or region provider looks anywhere else.
fn moto_config() -> Result<SdkConfig, Box<dyn Error>> {
    Ok(sdk_config(&moto()?.endpoint))
}

fn sdk_config(endpoint: &str) -> SdkConfig {
    let credentials = Credentials::new("AKIDSTORECONTRACT", STATIC_SECRET, None, None, "store-contract-test");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .endpoint_url(endpoint)
        .build()
}

/// The emulator shared by every test in this binary.
struct Moto {
    endpoint: String,
    /// The write end of the guard shell's standard input. The shell kills the server when
    /// this closes, which the kernel does when the test binary exits in any way.
    _guard: Mutex<ChildStdin>,
}

static MOTO: OnceLock<Result<Moto, String>> = OnceLock::new();

fn moto() -> Result<&'static Moto, Box<dyn Error>> {
    MOTO.get_or_init(start_moto).as_ref().map_err(|error| error.clone().into())
}

/// Runs the server under a shell that waits for its standard input to close and then kills
/// it, because Rust runs no destructor for a static at exit.
const GUARD_SCRIPT: &str = r#""$1" -H 127.0.0.1 -p 0 & server=$!; read -r _; kill "$server""#;

/// How long the server may take to print its port.
const MOTO_START_TIMEOUT: StdDuration = StdDuration::from_secs(60);

fn start_moto() -> Result<Moto, String> {
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/.venv/bin/moto_server");
    if !std::path::Path::new(server).is_file() {
        return Err(format!("`{server}` not found; install it with `bash infra/install-test-deps.sh`"));
    }

    let mut child = Command::new("sh")
        .args(["-c", GUARD_SCRIPT, "moto-guard", server])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("failed to start `{server}`: {error}"))?;
    let guard = child.stdin.take().ok_or("the guard shell has no standard input")?;
    let stderr = child.stderr.take().ok_or("the guard shell has no standard error")?;

    let port = read_port(stderr)?;
    Ok(Moto { endpoint: format!("http://127.0.0.1:{port}"), _guard: Mutex::new(guard) })
}

/// Reads the server's standard error until it names its port, and copies all of it to
/// `store_contract-moto.log` in the target's temporary directory, so the pipe never fills.
fn read_port(stderr: std::process::ChildStderr) -> Result<u16, String> {
    let (sender, receiver) = mpsc::channel();
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("store_contract-moto.log");

    std::thread::spawn(move || {
        let mut log = std::fs::File::create(&log_path).ok();
        let mut port_sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(log) = log.as_mut() {
                let _ = writeln!(log, "{line}");
            }
            if !port_sent && let Some(port) = line.split("Running on http://127.0.0.1:").nth(1) {
                port_sent = sender.send(port.trim().parse::<u16>().ok()).is_ok();
            }
        }
    });

    match receiver.recv_timeout(MOTO_START_TIMEOUT) {
        Ok(Some(port)) => Ok(port),
        Ok(None) => Err("moto_server printed a port that is not a number".to_owned()),
        Err(_) => Err(format!("moto_server did not print its port within {} s", MOTO_START_TIMEOUT.as_secs())),
    }
}

/// Declares each case as a test on SQLite and a test on AWS.
macro_rules! contract_tests {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> super::TestResult {
                    super::cases::$case(&super::sqlite_backend()?).await
                }
            )*
        }

        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> super::TestResult {
                    super::cases::$case(&super::aws_backend().await?).await
                }
            )*
        }
    };
}

contract_tests!(
    models_round_trip,
    model_without_credentials_round_trips,
    put_model_replaces_credentials_and_scope,
    is_empty_until_first_model,
    policy_versions_round_trip,
    restoring_old_yaml_adds_newest_version,
    versions_list_newest_first_without_yaml,
    unicode_author_and_comment_round_trip,
    stale_base_conflicts_naming_current,
    concurrent_saves_from_same_base_conflict,
    save_without_base_conflicts_once_a_version_exists,
    save_with_base_conflicts_while_none_exists,
    hostile_version_ids_are_not_found,
    session_trace_keeps_record_order,
    hostile_session_ids_have_empty_traces,
    duplicate_event_is_stored_once,
    recording_outcome_replaces_event_once,
    recent_sessions_counts_calls_and_denials,
    recent_sessions_honours_limit,
    session_model_is_model_of_earliest_call,
    anomaly_is_recorded_once_and_kept_out_of_calls,
    alerts_list_newest_first_within_range,
    quarantine_is_set_kept_and_lifted,
    anomaly_and_its_quarantine_are_stored_together,
);

/// An anomaly event about `session_id`, with an id that depends only on `key`, as the
/// detectors derive theirs.
fn anomaly_event(key: &str, session_id: &str, time: OffsetDateTime) -> AuditEvent {
    AuditEvent {
        event_id: mcpsec_gateway::anomaly::window_anomaly_id(Detector::DenialSpike, AnomalyScope::Session, key, 0),
        time,
        session_id: session_id.to_owned(),
        model_id: "gpt-4o".to_owned(),
        key_id: None,
        route: Route::Gateway,
        tool_name: String::new(),
        input: None,
        decision: Outcome::Alert,
        reason: format!("denial spike `{key}`"),
        rule: Some("anomaly:denial_spike".to_owned()),
        rules: Vec::new(),
        shadow: None,
        upstream: None,
        latency_ms: 0.0,
        kind: EventKind::Anomaly,
        anomaly: Some(Anomaly {
            detector: Detector::DenialSpike,
            scope: AnomalyScope::Session,
            subject: session_id.to_owned(),
            observed: 11,
            threshold: 10,
            window_seconds: 120,
            window_start: time,
            baseline: None,
            trigger_event_id: "0195f1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1b".to_owned(),
            tools: Vec::new(),
            quarantined_until: None,
        }),
    }
}

fn model(model_id: &str, keys: &[&str], tools: &[&str]) -> Result<ModelEntry, Box<dyn Error>> {
    let credentials =
        keys.iter().map(|key| Credential { hash: hash_key(key), expires: None, revoked: false }).collect();
    Ok(ModelEntry {
        model_id: model_id.to_owned(),
        credentials,
        scope: Scope::new(tools)?,
        revoked: false,
        quarantined_until: None,
    })
}

/// The fields of a model entry, which has no `PartialEq`.
type ModelFields = (String, bool, Vec<String>, Vec<([u8; 32], Option<OffsetDateTime>, bool)>);

fn fields(entry: &ModelEntry) -> ModelFields {
    let credentials =
        entry.credentials.iter().map(|credential| (credential.hash, credential.expires, credential.revoked)).collect();
    (entry.model_id.clone(), entry.revoked, entry.scope.patterns().to_vec(), credentials)
}

/// Returns the time an hour ago, recent enough for the AWS store's search of the last days.
fn t0() -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::hours(1)
}

fn event(session_id: &str, model_id: &str, decision: Outcome, time: OffsetDateTime) -> AuditEvent {
    AuditEvent {
        event_id: Uuid::now_v7().to_string(),
        time,
        session_id: session_id.to_owned(),
        model_id: model_id.to_owned(),
        key_id: Some("k_0123456789ab".to_owned()),
        route: Route::Mcp,
        tool_name: "calendar.list_events".to_owned(),
        input: Some(json!({ "calendar": "work", "note": "line one\nline two" })),
        decision,
        reason: "allowed by rule `read-calendar`".to_owned(),
        rule: Some("read-calendar".to_owned()),
        rules: vec!["read-calendar".to_owned()],
        shadow: None,
        upstream: None,
        latency_ms: 1.25,
        kind: EventKind::ToolCall,
        anomaly: None,
    }
}

fn with_outcome(event: &AuditEvent) -> AuditEvent {
    let mut completed = event.clone();
    completed.upstream = Some(UpstreamOutcome {
        upstream: "default".to_owned(),
        status: "ok".to_owned(),
        latency_ms: 1.5,
        response_bytes: 42,
        error: None,
    });
    completed
}

mod cases {
    use super::*;

    pub(super) async fn models_round_trip(backend: &Backend) -> TestResult {
        let mut rotated = model("gpt-4o", &["old-key", "new-key"], &["calendar.*", "search.*"])?;
        if let Some(old) = rotated.credentials.first_mut() {
            old.expires = Some(datetime!(2025-12-31 01:00:00.123456789 +01:00));
            old.revoked = true;
        }
        let mut retired = model("retired", &["retired-key"], &["*"])?;
        retired.revoked = true;

        backend.keys.put_model(&retired).await?;
        backend.keys.put_model(&rotated).await?;
        let loaded = backend.keys.load_models().await?;

        let loaded: Vec<ModelFields> = loaded.iter().map(fields).collect();
        assert_eq!(loaded, vec![fields(&rotated), fields(&retired)], "models come back sorted by id");
        Ok(())
    }

    pub(super) async fn model_without_credentials_round_trips(backend: &Backend) -> TestResult {
        let keyless = model("keyless", &[], &["search.*"])?;

        backend.keys.put_model(&keyless).await?;

        let loaded: Vec<ModelFields> = backend.keys.load_models().await?.iter().map(fields).collect();
        assert_eq!(loaded, vec![fields(&keyless)]);
        Ok(())
    }

    pub(super) async fn put_model_replaces_credentials_and_scope(backend: &Backend) -> TestResult {
        backend.keys.put_model(&model("gpt-4o", &["old-key", "new-key"], &["calendar.*"])?).await?;
        let replacement = model("gpt-4o", &["newest-key"], &["search.*"])?;

        backend.keys.put_model(&replacement).await?;

        let loaded: Vec<ModelFields> = backend.keys.load_models().await?.iter().map(fields).collect();
        assert_eq!(loaded, vec![fields(&replacement)]);
        Ok(())
    }

    pub(super) async fn is_empty_until_first_model(backend: &Backend) -> TestResult {
        assert!(backend.keys.is_empty().await?);

        backend.keys.put_model(&model("gpt-4o", &["key"], &["*"])?).await?;

        assert!(!backend.keys.is_empty().await?);
        Ok(())
    }

    pub(super) async fn policy_versions_round_trip(backend: &Backend) -> TestResult {
        assert_eq!(backend.policy.current().await?, None);
        assert!(backend.policy.versions().await?.is_empty());

        let first = backend.policy.save("default: deny\n", None, "import", None).await?;
        let second = backend.policy.save("default: allow\n", Some(&first.version), "k_admin", Some("open up")).await?;

        assert_ne!(first.version, second.version);
        assert_eq!(second.author, "k_admin");
        assert_eq!(second.comment.as_deref(), Some("open up"));
        assert_eq!(backend.policy.current().await?, Some(second.clone()));
        assert_eq!(backend.policy.version(&first.version).await?, first);
        assert_eq!(backend.policy.version(&second.version).await?, second);
        Ok(())
    }

    /// The rollback flow: read an old version by id and save its YAML on top of the newest.
    pub(super) async fn restoring_old_yaml_adds_newest_version(backend: &Backend) -> TestResult {
        let first = backend.policy.save("default: deny\n", None, "import", None).await?;
        let second = backend.policy.save("default: allow\n", Some(&first.version), "k_admin", None).await?;

        let old = backend.policy.version(&first.version).await?;
        let restored = backend.policy.save(&old.yaml, Some(&second.version), "k_admin", Some("roll back")).await?;

        assert_ne!(restored.version, first.version, "a restore is a new version");
        assert_ne!(restored.version, second.version);
        assert_eq!(backend.policy.current().await?, Some(restored.clone()));
        assert_eq!(restored.yaml, "default: deny\n");
        let ids: Vec<String> = backend.policy.versions().await?.into_iter().map(|version| version.version).collect();
        assert_eq!(ids, vec![restored.version, second.version, first.version]);
        Ok(())
    }

    pub(super) async fn versions_list_newest_first_without_yaml(backend: &Backend) -> TestResult {
        let first = backend.policy.save("default: deny\n", None, "import", None).await?;
        let second = backend.policy.save("default: allow\n", Some(&first.version), "k_admin", Some("open up")).await?;

        let listed = backend.policy.versions().await?;

        let ids: Vec<&str> = listed.iter().map(|version| version.version.as_str()).collect();
        assert_eq!(ids, vec![second.version.as_str(), first.version.as_str()]);
        assert!(listed.iter().all(|version| version.yaml.is_empty()), "{listed:?}");
        let sizes: Vec<u64> = listed.iter().map(|version| version.size).collect();
        assert_eq!(sizes, vec![15, 14], "listed sizes are the YAML lengths in bytes");
        let newest = listed.first().ok_or("no versions listed")?;
        assert_eq!(
            (newest.saved_at, newest.author.as_str(), newest.comment.as_deref()),
            (second.saved_at, "k_admin", Some("open up"))
        );
        let oldest = listed.last().ok_or("no versions listed")?;
        assert_eq!(
            (oldest.saved_at, oldest.author.as_str(), oldest.comment.as_deref()),
            (first.saved_at, "import", None)
        );
        Ok(())
    }

    /// S3 metadata must be ASCII, so the AWS store encodes author and comment.
    pub(super) async fn unicode_author_and_comment_round_trip(backend: &Backend) -> TestResult {
        let comment = "Regel „lesen“ erlaubt 🔒\nzweite Zeile; x-amz-meta-comment: = ?";

        let saved = backend.policy.save("default: deny\n", None, "k_ädmin", Some(comment)).await?;

        let read = backend.policy.version(&saved.version).await?;
        assert_eq!(read.author, "k_ädmin");
        assert_eq!(read.comment.as_deref(), Some(comment));
        let listed = backend.policy.versions().await?;
        assert_eq!(listed.first().and_then(|version| version.comment.as_deref()), Some(comment));
        Ok(())
    }

    pub(super) async fn stale_base_conflicts_naming_current(backend: &Backend) -> TestResult {
        let first = backend.policy.save("default: deny\n", None, "import", None).await?;
        let second = backend.policy.save("default: allow\n", Some(&first.version), "k_left", None).await?;

        let result = backend.policy.save("rules: []\n", Some(&first.version), "k_right", None).await;

        let Err(StoreError::Conflict(message)) = result else {
            return Err(format!("expected a conflict, got {result:?}").into());
        };
        assert!(message.contains(&format!("`{}`", second.version)), "{message}");
        assert_eq!(backend.policy.current().await?, Some(second));
        Ok(())
    }

    pub(super) async fn concurrent_saves_from_same_base_conflict(backend: &Backend) -> TestResult {
        let base = backend.policy.save("default: deny\n", None, "import", None).await?;

        let (left, right) = tokio::join!(
            backend.policy.save("default: allow\n", Some(&base.version), "k_left", None),
            backend.policy.save("rules: []\n", Some(&base.version), "k_right", None),
        );

        let (winner, loser) = match (left, right) {
            (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
            (left, right) => return Err(format!("expected one save to win, got {left:?} and {right:?}").into()),
        };
        let StoreError::Conflict(message) = loser else {
            return Err(format!("expected a conflict, got {loser:?}").into());
        };
        assert!(message.contains(&format!("`{}`", winner.version)), "{message}");
        assert_eq!(backend.policy.current().await?, Some(winner));
        assert_eq!(backend.policy.versions().await?.len(), 2);
        Ok(())
    }

    pub(super) async fn save_without_base_conflicts_once_a_version_exists(backend: &Backend) -> TestResult {
        let first = backend.policy.save("default: deny\n", None, "import", None).await?;

        let result = backend.policy.save("default: allow\n", None, "import", None).await;

        let expected = format!("`{}`", first.version);
        assert!(matches!(result, Err(StoreError::Conflict(ref message)) if message.contains(&expected)), "{result:?}");
        assert_eq!(backend.policy.versions().await?.len(), 1);
        Ok(())
    }

    pub(super) async fn save_with_base_conflicts_while_none_exists(backend: &Backend) -> TestResult {
        let result = backend.policy.save("default: allow\n", Some("v000001"), "k_admin", None).await;

        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
        assert_eq!(backend.policy.current().await?, None);
        Ok(())
    }

    /// Version ids come from URLs, so any text must be harmless and unknown.
    pub(super) async fn hostile_version_ids_are_not_found(backend: &Backend) -> TestResult {
        let saved = backend.policy.save("default: deny\n", None, "import", None).await?;
        let huge = "v".repeat(100_000);
        let hostile = [
            "../x",
            "../../etc/passwd",
            "v1' OR 1=1 --",
            "",
            huge.as_str(),
            "%",
            "%2e%2e%2fx",
            "null",
            "x?versionId=y&a=b",
            "line\nbreak",
            "é",
            "v000001; DROP TABLE policy_versions",
        ];

        for id in hostile {
            let result = backend.policy.version(id).await;
            let id_prefix: String = id.chars().take(40).collect();
            assert!(matches!(result, Err(StoreError::NotFound(_))), "id {id_prefix:?} gave {result:?}");
        }

        assert_eq!(backend.policy.version(&saved.version).await?.yaml, "default: deny\n");
        assert_eq!(backend.policy.versions().await?.len(), 1);
        Ok(())
    }

    pub(super) async fn session_trace_keeps_record_order(backend: &Backend) -> TestResult {
        let t0 = t0();
        let events: Vec<AuditEvent> = [3, 1, 2, 0]
            .iter()
            .map(|&seconds| event("session-a", "gpt-4o", Outcome::Allow, t0 + Duration::seconds(seconds)))
            .collect();
        backend.audit.record(&event("session-b", "gpt-4o", Outcome::Allow, t0)).await?;

        for recorded in &events {
            backend.audit.record(recorded).await?;
        }

        assert_eq!(backend.audit.session_trace("session-a").await?, events);
        assert!(backend.audit.session_trace("no-such-session").await?.is_empty());
        Ok(())
    }

    pub(super) async fn hostile_session_ids_have_empty_traces(backend: &Backend) -> TestResult {
        backend.audit.record(&event("session-a", "gpt-4o", Outcome::Allow, t0())).await?;
        let huge = "s".repeat(5_000);

        for id in ["", "../session-a", "session-a' OR 1=1 --", "S#session-a", "session-a\0", huge.as_str()] {
            let trace = backend.audit.session_trace(id).await?;
            assert!(
                trace.is_empty(),
                "session id {:?} returned {} events",
                id.chars().take(40).collect::<String>(),
                trace.len()
            );
        }
        Ok(())
    }

    pub(super) async fn duplicate_event_is_stored_once(backend: &Backend) -> TestResult {
        let recorded = event("session-a", "gpt-4o", Outcome::Allow, t0());

        backend.audit.record(&recorded).await?;
        backend.audit.record(&recorded).await?;

        assert_eq!(backend.audit.session_trace("session-a").await?, vec![recorded]);
        let sessions = backend.audit.recent_sessions(10).await?;
        assert_eq!(sessions.first().map(|session| session.calls), Some(1));
        Ok(())
    }

    pub(super) async fn recording_outcome_replaces_event_once(backend: &Backend) -> TestResult {
        let decided = event("session-a", "gpt-4o", Outcome::Allow, t0());
        let completed = with_outcome(&decided);

        backend.audit.record(&decided).await?;
        backend.audit.record(&completed).await?;
        backend.audit.record(&completed).await?;

        assert_eq!(
            backend.audit.session_trace("session-a").await?,
            vec![completed],
            "the stored event is the completed one"
        );
        let sessions = backend.audit.recent_sessions(10).await?;
        assert_eq!(sessions.first().map(|session| session.calls), Some(1), "the call is counted once");
        Ok(())
    }

    pub(super) async fn recent_sessions_counts_calls_and_denials(backend: &Backend) -> TestResult {
        let t0 = t0();
        let calls = [
            ("session-a", "gpt-4o", Outcome::Allow, 0),
            ("session-a", "gpt-4o", Outcome::Deny, 1),
            ("session-a", "gpt-4o", Outcome::Unauthorized, 2),
            ("session-b", "claude", Outcome::Allow, 10),
            ("session-c", "mistral", Outcome::Error, 5),
        ];
        for (session, model, decision, seconds) in calls {
            backend.audit.record(&event(session, model, decision, t0 + Duration::seconds(seconds))).await?;
        }

        let sessions = backend.audit.recent_sessions(10).await?;

        let order: Vec<&str> = sessions.iter().map(|session| session.session_id.as_str()).collect();
        assert_eq!(order, vec!["session-b", "session-c", "session-a"]);
        let oldest = sessions.last().ok_or("no sessions listed")?;
        assert_eq!(oldest.model_id, "gpt-4o");
        assert_eq!(oldest.calls, 3);
        assert_eq!(oldest.denied, 2);
        assert_eq!(oldest.first_seen, t0);
        assert_eq!(oldest.last_seen, t0 + Duration::seconds(2));
        let newest = sessions.first().ok_or("no sessions listed")?;
        assert_eq!((newest.model_id.as_str(), newest.calls, newest.denied), ("claude", 1, 0));
        Ok(())
    }

    pub(super) async fn anomaly_is_recorded_once_and_kept_out_of_calls(backend: &Backend) -> TestResult {
        let t0 = t0();
        let call = event("session-a", "gpt-4o", Outcome::Deny, t0);
        backend.audit.record(&call).await?;
        let anomaly = anomaly_event("session-a spike", "session-a", t0 + Duration::seconds(1));

        assert!(backend.audit.record_new(&anomaly).await?, "the first write of an anomaly stores it");
        let mut again = anomaly.clone();
        again.time += Duration::seconds(5);
        assert!(!backend.audit.record_new(&again).await?, "a second write with the same id stores nothing");

        let alerts = backend.audit.alerts(t0 - Duration::hours(1), t0 + Duration::hours(1), 10).await?;
        assert_eq!(alerts, vec![anomaly.clone()], "the alert is the first version, unchanged");
        let trace = backend.audit.session_trace("session-a").await?;
        assert_eq!(trace, vec![call.clone()], "a session's trace lists its calls, not its anomalies");
        let sessions = backend.audit.recent_sessions(10).await?;
        let counts: Vec<(&str, u64, u64)> =
            sessions.iter().map(|session| (session.session_id.as_str(), session.calls, session.denied)).collect();
        assert_eq!(counts, vec![("session-a", 1, 1)], "an anomaly is not a call of its session");
        Ok(())
    }

    pub(super) async fn alerts_list_newest_first_within_range(backend: &Backend) -> TestResult {
        let t0 = t0();
        let stored: Vec<AuditEvent> = (0..4)
            .map(|index| anomaly_event(&format!("spike {index}"), "session-b", t0 + Duration::seconds(index * 10)))
            .collect();
        for anomaly in &stored {
            assert!(backend.audit.record_new(anomaly).await?);
        }
        backend.audit.record(&event("session-b", "gpt-4o", Outcome::Deny, t0 + Duration::seconds(15))).await?;

        let alerts = backend.audit.alerts(t0 + Duration::seconds(5), t0 + Duration::seconds(30), 10).await?;
        let ids: Vec<&str> = alerts.iter().map(|alert| alert.event_id.as_str()).collect();
        let stored_ids: Vec<&str> = stored.iter().map(|anomaly| anomaly.event_id.as_str()).collect();
        assert_eq!(
            ids,
            stored_ids.get(1..3).ok_or("too few")?.iter().rev().copied().collect::<Vec<_>>(),
            "newest first, `until` excluded"
        );

        let newest = backend.audit.alerts(t0, t0 + Duration::hours(1), 1).await?;
        assert_eq!(newest.first().map(|alert| alert.event_id.as_str()), stored_ids.last().copied());
        Ok(())
    }

    pub(super) async fn anomaly_and_its_quarantine_are_stored_together(backend: &Backend) -> TestResult {
        backend.keys.put_model(&model("gpt-4o", &["key-1"], &["calendar.*"])?).await?;
        let until = datetime!(2031-01-02 03:04:05 UTC);
        let mut spike = anomaly_event("gpt-4o spike", "", t0());
        if let Some(anomaly) = spike.anomaly.as_mut() {
            anomaly.scope = AnomalyScope::Model;
            anomaly.subject = "gpt-4o".to_owned();
            anomaly.quarantined_until = Some(until);
        }

        assert!(backend.audit.record_new(&spike).await?);
        let quarantined = backend.keys.load_models().await?;
        assert_eq!(quarantined.first().and_then(|entry| entry.quarantined_until), Some(until));

        // An admin lifts it; the same anomaly detected again (a replay, another shard) is
        // already stored, so it does not quarantine the model again.
        backend.keys.set_quarantine("gpt-4o", None).await?;
        assert!(!backend.audit.record_new(&spike).await?);
        let lifted = backend.keys.load_models().await?;
        assert_eq!(lifted.first().and_then(|entry| entry.quarantined_until), None);

        let mut unknown = anomaly_event("ghost spike", "", t0());
        unknown.model_id = "ghost".to_owned();
        if let Some(anomaly) = unknown.anomaly.as_mut() {
            anomaly.quarantined_until = Some(until);
        }
        assert!(backend.audit.record_new(&unknown).await?, "an anomaly of an unknown model is stored");
        let models: Vec<String> = backend.keys.load_models().await?.into_iter().map(|entry| entry.model_id).collect();
        assert_eq!(models, ["gpt-4o"], "and no model is created for it");
        Ok(())
    }

    pub(super) async fn quarantine_is_set_kept_and_lifted(backend: &Backend) -> TestResult {
        backend.keys.put_model(&model("gpt-4o", &["key-1"], &["calendar.*"])?).await?;
        let until = datetime!(2031-01-02 03:04:05 UTC);

        assert!(backend.keys.set_quarantine("gpt-4o", Some(until)).await?);
        let models = backend.keys.load_models().await?;
        let stored = models.first().ok_or("no model")?;
        assert_eq!(stored.quarantined_until, Some(until));
        assert_eq!(fields(stored), fields(&model("gpt-4o", &["key-1"], &["calendar.*"])?), "credentials unchanged");

        let mut rotated = stored.clone();
        rotated.credentials.push(Credential { hash: hash_key("key-2"), expires: None, revoked: false });
        backend.keys.put_model(&rotated).await?;
        let kept = backend.keys.load_models().await?;
        assert_eq!(kept.first().and_then(|entry| entry.quarantined_until), Some(until), "put_model keeps it");

        assert!(backend.keys.set_quarantine("gpt-4o", None).await?);
        let lifted = backend.keys.load_models().await?;
        assert_eq!(lifted.first().and_then(|entry| entry.quarantined_until), None);
        assert!(!backend.keys.set_quarantine("no-such-model", Some(until)).await?, "an unknown model is not created");
        assert_eq!(backend.keys.load_models().await?.len(), 1);
        Ok(())
    }

    pub(super) async fn recent_sessions_honours_limit(backend: &Backend) -> TestResult {
        let t0 = t0();
        for (session, seconds) in [("session-a", 0), ("session-b", 10), ("session-c", 5)] {
            backend.audit.record(&event(session, "gpt-4o", Outcome::Allow, t0 + Duration::seconds(seconds))).await?;
        }
        backend.audit.record(&event("session-a", "gpt-4o", Outcome::Deny, t0 + Duration::seconds(1))).await?;

        let newest_only = backend.audit.recent_sessions(1).await?;
        let none = backend.audit.recent_sessions(0).await?;
        let all = backend.audit.recent_sessions(usize::MAX).await?;

        assert_eq!(
            newest_only.iter().map(|session| session.session_id.as_str()).collect::<Vec<_>>(),
            vec!["session-b"]
        );
        assert!(none.is_empty());
        assert_eq!(
            all.iter().map(|session| session.session_id.as_str()).collect::<Vec<_>>(),
            vec!["session-b", "session-c", "session-a"]
        );
        assert_eq!(all.last().map(|session| (session.calls, session.denied)), Some((2, 1)));
        Ok(())
    }

    pub(super) async fn session_model_is_model_of_earliest_call(backend: &Backend) -> TestResult {
        let t0 = t0();
        backend.audit.record(&event("session-a", "late-model", Outcome::Allow, t0 + Duration::seconds(1))).await?;
        backend.audit.record(&event("session-a", "early-model", Outcome::Allow, t0)).await?;

        let sessions = backend.audit.recent_sessions(10).await?;

        let session = sessions.first().ok_or("no sessions listed")?;
        assert_eq!(session.model_id, "early-model");
        assert_eq!(session.first_seen, t0);
        assert_eq!(session.last_seen, t0 + Duration::seconds(1));
        Ok(())
    }
}

/// Checks of the DynamoDB and S3 layout that the SAM template, the SIEM function and
/// operators rely on.
mod aws_only {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::{
        AttributeValue, KeySchemaElement, KeyType, ScalarAttributeType, StreamViewType, TimeToLiveStatus,
    };
    use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType};
    use aws_sdk_s3::types::ServerSideEncryption;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_has_one_new_image_per_event() -> TestResult {
        let (stores, names) = aws_stores().await?;
        let first = event("session-a", "gpt-4o", Outcome::Allow, t0());
        let second = event("session-a", "gpt-4o", Outcome::Deny, t0());
        let completed = with_outcome(&first);

        for recorded in [&first, &second, &first, &completed, &completed] {
            stores.record(recorded).await?;
        }

        let records = read_stream(&moto_config()?, &names.sessions_table).await?;
        let summary: Vec<(OperationType, AuditEvent)> = records
            .into_iter()
            .map(|(operation, image)| {
                Ok::<_, Box<dyn Error>>((operation, serde_json::from_str(string(&image, "event")?)?))
            })
            .collect::<Result<_, _>>()?;
        assert_eq!(
            summary,
            vec![(OperationType::Insert, first), (OperationType::Insert, second), (OperationType::Modify, completed)],
            "a duplicate writes nothing, a replacement one modification"
        );
        Ok(())
    }

    /// Returns the event name and new image of every record in the table's stream.
    async fn read_stream(
        config: &SdkConfig,
        table: &str,
    ) -> Result<Vec<(OperationType, HashMap<String, StreamValue>)>, Box<dyn Error>> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let description =
            dynamodb.describe_table().table_name(table).send().await?.table.ok_or("no table description")?;
        let stream_arn = description.latest_stream_arn().ok_or("the table has no stream")?;

        let streams = aws_sdk_dynamodbstreams::Client::new(config);
        let stream = streams
            .describe_stream()
            .stream_arn(stream_arn)
            .send()
            .await?
            .stream_description
            .ok_or("no stream description")?;
        let mut records = Vec::new();
        for shard in stream.shards() {
            let shard_id = shard.shard_id().ok_or("a shard has no id")?;
            let iterator = streams
                .get_shard_iterator()
                .stream_arn(stream_arn)
                .shard_id(shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator;
            records.extend(read_shard(&streams, iterator).await?);
        }
        Ok(records)
    }

    type StreamValue = aws_sdk_dynamodbstreams::types::AttributeValue;

    async fn read_shard(
        streams: &aws_sdk_dynamodbstreams::Client,
        mut iterator: Option<String>,
    ) -> Result<Vec<(OperationType, HashMap<String, StreamValue>)>, Box<dyn Error>> {
        let mut records = Vec::new();
        while let Some(current) = iterator {
            let output = streams.get_records().shard_iterator(current).send().await?;
            if output.records().is_empty() {
                break;
            }
            for record in output.records() {
                let operation = record.event_name().ok_or("a record has no event name")?.clone();
                let image =
                    record.dynamodb().and_then(|change| change.new_image()).ok_or("a record has no new image")?;
                records.push((operation, image.clone()));
            }
            iterator = output.next_shard_iterator;
        }
        Ok(records)
    }

    fn string<'a>(image: &'a HashMap<String, StreamValue>, name: &str) -> Result<&'a str, Box<dyn Error>> {
        let value = image.get(name).ok_or_else(|| format!("no attribute `{name}`"))?;
        value.as_s().map(String::as_str).map_err(|_| format!("attribute `{name}` is not a string").into())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn items_follow_documented_layout() -> TestResult {
        let (stores, names) = aws_stores().await?;
        let stores = stores.with_retention(StdDuration::from_secs(30 * 86_400));
        let mut entry = model("gpt-4o", &["plaintext-model-key"], &["calendar.*"])?;
        if let Some(credential) = entry.credentials.first_mut() {
            credential.expires = Some(datetime!(2030-01-02 03:04:05 UTC));
        }
        let recorded = event("session-a", "gpt-4o", Outcome::Deny, datetime!(2026-03-04 05:06:07.5 UTC));

        stores.put_model(&entry).await?;
        stores.record(&recorded).await?;

        let dynamodb = aws_sdk_dynamodb::Client::new(&moto_config()?);
        let model_item = get_item(&dynamodb, &names.keys_table, &[("model_id", "gpt-4o")]).await?;
        assert!(!format!("{model_item:?}").contains("plaintext-model-key"), "the key is stored only hashed");
        let credentials =
            model_item.get("credentials").and_then(|value| value.as_l().ok()).ok_or("no credential list")?;
        let credential = credentials.first().and_then(|value| value.as_m().ok()).ok_or("no credential map")?;
        let hash = credential.get("hash").and_then(|value| value.as_b().ok()).ok_or("no binary hash")?;
        assert_eq!(hash.as_ref(), hash_key("plaintext-model-key").as_slice());
        assert_eq!(
            credential.get("key_id"),
            Some(&AttributeValue::S(mcpsec_policy::keys::key_id(&hash_key("plaintext-model-key"))))
        );
        assert_eq!(credential.get("expires"), Some(&AttributeValue::S("2030-01-02T03:04:05Z".to_owned())));
        assert_eq!(credential.get("revoked"), Some(&AttributeValue::Bool(false)));
        assert_eq!(model_item.get("tools"), Some(&AttributeValue::L(vec![AttributeValue::S("calendar.*".to_owned())])));
        assert_eq!(model_item.get("revoked"), Some(&AttributeValue::Bool(false)));

        let event_key = format!("E#{}", recorded.event_id);
        let event_item =
            get_item(&dynamodb, &names.sessions_table, &[("pk", "S#session-a"), ("sk", &event_key)]).await?;
        let text = |name: &str| event_item.get(name).cloned();
        assert_eq!(text("session_id"), Some(AttributeValue::S("session-a".to_owned())));
        assert_eq!(text("model_id"), Some(AttributeValue::S("gpt-4o".to_owned())));
        assert_eq!(text("decision"), Some(AttributeValue::S("deny".to_owned())));
        assert_eq!(text("time"), Some(AttributeValue::S("2026-03-04T05:06:07.5Z".to_owned())));
        assert_eq!(text("time_ns"), Some(AttributeValue::N("1772600767500000000".to_owned())));
        assert_eq!(text("day"), Some(AttributeValue::S("2026-03-04".to_owned())));
        assert_eq!(text("ttl"), Some(AttributeValue::N((1_772_600_767 + 30 * 86_400).to_string())));
        let json = event_item.get("event").and_then(|value| value.as_s().ok()).ok_or("no event JSON")?;
        assert_eq!(serde_json::from_str::<AuditEvent>(json)?, recorded);
        Ok(())
    }

    async fn get_item(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        key: &[(&str, &str)],
    ) -> Result<HashMap<String, AttributeValue>, Box<dyn Error>> {
        let key =
            key.iter().map(|(name, value)| ((*name).to_owned(), AttributeValue::S((*value).to_owned()))).collect();
        let output = client.get_item().table_name(table).set_key(Some(key)).consistent_read(true).send().await?;
        Ok(output.item.ok_or("item not found")?)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aws_init_is_idempotent() -> TestResult {
        let config = moto_config()?;
        let names = unique_names();

        let first = aws_init(&config, &names).await?;
        let second = aws_init(&config, &names).await?;

        assert!(first.iter().any(|line| line.contains("created table")), "{first:?}");
        assert!(!second.iter().any(|line| line.contains("created")), "{second:?}");
        assert_sessions_table_complete(&config, &names.sessions_table).await?;
        assert_bucket_complete(&config, &names.policy_bucket).await
    }

    /// A sessions table made by hand with only its keys gets the stream, the index and the
    /// time to live.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aws_init_completes_bare_sessions_table() -> TestResult {
        let config = moto_config()?;
        let names = unique_names();
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        dynamodb
            .create_table()
            .table_name(&names.sessions_table)
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build()?)
            .key_schema(KeySchemaElement::builder().attribute_name("sk").key_type(KeyType::Range).build()?)
            .send()
            .await?;

        let lines = aws_init(&config, &names).await?;

        assert!(lines.iter().any(|line| line.contains("turned on the stream")), "{lines:?}");
        assert!(lines.iter().any(|line| line.contains("added index `by_day`")), "{lines:?}");
        assert_sessions_table_complete(&config, &names.sessions_table).await
    }

    fn attribute(name: &str) -> Result<aws_sdk_dynamodb::types::AttributeDefinition, Box<dyn Error>> {
        Ok(aws_sdk_dynamodb::types::AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()?)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aws_init_rejects_table_with_other_keys() -> TestResult {
        let config = moto_config()?;
        let names = unique_names();
        aws_sdk_dynamodb::Client::new(&config)
            .create_table()
            .table_name(&names.keys_table)
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .attribute_definitions(attribute("id")?)
            .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build()?)
            .send()
            .await?;

        let result = aws_init(&config, &names).await;

        let Err(message) = result else { return Err(format!("expected an error, got {result:?}").into()) };
        assert!(message.contains(&format!("`{}`", names.keys_table)), "{message}");
        assert!(message.contains("key schema"), "{message}");
        Ok(())
    }

    async fn assert_sessions_table_complete(config: &SdkConfig, table: &str) -> TestResult {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let description =
            dynamodb.describe_table().table_name(table).send().await?.table.ok_or("no table description")?;
        let stream = description.stream_specification().ok_or("no stream")?;
        assert!(stream.stream_enabled());
        assert_eq!(stream.stream_view_type(), Some(&StreamViewType::NewImage));
        let index = description
            .global_secondary_indexes()
            .iter()
            .find(|index| index.index_name() == Some("by_day"))
            .ok_or("no index by_day")?;
        let index_keys: Vec<(&str, &KeyType)> =
            index.key_schema().iter().map(|key| (key.attribute_name(), key.key_type())).collect();
        assert_eq!(index_keys, vec![("day", &KeyType::Hash), ("time_ns", &KeyType::Range)]);

        let ttl = dynamodb
            .describe_time_to_live()
            .table_name(table)
            .send()
            .await?
            .time_to_live_description
            .ok_or("no time to live")?;
        assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
        assert_eq!(ttl.attribute_name(), Some("ttl"));
        Ok(())
    }

    async fn assert_bucket_complete(config: &SdkConfig, bucket: &str) -> TestResult {
        let s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(config).force_path_style(true).build());
        // moto 5.2.5 names the root element of its GetBucketVersioning response differently
        // from S3, so the SDK cannot parse it. Two writes that keep two versions show it too.
        for body in ["one", "two"] {
            s3.put_object().bucket(bucket).key("probe").body(body.as_bytes().to_vec().into()).send().await?;
        }
        let versions = s3.list_object_versions().bucket(bucket).prefix("probe").send().await?;
        assert_eq!(versions.versions().len(), 2, "versioning keeps both writes");

        let encryption = s3.get_bucket_encryption().bucket(bucket).send().await?;
        let algorithm = encryption
            .server_side_encryption_configuration()
            .and_then(|configuration| configuration.rules().first())
            .and_then(|rule| rule.apply_server_side_encryption_by_default())
            .map(|default| default.sse_algorithm().clone());
        assert_eq!(algorithm, Some(ServerSideEncryption::Aes256));

        let block = s3
            .get_public_access_block()
            .bucket(bucket)
            .send()
            .await?
            .public_access_block_configuration
            .ok_or("no public access block")?;
        let flags = [
            block.block_public_acls(),
            block.ignore_public_acls(),
            block.block_public_policy(),
            block.restrict_public_buckets(),
        ];
        assert_eq!(flags, [Some(true); 4]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_resources_name_aws_init() -> TestResult {
        moto()?;
        let stores = AwsStores::new(&moto_config()?, unique_names());
        let names = stores.names().clone();

        let keys = stores.load_models().await;
        let audit = stores.record(&event("session-a", "gpt-4o", Outcome::Allow, t0())).await;
        let policy = stores.save("default: deny\n", None, "import", None).await;

        for (result, name) in [
            (keys.map(|_| ()), &names.keys_table),
            (audit, &names.sessions_table),
            (policy.map(|_| ()), &names.policy_bucket),
        ] {
            let Err(StoreError::Unavailable(message)) = result else {
                return Err(format!("expected the store to be unavailable, got {result:?}").into());
            };
            assert!(message.contains(&format!("`{name}`")), "{message}");
            assert!(message.contains("mcpsec aws-init"), "{message}");
        }
        Ok(())
    }

    /// A closed port on loopback: every call fails to connect.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_endpoint_is_unavailable() -> TestResult {
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = sdk_config(&format!("http://127.0.0.1:{closed_port}"))
            .into_builder()
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        let stores = AwsStores::new(&config, unique_names());

        let result = stores.session_trace("session-a").await;

        let Err(StoreError::Unavailable(message)) = result else {
            return Err(format!("expected the store to be unavailable, got {result:?}").into());
        };
        assert!(message.contains("session `session-a`"), "{message}");
        assert!(message.contains(&format!("`{}`", stores.names().sessions_table)), "{message}");
        assert!(!message.contains(STATIC_SECRET), "no secret key in {message}");
        assert!(!message.contains("AKIDSTORECONTRACT"), "no access key id in {message}");
        Ok(())
    }
}
