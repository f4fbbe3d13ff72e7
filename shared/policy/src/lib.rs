//! The decision core of MCP-Sec Gateway.
//!
//! This crate decides whether a model may call a tool. It performs no I/O, spawns no tasks and
//! never reads the clock: callers pass the current time and, for call limits, the counts of
//! earlier calls. That keeps every decision reproducible in tests and cheap on the hot path.
//!
//! * [`keys`]: the `model_keys.yaml` format, SHA-256 key hashes and [`KeySet::authenticate`].
//! * [`names`]: the characters of tool names, model ids and upstream prefixes, and how tool
//!   patterns treat case.
//! * [`glob`]: tool-name patterns with Python `fnmatch` semantics, compiled with `globset`.
//! * [`Policy`]: the `policies.yaml` format and [`Policy::evaluate`].
//! * [`limits`]: call counting for per-session and per-model limits.
//!
//! # The policy format
//!
//! ```yaml
//! version: 1            # schema version; optional, 1 is the only one
//! default: deny         # allow | deny; deny when absent
//! mode: enforce         # enforce | shadow; shadow records decisions without enforcing them
//! rules:
//!   - id: no-calendar-deletes        # letters, digits, - _ . :; unique across rules and limits
//!     action: deny                   # allow | deny
//!     reason: deleting events needs a human
//!     models: ["*"]                  # fnmatch patterns on model ids; every model when absent
//!     tools: ["calendar.delete_*"]   # fnmatch patterns on tool names; required
//!     when:                          # optional; every condition must hold
//!       - path: /calendar            # JSON Pointer into the tool input
//!         one_of: [work, shared]
//!     mode: shadow                   # optional; this rule is only recorded
//! limits:
//!   - id: session-burst
//!     per: session                   # session | model
//!     max_calls: 100
//!     window: 1m                     # 1s to 7d: `30s`, `5m`, `1h`, `1d`
//!     tools: ["*"]                   # optional, like models
//! anomalies:                         # optional; thresholds of the anomaly detectors
//!   denial_spike: {threshold: 10, window: 2m}
//!   scope_probing: {distinct_tools: 5, window: 10m}
//!   quarantine: 15m                  # optional; deny a model's calls after its denial spike
//! ```
//!
//! A condition names a `path` and one or more tests, all of which must pass: `equals`,
//! `one_of`, `matches` (an fnmatch pattern on a string), `gt`, `gte`, `lt`, `lte` (numbers),
//! `min_length`, `max_length` (characters of a string, elements of an array or object) and
//! `present` (`true` or `false`). An absent field fails every test but `present: false`. A
//! field of the wrong type makes a deny rule match and an allow rule not match, so a model
//! cannot evade a deny rule by changing a value's type.
//!
//! Decisions: a matching enforced deny rule or a reached limit denies; otherwise a matching
//! enforced allow rule allows; otherwise the default decides. Rules are sorted by id, so
//! their order in the file changes nothing. A limit counts the allowed calls that it applies
//! to, and denies the call that would exceed `max_calls` within the window.
//!
//! # Untrusted YAML
//!
//! `serde_yaml` is archived, so both formats are read with `serde-saphyr`, which is maintained,
//! has no unsafe code, reports line and column, rejects duplicate keys and bounds aliases,
//! depth, nodes and scalar bytes with a budget. [`yaml::YamlLimits`] tightens that budget for
//! these files and caps the input size. Values are read as YAML 1.2: YAML 1.1 booleans such as
//! `yes` and `off` are text, and rejected where a boolean is expected; [`yaml`] lists how
//! each YAML 1.1 form is read. Merge keys (`<<`) are rejected, and unknown fields are errors.

pub mod error;
pub mod glob;
pub mod keys;
pub mod limits;
pub mod names;
pub mod policy;
pub mod yaml;

pub use error::{LoadError, Position, Problem};
pub use keys::{AuthError, Credential, KeySet, ModelEntry, Principal, Scope};
pub use limits::{CallCounts, CountedLimit, LimitKey, NoCalls, WindowCounters};
pub use policy::{
    AnomalySettings, CallRateSpike, Decision, DenialSpike, Effect, KnownTool, Mode, Per, Policy, PolicyDocument,
    Request, RuleKind, RuleMatch, ScopeProbing, Verdict, Warning, authorize,
};
