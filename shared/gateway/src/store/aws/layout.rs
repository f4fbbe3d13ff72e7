//! Names of the attributes, keys and index in the tables, shared by the stores and `aws-init`.

/// Partition key of the keys table.
pub(super) const MODEL_ID: &str = "model_id";
/// Tool patterns of a model, a list of strings.
pub(super) const TOOLS: &str = "tools";
/// Whether a model or a credential is revoked.
pub(super) const REVOKED: &str = "revoked";
/// Credentials of a model, a list of maps.
pub(super) const CREDENTIALS: &str = "credentials";
/// SHA-256 of a key, 32 bytes of binary.
pub(super) const HASH: &str = "hash";
/// Public id of a key.
pub(super) const KEY_ID: &str = "key_id";
/// End of a model's quarantine, RFC 3339.
pub(super) const QUARANTINED_UNTIL: &str = "quarantined_until";
/// Expiry of a key, RFC 3339.
pub(super) const EXPIRES: &str = "expires";

/// Partition key of the sessions table: [`SESSION_PREFIX`] and the session id.
pub(super) const PK: &str = "pk";
/// Sort key of the sessions table: [`EVENT_PREFIX`] and the event id.
pub(super) const SK: &str = "sk";
/// The audit event as JSON.
pub(super) const EVENT: &str = "event";
/// Session id of an event.
pub(super) const SESSION_ID: &str = "session_id";
/// Decision of an event: `allow`, `deny`, `unauthorized` or `error`.
pub(super) const DECISION: &str = "decision";
/// Time of an event, RFC 3339.
pub(super) const TIME: &str = "time";
/// Time of an event in Unix nanoseconds, a number: the sort key of [`BY_DAY_INDEX`].
pub(super) const TIME_NS: &str = "time_ns";
/// UTC date of an event, `YYYY-MM-DD`: the partition key of [`BY_DAY_INDEX`].
pub(super) const DAY: &str = "day";
/// Expiry of an event in Unix seconds, the table's time-to-live attribute.
pub(super) const TTL: &str = "ttl";

/// UTC date of an anomaly event, `YYYY-MM-DD`: the partition key of [`ALERTS_INDEX`]. Call
/// items do not have it, so the index holds anomalies only.
pub(super) const ALERT_DAY: &str = "alert_day";

/// Prefix of the partition key of an anomaly event, followed by its event id. Anomaly ids
/// are derived from what they report, so the key itself makes a second write of the same
/// anomaly fail its condition.
pub(super) const ANOMALY_PREFIX: &str = "A#";

/// Prefix of the partition key of every event of a session.
pub(super) const SESSION_PREFIX: &str = "S#";
/// Prefix of the sort key of an event.
pub(super) const EVENT_PREFIX: &str = "E#";

/// Global secondary index of the sessions table by day, newest first with a descending query.
/// It projects the keys and [`SESSION_ID`].
pub const BY_DAY_INDEX: &str = "by_day";

/// Global secondary index of the sessions table over anomaly events, by UTC day and time.
/// It projects every attribute, so listing alerts reads no items.
pub const ALERTS_INDEX: &str = "alerts_by_day";
