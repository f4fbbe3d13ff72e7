//! The policy: a checked, compiled form of `policies.yaml`.

pub mod anomalies;
mod compile;
mod compile_when;
mod condition;
mod eval;
mod lint;
mod schema;

use std::time::Duration;

pub use anomalies::{AnomalySettings, CallRateSpike, DenialSpike, ScopeProbing};
pub use eval::{Decision, Request, RuleKind, RuleMatch, Verdict, authorize};
pub use lint::{KnownTool, Warning};
pub use schema::{Effect, Mode, Per};

use crate::error::LoadError;
use crate::glob::{Pattern, PatternIndex};
use crate::yaml::{self, YamlLimits};
use condition::Condition;

/// A validated policy, compiled for fast evaluation.
#[derive(Debug, Clone)]
pub struct Policy {
    default: Effect,
    mode: Mode,
    /// Sorted by id, so evaluation order, and with it every reported id list, does not depend
    /// on the order of the file.
    rules: Vec<Rule>,
    limits: Vec<Limit>,
    /// Every rule's tool patterns; lookups return rule positions.
    tool_index: PatternIndex,
    /// Thresholds of the anomaly detectors, which run off the call path.
    anomalies: AnomalySettings,
}

/// A rule after validation.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: String,
    pub action: Effect,
    pub reason: String,
    /// The tool patterns, which ignore ASCII case in a deny rule. The policy's index contains
    /// them too, and these are for [`Policy::warnings`].
    pub tools: Vec<Pattern>,
    /// `None` matches every model.
    pub models: Option<Vec<Pattern>>,
    pub conditions: Vec<Condition>,
    pub mode: Mode,
}

/// A call limit after validation.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    pub id: String,
    pub per: Per,
    pub max_calls: u64,
    pub window: Duration,
    pub reason: String,
    pub models: Vec<Pattern>,
    pub tools: Vec<Pattern>,
    pub mode: Mode,
}

/// Returns whether any of `patterns` matches `name`.
pub(crate) fn any_match(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|pattern| pattern.is_match(name))
}

/// A `policies.yaml` document that parsed, before validation.
#[derive(Debug)]
pub struct PolicyDocument {
    origin: String,
    /// The text, which validation reads for the spelling of numbers.
    source: String,
    raw: schema::RawPolicy,
}

impl PolicyDocument {
    /// Parses `text`, rejecting YAML errors, unknown fields and wrong types. `origin` names
    /// the document in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, LoadError> {
        let raw = yaml::parse(origin, text, YamlLimits::POLICY)?;
        Ok(Self { origin: origin.to_owned(), source: text.to_owned(), raw })
    }
}

impl Policy {
    /// Parses and validates a `policies.yaml` document. `origin` names it in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, LoadError> {
        Self::compile(PolicyDocument::parse(origin, text)?)
    }

    /// Validates a parsed document and compiles its patterns, reporting every problem.
    pub fn compile(document: PolicyDocument) -> Result<Self, LoadError> {
        let origin = document.origin;
        compile::compile(document.raw, &document.source).map_err(|problems| LoadError { origin, problems })
    }

    /// A policy with no rules and the given default, enforced.
    pub fn with_default(default: Effect) -> Self {
        compile::empty(default)
    }

    /// The decision when no rule matches.
    pub fn default_effect(&self) -> Effect {
        self.default
    }

    /// Whether the whole policy is enforced or only recorded.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of rules, not counting limits.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Number of call limits.
    pub fn limit_count(&self) -> usize {
        self.limits.len()
    }

    /// The ids of every rule and limit, sorted.
    pub fn rule_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.rules.iter().map(|rule| rule.id.as_str()).collect();
        ids.extend(self.limits.iter().map(|limit| limit.id.as_str()));
        ids.sort_unstable();
        ids
    }

    /// The thresholds of the anomaly detectors and the quarantine after a denial spike.
    pub fn anomalies(&self) -> &AnomalySettings {
        &self.anomalies
    }

    /// The longest window of any limit, for pruning counters; zero without limits.
    pub fn longest_window(&self) -> Duration {
        self.limits.iter().map(|limit| limit.window).max().unwrap_or_default()
    }
}
