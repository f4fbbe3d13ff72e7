//! The AWS backend: model keys and audit events in DynamoDB, policy versions in S3.
//!
//! # Keys table
//!
//! Partition key `model_id` (S). Each item contains `tools` (L of S), `revoked` (BOOL) and
//! `credentials` (L of M), each credential with `hash` (B, the 32-byte SHA-256 of the key,
//! never the key), `key_id` (S), `revoked` (BOOL) and, when it expires, `expires` (S, RFC 3339).
//!
//! # Sessions table
//!
//! Partition key `pk` (S) = `S#<session_id>`, sort key `sk` (S) = `E#<event_id>`. Event ids
//! are UUID v7, so a query of one partition returns a session's events in time order. Each
//! item holds `event` (S, the [`AuditEvent`] as JSON), `session_id`, `model_id`, `decision`,
//! `time` (S, RFC 3339), `time_ns` (N, Unix nanoseconds), `day` (S, `YYYY-MM-DD` in UTC) and,
//! when a retention is set with [`AwsStores::with_retention`], `ttl` (N, Unix seconds).
//!
//! The global secondary index [`BY_DAY_INDEX`] (partition `day`, sort `time_ns`, projecting
//! `session_id`) finds the recently active sessions.
//!
//! Anomaly events have partition key `A#<event_id>` instead, `alert_day` instead of `day`
//! and no `session_id`, so they stay out of session traces and listings. The index
//! [`ALERTS_INDEX`] (partition `alert_day`, sort `time_ns`, projecting all) lists them. The table's stream carries each new
//! image to the SIEM function.
//!
//! [`AuditStore::record`] makes exactly one conditional `PutItem`, and no other write, so
//! the hot path costs one write per call. A session's counts are computed when sessions are
//! listed, by one query of each listed session's partition.
//!
//! # Policy bucket
//!
//! The policy is one object (default key [`DEFAULT_POLICY_KEY`]) in a bucket with versioning
//! on. Each saved version is an S3 object version, and its id is the opaque S3 version id.
//! The author and comment are object metadata (`x-amz-meta-author`, `x-amz-meta-comment`)
//! in unpadded base64url, because S3 metadata must be ASCII. The save time is
//! `x-amz-meta-saved-at` in RFC 3339. Saves are conditional writes (`If-None-Match` for the
//! first version, `If-Match` after it), so two admins never overwrite each other.
//!
//! `mcpsec aws-init` ([`setup::aws_init`]) creates the tables and the bucket, and so does the
//! SAM template.

mod audit;
mod error;
mod events;
mod keys;
mod layout;
mod policy;
mod sessions;
pub mod setup;

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use mcpsec_policy::ModelEntry;
use time::OffsetDateTime;

pub use self::events::MAX_RANGE_DAYS;
pub use self::layout::{ALERTS_INDEX, BY_DAY_INDEX};
use self::policy::PolicyObject;
pub use self::sessions::{MAX_INDEX_ITEMS, RECENT_DAYS};
use crate::audit::AuditEvent;
use crate::config::ConfigError;
use crate::store::{AuditStore, KeyStore, PolicyStore, PolicyVersion, SessionSummary, StoreError};

/// Key of the policy object when `POLICY_KEY` is unset.
pub const DEFAULT_POLICY_KEY: &str = "policies.yaml";

/// The names of the tables and the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNames {
    /// DynamoDB table of model keys (`KEYS_TABLE`).
    pub keys_table: String,
    /// DynamoDB table of sessions and audit events (`SESSIONS_TABLE`).
    pub sessions_table: String,
    /// Versioned S3 bucket of the policy (`POLICY_BUCKET`).
    pub policy_bucket: String,
    /// Key of the policy object in the bucket (`POLICY_KEY`).
    pub policy_key: String,
    /// DynamoDB table of the anomaly detectors' counters (`COUNTERS_TABLE`); only the
    /// `stream` function uses it.
    pub counters_table: Option<String>,
}

impl AwsNames {
    /// Names with the policy at [`DEFAULT_POLICY_KEY`].
    pub fn new(
        keys_table: impl Into<String>,
        sessions_table: impl Into<String>,
        policy_bucket: impl Into<String>,
    ) -> Self {
        Self {
            keys_table: keys_table.into(),
            sessions_table: sessions_table.into(),
            policy_bucket: policy_bucket.into(),
            policy_key: DEFAULT_POLICY_KEY.to_owned(),
            counters_table: None,
        }
    }

    /// Names the counters table too.
    #[must_use]
    pub fn with_counters_table(mut self, table: impl Into<String>) -> Self {
        self.counters_table = Some(table.into());
        self
    }

    /// Reads `KEYS_TABLE`, `SESSIONS_TABLE`, `POLICY_BUCKET` and the optional `POLICY_KEY` and
    /// `COUNTERS_TABLE` through `var`, which returns a variable's value or `None`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| var(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let required = |name: &'static str, what: &str| {
            var(name).ok_or_else(|| ConfigError { name, reason: format!("missing; set it to the name of the {what}") })
        };

        Ok(Self {
            keys_table: required("KEYS_TABLE", "DynamoDB table of model keys")?,
            sessions_table: required("SESSIONS_TABLE", "DynamoDB table of sessions")?,
            policy_bucket: required("POLICY_BUCKET", "S3 bucket of policy versions")?,
            policy_key: var("POLICY_KEY").unwrap_or_else(|| DEFAULT_POLICY_KEY.to_owned()),
            counters_table: var("COUNTERS_TABLE"),
        })
    }
}

/// The AWS stores: implements [`KeyStore`], [`PolicyStore`] and [`AuditStore`] with one
/// DynamoDB client and one S3 client, built once.
#[derive(Debug, Clone)]
pub struct AwsStores {
    dynamodb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    names: AwsNames,
    retention: Option<Duration>,
    /// Serializes the policy saves of this process. Across processes the S3 conditional
    /// write decides; within one, saves then never rely on it, which also keeps them correct
    /// on emulators whose conditional writes are not atomic (moto 5.2.5 checks and writes
    /// without a lock).
    save_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl AwsStores {
    /// Builds the clients from `sdk_config`. Audit events are kept until deleted; see
    /// [`AwsStores::with_retention`].
    pub fn new(sdk_config: &SdkConfig, names: AwsNames) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk_config),
            s3: s3_client(sdk_config),
            names,
            retention: None,
            save_lock: std::sync::Arc::default(),
        }
    }

    /// Sets how long audit events are kept: each item gets a `ttl` this long after the
    /// event's time, and DynamoDB deletes it some time after that.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Returns the names of the tables and the bucket.
    pub fn names(&self) -> &AwsNames {
        &self.names
    }

    fn policy_object(&self) -> PolicyObject<'_> {
        PolicyObject { client: &self.s3, bucket: &self.names.policy_bucket, key: &self.names.policy_key }
    }
}

/// Builds the S3 client. With a custom endpoint, such as an emulator on loopback, it uses
/// path-style addresses, because a bucket name cannot be a subdomain of an IP address.
pub(crate) fn s3_client(sdk_config: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style = sdk_config.endpoint_url().is_some();
    let config = aws_sdk_s3::config::Builder::from(sdk_config).force_path_style(path_style).build();
    aws_sdk_s3::Client::from_conf(config)
}

#[async_trait]
impl KeyStore for AwsStores {
    async fn load_models(&self) -> Result<Vec<ModelEntry>, StoreError> {
        keys::load_models(&self.dynamodb, &self.names.keys_table).await
    }

    async fn put_model(&self, entry: &ModelEntry) -> Result<(), StoreError> {
        keys::put_model(&self.dynamodb, &self.names.keys_table, entry).await
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        keys::is_empty(&self.dynamodb, &self.names.keys_table).await
    }

    async fn set_quarantine(&self, model_id: &str, until: Option<OffsetDateTime>) -> Result<bool, StoreError> {
        keys::set_quarantine(&self.dynamodb, &self.names.keys_table, model_id, until).await
    }
}

#[async_trait]
impl PolicyStore for AwsStores {
    async fn current(&self) -> Result<Option<PolicyVersion>, StoreError> {
        self.policy_object().current().await
    }

    async fn save(
        &self,
        yaml: &str,
        base_version: Option<&str>,
        author: &str,
        comment: Option<&str>,
    ) -> Result<PolicyVersion, StoreError> {
        let _serialized = self.save_lock.lock().await;
        self.policy_object().save(yaml, base_version, author, comment).await
    }

    async fn versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        self.policy_object().versions().await
    }

    async fn version(&self, version: &str) -> Result<PolicyVersion, StoreError> {
        self.policy_object().version(version).await
    }
}

#[async_trait]
impl AuditStore for AwsStores {
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        audit::record(&self.dynamodb, &self.names.sessions_table, self.retention, event).await
    }

    async fn record_new(&self, event: &AuditEvent) -> Result<bool, StoreError> {
        let names = &self.names;
        audit::record_new(&self.dynamodb, &names.sessions_table, &names.keys_table, self.retention, event).await
    }

    /// Searches at most [`MAX_RANGE_DAYS`] UTC days, from the day of `until` back.
    async fn alerts(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        audit::alerts(&self.dynamodb, &self.names.sessions_table, since, until, limit, MAX_RANGE_DAYS).await
    }

    async fn session_trace(&self, session_id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        audit::session_trace(&self.dynamodb, &self.names.sessions_table, session_id).await
    }

    /// Lists sessions with a call in the last [`RECENT_DAYS`] UTC days, reading at most
    /// [`MAX_INDEX_ITEMS`] items of the index by day.
    async fn recent_sessions(&self, limit: usize) -> Result<Vec<SessionSummary>, StoreError> {
        let today = OffsetDateTime::now_utc().date();
        sessions::recent_sessions(&self.dynamodb, &self.names.sessions_table, limit, today).await
    }

    /// Searches at most [`MAX_RANGE_DAYS`] UTC days, from the day of `until` back.
    async fn events_between(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        events::events_between(&self.dynamodb, &self.names.sessions_table, since, until, limit).await
    }
}
