//! The embedded SQLite store: round trips, compare-and-set saves, durable group commit and
//! reopening, each on a fresh temporary data directory.

use std::collections::HashSet;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use mcpsec_gateway::audit::{AuditEvent, EventKind, Outcome, Route};
use mcpsec_gateway::store::sqlite::{AUDIT_LOG_FILE, DATABASE_FILE, Feed, SqliteStore};
use mcpsec_gateway::store::{AuditStore, KeyStore, PolicyStore, StoreError};
use mcpsec_policy::keys::hash_key;
use mcpsec_policy::{Credential, ModelEntry, Scope};
use serde_json::json;
use tempfile::TempDir;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn Error>>;

const T0: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

/// A temporary directory and a store in a `data` folder inside it that `open` must create.
fn open_store() -> Result<(TempDir, SqliteStore), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&data_dir(&dir))?;
    Ok((dir, store))
}

fn data_dir(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("data")
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

fn log_lines(dir: &TempDir) -> Result<Vec<String>, Box<dyn Error>> {
    let text = std::fs::read_to_string(data_dir(dir).join(AUDIT_LOG_FILE))?;
    Ok(text.lines().map(str::to_owned).collect())
}

fn event_ids<'a>(events: impl IntoIterator<Item = &'a AuditEvent>) -> Vec<String> {
    events.into_iter().map(|event| event.event_id.clone()).collect()
}

fn raw_connection(dir: &TempDir) -> rusqlite::Result<rusqlite::Connection> {
    rusqlite::Connection::open(data_dir(dir).join(DATABASE_FILE))
}

#[tokio::test]
async fn models_round_trip() -> TestResult {
    let (_dir, store) = open_store()?;
    let mut rotated = model("gpt-4o", &["old-key", "new-key"], &["calendar.*", "search.*"])?;
    if let Some(old) = rotated.credentials.first_mut() {
        old.expires = Some(datetime!(2025-12-31 01:00:00.123456789 +01:00));
        old.revoked = true;
    }
    let mut retired = model("retired", &["retired-key"], &["*"])?;
    retired.revoked = true;

    store.put_model(&rotated).await?;
    store.put_model(&retired).await?;
    let loaded = store.load_models().await?;

    let loaded: Vec<ModelFields> = loaded.iter().map(fields).collect();
    assert_eq!(loaded, vec![fields(&rotated), fields(&retired)]);
    Ok(())
}

#[tokio::test]
async fn model_without_credentials_round_trips() -> TestResult {
    let (_dir, store) = open_store()?;
    let keyless = model("keyless", &[], &["search.*"])?;

    store.put_model(&keyless).await?;

    let loaded: Vec<ModelFields> = store.load_models().await?.iter().map(fields).collect();
    assert_eq!(loaded, vec![fields(&keyless)]);
    Ok(())
}

#[tokio::test]
async fn put_model_replaces_credentials_and_scope() -> TestResult {
    let (_dir, store) = open_store()?;
    store.put_model(&model("gpt-4o", &["old-key", "new-key"], &["calendar.*"])?).await?;
    let replacement = model("gpt-4o", &["newest-key"], &["search.*"])?;

    store.put_model(&replacement).await?;

    let loaded: Vec<ModelFields> = store.load_models().await?.iter().map(fields).collect();
    assert_eq!(loaded, vec![fields(&replacement)]);
    Ok(())
}

#[tokio::test]
async fn is_empty_until_first_model() -> TestResult {
    let (_dir, store) = open_store()?;
    assert!(store.is_empty().await?);

    store.put_model(&model("gpt-4o", &["key"], &["*"])?).await?;

    assert!(!store.is_empty().await?);
    Ok(())
}

#[tokio::test]
async fn stored_keys_are_hashes_only() -> TestResult {
    let (dir, store) = open_store()?;
    store.put_model(&model("gpt-4o", &["plaintext-model-key"], &["*"])?).await?;
    store.close().await?;

    let bytes = std::fs::read(data_dir(&dir).join(DATABASE_FILE))?;
    let needle = b"plaintext-model-key";
    assert!(!bytes.windows(needle.len()).any(|window| window == needle));
    Ok(())
}

#[tokio::test]
async fn corrupt_scope_names_model() -> TestResult {
    let (dir, store) = open_store()?;
    store.put_model(&model("gpt-4o", &["key"], &["*"])?).await?;
    store.close().await?;
    raw_connection(&dir)?.execute("UPDATE models SET tools = '[]' WHERE model_id = 'gpt-4o'", [])?;

    let store = SqliteStore::open(&data_dir(&dir))?;
    let result = store.load_models().await;

    let Err(StoreError::Corrupt(message)) = result else {
        return Err(format!("expected a corrupt record, got {result:?}").into());
    };
    assert!(message.contains("`gpt-4o`"), "{message}");
    Ok(())
}

#[tokio::test]
async fn policy_versions_round_trip() -> TestResult {
    let (_dir, store) = open_store()?;
    assert_eq!(store.current().await?, None);
    assert!(store.versions().await?.is_empty());

    let first = store.save("default: deny\n", None, "import", None).await?;
    let second = store.save("default: allow\n", Some(&first.version), "k_admin", Some("open up")).await?;

    assert_eq!(first.version, "v000001");
    assert_eq!(second.version, "v000002");
    assert_eq!(second.author, "k_admin");
    assert_eq!(second.comment.as_deref(), Some("open up"));
    assert_eq!(store.current().await?, Some(second.clone()));
    assert_eq!(store.version("v000001").await?, first);
    assert_eq!(store.version("v000002").await?, second);
    Ok(())
}

#[tokio::test]
async fn versions_lists_newest_first_without_yaml() -> TestResult {
    let (_dir, store) = open_store()?;
    let first = store.save("default: deny\n", None, "import", None).await?;
    let second = store.save("default: allow\n", Some(&first.version), "k_admin", None).await?;

    let listed = store.versions().await?;

    let ids: Vec<&str> = listed.iter().map(|version| version.version.as_str()).collect();
    assert_eq!(ids, vec![second.version.as_str(), first.version.as_str()]);
    assert!(listed.iter().all(|version| version.yaml.is_empty()));
    assert_eq!(listed.first().map(|version| version.saved_at), Some(second.saved_at));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_from_same_base_conflict() -> TestResult {
    let (_dir, store) = open_store()?;
    let base = store.save("default: deny\n", None, "import", None).await?;

    let (left, right) = tokio::join!(
        store.save("default: allow\n", Some(&base.version), "k_left", None),
        store.save("rules: []\n", Some(&base.version), "k_right", None),
    );

    let (winner, loser) = match (left, right) {
        (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
        (left, right) => return Err(format!("expected one save to win, got {left:?} and {right:?}").into()),
    };
    assert_eq!(winner.version, "v000002");
    let StoreError::Conflict(message) = loser else {
        return Err(format!("expected a conflict, got {loser:?}").into());
    };
    assert!(message.contains("`v000002`"), "{message}");
    assert_eq!(store.current().await?, Some(winner));
    Ok(())
}

#[tokio::test]
async fn save_without_base_conflicts_once_a_version_exists() -> TestResult {
    let (_dir, store) = open_store()?;
    store.save("default: deny\n", None, "import", None).await?;

    let result = store.save("default: allow\n", None, "import", None).await;

    assert!(matches!(result, Err(StoreError::Conflict(ref message)) if message.contains("`v000001`")), "{result:?}");
    assert_eq!(store.versions().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn save_with_base_conflicts_while_none_exists() -> TestResult {
    let (_dir, store) = open_store()?;

    let result = store.save("default: allow\n", Some("v000001"), "k_admin", None).await;

    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(store.current().await?, None);
    Ok(())
}

#[tokio::test]
async fn hostile_version_ids_are_not_found() -> TestResult {
    let (_dir, store) = open_store()?;
    store.save("default: deny\n", None, "import", None).await?;
    let hostile = [
        "v1' OR 1=1 --",
        "../../etc/passwd",
        "",
        "v000001' --",
        "v000001; DROP TABLE policy_versions",
        "%",
        "v00000_",
        "1",
        "V000001",
    ];

    for id in hostile {
        let result = store.version(id).await;
        assert!(matches!(result, Err(StoreError::NotFound(_))), "id {id:?} gave {result:?}");
    }

    assert_eq!(store.version("v000001").await?.yaml, "default: deny\n");
    assert_eq!(store.versions().await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_land_exactly_once() -> TestResult {
    let (dir, store) = open_store()?;
    let store = Arc::new(store);
    let events: Vec<AuditEvent> =
        (0..200).map(|index| event(&format!("session-{}", index % 10), "gpt-4o", Outcome::Allow, T0)).collect();

    let tasks: Vec<_> = events
        .iter()
        .cloned()
        .map(|event| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.record(&event).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }

    let expected: HashSet<String> = event_ids(&events).into_iter().collect();
    let lines = log_lines(&dir)?;
    assert_eq!(lines.len(), 200);
    let logged: Vec<AuditEvent> = lines.iter().map(|line| serde_json::from_str(line)).collect::<Result<_, _>>()?;
    assert_eq!(event_ids(&logged).into_iter().collect::<HashSet<_>>(), expected);

    let mut stored = Vec::new();
    for session in 0..10 {
        stored.extend(store.session_trace(&format!("session-{session}")).await?);
    }
    assert_eq!(stored.len(), 200);
    assert_eq!(event_ids(&stored).into_iter().collect::<HashSet<_>>(), expected);
    Ok(())
}

/// Takes five to ten seconds, because each batch waits out the store's busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_fail_while_database_locked() -> TestResult {
    let (dir, store) = open_store()?;
    let lock = raw_connection(&dir)?;
    lock.execute_batch("BEGIN IMMEDIATE")?;
    let first = event("session-a", "gpt-4o", Outcome::Allow, T0);
    let second = event("session-a", "gpt-4o", Outcome::Allow, T0);

    let results = tokio::join!(store.record(&first), store.record(&second));

    for result in [results.0, results.1] {
        assert!(
            matches!(result, Err(StoreError::Unavailable(ref message)) if message.contains("locked")),
            "{result:?}"
        );
    }
    assert!(log_lines(&dir)?.is_empty());
    lock.execute_batch("COMMIT")?;
    store.record(&event("session-a", "gpt-4o", Outcome::Allow, T0)).await?;
    assert_eq!(store.session_trace("session-a").await?.len(), 1);
    assert_eq!(log_lines(&dir)?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn logged_line_equals_stored_event() -> TestResult {
    let (dir, store) = open_store()?;
    let recorded = event("session-a", "gpt-4o", Outcome::Deny, T0);

    store.record(&recorded).await?;

    let lines = log_lines(&dir)?;
    assert_eq!(lines, vec![serde_json::to_string(&recorded)?]);
    assert_eq!(store.session_trace("session-a").await?, vec![recorded]);
    Ok(())
}

#[tokio::test]
async fn duplicate_event_id_is_stored_and_logged_once() -> TestResult {
    let (dir, store) = open_store()?;
    let recorded = event("session-a", "gpt-4o", Outcome::Allow, T0);

    store.record(&recorded).await?;
    store.record(&recorded).await?;

    assert_eq!(store.session_trace("session-a").await?.len(), 1);
    assert_eq!(log_lines(&dir)?.len(), 1);
    let sessions = store.recent_sessions(10).await?;
    assert_eq!(sessions.first().map(|session| session.calls), Some(1));
    Ok(())
}

#[tokio::test]
async fn session_trace_keeps_insertion_order() -> TestResult {
    let (_dir, store) = open_store()?;
    let offsets = [3, 1, 2, 0];
    let events: Vec<AuditEvent> = offsets
        .iter()
        .map(|&seconds| event("session-a", "gpt-4o", Outcome::Allow, T0 + Duration::seconds(seconds)))
        .collect();
    store.record(&event("session-b", "gpt-4o", Outcome::Allow, T0)).await?;

    for recorded in &events {
        store.record(recorded).await?;
    }

    let trace = store.session_trace("session-a").await?;
    assert_eq!(trace, events);
    assert!(store.session_trace("no-such-session").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn recording_outcome_replaces_event_once() -> TestResult {
    let (dir, store) = open_store()?;
    let decided = event("session-a", "gpt-4o", Outcome::Allow, T0);
    let mut completed = decided.clone();
    completed.upstream = Some(mcpsec_gateway::audit::UpstreamOutcome {
        upstream: "default".to_owned(),
        status: "ok".to_owned(),
        latency_ms: 1.5,
        response_bytes: 42,
        error: None,
    });

    store.record(&decided).await?;
    store.record(&completed).await?;
    store.record(&completed).await?;

    let trace = store.session_trace("session-a").await?;
    assert_eq!(trace, vec![completed.clone()], "the stored event is the completed one");
    let lines = log_lines(&dir)?;
    assert_eq!(lines.len(), 2, "the log holds the decision, then the completed event");
    assert_eq!(lines.last().map(String::as_str), Some(serde_json::to_string(&completed)?.as_str()));
    let sessions = store.recent_sessions(10).await?;
    assert_eq!(sessions.first().map(|session| session.calls), Some(1), "the call is counted once");
    Ok(())
}

#[tokio::test]
async fn recent_sessions_counts_calls_and_denials() -> TestResult {
    let (_dir, store) = open_store()?;
    let calls = [
        ("session-a", "gpt-4o", Outcome::Allow, 0),
        ("session-a", "gpt-4o", Outcome::Deny, 1),
        ("session-a", "gpt-4o", Outcome::Unauthorized, 2),
        ("session-b", "claude", Outcome::Allow, 10),
        ("session-c", "mistral", Outcome::Error, 5),
    ];
    for (session, model, decision, seconds) in calls {
        store.record(&event(session, model, decision, T0 + Duration::seconds(seconds))).await?;
    }

    let sessions = store.recent_sessions(10).await?;

    let order: Vec<&str> = sessions.iter().map(|session| session.session_id.as_str()).collect();
    assert_eq!(order, vec!["session-b", "session-c", "session-a"]);
    let oldest = sessions.last().ok_or("no sessions listed")?;
    assert_eq!(oldest.model_id, "gpt-4o");
    assert_eq!(oldest.calls, 3);
    assert_eq!(oldest.denied, 2);
    assert_eq!(oldest.first_seen, T0);
    assert_eq!(oldest.last_seen, T0 + Duration::seconds(2));
    let newest = sessions.first().ok_or("no sessions listed")?;
    assert_eq!((newest.calls, newest.denied), (1, 0));
    Ok(())
}

#[tokio::test]
async fn recent_sessions_honours_limit() -> TestResult {
    let (_dir, store) = open_store()?;
    for (session, seconds) in [("session-a", 0), ("session-b", 10), ("session-c", 5)] {
        store.record(&event(session, "gpt-4o", Outcome::Allow, T0 + Duration::seconds(seconds))).await?;
    }

    let one = store.recent_sessions(1).await?;
    let none = store.recent_sessions(0).await?;
    let all = store.recent_sessions(usize::MAX).await?;

    assert_eq!(one.iter().map(|session| session.session_id.as_str()).collect::<Vec<_>>(), vec!["session-b"]);
    assert!(none.is_empty());
    assert_eq!(all.len(), 3);
    Ok(())
}

#[tokio::test]
async fn session_model_is_model_of_earliest_call() -> TestResult {
    let (_dir, store) = open_store()?;
    store.record(&event("session-a", "late-model", Outcome::Allow, T0 + Duration::seconds(1))).await?;
    store.record(&event("session-a", "early-model", Outcome::Allow, T0)).await?;

    let sessions = store.recent_sessions(10).await?;

    let session = sessions.first().ok_or("no sessions listed")?;
    assert_eq!(session.model_id, "early-model");
    assert_eq!(session.first_seen, T0);
    assert_eq!(session.last_seen, T0 + Duration::seconds(1));
    Ok(())
}

/// Stores one of each record, returning what a reopened store must return.
async fn fill(store: &SqliteStore) -> Result<(ModelFields, String, AuditEvent), Box<dyn Error>> {
    let entry = model("gpt-4o", &["key"], &["calendar.*"])?;
    store.put_model(&entry).await?;
    let saved = store.save("default: deny\n", None, "import", None).await?;
    let recorded = event("session-a", "gpt-4o", Outcome::Deny, T0);
    store.record(&recorded).await?;
    Ok((fields(&entry), saved.version, recorded))
}

async fn assert_filled(store: &SqliteStore, expected: &(ModelFields, String, AuditEvent)) -> TestResult {
    let (entry, version, recorded) = expected;
    let models: Vec<ModelFields> = store.load_models().await?.iter().map(fields).collect();
    assert_eq!(models, vec![entry.clone()]);
    assert_eq!(store.current().await?.map(|current| current.version), Some(version.clone()));
    assert_eq!(store.session_trace("session-a").await?, vec![recorded.clone()]);
    assert_eq!(store.recent_sessions(10).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn reopen_after_drop_keeps_everything() -> TestResult {
    let (dir, store) = open_store()?;
    let expected = fill(&store).await?;

    drop(store);
    let store = SqliteStore::open(&data_dir(&dir))?;

    assert_filled(&store, &expected).await?;
    // A dropped store's writer records the log's sync on its way out, which may come after
    // the new store has appended the line again: the log is at least once, never short.
    let lines = log_lines(&dir)?;
    assert!(!lines.is_empty(), "the event's line is in the log");
    let line = serde_json::to_string(&expected.2)?;
    assert!(lines.iter().all(|logged| *logged == line), "every line is the event: {lines:?}");
    Ok(())
}

#[tokio::test]
async fn reopen_after_close_keeps_everything() -> TestResult {
    let (dir, store) = open_store()?;
    let expected = fill(&store).await?;

    store.close().await?;
    let store = SqliteStore::open(&data_dir(&dir))?;

    assert_filled(&store, &expected).await?;
    let next = store.save("default: allow\n", Some(&expected.1), "k_admin", None).await?;
    assert_eq!(next.version, "v000002");
    Ok(())
}

#[tokio::test]
async fn torn_log_line_is_terminated_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(data_dir(&dir))?;
    std::fs::write(data_dir(&dir).join(AUDIT_LOG_FILE), "{\"event_id\":\"cut-off")?;

    let store = SqliteStore::open(&data_dir(&dir))?;
    let recorded = event("session-a", "gpt-4o", Outcome::Allow, T0);
    store.record(&recorded).await?;

    let lines = log_lines(&dir)?;
    assert_eq!(lines, vec!["{\"event_id\":\"cut-off".to_owned(), serde_json::to_string(&recorded)?]);
    Ok(())
}

#[tokio::test]
async fn newer_schema_version_is_rejected() -> TestResult {
    let (dir, store) = open_store()?;
    store.close().await?;
    raw_connection(&dir)?.pragma_update(None, "user_version", 99)?;

    let result = SqliteStore::open(&data_dir(&dir));

    let Err(StoreError::Unavailable(message)) = result else {
        return Err("expected a newer schema version to be rejected".into());
    };
    assert!(message.contains("schema version 99"), "{message}");
    Ok(())
}

#[tokio::test]
async fn open_creates_missing_data_dir() -> TestResult {
    let dir = tempfile::tempdir()?;
    let nested = dir.path().join("a").join("b");

    let store = SqliteStore::open(&nested)?;
    store.close().await?;

    assert!(nested.join(DATABASE_FILE).is_file());
    assert!(nested.join(AUDIT_LOG_FILE).is_file());
    Ok(())
}

/// Records `per_task` events from each of `tasks` concurrent tasks, and returns events per
/// second.
async fn measure_records(data_dir: &Path, tasks: usize, per_task: usize) -> Result<f64, Box<dyn Error>> {
    let store = Arc::new(SqliteStore::open(data_dir)?);
    let started = Instant::now();

    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    store
                        .record(&event(&format!("session-{task}"), "gpt-4o", Outcome::Allow, OffsetDateTime::now_utc()))
                        .await?;
                }
                Ok::<(), StoreError>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await??;
    }

    let total = tasks * per_task;
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Prints `record` throughput. Run with
/// `cargo test --release -p mcpsec-gateway --test sqlite_store -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; prints throughput instead of checking it"]
async fn record_throughput() -> TestResult {
    let dir = tempfile::tempdir()?;
    for (tasks, per_task) in [(1, 200), (64, 200)] {
        let rate = measure_records(&dir.path().join(format!("tasks-{tasks}")), tasks, per_task).await?;
        println!("record: {tasks} tasks x {per_task} events: {rate:.0} events/s");
    }
    Ok(())
}

/// The ids of outbox entries, in feed order.
fn outbox_ids(entries: &[mcpsec_gateway::store::sqlite::OutboxEntry]) -> Vec<String> {
    entries.iter().map(|entry| entry.event.event_id.clone()).collect()
}

#[tokio::test]
async fn outbox_feeds_order_inserts_and_changes() -> TestResult {
    let (_dir, store) = open_store()?;
    let first = event("session-a", "gpt-4o", Outcome::Allow, T0);
    let second = event("session-a", "gpt-4o", Outcome::Deny, T0 + Duration::seconds(1));
    store.record(&first).await?;
    store.record(&second).await?;
    let mut completed = first.clone();
    completed.reason = "allowed, and the upstream answered".to_owned();
    store.record(&completed).await?;

    let inserts = store.outbox(Feed::Inserts, 0, 10).await?;
    assert_eq!(outbox_ids(&inserts), event_ids([&first, &second]), "each event once, in the order first stored");
    assert_eq!(inserts.first().map(|entry| &entry.event), Some(&completed), "with its newest content");

    let changes = store.outbox(Feed::Changes, 0, 10).await?;
    assert_eq!(outbox_ids(&changes), event_ids([&second, &first]), "a replaced event moves to the end");
    let after_second = changes.first().map(|entry| entry.position).ok_or("empty feed")?;
    assert_eq!(outbox_ids(&store.outbox(Feed::Changes, after_second, 10).await?), event_ids([&first]));

    let unchanged = completed.clone();
    store.record(&unchanged).await?;
    assert_eq!(store.outbox(Feed::Changes, 0, 10).await?.len(), 2, "the same content again is no change");
    Ok(())
}

#[tokio::test]
async fn outbox_alerts_feed_lists_anomalies_only() -> TestResult {
    let (_dir, store) = open_store()?;
    let call = event("session-a", "gpt-4o", Outcome::Deny, T0);
    store.record(&call).await?;
    let mut anomaly = event("session-a", "gpt-4o", Outcome::Alert, T0 + Duration::seconds(1));
    anomaly.kind = EventKind::Anomaly;
    anomaly.route = Route::Gateway;

    assert!(store.record_new(&anomaly).await?);
    assert!(!store.record_new(&anomaly).await?, "an anomaly id is stored once");

    assert_eq!(outbox_ids(&store.outbox(Feed::Alerts, 0, 10).await?), event_ids([&anomaly]));
    assert_eq!(outbox_ids(&store.outbox(Feed::Inserts, 0, 10).await?), event_ids([&call, &anomaly]));
    Ok(())
}

#[tokio::test]
async fn outbox_cursor_survives_reopening() -> TestResult {
    let (dir, store) = open_store()?;
    for seconds in 0..3 {
        store.record(&event("session-a", "gpt-4o", Outcome::Allow, T0 + Duration::seconds(seconds))).await?;
    }
    assert_eq!(store.cursor("siem").await?, None, "a consumer starts without a position");
    let entries = store.outbox(Feed::Changes, 0, 2).await?;
    let handled = entries.last().map(|entry| entry.position).ok_or("empty feed")?;
    store.save_cursor("siem", handled).await?;
    store.close().await?;

    let reopened = SqliteStore::open(&data_dir(&dir))?;
    assert_eq!(reopened.cursor("siem").await?, Some(handled));
    assert_eq!(reopened.outbox(Feed::Changes, handled, 10).await?.len(), 1, "only the unhandled event is left");
    reopened.record(&event("session-b", "gpt-4o", Outcome::Deny, T0 + Duration::seconds(9))).await?;
    let after = reopened.outbox(Feed::Changes, handled, 10).await?;
    let positions: Vec<i64> = after.iter().map(|entry| entry.position).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "positions keep growing after a restart");
    Ok(())
}

#[tokio::test]
async fn outbox_position_before_a_time_replays_from_it() -> TestResult {
    let (_dir, store) = open_store()?;
    let old = event("session-a", "gpt-4o", Outcome::Deny, T0);
    let recent = event("session-a", "gpt-4o", Outcome::Deny, T0 + Duration::minutes(10));
    store.record(&old).await?;
    store.record(&recent).await?;

    let position = store.position_before(Feed::Inserts, T0 + Duration::minutes(5)).await?;
    assert_eq!(outbox_ids(&store.outbox(Feed::Inserts, position, 10).await?), event_ids([&recent]));
    let end = store.position_before(Feed::Inserts, T0 + Duration::hours(1)).await?;
    assert!(store.outbox(Feed::Inserts, end, 10).await?.is_empty(), "after the newest event the feed is empty");
    Ok(())
}

/// A crash can lose log lines that were appended but not yet synced. The store records the
/// last synced change, and at the next open appends every event changed after it.
#[tokio::test]
async fn log_lines_lost_before_their_sync_are_appended_at_open() -> TestResult {
    let (dir, store) = open_store()?;
    let first = event("session-a", "gpt-4o", Outcome::Allow, T0);
    store.record(&first).await?;
    store.close().await?;
    let synced: i64 =
        raw_connection(&dir)?.query_row("SELECT synced_change FROM audit_log_state", [], |row| row.get(0))?;
    assert_eq!(synced, 1, "closing the store syncs the log and records its last change");

    let store = SqliteStore::open(&data_dir(&dir))?;
    let second = event("session-b", "gpt-4o", Outcome::Deny, T0);
    let third = event("session-c", "gpt-4o", Outcome::Allow, T0);
    store.record(&second).await?;
    store.record(&third).await?;
    store.close().await?;
    assert_eq!(log_lines(&dir)?.len(), 3);

    // What a power loss right after the two commits leaves: the lines never reached the disk.
    let log = data_dir(&dir).join(AUDIT_LOG_FILE);
    std::fs::write(&log, format!("{}\n", serde_json::to_string(&first)?))?;
    raw_connection(&dir)?.execute("UPDATE audit_log_state SET synced_change = 1", [])?;

    let store = SqliteStore::open(&data_dir(&dir))?;
    let lines = log_lines(&dir)?;
    let logged: Vec<AuditEvent> = lines.iter().map(|line| serde_json::from_str(line)).collect::<Result<_, _>>()?;
    assert_eq!(logged, vec![first, second, third]);
    store.close().await?;

    let store = SqliteStore::open(&data_dir(&dir))?;
    assert_eq!(log_lines(&dir)?.len(), 3, "a log that is complete is not appended to again");
    store.close().await?;
    Ok(())
}

/// Up to schema version 3 every line was synced before its commit, so an upgraded store
/// starts with its log counted as complete and writes no line twice.
#[tokio::test]
async fn upgrade_from_schema_3_counts_the_log_as_complete() -> TestResult {
    let (dir, store) = open_store()?;
    store.record(&event("session-a", "gpt-4o", Outcome::Allow, T0)).await?;
    store.record(&event("session-a", "gpt-4o", Outcome::Deny, T0)).await?;
    store.close().await?;
    let connection = raw_connection(&dir)?;
    connection.execute_batch("DROP TABLE audit_log_state; PRAGMA user_version = 3;")?;
    drop(connection);

    let store = SqliteStore::open(&data_dir(&dir))?;
    store.record(&event("session-b", "gpt-4o", Outcome::Allow, T0)).await?;
    store.close().await?;

    assert_eq!(log_lines(&dir)?.len(), 3);
    let synced: i64 =
        raw_connection(&dir)?.query_row("SELECT synced_change FROM audit_log_state", [], |row| row.get(0))?;
    assert_eq!(synced, 3);
    Ok(())
}
