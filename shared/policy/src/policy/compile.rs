//! Validation of a parsed policy document into a [`Policy`].

use std::collections::HashMap;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::anomalies::{AnomalySettings, CallRateSpike, DenialSpike, ScopeProbing};
use super::compile_when::check_condition;
use super::condition::Condition;
use super::schema::{RawAnomalies, RawLimit, RawPolicy, RawRule};
use super::{Effect, Limit, Mode, Policy, Rule};
use crate::error::{Position, Problem};
use crate::glob::{Pattern, PatternIndex};
use crate::names::{self, NameKind};
use crate::yaml::position_of;

/// The only schema version this crate reads.
const SCHEMA_VERSION: u32 = 1;

/// Longest accepted limit window. Counters for longer windows would hold state for weeks.
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) fn empty(default: Effect) -> Policy {
    Policy {
        default,
        mode: Mode::Enforce,
        rules: Vec::new(),
        limits: Vec::new(),
        tool_index: PatternIndex::default(),
        anomalies: AnomalySettings::default(),
    }
}

/// Validates `raw`, which was parsed from `source`; the source gives the spelling of numbers.
pub(super) fn compile(raw: RawPolicy, source: &str) -> Result<Policy, Vec<Problem>> {
    let mut problems = Vec::new();

    if let Some(version) = &raw.version
        && version.value != SCHEMA_VERSION
    {
        let message =
            format!("unsupported schema version {}; this gateway reads version {SCHEMA_VERSION}", version.value);
        problems.push(Problem::new(position_of(version.referenced), "version", message));
    }

    let mut seen_ids: HashMap<String, Option<Position>> = HashMap::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (index, rule) in raw.rules.into_iter().enumerate() {
        let field = format!("rules[{index}]");
        check_unique_id(&rule.value.id, &field, &mut seen_ids, &mut problems);
        if let Some(checked) = check_rule(rule, &field, source, &mut problems) {
            rules.push(checked);
        }
    }

    let mut limits = Vec::with_capacity(raw.limits.len());
    for (index, limit) in raw.limits.into_iter().enumerate() {
        let field = format!("limits[{index}]");
        check_unique_id(&limit.value.id, &field, &mut seen_ids, &mut problems);
        if let Some(checked) = check_limit(limit, &field, &mut problems) {
            limits.push(checked);
        }
    }

    let anomalies = match raw.anomalies {
        Some(section) => check_anomalies(section, &mut problems),
        None => Some(AnomalySettings::default()),
    };

    if !problems.is_empty() {
        problems.sort_by_key(|problem| problem.position.map(|p| (p.line, p.column)));
        return Err(problems);
    }

    rules.sort_by(|a, b| a.id.cmp(&b.id));
    limits.sort_by(|a, b| a.id.cmp(&b.id));
    let mut tool_patterns = Vec::new();
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(position, rule)| {
            tool_patterns.extend(rule.tools.iter().map(|pattern| (pattern.clone(), position)));
            rule
        })
        .collect();

    let default = raw.default.unwrap_or(Effect::Deny);
    Ok(Policy {
        default,
        mode: raw.mode,
        rules,
        limits,
        tool_index: PatternIndex::new(tool_patterns),
        anomalies: anomalies.unwrap_or_default(),
    })
}

/// The rule id of the denials of a quarantined model, which no policy rule may take, so that
/// those denials are never mistaken for a rule's.
const RESERVED_ID: &str = "quarantine";

/// The prefix of the rule ids of anomaly events.
const RESERVED_PREFIX: &str = "anomaly:";

fn check_unique_id(
    id: &Spanned<String>,
    field: &str,
    seen: &mut HashMap<String, Option<Position>>,
    problems: &mut Vec<Problem>,
) {
    let position = position_of(id.referenced);
    let field = format!("{field}.id");
    let value = id.value.as_str();

    if value.is_empty() {
        problems.push(Problem::new(position, field, "a rule id cannot be empty"));
        return;
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))) {
        let message = format!(
            "invalid rule id `{value}`: character `{bad}` is not allowed; use letters, digits, `-`, `_`, `.` and `:`"
        );
        problems.push(Problem::new(position, field, message));
        return;
    }
    if value == RESERVED_ID || value.starts_with(RESERVED_PREFIX) {
        let message = format!(
            "rule id `{value}` is reserved: the gateway names quarantine denials `{RESERVED_ID}` and anomalies `{RESERVED_PREFIX}<detector>`; choose another id"
        );
        problems.push(Problem::new(position, field, message));
        return;
    }
    if let Some(first) = seen.get(value) {
        let first_line = first.map_or_else(String::new, |p| format!(" (first defined on line {})", p.line));
        problems.push(Problem::new(
            position,
            field,
            format!("duplicate rule id `{value}`{first_line}; ids must be unique across rules and limits"),
        ));
        return;
    }
    seen.insert(value.to_owned(), position);
}

/// Compiles a rule. A deny rule's tool patterns ignore ASCII case, so that a name differing
/// only in case cannot slip past it; an allow rule's match exactly.
fn check_rule(rule: Spanned<RawRule>, field: &str, source: &str, problems: &mut Vec<Problem>) -> Option<Rule> {
    let before = problems.len();
    let raw = rule.value;

    if raw.reason.value.trim().is_empty() {
        problems.push(Problem::new(
            position_of(raw.reason.referenced),
            format!("{field}.reason"),
            "a reason cannot be empty; it is shown to the caller and in the audit trail",
        ));
    }
    let tool_case = if raw.action == Effect::Deny { Case::Ignore } else { Case::Exact };
    let tools = check_patterns(Some(&raw.tools), NameKind::Tool, tool_case, &format!("{field}.tools"), problems);
    let models =
        check_patterns(raw.models.as_ref(), NameKind::Model, Case::Exact, &format!("{field}.models"), problems);
    let conditions: Vec<Condition> = raw
        .when
        .into_iter()
        .enumerate()
        .filter_map(|(index, condition)| {
            check_condition(condition, &format!("{field}.when[{index}]"), source, problems)
        })
        .collect();

    if problems.len() > before {
        return None;
    }
    let models = (!models.iter().all(Pattern::matches_everything)).then_some(models);
    Some(Rule {
        id: raw.id.value,
        action: raw.action,
        reason: raw.reason.value,
        tools,
        models,
        conditions,
        mode: raw.mode,
    })
}

fn check_limit(limit: Spanned<RawLimit>, field: &str, problems: &mut Vec<Problem>) -> Option<Limit> {
    let before = problems.len();
    let raw = limit.value;

    if raw.max_calls.value == 0 {
        let message = "`max_calls` must be at least 1; to block these calls write a deny rule";
        problems.push(Problem::new(position_of(raw.max_calls.referenced), format!("{field}.max_calls"), message));
    }
    let window = check_window(&raw.window, &format!("{field}.window"), problems);
    // A limit counts every case variant of a name, so it cannot be evaded by changing case.
    let tools = check_patterns(raw.tools.as_ref(), NameKind::Tool, Case::Ignore, &format!("{field}.tools"), problems);
    let models =
        check_patterns(raw.models.as_ref(), NameKind::Model, Case::Exact, &format!("{field}.models"), problems);

    if problems.len() > before {
        return None;
    }
    let window = window?;
    let reason = raw.reason.unwrap_or_else(|| {
        format!(
            "call limit `{}` reached: at most {} calls per {} per {}",
            raw.id.value,
            raw.max_calls.value,
            humantime::format_duration(window),
            raw.per.as_str()
        )
    });
    Some(Limit {
        id: raw.id.value,
        per: raw.per,
        max_calls: raw.max_calls.value,
        window,
        reason,
        models,
        tools,
        mode: raw.mode,
    })
}

/// Longest call-rate baseline, in windows; the counters keep one bucket per window.
const MAX_BASELINE_WINDOWS: u32 = 1440;

/// Validates the `anomalies` section; a detector without a field keeps its default value.
fn check_anomalies(raw: RawAnomalies, problems: &mut Vec<Problem>) -> Option<AnomalySettings> {
    let before = problems.len();
    let defaults = AnomalySettings::default();

    let denial_spike = match raw.denial_spike {
        None => defaults.denial_spike,
        Some(section) if section.enabled == Some(false) => None,
        Some(section) => {
            let base = DenialSpike::default();
            let field = "anomalies.denial_spike";
            Some(DenialSpike {
                threshold: at_least_one(
                    section.threshold.as_ref(),
                    base.threshold,
                    &format!("{field}.threshold"),
                    problems,
                ),
                window: optional_window(section.window.as_ref(), base.window, &format!("{field}.window"), problems),
            })
        }
    };

    let call_rate_spike = match raw.call_rate_spike {
        None => defaults.call_rate_spike,
        Some(section) if section.enabled == Some(false) => None,
        Some(section) => Some(check_call_rate(&section, problems)),
    };

    let scope_probing = match raw.scope_probing {
        None => defaults.scope_probing,
        Some(section) if section.enabled == Some(false) => None,
        Some(section) => {
            let base = ScopeProbing::default();
            let field = "anomalies.scope_probing";
            let distinct = &format!("{field}.distinct_tools");
            Some(ScopeProbing {
                distinct_tools: at_least_one(section.distinct_tools.as_ref(), base.distinct_tools, distinct, problems),
                window: optional_window(section.window.as_ref(), base.window, &format!("{field}.window"), problems),
            })
        }
    };

    let quarantine = raw.quarantine.as_ref().and_then(|value| check_window(value, "anomalies.quarantine", problems));
    if quarantine.is_some() && denial_spike.is_none() {
        let message = "a quarantine follows a denial spike, so it needs the `denial_spike` detector; enable it or remove `quarantine`";
        let position = raw.quarantine.as_ref().and_then(|value| position_of(value.referenced));
        problems.push(Problem::new(position, "anomalies.quarantine", message));
    }

    (problems.len() == before).then_some(AnomalySettings {
        denial_spike,
        call_rate_spike,
        scope_probing,
        first_tool_use: raw.first_tool_use.unwrap_or(defaults.first_tool_use),
        quarantine,
    })
}

fn check_call_rate(section: &super::schema::RawCallRateSpike, problems: &mut Vec<Problem>) -> CallRateSpike {
    let base = CallRateSpike::default();
    let field = "anomalies.call_rate_spike";

    let baseline_windows = match &section.baseline_windows {
        Some(windows) if windows.value == 0 || windows.value > MAX_BASELINE_WINDOWS => {
            let message = format!("`baseline_windows` must be between 1 and {MAX_BASELINE_WINDOWS}");
            problems.push(Problem::new(position_of(windows.referenced), format!("{field}.baseline_windows"), message));
            base.baseline_windows
        }
        Some(windows) => windows.value,
        None => base.baseline_windows,
    };
    let factor = match &section.factor {
        Some(factor) if !(factor.value.is_finite() && factor.value >= 1.0) => {
            let message = format!("`factor` must be a number of at least 1, not {}", factor.value);
            problems.push(Problem::new(position_of(factor.referenced), format!("{field}.factor"), message));
            base.factor
        }
        Some(factor) => factor.value,
        None => base.factor,
    };

    CallRateSpike {
        window: optional_window(section.window.as_ref(), base.window, &format!("{field}.window"), problems),
        baseline_windows,
        factor,
        min_calls: at_least_one(section.min_calls.as_ref(), base.min_calls, &format!("{field}.min_calls"), problems),
    }
}

/// Returns the value, or `default` when absent; 0 is a problem, since every count would cross it.
fn at_least_one(value: Option<&Spanned<u64>>, default: u64, field: &str, problems: &mut Vec<Problem>) -> u64 {
    match value {
        Some(value) if value.value == 0 => {
            let message = "must be at least 1; to turn the detector off write `enabled: false`";
            problems.push(Problem::new(position_of(value.referenced), field, message));
            default
        }
        Some(value) => value.value,
        None => default,
    }
}

fn optional_window(
    window: Option<&Spanned<String>>,
    default: Duration,
    field: &str,
    problems: &mut Vec<Problem>,
) -> Duration {
    window.and_then(|window| check_window(window, field, problems)).unwrap_or(default)
}

fn check_window(window: &Spanned<String>, field: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    let position = position_of(window.referenced);
    let parsed = match humantime::parse_duration(window.value.trim()) {
        Ok(duration) => duration,
        Err(error) => {
            let message = format!(
                "invalid duration `{}`: {error}; write a number and a unit, such as `30s`, `5m` or `1h`",
                window.value
            );
            problems.push(Problem::new(position, field, message));
            return None;
        }
    };
    if parsed < Duration::from_secs(1) || parsed > MAX_WINDOW {
        let message = format!("invalid duration `{}`: a window must be between 1s and 7d", window.value);
        problems.push(Problem::new(position, field, message));
        return None;
    }
    Some(parsed)
}

/// Whether a list of tool patterns matches names exactly or ignoring ASCII case.
#[derive(Clone, Copy)]
enum Case {
    Exact,
    Ignore,
}

/// Compiles a list of fnmatch patterns on names of `kind`; an absent list means every name
/// (`*`).
fn check_patterns(
    patterns: Option<&Spanned<Vec<Spanned<String>>>>,
    kind: NameKind,
    case: Case,
    field: &str,
    problems: &mut Vec<Problem>,
) -> Vec<Pattern> {
    let Some(patterns) = patterns else {
        return Pattern::new("*").into_iter().collect();
    };
    if patterns.value.is_empty() {
        let message = "the list is empty, so the rule could never match; remove the field to match every name, or list at least one pattern";
        problems.push(Problem::new(position_of(patterns.referenced), field, message));
        return Vec::new();
    }

    let mut compiled = Vec::with_capacity(patterns.value.len());
    for (index, pattern) in patterns.value.iter().enumerate() {
        let checked = names::check_pattern(kind, &pattern.value).and_then(|()| match case {
            Case::Exact => Pattern::new(&pattern.value),
            Case::Ignore => Pattern::new_ignoring_case(&pattern.value),
        });
        match checked {
            Ok(pattern) => compiled.push(pattern),
            Err(error) => problems.push(Problem::new(
                position_of(pattern.referenced),
                format!("{field}[{index}]"),
                error.to_string(),
            )),
        }
    }
    compiled
}
