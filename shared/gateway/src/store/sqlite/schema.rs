//! Connection settings and schema migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::sqlite_error;
use crate::store::StoreError;

/// How long a connection waits for another process's lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations in order, each with the `user_version` that it brings the database to.
/// Append new migrations and never edit a released one.
const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3), (4, SCHEMA_V4)];

/// The first schema.
///
/// Times of audit events and sessions are Unix nanoseconds, so that SQL can compare them.
/// Expiries and policy save times are RFC 3339 text, because an expiry such as
/// `9999-12-31T00:00:00Z` does not fit in 64-bit nanoseconds.
const SCHEMA_V1: &str = "
CREATE TABLE models (
    model_id TEXT PRIMARY KEY NOT NULL,
    tools TEXT NOT NULL,
    revoked INTEGER NOT NULL CHECK (revoked IN (0, 1))
) STRICT;

CREATE TABLE credentials (
    model_id TEXT NOT NULL REFERENCES models (model_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    key_hash BLOB NOT NULL CHECK (length(key_hash) = 32),
    key_id TEXT NOT NULL,
    expires TEXT,
    revoked INTEGER NOT NULL CHECK (revoked IN (0, 1)),
    PRIMARY KEY (model_id, position)
) STRICT;

CREATE TABLE policy_versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL UNIQUE,
    saved_at TEXT NOT NULL,
    author TEXT NOT NULL,
    comment TEXT,
    yaml TEXT NOT NULL
) STRICT;

CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    decision TEXT NOT NULL,
    event TEXT NOT NULL
) STRICT;

CREATE INDEX audit_events_by_session ON audit_events (session_id, seq);

CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY NOT NULL,
    model_id TEXT NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    denied INTEGER NOT NULL
) STRICT;

CREATE INDEX sessions_by_last_seen ON sessions (last_seen_ns DESC, session_id);
";

/// An index of audit events by time, for listing the events of a time range.
const SCHEMA_V2: &str = "
CREATE INDEX audit_events_by_time ON audit_events (time_ns, seq);
";

/// The outbox: a change sequence over audit events, and the positions of its consumers.
///
/// `seq` numbers events in the order they were first stored; `change_seq` numbers every
/// stored version, so an event replaced by a newer version moves to the end of the change
/// order. The SIEM forwarder follows `change_seq`, the anomaly detector follows `seq`, and
/// each saves how far it got in `outbox_cursors`. A model may be quarantined until an
/// instant (RFC 3339 text, like expiries). Anomalies (`decision = 'alert'`) get a
/// partial index for the alerts listing.
const SCHEMA_V3: &str = "
ALTER TABLE audit_events ADD COLUMN change_seq INTEGER;
UPDATE audit_events SET change_seq = seq;
CREATE UNIQUE INDEX audit_events_by_change ON audit_events (change_seq);
CREATE INDEX audit_events_alerts ON audit_events (time_ns, seq) WHERE decision = 'alert';

ALTER TABLE models ADD COLUMN quarantined_until TEXT;

CREATE TABLE outbox_cursors (
    consumer TEXT PRIMARY KEY NOT NULL,
    position INTEGER NOT NULL
) STRICT;
";

/// How far `audit.log` is known to be on disk: the last change whose line was synced. Up to
/// version 3 every line was synced before its commit, so an upgraded log contains every change.
const SCHEMA_V4: &str = "
CREATE TABLE audit_log_state (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    synced_change INTEGER NOT NULL
) STRICT;
INSERT INTO audit_log_state (id, synced_change) SELECT 1, coalesce(max(change_seq), 0) FROM audit_events;
";

/// Opens the connection that performs every write, and migrates the schema.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags)
        .map_err(sqlite_error(format!("failed to open `{}`", path.display())))?;

    configure_writer(&connection, path)?;
    migrate(&mut connection, path)?;
    Ok(connection)
}

/// Opens a read-only connection.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .map_err(sqlite_error(format!("failed to open `{}` for reading", path.display())))?;

    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error("failed to set the busy timeout"))?;
    connection
        .pragma_update(None, "query_only", true)
        .map_err(sqlite_error("failed to make a reader connection read-only"))?;
    Ok(connection)
}

/// Sets WAL mode and `synchronous = FULL`, which syncs the WAL at every commit, so a
/// committed transaction survives power loss. Checkpoints run on a thread of their own
/// ([`open_checkpointer`]), so the writer checkpoints only when the WAL has outgrown
/// [`WRITER_CHECKPOINT_PAGES`], which happens only if that thread falls behind.
fn configure_writer(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let failed = || sqlite_error(format!("failed to configure `{}`", path.display()));
    connection.busy_timeout(BUSY_TIMEOUT).map_err(failed())?;

    let mode: String =
        connection.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0)).map_err(failed())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "journal mode of `{}` stayed `{mode}` instead of `wal`; keep the data directory on a local file system",
            path.display()
        )));
    }

    connection.pragma_update(None, "synchronous", "FULL").map_err(failed())?;
    connection.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES).map_err(failed())?;
    connection.pragma_update(None, "foreign_keys", true).map_err(failed())
}

/// WAL size in pages (of 4 KiB) at which the writer checkpoints in its own commits. SQLite's
/// default is 1,000; a checkpoint copies pages into the database file and syncs it, which
/// would hold up the commit that triggers it and every call waiting for that commit.
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// Opens the connection that checkpoints the WAL in the background.
pub(super) fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .map_err(sqlite_error(format!("failed to open `{}` for checkpoints", path.display())))?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error("failed to set the busy timeout"))?;
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_error("failed to configure the checkpoint connection"))?;
    Ok(connection)
}

/// Applies the migrations that the database lacks, in one transaction.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let failed = |step: &str| sqlite_error(format!("failed to {step} the schema of `{}`", path.display()));
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed("lock"))?;

    let current: i64 = transaction
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(failed("read the version of"))?;
    check_version(path, current)?;

    for &(version, migration) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        transaction.execute_batch(migration).map_err(failed(&format!("apply migration {version} to")))?;
        transaction.pragma_update(None, "user_version", version).map_err(failed("record the version of"))?;
    }
    transaction.commit().map_err(failed("commit"))
}

/// Rejects a negative schema version or one newer than the last migration.
fn check_version(path: &Path, current: i64) -> Result<(), StoreError> {
    let latest = MIGRATIONS.last().map_or(0, |&(version, _)| version);
    if current < 0 {
        return Err(StoreError::Corrupt(format!(
            "schema version {current} of `{}` is negative; restore the database from a backup",
            path.display()
        )));
    }
    if current > latest {
        return Err(StoreError::Unavailable(format!(
            "schema version {current} of `{}` is newer than {latest}, the newest this gateway knows; run a newer gateway",
            path.display()
        )));
    }
    Ok(())
}
