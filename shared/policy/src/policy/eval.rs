//! Evaluation of a tool call against a policy.
//!
//! Semantics: a rule matches when its model and tool patterns match and every condition holds.
//! Any matching enforced deny rule, or a reached limit, denies the call; otherwise any matching
//! enforced allow rule allows it; otherwise the default decides. Rules are kept sorted by id
//! and every matching rule is collected, so the order of rules in the file never changes the
//! decision, the reason or the reported ids.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::condition::Outcome;
use super::{Effect, Mode, Policy, Rule, any_match};
use crate::keys::Principal;
use crate::limits::{CallCounts, CountedLimit, LimitKey};
use crate::names;
use crate::policy::Per;

/// A tool call to decide on.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The authenticated model.
    pub model_id: &'a str,
    /// The session the call belongs to.
    pub session_id: &'a str,
    /// The tool the model requests.
    pub tool_name: &'a str,
    /// The tool's arguments.
    pub input: &'a Value,
    /// Earlier calls, for limits.
    pub calls: &'a dyn CallCounts,
}

/// Whether a match came from a rule or from a call limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// An entry of `rules`.
    Rule,
    /// An entry of `limits` whose count was reached.
    Limit,
}

/// A rule that matched the call, or a limit that the call would exceed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleMatch {
    /// The rule's or limit's id.
    pub id: String,
    /// Rule or limit.
    pub kind: RuleKind,
    /// Its effect when enforced.
    pub action: Effect,
    /// True when it is only recorded, because it or the whole policy is in shadow mode.
    pub shadow: bool,
    /// Extra facts, such as an input field of the wrong type or a limit's count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An effect with the reason and the deciding rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Allow or deny.
    pub effect: Effect,
    /// Why, in words fit for the caller and the audit trail.
    pub reason: String,
    /// The rule or limit that decided; `None` when the default or the key's scope decided.
    pub rule: Option<String>,
}

/// The outcome of evaluating a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The enforced verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Every rule that matched and every limit reached, sorted by id, shadow ones included.
    pub matched: Vec<RuleMatch>,
    /// The decision with shadow rules enforced, when it differs from `verdict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Verdict>,
    /// Counters an allowed call must be added to.
    #[serde(skip)]
    pub counted: Vec<CountedLimit>,
}

impl Decision {
    /// Returns whether the call may go ahead.
    pub fn is_allowed(&self) -> bool {
        self.verdict.effect == Effect::Allow
    }

    /// Returns the ids of every matching rule and reached limit, sorted.
    pub fn matched_ids(&self) -> Vec<&str> {
        self.matched.iter().map(|matched| matched.id.as_str()).collect()
    }

    /// Builds a denial because the tool is outside the key's scope.
    pub fn out_of_scope(tool_name: &str) -> Self {
        let reason = format!("tool `{tool_name}` is outside the scope of this model's key");
        Self::from_verdict(Verdict { effect: Effect::Deny, reason, rule: None })
    }

    fn from_verdict(verdict: Verdict) -> Self {
        Self { verdict, matched: Vec::new(), shadow: None, counted: Vec::new() }
    }
}

/// Decides a call by an authenticated model: the tool name's characters, the key's scope,
/// then the policy.
///
/// The request's `model_id` must be the principal's; a mismatch is denied, because the
/// identity of a caller comes from its key alone. A tool name that breaks the rules of
/// [`crate::names`] is denied here too, whatever the caller checked before.
pub fn authorize(principal: &Principal<'_>, policy: &Policy, request: &Request<'_>, now: OffsetDateTime) -> Decision {
    if let Err(error) = names::check_tool_name(request.tool_name) {
        return Decision::from_verdict(Verdict { effect: Effect::Deny, reason: error.to_string(), rule: None });
    }
    if request.model_id != principal.model_id() {
        let reason = format!("model id `{}` does not match the key, which belongs to another model", request.model_id);
        return Decision::from_verdict(Verdict { effect: Effect::Deny, reason, rule: None });
    }
    if !principal.entry.scope.allows(request.tool_name) {
        return Decision::out_of_scope(request.tool_name);
    }
    policy.evaluate(request, now)
}

impl Policy {
    /// Evaluates `request` at instant `now`.
    pub fn evaluate(&self, request: &Request<'_>, now: OffsetDateTime) -> Decision {
        let mut matched = self.matching_rules(request);
        let counted = self.check_limits(request, now, &mut matched);
        matched.sort_by(|a, b| a.id.cmp(&b.id));

        let verdict = self.verdict(request, &matched, false);
        let would_be = self.verdict(request, &matched, true);
        let shadow = (would_be != verdict).then_some(would_be);
        Decision { verdict, matched, shadow, counted }
    }

    /// Returns whether some input could make the policy allow `tool_name` for `model_id`,
    /// for listing tools: false when an enforced deny rule without conditions matches, or when
    /// neither an enforced allow rule nor the default could allow it. Limits are not counted.
    pub fn may_allow(&self, model_id: &str, tool_name: &str) -> bool {
        if self.mode == Mode::Shadow {
            return true;
        }
        let mut by_tool = Vec::new();
        self.tool_index.owners_matching(tool_name, &mut by_tool);
        let enforced = by_tool
            .iter()
            .filter_map(|index| self.rules.get(*index))
            .filter(|rule| rule.mode == Mode::Enforce)
            .filter(|rule| rule.models.as_ref().is_none_or(|models| any_match(models, model_id)));

        let mut allow_possible = self.default == Effect::Allow;
        for rule in enforced {
            match rule.action {
                Effect::Deny if rule.conditions.is_empty() => return false,
                Effect::Deny => {}
                Effect::Allow => allow_possible = true,
            }
        }
        allow_possible
    }

    fn matching_rules(&self, request: &Request<'_>) -> Vec<RuleMatch> {
        let mut by_tool = Vec::new();
        self.tool_index.owners_matching(request.tool_name, &mut by_tool);

        let mut matched = Vec::new();
        for index in by_tool {
            let Some(rule) = self.rules.get(index) else { continue };
            if let Some(models) = &rule.models
                && !any_match(models, request.model_id)
            {
                continue;
            }
            if let Some(detail) = rule.matches(request.input) {
                matched.push(RuleMatch {
                    id: rule.id.clone(),
                    kind: RuleKind::Rule,
                    action: rule.action,
                    shadow: rule.mode == Mode::Shadow || self.mode == Mode::Shadow,
                    detail,
                });
            }
        }
        matched
    }

    /// Appends a match for each limit the call would exceed and returns every limit that
    /// applies to it.
    fn check_limits(
        &self,
        request: &Request<'_>,
        now: OffsetDateTime,
        matched: &mut Vec<RuleMatch>,
    ) -> Vec<CountedLimit> {
        let mut counted = Vec::new();
        for limit in &self.limits {
            if !any_match(&limit.models, request.model_id) || !any_match(&limit.tools, request.tool_name) {
                continue;
            }
            let subject = match limit.per {
                Per::Session => request.session_id,
                Per::Model => request.model_id,
            };
            let key = LimitKey { limit_id: limit.id.clone(), per: limit.per, subject: subject.to_owned() };
            let calls = request.calls.calls(&key, limit.window, now);
            if calls >= limit.max_calls {
                matched.push(RuleMatch {
                    id: limit.id.clone(),
                    kind: RuleKind::Limit,
                    action: Effect::Deny,
                    shadow: limit.mode == Mode::Shadow || self.mode == Mode::Shadow,
                    detail: Some(format!("{calls} calls in the last {}", humantime::format_duration(limit.window))),
                });
            }
            counted.push(CountedLimit { key, window: limit.window, max_calls: limit.max_calls });
        }
        counted
    }

    /// Returns the verdict from `matched`, counting shadow matches only when `with_shadow` is set.
    fn verdict(&self, request: &Request<'_>, matched: &[RuleMatch], with_shadow: bool) -> Verdict {
        let counts = |m: &&RuleMatch| with_shadow || !m.shadow;
        let first = |effect: Effect| matched.iter().filter(counts).find(|m| m.action == effect);

        if let Some(deny) = first(Effect::Deny) {
            return Verdict { effect: Effect::Deny, reason: self.reason_of(deny), rule: Some(deny.id.clone()) };
        }
        if let Some(allow) = first(Effect::Allow) {
            return Verdict { effect: Effect::Allow, reason: self.reason_of(allow), rule: Some(allow.id.clone()) };
        }

        if !with_shadow && self.mode == Mode::Shadow {
            let reason = "the policy is in shadow mode, so only the key's scope is enforced".to_owned();
            return Verdict { effect: Effect::Allow, reason, rule: None };
        }
        let reason = match self.default {
            Effect::Allow => "no rule matched; the default is allow".to_owned(),
            Effect::Deny => format!(
                "no rule allows tool `{}` for model `{}`; the default is deny",
                request.tool_name, request.model_id
            ),
        };
        Verdict { effect: self.default, reason, rule: None }
    }

    fn reason_of(&self, matched: &RuleMatch) -> String {
        let reason = match matched.kind {
            RuleKind::Rule => self.rules.iter().find(|rule| rule.id == matched.id).map(|rule| rule.reason.as_str()),
            RuleKind::Limit => {
                self.limits.iter().find(|limit| limit.id == matched.id).map(|limit| limit.reason.as_str())
            }
        };
        let reason = reason.unwrap_or("denied by policy");
        match &matched.detail {
            Some(detail) => format!("{reason} ({detail})"),
            None => reason.to_owned(),
        }
    }
}

impl Rule {
    /// Returns `None` when the rule does not match, and `Some(detail)` when it does.
    ///
    /// An input field of the wrong type makes a deny rule match and an allow rule not match,
    /// so that a model cannot slip past a deny rule by sending `"5000"` where the rule tests
    /// for a number above 1000.
    fn matches(&self, input: &Value) -> Option<Option<String>> {
        let mut detail = None;
        for condition in &self.conditions {
            match condition.evaluate(input) {
                Outcome::Holds => {}
                Outcome::Fails => return None,
                Outcome::WrongType(message) => {
                    if self.action == Effect::Allow {
                        return None;
                    }
                    detail.get_or_insert(message);
                }
            }
        }
        Some(detail)
    }
}
