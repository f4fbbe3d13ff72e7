//! Storage behind traits, so handlers never know which backend they run on.
//!
//! The embedded backend ([`sqlite`]) keeps everything in one SQLite file under `DATA_DIR`
//! and appends each audit event to `audit.log` as one JSON line. The AWS backend ([`aws`])
//! keeps model keys and audit events in DynamoDB and policy versions in a versioned S3 bucket.

pub mod aws;
#[cfg(feature = "container")]
pub mod sqlite;

use async_trait::async_trait;
use mcpsec_policy::ModelEntry;
use time::OffsetDateTime;

use crate::audit::AuditEvent;

/// A store failure. Handlers treat every one as a reason to deny the call (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be read back.
    #[error("corrupt record in store: {0}")]
    Corrupt(String),
    /// A conditional write lost: the record changed since the caller read it.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
}

/// One saved version of the policy YAML.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PolicyVersion {
    /// Opaque version id.
    pub version: String,
    /// When it was saved.
    #[serde(with = "time::serde::rfc3339")]
    pub saved_at: OffsetDateTime,
    /// The author: an admin key id, or `import` for a file imported at start.
    pub author: String,
    /// Optional note from the author.
    pub comment: Option<String>,
    /// The YAML text; empty in listings.
    pub yaml: String,
    /// Size of the YAML text in bytes, also in listings.
    pub size: u64,
}

/// Summary of one session for listings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SessionSummary {
    /// The session id.
    pub session_id: String,
    /// The model of its first call.
    pub model_id: String,
    /// Time of the first call.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Time of the latest call.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Number of calls.
    pub calls: u64,
    /// Number of calls not allowed (denied, unauthorized or error).
    pub denied: u64,
}

/// Model keys, stored hashed.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Returns every model entry.
    async fn load_models(&self) -> Result<Vec<ModelEntry>, StoreError>;
    /// Inserts or replaces one model entry with all its credentials.
    async fn put_model(&self, entry: &ModelEntry) -> Result<(), StoreError>;
    /// Returns whether no model is stored, for the import at the first start.
    async fn is_empty(&self) -> Result<bool, StoreError>;
    /// Sets (`Some`) or lifts (`None`) a model's quarantine, leaving its credentials as they
    /// are; returns whether the model exists.
    async fn set_quarantine(&self, model_id: &str, until: Option<OffsetDateTime>) -> Result<bool, StoreError>;
}

/// Policy versions; the newest is in force.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Returns the newest version, or `None` when none was ever saved.
    async fn current(&self) -> Result<Option<PolicyVersion>, StoreError>;
    /// Saves `yaml` as the newest version if the newest is still `base_version`
    /// (`None`: only if no version exists); otherwise fails with [`StoreError::Conflict`].
    async fn save(
        &self,
        yaml: &str,
        base_version: Option<&str>,
        author: &str,
        comment: Option<&str>,
    ) -> Result<PolicyVersion, StoreError>;
    /// Lists every version, newest first, without their YAML.
    async fn versions(&self) -> Result<Vec<PolicyVersion>, StoreError>;
    /// Returns one version.
    async fn version(&self, version: &str) -> Result<PolicyVersion, StoreError>;
}

/// Audit events and session traces.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Writes one event durably; returns only once it is on disk (or in the backend).
    ///
    /// Recording an event id again with the same content changes nothing, so retries are
    /// safe. With other content, such as the upstream outcome of a forwarded call, it
    /// replaces the stored version without counting the call twice.
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Stores `event` only if no event with its id is stored, and returns whether it was new.
    ///
    /// Anomaly events have ids derived from what they report, so this write is what makes an
    /// anomaly be raised once, however many processes detect it. When the anomaly quarantines
    /// a model ([`crate::audit::Anomaly::quarantined_until`]), the quarantine is written in
    /// the same transaction: a stored anomaly always has its quarantine applied, and a retry
    /// after a failure applies it then. A model id that no model has gets no quarantine.
    async fn record_new(&self, event: &AuditEvent) -> Result<bool, StoreError>;
    /// Returns the newest `limit` anomaly events with `since <= time < until`, newest first.
    async fn alerts(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Returns every call of a session, oldest first; anomalies are listed by [`Self::alerts`].
    async fn session_trace(&self, session_id: &str) -> Result<Vec<AuditEvent>, StoreError>;
    /// Lists the most recently active sessions, newest first.
    async fn recent_sessions(&self, limit: usize) -> Result<Vec<SessionSummary>, StoreError>;
    /// Returns the newest `limit` calls with `since <= time < until`, oldest first, without
    /// anomalies.
    ///
    /// To read an older page, call it again with `until` set to the time of the oldest
    /// event returned. The default fails, for a backend that cannot list events by time.
    async fn events_between(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let _ = (since, until, limit);
        Err(StoreError::Unavailable("this store cannot list audit events by time".to_owned()))
    }
}
