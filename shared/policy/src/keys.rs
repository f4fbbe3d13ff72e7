//! Model keys: the `model_keys.yaml` format, hashed credentials and authentication.
//!
//! ```yaml
//! models:
//!   gpt-4o:
//!     key: "modelkey-abc123"          # or key_sha256: "<64 hex digits>"
//!     tools: ["calendar.*", "search.*"]
//!     expires: "2025-12-31T00:00:00Z" # RFC 3339; optional
//!     revoked: false                  # optional
//! ```
//!
//! Only SHA-256 hashes of keys are kept in memory. A key is valid strictly before its expiry
//! instant.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{LoadError, Position, Problem};
use crate::glob::PatternList;
use crate::names::{self, NameKind};
use crate::yaml::{self, YamlLimits};

/// SHA-256 of a key.
pub type KeyHash = [u8; 32];

/// Hashes a plaintext key as every store keeps it.
pub fn hash_key(plaintext: &str) -> KeyHash {
    Sha256::digest(plaintext.as_bytes()).into()
}

/// Returns the public identifier of a key: `k_` and the first 12 hex digits of its hash. Safe to log.
pub fn key_id(hash: &KeyHash) -> String {
    let prefix = hash.get(..6).unwrap_or_default();
    format!("k_{}", hex::encode(prefix))
}

/// Parses an RFC 3339 timestamp with a `Z` or numeric offset, returning the instant in UTC.
pub fn parse_timestamp(text: &str) -> Result<OffsetDateTime, String> {
    let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| {
        format!(
            "invalid timestamp `{text}`: expected an RFC 3339 date and time with a UTC offset, \
             such as `2025-12-31T00:00:00Z` or `2025-12-31T01:00:00+01:00`"
        )
    })?;
    // A time near the end of year 9999 with a negative offset is past the range of
    // `OffsetDateTime` once converted to UTC, so the conversion is checked.
    parsed.checked_to_offset(time::UtcOffset::UTC).ok_or_else(|| {
        format!("invalid timestamp `{text}`: it is out of range once converted to UTC; use a date before year 9999")
    })
}

/// The tool globs a model's key may call. They match tool names exactly, case included.
#[derive(Debug, Clone)]
pub struct Scope {
    patterns: PatternList,
}

impl Scope {
    /// Checks new patterns against the tool-name rules of [`names`] and compiles them, so
    /// that a pattern that could match no tool name is rejected.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let problems: Vec<String> = patterns
            .iter()
            .filter_map(|pattern| names::check_pattern(NameKind::Tool, pattern.as_ref()).err())
            .map(|error| error.to_string())
            .collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Self::new(patterns)
    }

    /// Compiles a scope from fnmatch patterns without the tool-name rules, for scopes read
    /// back from a store, which were checked when they were saved. A scope saved before those
    /// rules existed may contain a pattern with a character that no tool name has, and such a
    /// pattern matches nothing.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("a scope needs at least one tool pattern; a model with no tools should be revoked".to_owned());
        }
        PatternList::new(patterns)
            .map(|patterns| Self { patterns })
            .map_err(|errors| errors.iter().map(|(_, error)| error.to_string()).collect::<Vec<_>>().join("; "))
    }

    /// Returns whether the scope allows `tool_name`.
    pub fn allows(&self, tool_name: &str) -> bool {
        self.patterns.is_match(tool_name)
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        self.patterns.sources()
    }
}

/// One credential of a model. A model has several while a rotated key is in its grace period.
#[derive(Debug, Clone)]
pub struct Credential {
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// The key is valid strictly before this instant; `None` means no expiry.
    pub expires: Option<OffsetDateTime>,
    /// A revoked credential never authenticates.
    pub revoked: bool,
}

impl Credential {
    /// Returns the credential's public identifier.
    pub fn key_id(&self) -> String {
        key_id(&self.hash)
    }
}

/// Everything the gateway stores about one model.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// The model's identifier, as callers name it.
    pub model_id: String,
    /// Its credentials, usually one.
    pub credentials: Vec<Credential>,
    /// The tools it may call.
    pub scope: Scope,
    /// A revoked model never authenticates, whatever its credentials.
    pub revoked: bool,
    /// Until this instant the model's calls are denied, after an anomaly such as a denial
    /// spike. It authenticates, so its denied calls are recorded under its id.
    pub quarantined_until: Option<OffsetDateTime>,
}

impl ModelEntry {
    /// Returns the end of the model's quarantine if it is still in force at `now`.
    pub fn quarantine_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.quarantined_until.filter(|until| *until > now)
    }
}

/// The reason a presented key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key, or an empty one, was presented.
    #[error("missing model key; send it in the `X-Model-Key` header")]
    MissingKey,
    /// No model has this id.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// The key belongs to no model.
    #[error("unknown model key")]
    UnknownKey,
    /// The key does not belong to the model.
    #[error("wrong key for model `{0}`")]
    WrongKey(String),
    /// The key matched but its expiry has passed.
    #[error("key `{key_id}` of model `{model_id}` expired at {expires}")]
    Expired {
        /// The model.
        model_id: String,
        /// The expired key's public id.
        key_id: String,
        /// The expiry instant, RFC 3339.
        expires: String,
    },
    /// The key or the model has been revoked.
    #[error("key `{key_id}` of model `{model_id}` is revoked")]
    Revoked {
        /// The model.
        model_id: String,
        /// The revoked key's public id.
        key_id: String,
    },
}

/// A model whose key was accepted.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The authenticated model.
    pub entry: &'a ModelEntry,
    /// The credential that matched.
    pub credential: &'a Credential,
}

impl Principal<'_> {
    /// Returns the authenticated model's id.
    pub fn model_id(&self) -> &str {
        &self.entry.model_id
    }
}

/// Hash compared against when the model is unknown, so that an unknown model costs the same
/// work as a wrong key.
const DUMMY_HASH: KeyHash = [0x5a; 32];

/// All model keys, indexed by model id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    models: HashMap<String, ModelEntry>,
    /// Model id of each credential's hash, for callers that present a key without a model id.
    by_hash: HashMap<KeyHash, String>,
}

impl KeySet {
    /// Builds a key set from entries; a later entry with the same model id replaces an earlier one.
    ///
    /// A key of several models identifies none of them by itself, so [`KeySet::authenticate_key`]
    /// rejects it as unknown. [`KeySet::authenticate`], where the caller names the model, still
    /// accepts it for each of them.
    pub fn from_entries(entries: impl IntoIterator<Item = ModelEntry>) -> Self {
        let models: HashMap<String, ModelEntry> =
            entries.into_iter().map(|entry| (entry.model_id.clone(), entry)).collect();

        let mut by_hash = HashMap::new();
        let mut shared = HashSet::new();
        for entry in models.values() {
            for credential in &entry.credentials {
                let previous = by_hash.insert(credential.hash, entry.model_id.clone());
                if previous.is_some_and(|owner| owner != entry.model_id) {
                    shared.insert(credential.hash);
                }
            }
        }
        by_hash.retain(|hash, _| !shared.contains(hash));
        Self { models, by_hash }
    }

    /// Parses and validates a `model_keys.yaml` document. `origin` names it in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, LoadError> {
        let raw: RawKeysFile = yaml::parse(origin, text, YamlLimits::KEYS)?;
        let mut problems = Vec::new();
        let mut entries = Vec::with_capacity(raw.models.len());
        let mut owners = HashMap::new();
        for (model_id, model) in raw.models {
            let at = yaml::position_of(model.referenced);
            let Some(entry) = RawModel::check(model, &model_id, &mut problems) else { continue };
            check_key_unique(&entry, at, &mut owners, &mut problems);
            entries.push(entry);
        }

        if !problems.is_empty() {
            problems.sort_by_key(|problem| problem.position.map(|p| (p.line, p.column)));
            return Err(LoadError { origin: origin.to_owned(), problems });
        }
        Ok(Self::from_entries(entries))
    }

    /// Checks a presented key for `model_id` at instant `now`.
    ///
    /// The presented key is hashed and compared with every credential of the model in constant
    /// time, so the time taken does not depend on how much of the key was right.
    pub fn authenticate(
        &self,
        model_id: &str,
        presented_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Principal<'_>, AuthError> {
        let presented = match presented_key {
            Some(key) if !key.is_empty() => hash_key(key),
            _ => return Err(AuthError::MissingKey),
        };

        let Some(entry) = self.models.get(model_id) else {
            let _ = bool::from(presented.ct_eq(&DUMMY_HASH));
            return Err(AuthError::UnknownModel(model_id.to_owned()));
        };

        let mut matched = None;
        for credential in &entry.credentials {
            if bool::from(presented.ct_eq(&credential.hash)) && matched.is_none() {
                matched = Some(credential);
            }
        }
        let Some(credential) = matched else {
            return Err(AuthError::WrongKey(model_id.to_owned()));
        };

        if entry.revoked || credential.revoked {
            return Err(AuthError::Revoked { model_id: model_id.to_owned(), key_id: credential.key_id() });
        }
        if let Some(expires) = credential.expires
            && now >= expires
        {
            return Err(AuthError::Expired {
                model_id: model_id.to_owned(),
                key_id: credential.key_id(),
                expires: expires.format(&Rfc3339).unwrap_or_default(),
            });
        }
        Ok(Principal { entry, credential })
    }

    /// Checks a presented key that names no model, as on the MCP endpoint, where the key alone
    /// identifies the model.
    ///
    /// The lookup is by the key's SHA-256, so its timing reveals nothing about the stored keys.
    pub fn authenticate_key(
        &self,
        presented_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Principal<'_>, AuthError> {
        let key = match presented_key {
            Some(key) if !key.is_empty() => key,
            _ => return Err(AuthError::MissingKey),
        };
        match self.by_hash.get(&hash_key(key)) {
            Some(model_id) => self.authenticate(model_id, Some(key), now),
            None => Err(AuthError::UnknownKey),
        }
    }

    /// Returns the entry of `model_id`, if any.
    pub fn get(&self, model_id: &str) -> Option<&ModelEntry> {
        self.models.get(model_id)
    }

    /// Iterates over every model entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether there are no models.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeysFile {
    models: BTreeMap<String, Spanned<RawModel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    key: Option<Spanned<String>>,
    key_sha256: Option<Spanned<String>>,
    tools: Spanned<Vec<Spanned<String>>>,
    expires: Option<Spanned<String>>,
    #[serde(default)]
    revoked: bool,
}

impl RawModel {
    fn check(model: Spanned<Self>, model_id: &str, problems: &mut Vec<Problem>) -> Option<ModelEntry> {
        let at = yaml::position_of(model.referenced);
        let field = |name: &str| format!("models.{model_id}.{name}");
        let before = problems.len();
        let model = model.value;

        if let Err(error) = names::check_model_id(model_id) {
            problems.push(Problem::new(at, "models", error.to_string()));
        }

        let hash = match (model.key, model.key_sha256) {
            (Some(_), Some(digest)) => {
                let message = "set either `key` or `key_sha256`, not both";
                problems.push(Problem::new(yaml::position_of(digest.referenced), field("key_sha256"), message));
                None
            }
            (None, None) => {
                let message = "missing `key` or `key_sha256`; every model needs a key";
                problems.push(Problem::new(at, format!("models.{model_id}"), message));
                None
            }
            (Some(key), None) => check_plain_key(&key, &field("key"), problems),
            (None, Some(digest)) => check_digest(&digest, &field("key_sha256"), problems),
        };

        let patterns: Vec<&str> = model.tools.value.iter().map(|tool| tool.value.as_str()).collect();
        let scope = check_scope(&model.tools, &patterns, &field("tools"), problems);

        let expires = model.expires.and_then(|expires| match parse_timestamp(&expires.value) {
            Ok(instant) => Some(instant),
            Err(message) => {
                problems.push(Problem::new(yaml::position_of(expires.referenced), field("expires"), message));
                None
            }
        });

        if problems.len() > before {
            return None;
        }
        let credential = Credential { hash: hash?, expires, revoked: false };
        Some(ModelEntry {
            model_id: model_id.to_owned(),
            credentials: vec![credential],
            scope: scope?,
            revoked: model.revoked,
            quarantined_until: None,
        })
    }
}

/// Reports a model whose key is already the key of an earlier model in `owners`. On the MCP
/// endpoint the key alone names the model, so a shared key would leave the model undecided.
fn check_key_unique(
    entry: &ModelEntry,
    at: Option<Position>,
    owners: &mut HashMap<KeyHash, String>,
    problems: &mut Vec<Problem>,
) {
    for credential in &entry.credentials {
        match owners.get(&credential.hash) {
            Some(owner) => {
                let message = format!(
                    "model `{}` has the same key as model `{owner}`; give each model its own key",
                    entry.model_id
                );
                problems.push(Problem::new(at, format!("models.{}", entry.model_id), message));
            }
            None => {
                owners.insert(credential.hash, entry.model_id.clone());
            }
        }
    }
}

fn check_plain_key(key: &Spanned<String>, field: &str, problems: &mut Vec<Problem>) -> Option<KeyHash> {
    if key.value.is_empty() {
        problems.push(Problem::new(yaml::position_of(key.referenced), field, "a key cannot be empty"));
        return None;
    }
    Some(hash_key(&key.value))
}

fn check_digest(digest: &Spanned<String>, field: &str, problems: &mut Vec<Problem>) -> Option<KeyHash> {
    let mut hash = [0u8; 32];
    match hex::decode_to_slice(digest.value.trim(), &mut hash) {
        Ok(()) => Some(hash),
        Err(_) => {
            let message =
                format!("invalid SHA-256 digest `{}`: expected 64 hex digits, as printed by `sha256sum`", digest.value);
            problems.push(Problem::new(yaml::position_of(digest.referenced), field, message));
            None
        }
    }
}

fn check_scope(
    tools: &Spanned<Vec<Spanned<String>>>,
    patterns: &[&str],
    field: &str,
    problems: &mut Vec<Problem>,
) -> Option<Scope> {
    if patterns.is_empty() {
        let message = "a scope needs at least one tool pattern; revoke the model instead of leaving `tools` empty";
        problems.push(Problem::new(yaml::position_of(tools.referenced), field, message));
        return None;
    }
    let before = problems.len();
    for (index, (pattern, spanned)) in patterns.iter().zip(&tools.value).enumerate() {
        if let Err(error) = names::check_pattern(NameKind::Tool, pattern) {
            let position = yaml::position_of(spanned.referenced);
            problems.push(Problem::new(position, format!("{field}[{index}]"), error.to_string()));
        }
    }
    if problems.len() > before {
        return None;
    }
    match PatternList::new(patterns) {
        Ok(patterns) => Some(Scope { patterns }),
        Err(errors) => {
            for (index, error) in errors {
                let position = tools.value.get(index).and_then(|tool| yaml::position_of(tool.referenced));
                problems.push(Problem::new(position, format!("{field}[{index}]"), error.to_string()));
            }
            None
        }
    }
}
