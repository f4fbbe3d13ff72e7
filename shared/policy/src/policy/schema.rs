//! The `policies.yaml` document as written, before validation.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_saphyr::Spanned;

/// What a rule or the default does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The call goes ahead.
    Allow,
    /// The call is rejected.
    Deny,
}

impl Effect {
    /// The lowercase name used in files, logs and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Whether a rule or the whole policy is enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decisions take effect.
    #[default]
    Enforce,
    /// Decisions are computed and recorded as what would have happened, but not enforced.
    Shadow,
}

/// Whose calls a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// Calls within one session.
    Session,
    /// Calls by one model, across its sessions.
    Model,
}

impl Per {
    /// The lowercase name used in files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Model => "model",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub version: Option<Spanned<u32>>,
    pub default: Option<Effect>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub limits: Vec<Spanned<RawLimit>>,
    #[serde(default)]
    pub anomalies: Option<RawAnomalies>,
}

/// The `anomalies` section; every field is optional and falls back to its default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnomalies {
    #[serde(default)]
    pub denial_spike: Option<RawDenialSpike>,
    #[serde(default)]
    pub call_rate_spike: Option<RawCallRateSpike>,
    #[serde(default)]
    pub scope_probing: Option<RawScopeProbing>,
    #[serde(default)]
    pub first_tool_use: Option<bool>,
    #[serde(default)]
    pub quarantine: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDenialSpike {
    #[serde(default)]
    pub enabled: Option<bool>,
    pub threshold: Option<Spanned<u64>>,
    pub window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCallRateSpike {
    #[serde(default)]
    pub enabled: Option<bool>,
    pub window: Option<Spanned<String>>,
    pub baseline_windows: Option<Spanned<u32>>,
    pub factor: Option<Spanned<f64>>,
    pub min_calls: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScopeProbing {
    #[serde(default)]
    pub enabled: Option<bool>,
    pub distinct_tools: Option<Spanned<u64>>,
    pub window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub id: Spanned<String>,
    #[serde(default)]
    #[expect(dead_code, reason = "free text for readers of the file, accepted so that it is not an unknown field")]
    pub description: Option<String>,
    pub action: Effect,
    pub reason: Spanned<String>,
    #[serde(default)]
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
    pub tools: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub when: Vec<Spanned<RawCondition>>,
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCondition {
    pub path: Spanned<String>,
    /// `equals: null` tests for a JSON `null`, so an explicit null is `Some`.
    #[serde(default, deserialize_with = "present_value")]
    pub equals: Option<Spanned<Value>>,
    pub one_of: Option<Spanned<Vec<Spanned<Value>>>>,
    pub matches: Option<Spanned<String>>,
    pub gt: Option<Spanned<f64>>,
    pub gte: Option<Spanned<f64>>,
    pub lt: Option<Spanned<f64>>,
    pub lte: Option<Spanned<f64>>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub present: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    pub id: Spanned<String>,
    #[serde(default)]
    #[expect(dead_code, reason = "free text for readers of the file, accepted so that it is not an unknown field")]
    pub description: Option<String>,
    pub per: Per,
    pub max_calls: Spanned<u64>,
    pub window: Spanned<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub tools: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub mode: Mode,
}

/// Reads a field that is present as `Some`, even when its value is `null`.
fn present_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Spanned<Value>>, D::Error> {
    Spanned::<Value>::deserialize(deserializer).map(Some)
}
