//! Gateway settings, read from the environment.
//!
//! Variables are read through a closure rather than `std::env` directly, so tests pass their
//! own values without touching the process environment.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::state::AuditWrites;

/// The example keys shipped with the gateway, used when `MODEL_KEYS_FILE` is unset and
/// `examples/model_keys.yaml` is not in the working directory.
pub const EXAMPLE_KEYS: &str = include_str!("../../../examples/model_keys.yaml");
/// The example policy, used like [`EXAMPLE_KEYS`].
pub const EXAMPLE_POLICY: &str = include_str!("../../../examples/policies.yaml");

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid environment variable `{name}`: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong and what to set instead.
    pub reason: String,
}

/// Where the model keys or policy to import at the first start come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file named by a variable or found in the working directory.
    File(PathBuf),
    /// The example shipped in the binary.
    Builtin(&'static str),
}

/// Everything the container binary reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`HOST`).
    pub host: IpAddr,
    /// Listen port (`PORT`); 0 picks a free one.
    pub port: u16,
    /// Folder of the embedded store and `audit.log` (`DATA_DIR`).
    pub data_dir: PathBuf,
    /// Keys imported into an empty store (`MODEL_KEYS_FILE`).
    pub model_keys: Source,
    /// Policy imported into an empty store (`POLICY_FILE`).
    pub policy: Source,
    /// Key for the admin routes (`ADMIN_KEY`); admin routes answer 503 without it.
    pub admin_key: Option<String>,
    /// Largest accepted request body in bytes (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Whether audit events keep tool inputs (`AUDIT_TOOL_INPUT`: `keep` or `drop`).
    pub audit_tool_input: bool,
    /// Secret that signs MCP session ids (`SESSION_SECRET`); random per process when unset.
    pub session_secret: Option<String>,
    /// How long an MCP session id stays valid (`SESSION_TTL`).
    pub session_ttl: Duration,
    /// How long keys and the policy are cached between store reads (`CACHE_TTL`).
    pub cache_ttl: Duration,
    /// Audit writes per allowed call (`AUDIT_WRITES`: `twice` or `once`).
    pub audit_writes: AuditWrites,
}

impl Settings {
    /// Reads the settings through `var`, which returns a variable's value or `None`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        Ok(Self {
            host: parse(&var, "HOST", "127.0.0.1", "an IP address such as `127.0.0.1` or `0.0.0.0`")?,
            port: parse(&var, "PORT", "8000", "a port number from 0 to 65535")?,
            data_dir: PathBuf::from(var("DATA_DIR").unwrap_or_else(|| "./data".to_owned())),
            model_keys: source(var("MODEL_KEYS_FILE"), "examples/model_keys.yaml", EXAMPLE_KEYS),
            policy: source(var("POLICY_FILE"), "examples/policies.yaml", EXAMPLE_POLICY),
            admin_key: var("ADMIN_KEY"),
            max_body_bytes: parse(&var, "MAX_BODY_BYTES", "1048576", "a size in bytes, such as `1048576`")?,
            audit_tool_input: audit_input(var("AUDIT_TOOL_INPUT"))?,
            session_secret: var("SESSION_SECRET"),
            session_ttl: duration(var("SESSION_TTL"), "SESSION_TTL", Duration::from_secs(24 * 3600))?,
            cache_ttl: duration(var("CACHE_TTL"), "CACHE_TTL", Duration::from_secs(5))?,
            audit_writes: audit_writes(var("AUDIT_WRITES"))?,
        })
    }
}

fn parse<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
    expected: &str,
) -> Result<T, ConfigError> {
    let value = var(name).unwrap_or_else(|| default.to_owned());
    value.trim().parse().map_err(|_| ConfigError { name, reason: format!("`{value}` is not {expected}") })
}

fn source(variable: Option<String>, example: &str, builtin: &'static str) -> Source {
    match variable {
        Some(path) => Source::File(PathBuf::from(path)),
        None if std::path::Path::new(example).is_file() => Source::File(PathBuf::from(example)),
        None => Source::Builtin(builtin),
    }
}

fn audit_input(value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("keep") => Ok(true),
        Some("drop") => Ok(false),
        Some(other) => {
            Err(ConfigError { name: "AUDIT_TOOL_INPUT", reason: format!("`{other}` is not `keep` or `drop`") })
        }
    }
}

fn audit_writes(value: Option<String>) -> Result<AuditWrites, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("twice") => Ok(AuditWrites::Twice),
        Some("once") => Ok(AuditWrites::Once),
        Some(other) => Err(ConfigError { name: "AUDIT_WRITES", reason: format!("`{other}` is not `twice` or `once`") }),
    }
}

fn duration(value: Option<String>, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let Some(value) = value else { return Ok(default) };
    humantime::parse_duration(value.trim()).map_err(|error| ConfigError {
        name,
        reason: format!("`{value}` is not a duration ({error}); write e.g. `30m` or `24h`"),
    })
}
