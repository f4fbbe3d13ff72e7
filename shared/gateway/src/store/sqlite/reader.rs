//! Read-only connections and the queries that use them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mcpsec_policy::ModelEntry;
use rusqlite::{Connection, OptionalExtension, Row};

use super::rows::{CredentialRow, ModelRows, SessionRow, VersionRow, decode_event};
use super::{Feed, OutboxEntry, schema, sqlite_error};
use crate::audit::AuditEvent;
use crate::store::{PolicyVersion, SessionSummary, StoreError};

/// Maximum number of idle read connections kept open. A burst of reads opens more, and
/// closes the extra ones when done.
const MAX_IDLE_READERS: usize = 4;

/// Read-only connections, reused across queries. In WAL mode they read while the writer
/// writes.
pub(super) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    /// Opens one connection to `path` at once, so that a broken database fails at start.
    pub(super) fn open(path: PathBuf) -> Result<Self, StoreError> {
        let first = schema::open_reader(&path)?;
        Ok(Self { path, idle: Mutex::new(vec![first]) })
    }

    /// Runs `query` on a pooled connection on tokio's blocking thread pool.
    pub(super) async fn read<T, F>(self: &Arc<Self>, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || pool.with_connection(query))
            .await
            .map_err(|error| StoreError::Unavailable(format!("read task on the SQLite database failed: {error}")))?
    }

    fn with_connection<T>(&self, query: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.lock().pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => schema::open_reader(&self.path)?,
        };

        let result = query(&connection);
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }

    /// Locks the idle list. A panic while it was locked cannot leave it inconsistent, so a
    /// poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns every model with its credentials, sorted by model id.
pub(super) fn load_models(connection: &Connection) -> Result<Vec<ModelEntry>, StoreError> {
    let models = query_models(connection).map_err(sqlite_error("failed to read models"))?;
    models.into_iter().map(ModelRows::decode).collect()
}

/// Reads models joined with their credentials and groups the rows by model.
fn query_models(connection: &Connection) -> rusqlite::Result<Vec<ModelRows>> {
    let mut statement = connection.prepare_cached(
        "SELECT m.model_id, m.tools, m.revoked, c.key_hash, c.key_id, c.expires, c.revoked, m.quarantined_until
         FROM models AS m LEFT JOIN credentials AS c ON c.model_id = m.model_id
         ORDER BY m.model_id, c.position",
    )?;
    let mut rows = statement.query([])?;

    let mut models: Vec<ModelRows> = Vec::new();
    while let Some(row) = rows.next()? {
        let model_id: String = row.get(0)?;
        let credential = credential_row(row)?;
        match models.last_mut() {
            Some(model) if model.model_id == model_id => model.credentials.extend(credential),
            _ => models.push(ModelRows {
                model_id,
                tools: row.get(1)?,
                revoked: row.get(2)?,
                quarantined_until: row.get(7)?,
                credentials: credential.into_iter().collect(),
            }),
        }
    }
    Ok(models)
}

/// Reads the credential columns of a joined row, which are null for a model without credentials.
fn credential_row(row: &Row<'_>) -> rusqlite::Result<Option<CredentialRow>> {
    let Some(hash) = row.get::<_, Option<Vec<u8>>>(3)? else {
        return Ok(None);
    };
    Ok(Some(CredentialRow { hash, key_id: row.get(4)?, expires: row.get(5)?, revoked: row.get(6)? }))
}

/// Returns whether no model is stored.
pub(super) fn has_no_models(connection: &Connection) -> Result<bool, StoreError> {
    connection
        .query_row("SELECT NOT EXISTS (SELECT 1 FROM models)", [], |row| row.get(0))
        .map_err(sqlite_error("failed to count models"))
}

/// Returns the newest policy version, if any.
pub(super) fn current_version(connection: &Connection) -> Result<Option<PolicyVersion>, StoreError> {
    let sql = "SELECT version, saved_at, author, comment, yaml, length(CAST(yaml AS BLOB)) FROM policy_versions ORDER BY seq DESC LIMIT 1";
    let row = connection
        .query_row(sql, [], version_row)
        .optional()
        .map_err(sqlite_error("failed to read the current policy version"))?;
    row.map(VersionRow::decode).transpose()
}

/// Returns every policy version, newest first, with empty YAML.
pub(super) fn list_versions(connection: &Connection) -> Result<Vec<PolicyVersion>, StoreError> {
    let rows = query_versions(connection).map_err(sqlite_error("failed to list policy versions"))?;
    rows.into_iter().map(VersionRow::decode).collect()
}

fn query_versions(connection: &Connection) -> rusqlite::Result<Vec<VersionRow>> {
    let mut statement = connection
        .prepare_cached("SELECT version, saved_at, author, comment, '', length(CAST(yaml AS BLOB)) FROM policy_versions ORDER BY seq DESC")?;
    statement.query_map([], version_row)?.collect()
}

/// Returns the policy version with id `version`. The id is bound as a parameter, never
/// spliced into SQL, so any text is safe and an unknown one is [`StoreError::NotFound`].
pub(super) fn find_version(connection: &Connection, version: &str) -> Result<PolicyVersion, StoreError> {
    let sql = "SELECT version, saved_at, author, comment, yaml, length(CAST(yaml AS BLOB)) FROM policy_versions WHERE version = ?1";
    let row = connection
        .query_row(sql, [version], version_row)
        .optional()
        .map_err(sqlite_error(format!("failed to read policy version `{version}`")))?;

    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::NotFound(format!("policy version `{version}`; list the versions to find a valid id"))),
    }
}

fn version_row(row: &Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        version: row.get(0)?,
        saved_at: row.get(1)?,
        author: row.get(2)?,
        comment: row.get(3)?,
        yaml: row.get(4)?,
        size: row.get(5)?,
    })
}

/// Returns the events of a session in the order they were recorded.
pub(super) fn session_trace(connection: &Connection, session_id: &str) -> Result<Vec<AuditEvent>, StoreError> {
    let rows = query_trace(connection, session_id)
        .map_err(sqlite_error(format!("failed to read the trace of session `{session_id}`")))?;
    rows.iter().map(|(event_id, json)| decode_event(event_id, json)).collect()
}

fn query_trace(connection: &Connection, session_id: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = connection.prepare_cached(
        "SELECT event_id, event FROM audit_events WHERE session_id = ?1 AND decision <> 'alert' ORDER BY seq",
    )?;
    statement.query_map([session_id], |row| Ok((row.get(0)?, row.get(1)?)))?.collect()
}

/// Returns up to `limit` sessions, the most recently active first.
pub(super) fn recent_sessions(connection: &Connection, limit: usize) -> Result<Vec<SessionSummary>, StoreError> {
    let rows = query_sessions(connection, limit).map_err(sqlite_error("failed to list recent sessions"))?;
    rows.into_iter().map(SessionRow::decode).collect()
}

fn query_sessions(connection: &Connection, limit: usize) -> rusqlite::Result<Vec<SessionRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = connection.prepare_cached(
        "SELECT session_id, model_id, first_seen_ns, last_seen_ns, calls, denied
         FROM sessions ORDER BY last_seen_ns DESC, session_id LIMIT ?1",
    )?;

    let rows = statement.query_map([limit], |row| {
        Ok(SessionRow {
            session_id: row.get(0)?,
            model_id: row.get(1)?,
            first_seen_ns: row.get(2)?,
            last_seen_ns: row.get(3)?,
            calls: row.get(4)?,
            denied: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// Returns the newest `limit` events with `since_ns <= time_ns < until_ns`, oldest first.
pub(super) fn events_between(
    connection: &Connection,
    since_ns: i64,
    until_ns: i64,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    let rows = query_events_between(connection, since_ns, until_ns, limit)
        .map_err(sqlite_error("failed to list audit events by time"))?;
    rows.iter().map(|(event_id, json)| decode_event(event_id, json)).collect()
}

fn query_events_between(
    connection: &Connection,
    since_ns: i64,
    until_ns: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(String, String)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = connection.prepare_cached(
        "SELECT event_id, event FROM (
             SELECT seq, time_ns, event_id, event FROM audit_events
             WHERE time_ns >= ?1 AND time_ns < ?2 AND decision <> 'alert'
             ORDER BY time_ns DESC, seq DESC LIMIT ?3
         ) ORDER BY time_ns, seq",
    )?;
    statement.query_map([since_ns, until_ns, limit], |row| Ok((row.get(0)?, row.get(1)?)))?.collect()
}

/// Returns the newest `limit` anomaly events with `since_ns <= time_ns < until_ns`, newest first.
pub(super) fn alerts(
    connection: &Connection,
    since_ns: i64,
    until_ns: i64,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: rusqlite::Result<Vec<(String, String)>> = (|| {
        let mut statement = connection.prepare_cached(
            "SELECT event_id, event FROM audit_events
             WHERE decision = 'alert' AND time_ns >= ?1 AND time_ns < ?2
             ORDER BY time_ns DESC, seq DESC LIMIT ?3",
        )?;
        statement.query_map([since_ns, until_ns, limit], |row| Ok((row.get(0)?, row.get(1)?)))?.collect()
    })();
    let rows = rows.map_err(sqlite_error("failed to list anomaly events"))?;
    rows.iter().map(|(event_id, json)| decode_event(event_id, json)).collect()
}

/// Returns up to `limit` events after position `after` of `feed`.
pub(super) fn outbox(
    connection: &Connection,
    feed: Feed,
    after: i64,
    limit: usize,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = match feed {
        Feed::Changes => {
            "SELECT change_seq, event_id, event FROM audit_events WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2"
        }
        Feed::Inserts => "SELECT seq, event_id, event FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        Feed::Alerts => {
            "SELECT seq, event_id, event FROM audit_events WHERE decision = 'alert' AND seq > ?1 ORDER BY seq LIMIT ?2"
        }
    };
    let rows: rusqlite::Result<Vec<(i64, String, String)>> = (|| {
        let mut statement = connection.prepare_cached(sql)?;
        statement.query_map([after, limit], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?.collect()
    })();
    let rows = rows.map_err(sqlite_error("failed to read the audit outbox"))?;
    rows.into_iter()
        .map(|(position, event_id, json)| Ok(OutboxEntry { position, event: decode_event(&event_id, &json)? }))
        .collect()
}

/// Returns the position of `feed` just before the first event stored at or after `since_ns`,
/// or the last position when there is none.
pub(super) fn position_before(connection: &Connection, feed: Feed, since_ns: i64) -> Result<i64, StoreError> {
    let sql = match feed {
        Feed::Changes => {
            "SELECT coalesce((SELECT min(change_seq) FROM audit_events WHERE time_ns >= ?1) - 1,
                             (SELECT max(change_seq) FROM audit_events), 0)"
        }
        Feed::Inserts | Feed::Alerts => {
            "SELECT coalesce((SELECT min(seq) FROM audit_events WHERE time_ns >= ?1) - 1,
                             (SELECT max(seq) FROM audit_events), 0)"
        }
    };
    connection
        .query_row(sql, [since_ns], |row| row.get(0))
        .map_err(sqlite_error("failed to find a position in the audit outbox"))
}

/// Returns the saved position of an outbox consumer.
pub(super) fn cursor(connection: &Connection, consumer: &str) -> Result<Option<i64>, StoreError> {
    connection
        .query_row("SELECT position FROM outbox_cursors WHERE consumer = ?1", [consumer], |row| row.get(0))
        .optional()
        .map_err(sqlite_error(format!("failed to read the outbox position of `{consumer}`")))
}

/// Returns the position of the newest event of `feed`, 0 when it is empty.
pub(super) fn last_position(connection: &Connection, feed: Feed) -> Result<i64, StoreError> {
    let sql = match feed {
        Feed::Changes => "SELECT coalesce(max(change_seq), 0) FROM audit_events",
        Feed::Inserts => "SELECT coalesce(max(seq), 0) FROM audit_events",
        Feed::Alerts => "SELECT coalesce(max(seq), 0) FROM audit_events WHERE decision = 'alert'",
    };
    connection.query_row(sql, [], |row| row.get(0)).map_err(sqlite_error("failed to read the end of the audit outbox"))
}
