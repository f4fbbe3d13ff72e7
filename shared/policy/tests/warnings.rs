//! Policies that are valid but cannot take effect as written: deny-only policies, misspelt
//! input fields, rules for tools no upstream lists or no key may call.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::{Effect, KeySet, KnownTool, NoCalls, Policy, Request, Warning};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

fn known_tools() -> Vec<KnownTool> {
    let tool = |name: &str, schema: Value| KnownTool { name: name.to_owned(), input_schema: schema };
    vec![
        tool(
            "search.web",
            json!({"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}}),
        ),
        tool("search.images", json!({"type": "object", "properties": {"query": {"type": "string"}}})),
        tool(
            "calendar.create_event",
            json!({"type": "object", "properties": {
                "title": {"type": "string"},
                "attendees": {"type": "array", "items": {"type": "object", "properties": {"email": {"type": "string"}}}}
            }}),
        ),
        tool("calendar.delete_event", json!({"type": "object", "properties": {"id": {"type": "string"}}})),
        tool("notes.write", json!({"type": "object"})),
    ]
}

const KEYS: &str = "models:\n  gpt-4o:\n    key: a\n    tools: ['search.*', 'calendar.*']\n  \
                    reader:\n    key: b\n    tools: ['search.*']\n";

fn warnings_of(policy: &str, keys: Option<&KeySet>) -> Vec<Warning> {
    let policy = Policy::from_yaml("policies.yaml", policy).unwrap();
    policy.warnings(Some(&known_tools()), keys)
}

fn rule(id: &str, action: &str, tools: &str, extra: &str) -> String {
    format!("  - id: {id}\n    action: {action}\n    reason: r\n    tools: {tools}\n{extra}")
}

fn when(path: &str, test: &str) -> String {
    format!("    when:\n      - path: {path}\n        {test}\n")
}

/// One policy and the warnings it must get, as (rule, field, first tool).
struct Case {
    name: &'static str,
    rules: String,
    expected: Vec<(Option<&'static str>, &'static str, Option<&'static str>)>,
}

#[test]
fn warnings_table() {
    let cases = [
        Case {
            name: "misspelt field on one tool",
            rules: rule("long-queries", "deny", "['search.web']", &when("/queyr", "min_length: 100")),
            expected: vec![(Some("long-queries"), "when[0].path", Some("search.web"))],
        },
        Case {
            name: "correct field on one tool",
            rules: rule("long-queries", "deny", "['search.web']", &when("/query", "min_length: 100")),
            expected: vec![],
        },
        Case {
            name: "field that only some of the tools declare",
            rules: rule("big-limits", "deny", "['search.*']", &when("/limit", "gt: 50")),
            expected: vec![],
        },
        Case {
            name: "misspelt field on several tools",
            rules: rule("long-queries", "deny", "['search.*']", &when("/qeury", "min_length: 100")),
            expected: vec![(Some("long-queries"), "when[0].path", Some("search.web"))],
        },
        Case {
            name: "misspelt nested field",
            rules: rule(
                "outside",
                "deny",
                "['calendar.create_event']",
                &when("/attendees/0/mail", "matches: '*@evil*'"),
            ),
            expected: vec![(Some("outside"), "when[0].path", Some("calendar.create_event"))],
        },
        Case {
            name: "correct nested field",
            rules: rule(
                "outside",
                "deny",
                "['calendar.create_event']",
                &when("/attendees/0/email", "matches: '*@evil*'"),
            ),
            expected: vec![],
        },
        Case {
            name: "absent field tested with present: false",
            rules: rule("no-title", "deny", "['calendar.delete_event']", &when("/title", "present: false")),
            expected: vec![],
        },
        Case {
            name: "schema without properties",
            rules: rule("notes", "deny", "['notes.write']", &when("/anything", "equals: 1")),
            expected: vec![],
        },
        Case {
            name: "deny rule on a case variant of a listed tool",
            rules: rule("no-deletes", "deny", "['Calendar.Delete_*']", ""),
            expected: vec![],
        },
        Case {
            name: "allow rule on a case variant of a listed tool",
            rules: rule("calendar", "allow", "['Calendar.*']", ""),
            expected: vec![(Some("calendar"), "tools", None)],
        },
        Case {
            name: "rule for no listed tool",
            rules: rule("weather", "deny", "['weather.*']", ""),
            expected: vec![(Some("weather"), "tools", None)],
        },
    ];

    for case in cases {
        let text = format!("default: allow\nrules:\n{}", case.rules);
        let got: Vec<(Option<String>, String, Option<String>)> = warnings_of(&text, None)
            .into_iter()
            .map(|warning| (warning.rule, warning.field, warning.tools.first().cloned()))
            .collect();
        let expected: Vec<(Option<String>, String, Option<String>)> = case
            .expected
            .iter()
            .map(|(rule, field, tool)| (rule.map(str::to_owned), (*field).to_owned(), tool.map(str::to_owned)))
            .collect();
        assert_eq!(got, expected, "{}", case.name);
    }
}

#[test]
fn warnings_for_rules_no_key_reaches() {
    let keys = KeySet::from_yaml("model_keys.yaml", KEYS).unwrap();
    let text = format!(
        "default: allow\nrules:\n{}{}{}",
        rule("reader-calendar", "deny", "['calendar.*']", "    models: ['reader']\n"),
        rule("gpt-calendar", "deny", "['calendar.*']", "    models: ['gpt-*']\n"),
        rule("nobody", "deny", "['search.web']", "    models: ['claude-*']\n"),
    );
    let got: Vec<(Option<String>, String)> =
        warnings_of(&text, Some(&keys)).into_iter().map(|warning| (warning.rule, warning.field)).collect();
    assert_eq!(
        got,
        [(Some("nobody".to_owned()), "tools".to_owned()), (Some("reader-calendar".to_owned()), "tools".to_owned())]
    );
}

#[test]
fn warning_messages_snapshot() {
    let keys = KeySet::from_yaml("model_keys.yaml", KEYS).unwrap();
    let text = format!(
        "default: deny\nrules:\n{}{}{}{}",
        rule("long-queries", "deny", "['search.web']", &when("/queyr", "min_length: 100")),
        rule("search-typo", "deny", "['search.*']", &when("/qeury", "equals: x")),
        rule("weather", "deny", "['weather.*']", ""),
        rule("reader-calendar", "deny", "['calendar.*']", "    models: ['reader']\n"),
    );
    let rendered: Vec<String> = warnings_of(&text, Some(&keys))
        .into_iter()
        .map(|warning| format!("{:?} {}: {}", warning.rule, warning.field, warning.message))
        .collect();
    insta::assert_snapshot!("warning_messages", rendered.join("\n"));
}

#[test]
fn unknown_tools_give_only_the_deny_only_warning() {
    let text = format!("default: deny\nrules:\n{}", rule("weather", "deny", "['weather.*']", ""));
    let policy = Policy::from_yaml("policies.yaml", &text).unwrap();
    for tools in [None, Some(&[][..])] {
        let fields: Vec<String> = policy.warnings(tools, None).into_iter().map(|warning| warning.field).collect();
        assert_eq!(fields, ["default"], "tools {tools:?}");
    }
}

fn decide(policy: &Policy, tool: &str, input: &Value) -> (Effect, Option<String>, String) {
    let request = Request { model_id: "m", session_id: "s", tool_name: tool, input, calls: &NoCalls };
    let verdict = policy.evaluate(&request, NOW).verdict;
    (verdict.effect, verdict.rule, verdict.reason)
}

const DENY_RULES: &str = "  - id: no-deletes\n    action: deny\n    tools: ['calendar.delete_*']\n    reason: deleting needs a human\n  \
                          - id: no-big-searches\n    action: deny\n    tools: ['search.*']\n    reason: too many results\n    \
                          when:\n      - path: /limit\n        gt: 50\n";

#[test]
fn deny_only_default_deny_denies_all() {
    let policy = Policy::from_yaml("policies.yaml", &format!("default: deny\nrules:\n{DENY_RULES}")).unwrap();
    let cases = [
        ("calendar.delete_event", json!({}), Some("no-deletes")),
        ("search.web", json!({"limit": 100}), Some("no-big-searches")),
        ("search.web", json!({"limit": 10}), None),
        ("calendar.create_event", json!({}), None),
    ];
    for (tool, input, rule) in cases {
        let (effect, decided_by, reason) = decide(&policy, tool, &input);
        assert_eq!(effect, Effect::Deny, "{tool} {input}");
        assert_eq!(decided_by.as_deref(), rule, "{tool} {input}");
        if rule.is_none() {
            assert!(reason.ends_with("the default is deny"), "{tool}: {reason}");
        }
    }
    for tool in ["calendar.create_event", "search.web", "calendar.delete_event"] {
        assert!(!policy.may_allow("m", tool), "`tools/list` hides {tool}");
    }
    let fields: Vec<String> = policy.warnings(None, None).into_iter().map(|warning| warning.field).collect();
    assert_eq!(fields, ["default"], "the policy warns that it denies every call");
}

#[test]
fn deny_only_default_allow_blocks_listed() {
    let policy = Policy::from_yaml("policies.yaml", &format!("default: allow\nrules:\n{DENY_RULES}")).unwrap();
    let cases = [
        ("calendar.delete_event", json!({}), Effect::Deny, Some("no-deletes")),
        ("search.web", json!({"limit": 100}), Effect::Deny, Some("no-big-searches")),
        ("search.web", json!({"limit": "100"}), Effect::Deny, Some("no-big-searches")),
        ("search.web", json!({"limit": 10}), Effect::Allow, None),
        ("calendar.create_event", json!({}), Effect::Allow, None),
    ];
    for (tool, input, effect, rule) in cases {
        let (got, decided_by, _) = decide(&policy, tool, &input);
        assert_eq!((got, decided_by.as_deref()), (effect, rule), "{tool} {input}");
    }
    assert!(policy.may_allow("m", "search.web"), "a conditional deny leaves the tool listed");
    assert!(!policy.may_allow("m", "calendar.delete_event"), "an unconditional deny hides the tool");
    assert!(policy.warnings(None, None).is_empty());
}

#[test]
fn empty_policy_denies_by_default() {
    let policy = Policy::from_yaml("policies.yaml", "{}").unwrap();
    assert_eq!(decide(&policy, "search.web", &json!({})).0, Effect::Deny);
    let fields: Vec<String> = policy.warnings(None, None).into_iter().map(|warning| warning.field).collect();
    assert_eq!(fields, ["default"]);
}
