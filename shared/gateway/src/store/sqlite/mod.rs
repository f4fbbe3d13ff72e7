//! The embedded backend: one SQLite database and one JSON-lines audit log in a data directory.
//!
//! # Threads
//!
//! SQLite calls block, so none runs on the async runtime. One writer thread owns the only
//! writing connection and takes commands from a queue. Reads run on tokio's blocking pool
//! with their own read-only connections, which WAL mode lets read while the writer writes.
//!
//! # Durability and group commit
//!
//! The database runs in WAL mode with `synchronous = FULL`, so each commit syncs the WAL, and
//! [`AuditStore::record`] returns only after its event is committed. That commit is the one
//! sync a write waits for. To keep it fast under load, the writer takes every command queued
//! at that moment (up to 512) as one batch. All audit events in a batch share one
//! transaction and one sync, and every caller in the batch receives the batch's result. So
//! the number of syncs grows with the number of batches, not of events. A thread of its own
//! checkpoints the WAL, so no commit waits for a checkpoint.
//!
//! `audit.log` follows the database. The writer appends the lines of each committed batch
//! before it replies to their callers, syncs the log at most a second later, and records in the
//! database the last change whose line is synced. At start it appends the line of every
//! event changed after that, so the log may repeat lines after a crash but lacks none.
//! Readers keep the last line of an `event_id`.
//!
//! # Schema
//!
//! The schema version is SQLite's `user_version`, and migrations run at [`SqliteStore::open`].
//! Besides the tables for models, credentials, policy versions and audit events, a
//! `sessions` table keeps the counts of each session, updated in the transaction that
//! stores its events, so listing recent sessions reads no events.

mod audit_log;
mod checkpoint;
mod reader;
mod rows;
mod schema;
mod writer;

use std::fmt::Display;
use std::fs::{DirBuilder, File};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use mcpsec_policy::ModelEntry;
use time::OffsetDateTime;
use tokio::sync::Notify;

use self::audit_log::AuditLog;
use self::checkpoint::Checkpointer;
use self::reader::ReaderPool;
use self::rows::{EventRow, ModelRows};
use self::writer::{Command, SaveRequest, WriterHandle};
use crate::audit::AuditEvent;
use crate::store::{AuditStore, KeyStore, PolicyStore, PolicyVersion, SessionSummary, StoreError};

/// Name of the database file in the data directory.
pub const DATABASE_FILE: &str = "gateway.sqlite3";

/// Name of the JSON-lines audit log in the data directory.
pub const AUDIT_LOG_FILE: &str = "audit.log";

/// The embedded store: implements [`KeyStore`], [`PolicyStore`] and [`AuditStore`] on
/// SQLite in one data directory.
///
/// Dropping the store closes its queue. The writer thread then writes whatever was queued
/// and exits on its own. [`SqliteStore::close`] does the same and waits for the thread.
///
/// NOTE: one process at a time should use a data directory. SQLite locking keeps the
/// database consistent across processes, but lines that two processes append to
/// `audit.log` at the same time may interleave.
pub struct SqliteStore {
    writer: WriterHandle,
    readers: Arc<ReaderPool>,
    committed: Arc<Notify>,
    checkpointer: Checkpointer,
}

/// An order in which the outbox lists audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Every stored version of every event, in the order stored: what a SIEM receives.
    Changes,
    /// Each event once, in the order first stored: what the anomaly detector counts.
    Inserts,
    /// Anomaly events only, in the order first stored: what the alert webhook posts.
    Alerts,
}

/// One audit event read from the outbox, with its position in the feed.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// Position in the feed; save it with [`SqliteStore::save_cursor`] once handled.
    pub position: i64,
    /// The event as stored at that position.
    pub event: AuditEvent,
}

impl SqliteStore {
    /// Opens the store in `data_dir`, creating the directory (mode `0700` on Unix), the
    /// database and the log if missing, and migrating the schema.
    ///
    /// This blocks on file I/O. Call it before serving requests, or on a blocking thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_data_dir(data_dir)?;

        let database = data_dir.join(DATABASE_FILE);
        let connection = schema::open_writer(&database)?;
        let log = AuditLog::open(&data_dir.join(AUDIT_LOG_FILE))?;
        sync_dir(data_dir)?;

        let checkpointer = Checkpointer::spawn(schema::open_checkpointer(&database)?)?;
        let readers = Arc::new(ReaderPool::open(database)?);
        let committed = Arc::new(Notify::new());
        let writer = WriterHandle::spawn(connection, log, Arc::clone(&committed))?;
        Ok(Self { writer, readers, committed, checkpointer })
    }

    /// Returns up to `limit` events of `feed` after position `after`, in feed order.
    pub async fn outbox(&self, feed: Feed, after: i64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.readers.read(move |connection| reader::outbox(connection, feed, after, limit)).await
    }

    /// Returns the position of `feed` before the first event stored at or after `since`,
    /// so that reading from it replays the events since then.
    pub async fn position_before(&self, feed: Feed, since: OffsetDateTime) -> Result<i64, StoreError> {
        let since_ns = clamp_nanos(since);
        self.readers.read(move |connection| reader::position_before(connection, feed, since_ns)).await
    }

    /// Returns the position of the newest event of `feed`, 0 when it is empty.
    pub async fn last_position(&self, feed: Feed) -> Result<i64, StoreError> {
        self.readers.read(move |connection| reader::last_position(connection, feed)).await
    }

    /// Returns the saved position of an outbox consumer, or `None` before its first save.
    pub async fn cursor(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
        let consumer = consumer.to_owned();
        self.readers.read(move |connection| reader::cursor(connection, &consumer)).await
    }

    /// Saves how far an outbox consumer got, durably.
    pub async fn save_cursor(&self, consumer: &str, position: i64) -> Result<(), StoreError> {
        let consumer = consumer.to_owned();
        self.writer.request(|reply| Command::SaveCursor { consumer, position, reply }).await
    }

    /// The signal raised after each commit of audit events. Wait on it between outbox reads,
    /// with a timeout, because a signal raised while no task waits is not kept.
    pub fn committed(&self) -> Arc<Notify> {
        Arc::clone(&self.committed)
    }

    /// Writes every queued command, stops the writer thread and closes the database.
    ///
    /// Fails when the writer thread panicked or could not be waited for. Callers still waiting
    /// then receive [`StoreError::Unavailable`].
    pub async fn close(self) -> Result<(), StoreError> {
        let Self { writer, readers, checkpointer, .. } = self;
        drop(readers);
        let closed = writer.close().await;
        if let Err(error) = tokio::task::spawn_blocking(move || checkpointer.stop()).await {
            tracing::error!(error = %error, "failed to wait for the SQLite checkpoint thread");
        }
        closed
    }
}

fn create_data_dir(data_dir: &Path) -> Result<(), StoreError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);

    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);

    builder.create(data_dir).map_err(|error| {
        StoreError::Unavailable(format!(
            "failed to create data directory `{}`: {error}; check its parent and permissions",
            data_dir.display()
        ))
    })
}

/// Syncs the directory, so that the entries of newly created files survive power loss.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    if !cfg!(unix) {
        return Ok(());
    }

    let synced = File::open(dir).and_then(|handle| handle.sync_all());
    synced
        .map_err(|error| StoreError::Unavailable(format!("failed to sync data directory `{}`: {error}", dir.display())))
}

/// Wraps a SQLite error in a [`StoreError`] with `context` in front. A stored value of
/// the wrong type is [`StoreError::Corrupt`]. Any other failure is [`StoreError::Unavailable`].
fn sqlite_error(context: impl Display) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |error| match error {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(format!("{context}: {error}")),
        _ => StoreError::Unavailable(format!("{context}: {error}")),
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn load_models(&self) -> Result<Vec<ModelEntry>, StoreError> {
        self.readers.read(reader::load_models).await
    }

    async fn put_model(&self, entry: &ModelEntry) -> Result<(), StoreError> {
        let rows = ModelRows::encode(entry)?;
        self.writer.request(|reply| Command::PutModel { rows, reply }).await
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.readers.read(reader::has_no_models).await
    }

    async fn set_quarantine(&self, model_id: &str, until: Option<OffsetDateTime>) -> Result<bool, StoreError> {
        let until = until
            .map(|until| rows::format_time(until, &format!("quarantine end of model `{model_id}`")))
            .transpose()?;
        let model_id = model_id.to_owned();
        self.writer.request(|reply| Command::Quarantine { model_id, until, reply }).await
    }
}

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn current(&self) -> Result<Option<PolicyVersion>, StoreError> {
        self.readers.read(reader::current_version).await
    }

    async fn save(
        &self,
        yaml: &str,
        base_version: Option<&str>,
        author: &str,
        comment: Option<&str>,
    ) -> Result<PolicyVersion, StoreError> {
        let request = SaveRequest {
            yaml: yaml.to_owned(),
            base_version: base_version.map(str::to_owned),
            author: author.to_owned(),
            comment: comment.map(str::to_owned),
        };
        self.writer.request(|reply| Command::SavePolicy { request, reply }).await
    }

    async fn versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        self.readers.read(reader::list_versions).await
    }

    async fn version(&self, version: &str) -> Result<PolicyVersion, StoreError> {
        let version = version.to_owned();
        self.readers.read(move |connection| reader::find_version(connection, &version)).await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let row = EventRow::encode(event)?;
        self.writer.request(|reply| Command::Record { row, reply }).await
    }

    async fn record_new(&self, event: &AuditEvent) -> Result<bool, StoreError> {
        let row = EventRow::encode(event)?;
        self.writer.request(|reply| Command::RecordNew { row, reply }).await
    }

    async fn alerts(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let since_ns = clamp_nanos(since);
        let until_ns = clamp_nanos(until);
        self.readers.read(move |connection| reader::alerts(connection, since_ns, until_ns, limit)).await
    }

    async fn session_trace(&self, session_id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        let session_id = session_id.to_owned();
        self.readers.read(move |connection| reader::session_trace(connection, &session_id)).await
    }

    async fn recent_sessions(&self, limit: usize) -> Result<Vec<SessionSummary>, StoreError> {
        self.readers.read(move |connection| reader::recent_sessions(connection, limit)).await
    }

    async fn events_between(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let since_ns = clamp_nanos(since);
        let until_ns = clamp_nanos(until);
        self.readers.read(move |connection| reader::events_between(connection, since_ns, until_ns, limit)).await
    }
}

/// Returns `time` in Unix nanoseconds, clamped to the range of `i64` that stored times use.
fn clamp_nanos(time: OffsetDateTime) -> i64 {
    let nanos = time.unix_timestamp_nanos().clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    i64::try_from(nanos).unwrap_or_default()
}
