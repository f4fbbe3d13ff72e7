//! The writer thread: the only connection that writes, fed by a queue.

use std::mem;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, oneshot};

use super::audit_log::AuditLog;
use super::rows::{EventRow, ModelRows, format_time, version_id};
use super::sqlite_error;
use crate::store::{PolicyVersion, StoreError};

/// Maximum number of queued commands that the writer takes as one batch. Every audit event
/// in a batch shares one transaction and one sync of the log.
const MAX_BATCH: usize = 512;

/// Maximum number of commands waiting in the queue. Further senders wait for room.
const QUEUE_CAPACITY: usize = 4096;

/// Maximum time an appended line of `audit.log` waits for its sync. The store's own commit
/// is the durable record; a line lost in a crash is appended again at the next start.
const LOG_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Events read per query when the log is repaired.
const REPAIR_BATCH: i64 = 1_000;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write for the writer thread, with the channel that receives its result.
pub(super) enum Command {
    /// Stores one audit event.
    Record { row: EventRow, reply: Reply<()> },
    /// Replaces one model and its credentials.
    PutModel { rows: ModelRows, reply: Reply<()> },
    /// Saves a policy version if the newest is still the base version.
    SavePolicy { request: SaveRequest, reply: Reply<PolicyVersion> },
    /// Stores one audit event unless its id is stored; returns whether it was new.
    RecordNew { row: EventRow, reply: Reply<bool> },
    /// Sets or clears a model's quarantine; returns whether the model exists.
    Quarantine { model_id: String, until: Option<String>, reply: Reply<bool> },
    /// Saves how far an outbox consumer got.
    SaveCursor { consumer: String, position: i64, reply: Reply<()> },
}

/// The arguments of [`crate::store::PolicyStore::save`].
pub(super) struct SaveRequest {
    pub(super) yaml: String,
    pub(super) base_version: Option<String>,
    pub(super) author: String,
    pub(super) comment: Option<String>,
}

/// The sending end of the writer's queue and its thread.
pub(super) struct WriterHandle {
    commands: mpsc::Sender<Command>,
    thread: JoinHandle<()>,
}

impl WriterHandle {
    /// Starts the writer thread, which owns `connection` and `log` until the handle is
    /// dropped or closed.
    ///
    /// First appends to the log the lines of every change that it may lack, so a line lost in a
    /// crash is back before the store takes new writes.
    pub(super) fn spawn(connection: Connection, log: AuditLog, committed: Arc<Notify>) -> Result<Self, StoreError> {
        let (commands, queue) = mpsc::channel(QUEUE_CAPACITY);
        let last_change: i64 = connection
            .query_row("SELECT coalesce(max(change_seq), 0) FROM audit_events", [], |row| row.get(0))
            .map_err(sqlite_error("failed to read the last change of the audit events"))?;
        let mut writer = Writer {
            connection,
            log,
            next_change: last_change.saturating_add(1),
            committed,
            log_pending_since: None,
            log_repair: false,
        };
        writer.repair_log()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(|error| {
            StoreError::Unavailable(format!("failed to start the timer of the SQLite writer thread: {error}"))
        })?;

        let thread = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer.run(&runtime, queue))
            .map_err(|error| StoreError::Unavailable(format!("failed to start the SQLite writer thread: {error}")))?;
        Ok(Self { commands, thread })
    }

    /// Queues the command built by `command` and waits for its result.
    pub(super) async fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| writer_stopped())?;
        result.await.map_err(|_| writer_stopped())?
    }

    /// Closes the queue and waits until the thread has written everything queued before.
    pub(super) async fn close(self) -> Result<(), StoreError> {
        let Self { commands, thread } = self;
        drop(commands);

        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                Err(StoreError::Unavailable("the SQLite writer thread panicked while it finished its queue".to_owned()))
            }
            Err(error) => Err(StoreError::Unavailable(format!("failed to wait for the SQLite writer thread: {error}"))),
        }
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer thread has stopped; restart the gateway".to_owned())
}

/// State owned by the writer thread.
struct Writer {
    connection: Connection,
    log: AuditLog,
    /// The `change_seq` of the next stored event version. Only this thread writes, and it
    /// commits in order, so a reader never sees a change appear below one it has read.
    next_change: i64,
    /// Woken after each commit of audit events, for the outbox consumers.
    committed: Arc<Notify>,
    /// Since when `audit.log` has had unsynced lines or a pending repair.
    log_pending_since: Option<Instant>,
    /// Whether an append failed, so the log lacks lines until [`Writer::repair_log`] succeeds.
    log_repair: bool,
}

impl Writer {
    /// Executes batches until every sender is gone and the queue is empty, and syncs the log
    /// at most [`LOG_SYNC_INTERVAL`] after a line was appended.
    fn run(mut self, runtime: &tokio::runtime::Runtime, mut queue: mpsc::Receiver<Command>) {
        loop {
            let received = match self.log_pending_since {
                None => Ok(runtime.block_on(queue.recv())),
                Some(since) => {
                    let wait = LOG_SYNC_INTERVAL.saturating_sub(since.elapsed());
                    runtime.block_on(async { tokio::time::timeout(wait, queue.recv()).await })
                }
            };
            match received {
                Ok(Some(first)) => {
                    let batch = take_batch(first, &mut queue);
                    self.execute(batch);
                    if self.log_pending_since.is_some_and(|since| since.elapsed() >= LOG_SYNC_INTERVAL) {
                        self.sync_log();
                    }
                }
                Ok(None) => break,
                Err(_) => self.sync_log(),
            }
        }
        self.sync_log();
    }

    /// Appends the lines of a committed batch. A failed append leaves the log to
    /// [`Writer::repair_log`], because the events are stored and their callers have their results.
    fn append_log(&mut self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        self.log_pending_since.get_or_insert_with(Instant::now);
        if self.log_repair {
            return;
        }
        if let Err(error) = self.log.append(lines) {
            tracing::error!(error = %error, "audit.log append failed; the events are stored and their lines will be appended again once the log can be written");
            self.log_repair = true;
        }
    }

    /// Syncs the log and records how far it is on disk, or repairs it after a failed append.
    fn sync_log(&mut self) {
        if self.log_repair {
            if let Err(error) = self.repair_log() {
                tracing::error!(error = %error, "audit.log repair failed; retrying in {LOG_SYNC_INTERVAL:?}");
                self.log_pending_since = Some(Instant::now());
            }
            return;
        }
        if !self.log.is_dirty() {
            self.log_pending_since = None;
            return;
        }
        let synced = self.next_change.saturating_sub(1);
        if let Err(error) = self.log.sync() {
            tracing::error!(error = %error, "audit.log sync failed; its unsynced lines will be appended again in {LOG_SYNC_INTERVAL:?}");
            self.log_repair = true;
            self.log_pending_since = Some(Instant::now());
            return;
        }
        if let Err(error) = save_synced_change(&self.connection, synced) {
            tracing::error!(error = %error, "recording the audit.log sync failed; retrying in {LOG_SYNC_INTERVAL:?}");
            self.log.mark_dirty();
            self.log_pending_since = Some(Instant::now());
            return;
        }
        self.log_pending_since = None;
    }

    /// Appends the stored version of every event changed after the last synced change, syncs
    /// the log and records the new synced change. Lines already in the log after that change
    /// are written again; readers keep the last line of an event id.
    fn repair_log(&mut self) -> Result<(), StoreError> {
        let failed = || sqlite_error("failed to read the audit events that audit.log lacks");
        let mut after: i64 = self
            .connection
            .query_row("SELECT synced_change FROM audit_log_state WHERE id = 1", [], |row| row.get(0))
            .map_err(failed())?;
        self.log.terminate()?;
        let mut appended = 0_usize;
        loop {
            let (lines, last, count) = unsynced_lines(&self.connection, after).map_err(failed())?;
            if count == 0 {
                break;
            }
            self.log.append(&lines)?;
            appended += count;
            after = last;
        }
        if appended > 0 {
            tracing::warn!(
                lines = appended,
                "appended to audit.log the events it lacked after a crash or a failed write"
            );
        }
        self.log.sync()?;
        save_synced_change(&self.connection, self.next_change.saturating_sub(1).max(after))?;
        self.log_repair = false;
        self.log_pending_since = None;
        Ok(())
    }

    /// Executes commands in queue order. Consecutive audit events are committed together.
    fn execute(&mut self, batch: Vec<Command>) {
        let mut records = Vec::new();
        for command in batch {
            match command {
                Command::Record { row, reply } => records.push((row, reply)),
                Command::PutModel { rows, reply } => {
                    self.commit_records(mem::take(&mut records));
                    answer(reply, put_model(&mut self.connection, &rows));
                }
                Command::SavePolicy { request, reply } => {
                    self.commit_records(mem::take(&mut records));
                    answer(reply, save_policy(&mut self.connection, &request));
                }
                Command::RecordNew { row, reply } => {
                    self.commit_records(mem::take(&mut records));
                    let result = write_new_event(&mut self.connection, &row, &mut self.next_change);
                    if matches!(result, Ok(true)) {
                        self.append_log(format!("{}\n", row.json).as_bytes());
                        self.committed.notify_waiters();
                    }
                    answer(reply, result);
                }
                Command::Quarantine { model_id, until, reply } => {
                    self.commit_records(mem::take(&mut records));
                    answer(reply, set_quarantine(&self.connection, &model_id, until.as_deref()));
                }
                Command::SaveCursor { consumer, position, reply } => {
                    self.commit_records(mem::take(&mut records));
                    answer(reply, save_cursor(&self.connection, &consumer, position));
                }
            }
        }
        self.commit_records(records);
    }

    /// Writes audit events in one transaction, appends the committed events to the log
    /// (unsynced, so it costs no disk wait) and sends every caller the same result.
    fn commit_records(&mut self, records: Vec<(EventRow, Reply<()>)>) {
        if records.is_empty() {
            return;
        }

        let (rows, replies): (Vec<_>, Vec<_>) = records.into_iter().unzip();
        let result = write_events(&mut self.connection, &rows, &mut self.next_change);
        if let Ok(lines) = &result {
            self.append_log(lines);
            self.committed.notify_waiters();
        }
        for reply in replies {
            answer(reply, result.as_ref().map(|_| ()).map_err(copy_error));
        }
    }
}

/// Takes `first` and whatever else is queued, up to [`MAX_BATCH`] commands, without waiting.
fn take_batch(first: Command, queue: &mut mpsc::Receiver<Command>) -> Vec<Command> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(command) => batch.push(command),
            Err(_) => break,
        }
    }
    batch
}

/// Sends a result to a caller, which may have stopped waiting.
fn answer<T>(reply: Reply<T>, result: Result<T, StoreError>) {
    let _ = reply.send(result);
}

fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        StoreError::Corrupt(message) => StoreError::Corrupt(message.clone()),
        StoreError::Conflict(message) => StoreError::Conflict(message.clone()),
        StoreError::NotFound(message) => StoreError::NotFound(message.clone()),
    }
}

/// Inserts the events and commits, and returns the log lines of the versions it stored. The
/// commit syncs the WAL, so the events are durable when this returns.
fn write_events(connection: &mut Connection, rows: &[EventRow], next_change: &mut i64) -> Result<Vec<u8>, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error("failed to begin storing audit events"))?;
    let lines =
        insert_events(&transaction, rows, next_change).map_err(sqlite_error("failed to insert audit events"))?;
    transaction.commit().map_err(sqlite_error("failed to commit audit events"))?;
    Ok(lines)
}

/// Stores one event only if its id is new, and returns whether it was. An anomaly's
/// quarantine is set in the same transaction, so the two are stored together or not at all.
fn write_new_event(connection: &mut Connection, row: &EventRow, next_change: &mut i64) -> Result<bool, StoreError> {
    let failed = || sqlite_error(format!("failed to store new audit event `{}`", row.event_id));
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed())?;
    let inserted = insert_row(&transaction, row, next_change).map_err(failed())?;
    if !inserted {
        return Ok(false);
    }
    if let Some((model_id, until)) = &row.quarantine {
        transaction
            .execute("UPDATE models SET quarantined_until = ?2 WHERE model_id = ?1", params![model_id, until])
            .map_err(failed())?;
    }
    transaction.commit().map_err(failed())?;
    Ok(true)
}

/// Records that the log contains every change up to `change` on disk.
fn save_synced_change(connection: &Connection, change: i64) -> Result<(), StoreError> {
    connection
        .execute("UPDATE audit_log_state SET synced_change = max(synced_change, ?1) WHERE id = 1", [change])
        .map_err(sqlite_error("failed to record how far audit.log is synced"))?;
    Ok(())
}

/// Reads up to [`REPAIR_BATCH`] stored events changed after `after`, in change order, as log
/// lines. Returns the lines, the last change read and the number of events.
fn unsynced_lines(connection: &Connection, after: i64) -> rusqlite::Result<(Vec<u8>, i64, usize)> {
    let mut select = connection.prepare_cached(
        "SELECT change_seq, event FROM audit_events WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2",
    )?;
    let mut rows = select.query(params![after, REPAIR_BATCH])?;
    let (mut lines, mut last, mut count) = (Vec::new(), after, 0);
    while let Some(row) = rows.next()? {
        last = row.get(0)?;
        let event: String = row.get(1)?;
        lines.extend_from_slice(event.as_bytes());
        lines.push(b'\n');
        count += 1;
    }
    Ok((lines, last, count))
}

/// Inserts the event and counts it in its session, unless its id is stored already.
/// Anomalies are not calls, so their sessions' counts stay as they are.
fn insert_row(transaction: &Transaction<'_>, row: &EventRow, next_change: &mut i64) -> rusqlite::Result<bool> {
    let mut insert_event = transaction.prepare_cached(INSERT_EVENT)?;
    let inserted = insert_event.execute(params![
        row.event_id,
        row.session_id,
        row.model_id,
        row.time_ns,
        row.decision,
        row.json,
        take_change(next_change)
    ])?;
    if inserted == 0 {
        return Ok(false);
    }
    if row.decision != ALERT {
        let mut upsert_session = transaction.prepare_cached(UPSERT_SESSION)?;
        upsert_session.execute(params![row.session_id, row.model_id, row.time_ns, i64::from(row.denied)])?;
    }
    Ok(true)
}

/// Returns the next change number and advances the counter. A rolled-back transaction
/// leaves a gap, which consumers skip.
fn take_change(next_change: &mut i64) -> i64 {
    let change = *next_change;
    *next_change = change.saturating_add(1);
    change
}

fn set_quarantine(connection: &Connection, model_id: &str, until: Option<&str>) -> Result<bool, StoreError> {
    let changed = connection
        .execute("UPDATE models SET quarantined_until = ?2 WHERE model_id = ?1", params![model_id, until])
        .map_err(sqlite_error(format!("failed to set the quarantine of model `{model_id}`")))?;
    Ok(changed > 0)
}

fn save_cursor(connection: &Connection, consumer: &str, position: i64) -> Result<(), StoreError> {
    connection
        .execute(
            "INSERT INTO outbox_cursors (consumer, position) VALUES (?1, ?2)
             ON CONFLICT (consumer) DO UPDATE SET position = excluded.position",
            params![consumer, position],
        )
        .map_err(sqlite_error(format!("failed to save the outbox position of `{consumer}`")))?;
    Ok(())
}

/// The stored decision of an anomaly event.
const ALERT: &str = "alert";

const INSERT_EVENT: &str = "
INSERT INTO audit_events (event_id, session_id, model_id, time_ns, decision, event, change_seq)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (event_id) DO NOTHING";

/// In an upsert, every column name on the right of `SET` reads the row as it was.
const UPSERT_SESSION: &str = "
INSERT INTO sessions (session_id, model_id, first_seen_ns, last_seen_ns, calls, denied)
VALUES (?1, ?2, ?3, ?3, 1, ?4)
ON CONFLICT (session_id) DO UPDATE SET
    model_id = CASE WHEN excluded.first_seen_ns < first_seen_ns THEN excluded.model_id ELSE model_id END,
    first_seen_ns = min(first_seen_ns, excluded.first_seen_ns),
    last_seen_ns = max(last_seen_ns, excluded.last_seen_ns),
    calls = calls + 1,
    denied = denied + excluded.denied";

/// Replaces a stored event with a newer version of itself, such as the same call with its
/// upstream outcome filled in. The same content twice changes nothing.
const UPDATE_EVENT: &str = "
UPDATE audit_events SET decision = ?2, event = ?3, change_seq = ?4
WHERE event_id = ?1 AND event IS NOT ?3";

/// Inserts events and updates their sessions, and returns the log lines to append.
///
/// An event whose id is already stored with the same content is skipped, because its first
/// write committed and so its line is already in the log. One stored with other content is
/// replaced, without counting the call in its session again, and its new version is appended
/// to the log, where the last line of an event id is the complete one.
fn insert_events(transaction: &Transaction<'_>, rows: &[EventRow], next_change: &mut i64) -> rusqlite::Result<Vec<u8>> {
    let mut update_event = transaction.prepare_cached(UPDATE_EVENT)?;
    let mut lines = Vec::with_capacity(rows.iter().map(|row| row.json.len() + 1).sum());

    for row in rows {
        if !insert_row(transaction, row, next_change)? {
            let updated =
                update_event.execute(params![row.event_id, row.decision, row.json, take_change(next_change)])?;
            if updated == 0 {
                continue;
            }
        }
        lines.extend_from_slice(row.json.as_bytes());
        lines.push(b'\n');
    }
    Ok(lines)
}

fn put_model(connection: &mut Connection, rows: &ModelRows) -> Result<(), StoreError> {
    replace_model(connection, rows).map_err(sqlite_error(format!("failed to store model `{}`", rows.model_id)))
}

/// Replaces the model row and all its credentials in one transaction. An existing model's
/// quarantine is kept: only the quarantine commands write it, so an admin's change made from
/// an older read cannot lift or set one.
fn replace_model(connection: &mut Connection, rows: &ModelRows) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute(
        "INSERT INTO models (model_id, tools, revoked, quarantined_until) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (model_id) DO UPDATE SET tools = excluded.tools, revoked = excluded.revoked",
        params![rows.model_id, rows.tools, rows.revoked, rows.quarantined_until],
    )?;
    transaction.execute("DELETE FROM credentials WHERE model_id = ?1", [&rows.model_id])?;

    {
        let mut insert = transaction
            .prepare("INSERT INTO credentials (model_id, position, key_hash, key_id, expires, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for (position, credential) in (0_i64..).zip(&rows.credentials) {
            insert.execute(params![
                rows.model_id,
                position,
                credential.hash,
                credential.key_id,
                credential.expires,
                credential.revoked
            ])?;
        }
    }
    transaction.commit()
}

/// Saves a policy version if the newest is still the base version, with the check and the
/// insert in one `IMMEDIATE` transaction, so that no other connection can write in between.
fn save_policy(connection: &mut Connection, request: &SaveRequest) -> Result<PolicyVersion, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error("failed to begin saving the policy"))?;
    let newest = newest_version(&transaction).map_err(sqlite_error("failed to read the current policy version"))?;
    check_base(newest.as_ref().map(|(_, version)| version.as_str()), request.base_version.as_deref())?;

    let seq = newest.map_or(1, |(seq, _)| seq.saturating_add(1));
    let saved = PolicyVersion {
        version: version_id(seq),
        saved_at: OffsetDateTime::now_utc(),
        author: request.author.clone(),
        comment: request.comment.clone(),
        yaml: request.yaml.clone(),
        size: request.yaml.len() as u64,
    };
    insert_version(&transaction, seq, &saved)?;

    transaction.commit().map_err(sqlite_error(format!("failed to commit policy version `{}`", saved.version)))?;
    Ok(saved)
}

fn newest_version(transaction: &Transaction<'_>) -> rusqlite::Result<Option<(i64, String)>> {
    transaction
        .query_row("SELECT seq, version FROM policy_versions ORDER BY seq DESC LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
}

/// Checks the caller's base version against the newest stored one.
fn check_base(current: Option<&str>, base: Option<&str>) -> Result<(), StoreError> {
    match (current, base) {
        (None, None) => Ok(()),
        (Some(current), Some(base)) if current == base => Ok(()),
        (Some(current), Some(base)) => Err(StoreError::Conflict(format!(
            "base version `{base}` is no longer the current policy version `{current}`; reload the policy and apply the change again"
        ))),
        (Some(current), None) => Err(StoreError::Conflict(format!(
            "the policy already has version `{current}`; pass it as the base version"
        ))),
        (None, Some(base)) => Err(StoreError::Conflict(format!(
            "base version `{base}` does not exist because no policy version was saved yet; save without a base version"
        ))),
    }
}

fn insert_version(transaction: &Transaction<'_>, seq: i64, saved: &PolicyVersion) -> Result<(), StoreError> {
    let saved_at = format_time(saved.saved_at, "save time")?;
    transaction
        .execute(
            "INSERT INTO policy_versions (seq, version, saved_at, author, comment, yaml) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![seq, saved.version, saved_at, saved.author, saved.comment, saved.yaml],
        )
        .map_err(sqlite_error(format!("failed to insert policy version `{}`", saved.version)))?;
    Ok(())
}
