//! Conversions between the store's types and table rows.

use mcpsec_policy::keys::KeyHash;
use mcpsec_policy::{Credential, ModelEntry, Scope};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::{AuditEvent, Outcome};
use crate::store::{PolicyVersion, SessionSummary, StoreError};

/// An audit event encoded for the `audit_events` table and the log.
pub(super) struct EventRow {
    pub(super) event_id: String,
    pub(super) session_id: String,
    pub(super) model_id: String,
    /// Unix time in nanoseconds.
    pub(super) time_ns: i64,
    pub(super) decision: &'static str,
    /// Whether the call was not allowed.
    pub(super) denied: bool,
    /// The whole event, as stored and as written to the log.
    pub(super) json: String,
    /// For an anomaly that quarantines a model: the model id and the end, RFC 3339.
    pub(super) quarantine: Option<(String, String)>,
}

impl EventRow {
    /// Encodes `event`. Fails for a time outside the range of 64-bit Unix nanoseconds
    /// (1677-09-21 to 2262-04-11 UTC) or one that RFC 3339 cannot express.
    pub(super) fn encode(event: &AuditEvent) -> Result<Self, StoreError> {
        let time_ns = i64::try_from(event.time.unix_timestamp_nanos()).map_err(|_| {
            let id = &event.event_id;
            StoreError::Unavailable(format!(
                "time {} of audit event `{id}` is outside 1677-09-21 to 2262-04-11 UTC; check the clock",
                event.time
            ))
        })?;
        let json = serde_json::to_string(event).map_err(|error| {
            StoreError::Unavailable(format!("failed to encode audit event `{}` as JSON: {error}", event.event_id))
        })?;

        Ok(Self {
            event_id: event.event_id.clone(),
            session_id: event.session_id.clone(),
            model_id: event.model_id.clone(),
            time_ns,
            decision: event.decision.as_str(),
            denied: event.decision != Outcome::Allow,
            json,
            quarantine: quarantine_of(event)?,
        })
    }
}

/// Returns the model and the end of the quarantine that an anomaly event carries, if any.
fn quarantine_of(event: &AuditEvent) -> Result<Option<(String, String)>, StoreError> {
    let Some(until) = event.anomaly.as_ref().and_then(|anomaly| anomaly.quarantined_until) else {
        return Ok(None);
    };
    let until = format_time(until, &format!("quarantine end of anomaly `{}`", event.event_id))?;
    Ok(Some((event.model_id.clone(), until)))
}

/// Decodes the stored JSON of an audit event.
pub(super) fn decode_event(event_id: &str, json: &str) -> Result<AuditEvent, StoreError> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::Corrupt(format!("audit event `{event_id}` is not a valid event: {error}")))
}

/// A model with its credentials, as stored in `models` and `credentials`.
pub(super) struct ModelRows {
    pub(super) model_id: String,
    /// The tool patterns as a JSON list of strings.
    pub(super) tools: String,
    pub(super) revoked: bool,
    /// RFC 3339.
    pub(super) quarantined_until: Option<String>,
    /// In the model's order.
    pub(super) credentials: Vec<CredentialRow>,
}

/// One credential, as stored in `credentials`.
pub(super) struct CredentialRow {
    pub(super) hash: Vec<u8>,
    pub(super) key_id: String,
    /// RFC 3339.
    pub(super) expires: Option<String>,
    pub(super) revoked: bool,
}

impl ModelRows {
    /// Encodes `entry`, keeping only key hashes.
    pub(super) fn encode(entry: &ModelEntry) -> Result<Self, StoreError> {
        let model_id = &entry.model_id;
        let tools = serde_json::to_string(entry.scope.patterns()).map_err(|error| {
            StoreError::Unavailable(format!("failed to encode the tool patterns of model `{model_id}`: {error}"))
        })?;
        let credentials = entry
            .credentials
            .iter()
            .map(|credential| CredentialRow::encode(model_id, credential))
            .collect::<Result<_, _>>()?;

        let quarantined_until = entry
            .quarantined_until
            .map(|until| format_time(until, &format!("quarantine end of model `{model_id}`")))
            .transpose()?;

        Ok(Self { model_id: model_id.clone(), tools, revoked: entry.revoked, quarantined_until, credentials })
    }

    /// Rebuilds the model entry, compiling its scope again.
    pub(super) fn decode(self) -> Result<ModelEntry, StoreError> {
        let model_id = self.model_id;
        let patterns: Vec<String> = serde_json::from_str(&self.tools).map_err(|error| {
            corrupt_model(&model_id, &format!("tool patterns are not a JSON list of strings: {error}"))
        })?;
        let scope = Scope::new(&patterns)
            .map_err(|error| corrupt_model(&model_id, &format!("invalid tool patterns: {error}")))?;
        let credentials = self.credentials.into_iter().map(|row| row.decode(&model_id)).collect::<Result<_, _>>()?;

        let quarantined_until = self
            .quarantined_until
            .map(|text| {
                OffsetDateTime::parse(&text, &Rfc3339).map_err(|error| {
                    corrupt_model(&model_id, &format!("quarantine end `{text}` is not RFC 3339: {error}"))
                })
            })
            .transpose()?;

        Ok(ModelEntry { model_id, credentials, scope, revoked: self.revoked, quarantined_until })
    }
}

impl CredentialRow {
    fn encode(model_id: &str, credential: &Credential) -> Result<Self, StoreError> {
        let key_id = credential.key_id();
        let expires = credential
            .expires
            .map(|expires| format_time(expires, &format!("expiry of key `{key_id}` of model `{model_id}`")))
            .transpose()?;

        Ok(Self { hash: credential.hash.to_vec(), key_id, expires, revoked: credential.revoked })
    }

    fn decode(self, model_id: &str) -> Result<Credential, StoreError> {
        let key_id = &self.key_id;
        let hash = KeyHash::try_from(self.hash.as_slice()).map_err(|_| {
            corrupt_model(model_id, &format!("hash of key `{key_id}` has {} bytes instead of 32", self.hash.len()))
        })?;
        let expires = self
            .expires
            .map(|text| parse_time(&text, &format!("expiry of key `{key_id}` of model `{model_id}`")))
            .transpose()?;

        Ok(Credential { hash, expires, revoked: self.revoked })
    }
}

fn corrupt_model(model_id: &str, problem: &str) -> StoreError {
    StoreError::Corrupt(format!("model `{model_id}`: {problem}; put the model again to replace the record"))
}

/// The version id of the policy version with sequence number `seq`: `v` and at least six
/// digits, so ids sort by age up to `v999999`.
pub(super) fn version_id(seq: i64) -> String {
    format!("v{seq:06}")
}

/// A policy version as stored in `policy_versions`.
pub(super) struct VersionRow {
    pub(super) version: String,
    /// RFC 3339.
    pub(super) saved_at: String,
    pub(super) author: String,
    pub(super) comment: Option<String>,
    /// Empty when the query left the YAML out.
    pub(super) yaml: String,
    /// Size of the YAML in bytes.
    pub(super) size: i64,
}

impl VersionRow {
    /// Parses the save time back.
    pub(super) fn decode(self) -> Result<PolicyVersion, StoreError> {
        let saved_at = parse_time(&self.saved_at, &format!("save time of policy version `{}`", self.version))?;
        Ok(PolicyVersion {
            version: self.version,
            saved_at,
            author: self.author,
            comment: self.comment,
            yaml: self.yaml,
            size: u64::try_from(self.size).unwrap_or_default(),
        })
    }
}

/// A session as stored in `sessions`.
pub(super) struct SessionRow {
    pub(super) session_id: String,
    pub(super) model_id: String,
    pub(super) first_seen_ns: i64,
    pub(super) last_seen_ns: i64,
    pub(super) calls: i64,
    pub(super) denied: i64,
}

impl SessionRow {
    /// Converts times and counts back.
    pub(super) fn decode(self) -> Result<SessionSummary, StoreError> {
        let session_id = self.session_id;
        let corrupt = |what: &str| StoreError::Corrupt(format!("session `{session_id}`: invalid {what}"));
        let instant = |nanos: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos));

        let first_seen = instant(self.first_seen_ns).map_err(|_| corrupt("first time"))?;
        let last_seen = instant(self.last_seen_ns).map_err(|_| corrupt("last time"))?;
        let calls = u64::try_from(self.calls).map_err(|_| corrupt("call count"))?;
        let denied = u64::try_from(self.denied).map_err(|_| corrupt("denied count"))?;

        Ok(SessionSummary { session_id, model_id: self.model_id, first_seen, last_seen, calls, denied })
    }
}

/// Formats `time` as RFC 3339. The error names the value as `what`.
pub(super) fn format_time(time: OffsetDateTime, what: &str) -> Result<String, StoreError> {
    time.format(&Rfc3339)
        .map_err(|error| StoreError::Unavailable(format!("{what} `{time}` cannot be written as RFC 3339: {error}")))
}

fn parse_time(text: &str, what: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|error| StoreError::Corrupt(format!("{what} `{text}` is not RFC 3339: {error}")))
}
