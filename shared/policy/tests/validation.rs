//! Policy validation errors: every problem named with line, column and value.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::Policy;

fn error_of(text: &str) -> String {
    Policy::from_yaml("policies.yaml", text).unwrap_err().to_string()
}

const RULE: &str = "rules:\n  - id: r\n    action: deny\n    reason: because\n    tools: ['*']\n";

#[test]
fn invalid_policies_snapshot() {
    let cases = [
        ("unknown_top_field", "defualt: deny\n".to_owned()),
        ("unknown_rule_field", format!("{RULE}    tool: ['x']\n")),
        ("unknown_action", RULE.replace("action: deny", "action: block")),
        ("unknown_default", "default: maybe\n".to_owned()),
        ("unknown_mode", "mode: audit\n".to_owned()),
        ("duplicate_ids", format!("{RULE}  - id: r\n    action: allow\n    reason: again\n    tools: ['x']\n")),
        (
            "duplicate_id_rule_and_limit",
            format!("{RULE}limits:\n  - id: r\n    per: model\n    max_calls: 5\n    window: 1m\n"),
        ),
        ("invalid_glob", RULE.replace("['*']", "['search.*', 'calendar.[z-a]']")),
        ("empty_tools", RULE.replace("['*']", "[]")),
        ("empty_models", format!("{RULE}    models: []\n")),
        ("missing_tools", "rules:\n  - id: r\n    action: deny\n    reason: because\n".to_owned()),
        ("empty_reason", RULE.replace("because", "''")),
        ("bad_id", RULE.replace("id: r", "id: 'my rule'")),
        ("reserved_quarantine_id", RULE.replace("id: r", "id: quarantine")),
        ("reserved_anomaly_id", RULE.replace("id: r", "id: 'anomaly:denial_spike'")),
        ("bad_duration", "limits:\n  - id: l\n    per: session\n    max_calls: 5\n    window: 5 parsecs\n".to_owned()),
        ("zero_window", "limits:\n  - id: l\n    per: session\n    max_calls: 5\n    window: 0s\n".to_owned()),
        ("huge_window", "limits:\n  - id: l\n    per: session\n    max_calls: 5\n    window: 30d\n".to_owned()),
        ("zero_max_calls", "limits:\n  - id: l\n    per: session\n    max_calls: 0\n    window: 1m\n".to_owned()),
        ("unknown_per", "limits:\n  - id: l\n    per: user\n    max_calls: 1\n    window: 1m\n".to_owned()),
        ("bad_path", format!("{RULE}    when:\n      - path: query\n        equals: 1\n")),
        ("bad_pointer_escape", format!("{RULE}    when:\n      - path: /a~2\n        equals: 1\n")),
        ("no_test", format!("{RULE}    when:\n      - path: /query\n")),
        ("empty_one_of", format!("{RULE}    when:\n      - path: /q\n        one_of: []\n")),
        (
            "lengths_reversed",
            format!("{RULE}    when:\n      - path: /q\n        min_length: 5\n        max_length: 2\n"),
        ),
        ("misspelt_test", format!("{RULE}    when:\n      - path: /q\n        equal: 1\n")),
        ("bad_match_glob", format!("{RULE}    when:\n      - path: /q\n        matches: '[z-a]'\n")),
        ("string_bound", format!("{RULE}    when:\n      - path: /q\n        gt: ten\n")),
        ("duplicate_key", "default: deny\ndefault: allow\n".to_owned()),
        ("anomaly_zero_threshold", "anomalies:\n  denial_spike:\n    threshold: 0\n".to_owned()),
        ("anomaly_bad_window", "anomalies:\n  scope_probing:\n    window: soon\n".to_owned()),
        ("anomaly_factor_below_one", "anomalies:\n  call_rate_spike:\n    factor: 0.5\n".to_owned()),
        ("anomaly_zero_baseline", "anomalies:\n  call_rate_spike:\n    baseline_windows: 0\n".to_owned()),
        ("anomaly_unknown_detector", "anomalies:\n  brute_force:\n    threshold: 3\n".to_owned()),
        (
            "quarantine_without_denial_spike",
            "anomalies:\n  denial_spike:\n    enabled: false\n  quarantine: 10m\n".to_owned(),
        ),
        ("wrong_version", "version: 2\n".to_owned()),
        ("yes_is_not_a_mode", "mode: yes\n".to_owned()),
        ("syntax_error", "rules: [\n".to_owned()),
        (
            "merge_key",
            "rules:\n  - &b {id: r, action: deny, reason: r, tools: ['*']}\n  - <<: *b\n    id: s\n".to_owned(),
        ),
        ("several_problems", format!("{RULE}  - id: r\n    action: allow\n    reason: ''\n    tools: []\n")),
    ];
    for (name, text) in cases {
        insta::assert_snapshot!(format!("policy_{name}"), error_of(&text));
    }
}

#[test]
fn every_problem_has_a_position() {
    let text = format!(
        "{RULE}  - id: r\n    action: allow\n    reason: ''\n    tools: []\n    when:\n      - path: q\n        gt: 1\n"
    );
    let error = Policy::from_yaml("p", &text).unwrap_err();
    assert_eq!(error.problems.len(), 4, "{error}");
    for problem in &error.problems {
        assert!(problem.position.is_some(), "{problem:?}");
    }
}

#[test]
fn yaml_one_one_booleans_stay_strings_in_values() {
    let policy = Policy::from_yaml(
        "p",
        "default: allow\nrules:\n  - id: r\n    action: deny\n    reason: r\n    tools: ['*']\n    when:\n      - {path: /confirm, equals: no}\n",
    )
    .unwrap();
    let input = serde_json::json!({"confirm": "no"});
    let request = mcpsec_policy::Request {
        model_id: "m",
        session_id: "s",
        tool_name: "t",
        input: &input,
        calls: &mcpsec_policy::NoCalls,
    };
    assert!(!policy.evaluate(&request, time::OffsetDateTime::UNIX_EPOCH).is_allowed());
}

#[test]
fn example_policy_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies.yaml")).unwrap();
    let policy = Policy::from_yaml("examples/policies.yaml", &text).unwrap();
    assert_eq!(policy.rule_ids(), ["no-calendar-deletes", "session-burst"]);
}

#[test]
fn example_keys_are_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/model_keys.yaml")).unwrap();
    let keys = mcpsec_policy::KeySet::from_yaml("examples/model_keys.yaml", &text).unwrap();
    assert_eq!(keys.len(), 2);
}

#[test]
fn anomaly_settings_default_and_override() {
    use std::time::Duration;

    use mcpsec_policy::{AnomalySettings, DenialSpike};

    let absent = Policy::from_yaml("p", "default: deny\n").unwrap();
    assert_eq!(absent.anomalies(), &AnomalySettings::default());

    let text = "anomalies:\n  denial_spike:\n    threshold: 3\n  call_rate_spike:\n    enabled: false\n  \
                scope_probing:\n    distinct_tools: 2\n    window: 1m\n  first_tool_use: false\n  quarantine: 15m\n";
    let settings = Policy::from_yaml("p", text).unwrap().anomalies().clone();
    assert_eq!(settings.denial_spike, Some(DenialSpike { threshold: 3, window: Duration::from_secs(120) }));
    assert_eq!(settings.call_rate_spike, None);
    let probing = settings.scope_probing.unwrap();
    assert_eq!((probing.distinct_tools, probing.window), (2, Duration::from_secs(60)));
    assert!(!settings.first_tool_use);
    assert_eq!(settings.quarantine, Some(Duration::from_secs(900)));
}
