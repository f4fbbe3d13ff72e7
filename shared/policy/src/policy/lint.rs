//! Warnings about a valid policy whose rules cannot take effect as written.
//!
//! A warning never makes a policy invalid: the tools an upstream lists and the keys change
//! without the policy changing, so a rule for a tool that is not there yet is legitimate.

use serde::Serialize;
use serde_json::Value;

use super::condition::{Condition, Test};
use super::{Effect, Mode, Policy, Rule, any_match};
use crate::keys::KeySet;

/// Maximum number of tool names listed in one warning.
const MAX_NAMED_TOOLS: usize = 5;

/// A tool as the upstreams list it.
#[derive(Debug, Clone)]
pub struct KnownTool {
    /// The gateway-visible name, prefix included.
    pub name: String,
    /// The tool's `inputSchema`, a JSON Schema of its arguments.
    pub input_schema: Value,
}

/// A rule, or the whole policy, that cannot take effect as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The rule's id; `None` when the warning concerns the whole policy.
    pub rule: Option<String>,
    /// The field of the rule concerned, such as `when[0].path`; empty for the whole rule.
    pub field: String,
    /// The tools concerned, at most five.
    pub tools: Vec<String>,
    /// A sentence for the admin: the rule, the reason it cannot take effect, and the fix.
    pub message: String,
}

/// Whether an input schema declares a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Yes,
    No,
    /// The schema admits fields it does not name, or uses a construct this check does not
    /// follow, such as `$ref` or `anyOf`.
    Unknown,
}

impl Policy {
    /// Returns the warnings about rules that cannot take effect as written.
    ///
    /// Without `tools`, the only warning is for a default of deny with no enforced allow rule,
    /// which denies every call. With `tools`, a rule that applies to no listed tool, and a
    /// condition on an input field that none of its tools declares, get one each. With `keys`
    /// as well, so does a rule that applies to no tool in the scope of a model it names.
    ///
    /// `tools` is `None` when the tools are not known, as on the command line, and `keys` is
    /// `None` when the keys are not known.
    pub fn warnings(&self, tools: Option<&[KnownTool]>, keys: Option<&KeySet>) -> Vec<Warning> {
        let mut warnings = Vec::new();
        if let Some(warning) = self.deny_only_warning() {
            warnings.push(warning);
        }
        let Some(tools) = tools.filter(|tools| !tools.is_empty()) else {
            return warnings;
        };

        for rule in &self.rules {
            let applies: Vec<&KnownTool> = tools.iter().filter(|tool| any_match(&rule.tools, &tool.name)).collect();
            if applies.is_empty() {
                warnings.push(Warning {
                    rule: Some(rule.id.clone()),
                    field: "tools".to_owned(),
                    tools: Vec::new(),
                    message: format!(
                        "rule `{}` applies to none of the {} tools that the upstreams list, so it never matches; \
                         check its `tools` patterns",
                        rule.id,
                        tools.len()
                    ),
                });
                continue;
            }
            warnings.extend(missing_fields(rule, &applies));
            if let Some(keys) = keys.filter(|keys| !keys.is_empty())
                && let Some(warning) = unreachable_rule(rule, &applies, keys)
            {
                warnings.push(warning);
            }
        }
        warnings
    }

    fn deny_only_warning(&self) -> Option<Warning> {
        let allows = self.rules.iter().any(|rule| rule.action == Effect::Allow && rule.mode == Mode::Enforce);
        if self.default != Effect::Deny || self.mode != Mode::Enforce || allows {
            return None;
        }
        Some(Warning {
            rule: None,
            field: "default".to_owned(),
            tools: Vec::new(),
            message: "the default is `deny` and no enforced rule allows anything, so every tool call is denied; \
                      add an allow rule or set `default: allow`"
                .to_owned(),
        })
    }
}

/// Warns about each condition of `rule` that needs a field none of `applies` declares.
fn missing_fields(rule: &Rule, applies: &[&KnownTool]) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for (index, condition) in rule.conditions.iter().enumerate() {
        if !needs_field(condition) {
            continue;
        }
        let tokens = pointer_tokens(&condition.path);
        let declared = applies.iter().any(|tool| declares(&tool.input_schema, &tokens) != Declared::No);
        if declared {
            continue;
        }
        let which = match applies {
            [_] => format!("which tool {} does not declare", tool_names(applies)),
            _ => format!("which none of its tools ({}) declares", tool_names(applies)),
        };
        warnings.push(Warning {
            rule: Some(rule.id.clone()),
            field: format!("when[{index}].path"),
            tools: named_tools(applies),
            message: format!(
                "rule `{}` tests input field `{}`, {which} in its `inputSchema`, so the rule never matches; check \
                 the path's spelling",
                rule.id, condition.path
            ),
        });
    }
    warnings
}

/// Warns when no model that `rule` names has any of `applies` in its scope.
fn unreachable_rule(rule: &Rule, applies: &[&KnownTool], keys: &KeySet) -> Option<Warning> {
    let reachable = keys.entries().any(|entry| {
        let named = rule.models.as_ref().is_none_or(|models| any_match(models, &entry.model_id));
        named && applies.iter().any(|tool| entry.scope.allows(&tool.name))
    });
    if reachable {
        return None;
    }
    Some(Warning {
        rule: Some(rule.id.clone()),
        field: "tools".to_owned(),
        tools: named_tools(applies),
        message: format!(
            "rule `{}` applies to {} {}, but no key's scope allows {} to a model that the rule names, so the rule \
             never matches",
            rule.id,
            if applies.len() == 1 { "tool" } else { "tools" },
            tool_names(applies),
            if applies.len() == 1 { "it" } else { "them" },
        ),
    })
}

/// Returns whether the condition fails for an absent field, so that a field no tool has makes
/// it fail.
fn needs_field(condition: &Condition) -> bool {
    condition.tests.iter().any(|test| !matches!(test, Test::Present(false)))
}

/// Splits a JSON Pointer into its unescaped tokens.
fn pointer_tokens(path: &str) -> Vec<String> {
    path.split('/').skip(1).map(|token| token.replace("~1", "/").replace("~0", "~")).collect()
}

/// Follows `tokens` through the `properties` and `items` of a JSON Schema.
fn declares(schema: &Value, tokens: &[String]) -> Declared {
    let mut node = schema;
    for token in tokens {
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            if let Some(next) = properties.get(token) {
                node = next;
                continue;
            }
            let open = node.get("patternProperties").is_some()
                || node.get("additionalProperties").is_some_and(Value::is_object);
            return if open { Declared::Unknown } else { Declared::No };
        }
        let is_index = token == "-" || (!token.is_empty() && token.bytes().all(|byte| byte.is_ascii_digit()));
        match node.get("items") {
            Some(items) if is_index => node = items,
            _ => return Declared::Unknown,
        }
    }
    Declared::Yes
}

fn named_tools(tools: &[&KnownTool]) -> Vec<String> {
    tools.iter().take(MAX_NAMED_TOOLS).map(|tool| tool.name.clone()).collect()
}

/// Names the tools in prose, at most five of them: "`a`, `b` and 3 more".
fn tool_names(tools: &[&KnownTool]) -> String {
    let names: Vec<String> = tools.iter().take(MAX_NAMED_TOOLS).map(|tool| format!("`{}`", tool.name)).collect();
    let more = tools.len().saturating_sub(MAX_NAMED_TOOLS);
    if more > 0 { format!("{} and {more} more", names.join(", ")) } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn declares_table() {
        let schema = json!({
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "attendees": {"type": "array", "items": {"type": "object", "properties": {"email": {}}}},
                "a/b": {},
                "free": {"type": "object"},
                "open": {"type": "object", "properties": {"x": {}}, "additionalProperties": {"type": "string"}}
            }
        });
        let cases = [
            ("/query", Declared::Yes),
            ("/queyr", Declared::No),
            ("/attendees/0/email", Declared::Yes),
            ("/attendees/0/mail", Declared::No),
            ("/attendees/x", Declared::Unknown),
            ("/a~1b", Declared::Yes),
            ("/free/anything", Declared::Unknown),
            ("/open/y", Declared::Unknown),
            ("/query/deeper", Declared::Unknown),
        ];
        for (path, expected) in cases {
            assert_eq!(declares(&schema, &pointer_tokens(path)), expected, "{path}");
        }
        assert_eq!(declares(&json!({"type": "object"}), &pointer_tokens("/x")), Declared::Unknown);
    }
}
