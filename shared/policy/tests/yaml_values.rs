//! YAML 1.1 forms (`yes`, `on`, `012`, `1e3`, `.inf` …) and duplicate keys in the policy and
//! keys files: each is read as the table in `docs/policy.md` states, or rejected with its
//! position.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::{CallCounts, Effect, KeySet, LimitKey, NoCalls, Policy, Request};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

fn keys_with_model(id: &str) -> String {
    format!("models:\n  {id}:\n    key: k\n    tools: ['*']\n")
}

fn keys_with_tool(pattern: &str) -> String {
    format!("models:\n  m:\n    key: k\n    tools: [{pattern}]\n")
}

fn rule(extra: &str) -> String {
    format!("default: allow\nrules:\n  - id: r\n    action: deny\n    reason: r\n    tools: ['*']\n{extra}")
}

fn condition(test: &str) -> String {
    rule(&format!("    when:\n      - path: /x\n        {test}\n"))
}

fn limit(max_calls: &str) -> String {
    format!("limits:\n  - id: l\n    per: model\n    max_calls: {max_calls}\n    window: 1m\n")
}

#[test]
fn text_fields_keep_yaml_one_one_words() {
    let cases = [
        ("no", "no"),
        ("yes", "yes"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("n", "n"),
        ("012", "012"),
        ("1e3", "1e3"),
        ("0o17", "0o17"),
        (".inf", ".inf"),
        ("'null'", "null"),
    ];
    for (written, id) in cases {
        let keys = KeySet::from_yaml("model_keys.yaml", &keys_with_model(written)).unwrap();
        let ids: Vec<&str> = keys.entries().map(|entry| entry.model_id.as_str()).collect();
        assert_eq!(ids, [id], "model written `{written}`");
        assert!(keys.authenticate(id, Some("k"), NOW).is_ok(), "model `{id}` authenticates");

        let keys = KeySet::from_yaml("model_keys.yaml", &keys_with_tool(written)).unwrap();
        let scope = &keys.get("m").unwrap().scope;
        assert_eq!(scope.patterns(), [id], "tool pattern written `{written}`");
        assert!(scope.allows(id), "pattern `{written}` allows the tool `{id}`");
    }
}

#[test]
fn yaml_one_one_keys_stay_distinct_models() {
    // YAML 1.1 reads both keys as the integer 1, and `no` and `off` as the boolean false.
    let text = "models:\n  1:\n    key: a\n    tools: ['*']\n  01:\n    key: b\n    tools: ['*']\n  \
                no:\n    key: c\n    tools: ['*']\n  off:\n    key: d\n    tools: ['*']\n";
    let keys = KeySet::from_yaml("model_keys.yaml", text).unwrap();
    let mut ids: Vec<&str> = keys.entries().map(|entry| entry.model_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["01", "1", "no", "off"]);
}

#[test]
fn rule_fields_keep_yaml_one_one_words() {
    let policy = Policy::from_yaml(
        "policies.yaml",
        "default: allow\nrules:\n  - id: no\n    action: deny\n    reason: yes\n    tools: [on]\n",
    )
    .unwrap();
    assert_eq!(policy.rule_ids(), ["no"]);
    let input = json!({});
    let decide = |tool: &str| {
        let request = Request { model_id: "m", session_id: "s", tool_name: tool, input: &input, calls: &NoCalls };
        policy.evaluate(&request, NOW).verdict
    };
    let on = decide("on");
    assert_eq!((on.effect, on.reason.as_str(), on.rule.as_deref()), (Effect::Deny, "yes", Some("no")));
    assert_eq!(decide("true").effect, Effect::Allow, "the pattern `on` is not the boolean true");
}

/// Checks whether a deny rule with the condition `test` matches each input as expected.
fn condition_matches(test: &str, inputs: &[(Value, bool)]) {
    let policy = Policy::from_yaml("policies.yaml", &condition(test)).unwrap();
    for (input, denied) in inputs {
        let request = Request { model_id: "m", session_id: "s", tool_name: "t", input, calls: &NoCalls };
        let effect = policy.evaluate(&request, NOW).verdict.effect;
        assert_eq!(effect == Effect::Deny, *denied, "`{test}` on {input}");
    }
}

#[test]
fn condition_values_are_yaml_one_two() {
    condition_matches("equals: no", &[(json!({"x": "no"}), true), (json!({"x": false}), false)]);
    condition_matches("equals: on", &[(json!({"x": "on"}), true), (json!({"x": true}), false)]);
    condition_matches("equals: true", &[(json!({"x": true}), true), (json!({"x": "true"}), false)]);
    condition_matches("equals: 0o17", &[(json!({"x": 15}), true), (json!({"x": "0o17"}), false)]);
    condition_matches("equals: 0x1F", &[(json!({"x": 31}), true)]);
    condition_matches("equals: 1e3", &[(json!({"x": 1000}), true), (json!({"x": "1e3"}), false)]);
    condition_matches("equals: 1_000", &[(json!({"x": 1000}), true)]);
    condition_matches("equals: 1:30", &[(json!({"x": "1:30"}), true), (json!({"x": 90}), false)]);
    condition_matches("equals: 2026-01-01", &[(json!({"x": "2026-01-01"}), true)]);
    condition_matches("equals: '012'", &[(json!({"x": "012"}), true), (json!({"x": 12}), false)]);
    condition_matches("equals: 0", &[(json!({"x": 0}), true)]);
    condition_matches("equals: null", &[(json!({"x": null}), true), (json!({}), false), (json!({"x": 0}), false)]);
    condition_matches("equals: ~", &[(json!({"x": null}), true), (json!({"x": "~"}), false)]);
    condition_matches("one_of: [yes, off, 0o10]", &[(json!({"x": "yes"}), true), (json!({"x": 8}), true)]);
    condition_matches("gt: 1e3", &[(json!({"x": 1001}), true), (json!({"x": 1000}), false)]);
    condition_matches("gte: 0", &[(json!({"x": 0}), true), (json!({"x": -1}), false)]);
    condition_matches("lt: 0.5", &[(json!({"x": 0.25}), true)]);
}

/// Counts every limit as reached, so that a denial shows the limit's generated reason.
struct AlwaysFull;

impl CallCounts for AlwaysFull {
    fn calls(&self, _key: &LimitKey, _window: std::time::Duration, _now: OffsetDateTime) -> u64 {
        u64::MAX
    }
}

#[test]
fn counts_in_yaml_one_two_forms_are_read() {
    let cases = [("15", 15), ("0o17", 15), ("0x10", 16), ("1_000", 1000), ("+5", 5)];
    for (written, value) in cases {
        let policy = Policy::from_yaml("policies.yaml", &limit(written)).unwrap();
        let input = json!({});
        let request = Request { model_id: "m", session_id: "s", tool_name: "t", input: &input, calls: &AlwaysFull };
        let reason = policy.evaluate(&request, NOW).verdict.reason;
        assert!(reason.contains(&format!("at most {value} calls")), "`max_calls: {written}`: {reason}");
    }
}

#[test]
fn ambiguous_and_mistyped_values_are_rejected() {
    let policy_cases = [
        ("action: yes", rule("").replace("action: deny", "action: yes")),
        ("action: on", rule("").replace("action: deny", "action: on")),
        ("default: no", "default: no\n".to_owned()),
        ("default: Deny", "default: Deny\n".to_owned()),
        ("mode: off", "mode: off\n".to_owned()),
        ("per: y", "limits:\n  - id: l\n    per: y\n    max_calls: 5\n    window: 1m\n".to_owned()),
        ("max_calls: 1e3", limit("1e3")),
        ("max_calls: 012", limit("012")),
        ("max_calls: 5.0", limit("5.0")),
        ("max_calls: .inf", limit(".inf")),
        ("max_calls: -1", limit("-1")),
        ("max_calls: yes", limit("yes")),
        ("window: 60", "limits:\n  - id: l\n    per: model\n    max_calls: 5\n    window: 60\n".to_owned()),
        ("min_length: 1e3", condition("min_length: 1e3")),
        ("present: off", condition("present: off")),
        ("present: y", condition("present: y")),
        ("gt: .inf", condition("gt: .inf")),
        ("gt: -.inf", condition("gt: -.inf")),
        ("lte: .nan", condition("lte: .nan")),
        ("gt: 012", condition("gt: 012")),
        ("gt: yes", condition("gt: yes")),
        ("gt: 0x10", condition("gt: 0x10")),
        ("gt: 0o17", condition("gt: 0o17")),
        ("equals: 012", condition("equals: 012")),
        ("equals: -007", condition("equals: -007")),
        ("equals: .inf", condition("equals: .inf")),
        ("equals: .nan", condition("equals: .nan")),
        ("one_of: [1, 012]", condition("one_of: [1, 012]")),
        ("reason: ~", rule("").replace("reason: r", "reason: ~")),
        ("reason: null", rule("").replace("reason: r", "reason: null")),
        ("id: ~", rule("").replace("id: r", "id: ~")),
        ("tools: [~]", rule("").replace("['*']", "[~]")),
        ("version: 1.0", "version: 1.0\n".to_owned()),
        ("first_tool_use: on", "anomalies:\n  first_tool_use: on\n".to_owned()),
        ("enabled: no", "anomalies:\n  denial_spike:\n    enabled: no\n".to_owned()),
        ("threshold: 1e3", "anomalies:\n  denial_spike:\n    threshold: 1e3\n".to_owned()),
        ("factor: .inf", "anomalies:\n  call_rate_spike:\n    factor: .inf\n".to_owned()),
    ];
    let keys_cases = [
        ("revoked: yes", format!("{}    revoked: yes\n", keys_with_model("m"))),
        ("revoked: no", format!("{}    revoked: no\n", keys_with_model("m"))),
        ("revoked: on", format!("{}    revoked: on\n", keys_with_model("m"))),
        ("revoked: off", format!("{}    revoked: off\n", keys_with_model("m"))),
        ("revoked: y", format!("{}    revoked: y\n", keys_with_model("m"))),
        ("model ~", keys_with_model("~")),
        ("model null", keys_with_model("null")),
        ("key: ~", "models:\n  m:\n    key: ~\n    tools: ['*']\n".to_owned()),
        ("tools: [null]", keys_with_tool("null")),
        ("expires: 2026-01-01", format!("{}    expires: 2026-01-01\n", keys_with_model("m"))),
    ];

    let mut rendered = String::new();
    for (case, text) in policy_cases {
        let error = Policy::from_yaml("policies.yaml", &text).expect_err(case);
        assert!(error.problems.iter().all(|problem| problem.position.is_some()), "{case}: {error}");
        rendered.push_str(&format!("{case}\n  {error}\n"));
    }
    for (case, text) in keys_cases {
        let error = KeySet::from_yaml("model_keys.yaml", &text).expect_err(case);
        assert!(error.problems.iter().all(|problem| problem.position.is_some()), "{case}: {error}");
        rendered.push_str(&format!("{case}\n  {error}\n"));
    }
    insta::assert_snapshot!("ambiguous_values", rendered);
}

#[test]
fn duplicate_keys_are_rejected_at_every_level() {
    let rule_head = "rules:\n  - id: r\n    action: deny\n    reason: r\n    tools: ['*']\n";
    let policy_cases = [
        ("top level", "default: deny\ndefault: allow\n".to_owned()),
        ("top level, other spelling", "default: deny\n'default': allow\n".to_owned()),
        ("rule field", format!("{rule_head}    action: allow\n")),
        (
            "rule field in a flow mapping",
            "rules:\n  - {id: r, action: deny, reason: r, tools: ['*'], id: s}\n".to_owned(),
        ),
        ("condition test", format!("{rule_head}    when:\n      - path: /x\n        equals: 1\n        equals: 2\n")),
        (
            "limit field",
            "limits:\n  - id: l\n    per: model\n    per: session\n    max_calls: 5\n    window: 1m\n".to_owned(),
        ),
        ("anomaly threshold", "anomalies:\n  denial_spike:\n    threshold: 3\n    threshold: 4\n".to_owned()),
        ("anomaly section", "anomalies:\n  denial_spike: {}\n  denial_spike: {}\n".to_owned()),
    ];
    let keys_cases = [
        ("model", "models:\n  m:\n    key: a\n    tools: ['*']\n  m:\n    key: b\n    tools: ['*']\n".to_owned()),
        (
            "model, quoted",
            "models:\n  no:\n    key: a\n    tools: ['*']\n  'no':\n    key: b\n    tools: ['*']\n".to_owned(),
        ),
        ("model field", "models:\n  m:\n    key: a\n    key: b\n    tools: ['*']\n".to_owned()),
        ("models section", "models: {}\nmodels:\n  m:\n    key: a\n    tools: ['*']\n".to_owned()),
    ];

    let mut rendered = String::new();
    for (case, text) in policy_cases {
        let error = Policy::from_yaml("policies.yaml", &text).expect_err(case);
        rendered.push_str(&format!("policy, {case}\n  {error}\n"));
    }
    for (case, text) in keys_cases {
        let error = KeySet::from_yaml("model_keys.yaml", &text).expect_err(case);
        rendered.push_str(&format!("keys, {case}\n  {error}\n"));
    }
    insta::assert_snapshot!("duplicate_keys", rendered);
}
