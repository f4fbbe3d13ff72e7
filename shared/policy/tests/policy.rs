//! Policy evaluation: rules, conditions, defaults, shadow mode and limits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::{CallCounts, Effect, KeySet, NoCalls, Policy, Request, WindowCounters, authorize};
use proptest::prelude::*;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

fn policy(text: &str) -> Policy {
    Policy::from_yaml("policies.yaml", text).unwrap()
}

fn decide(policy: &Policy, model: &str, tool: &str, input: Value) -> (Effect, Option<String>, Vec<String>) {
    decide_with(policy, model, tool, &input, &NoCalls)
}

fn decide_with(
    policy: &Policy,
    model: &str,
    tool: &str,
    input: &Value,
    calls: &dyn CallCounts,
) -> (Effect, Option<String>, Vec<String>) {
    let request = Request { model_id: model, session_id: "s1", tool_name: tool, input, calls };
    let decision = policy.evaluate(&request, NOW);
    let ids = decision.matched_ids().into_iter().map(str::to_owned).collect();
    (decision.verdict.effect, decision.verdict.rule, ids)
}

const RULES: &str = r#"
default: deny
rules:
  - id: allow-search
    action: allow
    tools: ["search.*"]
    reason: search is read-only
  - id: allow-calendar-gpt
    action: allow
    models: ["gpt-*"]
    tools: ["calendar.*"]
    reason: gpt models manage calendars
  - id: deny-deletes
    action: deny
    tools: ["calendar.delete_*"]
    reason: deleting needs a human
  - id: deny-long-queries
    action: deny
    tools: ["search.*"]
    reason: query too long
    when:
      - path: /query
        min_length: 101
"#;

#[test]
fn rule_decision_table() {
    let policy = policy(RULES);
    let long = "x".repeat(101);
    let cases = [
        ("gpt-4o", "search.web", json!({"query": "rust"}), Effect::Allow, Some("allow-search"), vec!["allow-search"]),
        ("mistral", "search.web", json!({"query": "rust"}), Effect::Allow, Some("allow-search"), vec!["allow-search"]),
        (
            "gpt-4o",
            "search.web",
            json!({"query": long}),
            Effect::Deny,
            Some("deny-long-queries"),
            vec!["allow-search", "deny-long-queries"],
        ),
        (
            "gpt-4o",
            "calendar.create_event",
            json!({}),
            Effect::Allow,
            Some("allow-calendar-gpt"),
            vec!["allow-calendar-gpt"],
        ),
        ("mistral", "calendar.create_event", json!({}), Effect::Deny, None, vec![]),
        (
            "gpt-4o",
            "calendar.delete_event",
            json!({}),
            Effect::Deny,
            Some("deny-deletes"),
            vec!["allow-calendar-gpt", "deny-deletes"],
        ),
        ("gpt-4o", "mail.send", json!({}), Effect::Deny, None, vec![]),
        ("gpt-4o", "Search.web", json!({}), Effect::Deny, None, vec![]),
    ];
    for (model, tool, input, effect, rule, ids) in cases {
        let (got_effect, got_rule, got_ids) = decide(&policy, model, tool, input);
        assert_eq!(got_effect, effect, "{model} {tool}");
        assert_eq!(got_rule.as_deref(), rule, "{model} {tool}");
        assert_eq!(got_ids, ids, "{model} {tool}");
    }
}

#[test]
fn default_applies_when_no_rule_matches() {
    for (text, expected) in [
        ("default: allow\n", Effect::Allow),
        ("default: deny\n", Effect::Deny),
        ("rules: []\n", Effect::Deny),
        ("{}\n", Effect::Deny),
    ] {
        let policy = policy(text);
        assert_eq!(decide(&policy, "m", "t", json!({})).0, expected, "{text}");
    }
}

#[test]
fn reasons_explain_the_decision() {
    let policy = policy(RULES);
    let request =
        Request { model_id: "mistral", session_id: "s", tool_name: "mail.send", input: &json!({}), calls: &NoCalls };
    let decision = policy.evaluate(&request, NOW);
    assert_eq!(decision.verdict.reason, "no rule allows tool `mail.send` for model `mistral`; the default is deny");

    let request = Request { tool_name: "calendar.delete_event", model_id: "gpt-4o", ..request };
    assert_eq!(policy.evaluate(&request, NOW).verdict.reason, "deleting needs a human");
}

fn condition_policy(condition: &str) -> Policy {
    policy(&format!(
        "default: allow\nrules:\n  - id: c\n    action: deny\n    tools: ['*']\n    reason: condition held\n    when:\n      - {condition}\n"
    ))
}

#[test]
fn condition_table() {
    let cases = [
        ("{path: /mode, equals: dry-run}", json!({"mode": "dry-run"}), true),
        ("{path: /mode, equals: dry-run}", json!({"mode": "live"}), false),
        ("{path: /mode, equals: 'yes'}", json!({"mode": "yes"}), true),
        ("{path: /mode, equals: 'yes'}", json!({"mode": true}), false),
        ("{path: /n, equals: 1}", json!({"n": 1.0}), true),
        ("{path: /tags, equals: [a, b]}", json!({"tags": ["a", "b"]}), true),
        ("{path: /tags, equals: [a, b]}", json!({"tags": ["b", "a"]}), false),
        ("{path: /cal, one_of: [work, shared]}", json!({"cal": "shared"}), true),
        ("{path: /cal, one_of: [work, shared]}", json!({"cal": "home"}), false),
        ("{path: /url, matches: 'https://internal.*'}", json!({"url": "https://internal.example/x"}), true),
        ("{path: /url, matches: 'https://internal.*'}", json!({"url": "http://internal.example/x"}), false),
        ("{path: /amount, gt: 1000}", json!({"amount": 1000}), false),
        ("{path: /amount, gt: 1000}", json!({"amount": 1000.5}), true),
        ("{path: /amount, gte: 1000}", json!({"amount": 1000}), true),
        ("{path: /amount, lt: 0}", json!({"amount": -1}), true),
        ("{path: /amount, lte: 0}", json!({"amount": 0}), true),
        ("{path: /amount, lte: 0}", json!({"amount": 1}), false),
        ("{path: /amount, gte: 10, lte: 20}", json!({"amount": 15}), true),
        ("{path: /amount, gte: 10, lte: 20}", json!({"amount": 25}), false),
        ("{path: /q, max_length: 3}", json!({"q": "abc"}), true),
        ("{path: /q, max_length: 3}", json!({"q": "abcd"}), false),
        ("{path: /q, min_length: 2}", json!({"q": "éé"}), true),
        ("{path: /list, min_length: 2}", json!({"list": [1, 2]}), true),
        ("{path: /list, min_length: 3}", json!({"list": [1, 2]}), false),
        ("{path: /a/b/0/c, equals: 1}", json!({"a": {"b": [{"c": 1}]}}), true),
        ("{path: /a~1b, equals: 1}", json!({"a/b": 1}), true),
        ("{path: /attach, present: true}", json!({"attach": null}), true),
        ("{path: /attach, present: true}", json!({}), false),
        ("{path: /attach, present: false}", json!({}), true),
        ("{path: /attach, present: false}", json!({"attach": 1}), false),
        ("{path: /missing, equals: 1}", json!({}), false),
        ("{path: /missing, lt: 1}", json!({}), false),
    ];
    for (condition, input, holds) in cases {
        let policy = condition_policy(condition);
        let expected = if holds { Effect::Deny } else { Effect::Allow };
        assert_eq!(decide(&policy, "m", "t", input.clone()).0, expected, "{condition} on {input}");
    }
}

#[test]
fn wrong_type_makes_deny_rules_match() {
    let policy = condition_policy("{path: /amount, gt: 1000}");
    let request =
        Request { model_id: "m", session_id: "s", tool_name: "t", input: &json!({"amount": "5000"}), calls: &NoCalls };
    let decision = policy.evaluate(&request, NOW);
    assert_eq!(decision.verdict.effect, Effect::Deny);
    assert_eq!(decision.verdict.reason, "condition held (input field `/amount` is a string, expected a number)");
}

#[test]
fn wrong_type_keeps_allow_rules_from_matching() {
    let policy = policy(
        "default: deny\nrules:\n  - id: small\n    action: allow\n    tools: ['*']\n    reason: small amounts\n    when:\n      - {path: /amount, lt: 100}\n",
    );
    assert_eq!(decide(&policy, "m", "t", json!({"amount": "5"})).0, Effect::Deny);
    assert_eq!(decide(&policy, "m", "t", json!({"amount": 5})).0, Effect::Allow);
}

#[test]
fn shadow_rule_is_recorded_not_enforced() {
    let policy = policy(
        "default: allow\nrules:\n  - id: try-deny\n    action: deny\n    mode: shadow\n    tools: ['search.*']\n    reason: trying this out\n",
    );
    let request =
        Request { model_id: "m", session_id: "s", tool_name: "search.web", input: &json!({}), calls: &NoCalls };
    let decision = policy.evaluate(&request, NOW);
    assert_eq!(decision.verdict.effect, Effect::Allow);
    assert_eq!(decision.matched.len(), 1);
    assert!(decision.matched[0].shadow);
    let shadow = decision.shadow.unwrap();
    assert_eq!(shadow.effect, Effect::Deny);
    assert_eq!(shadow.rule.as_deref(), Some("try-deny"));
}

#[test]
fn shadow_policy_enforces_nothing() {
    let policy =
        policy("mode: shadow\ndefault: deny\nrules:\n  - id: d\n    action: deny\n    tools: ['*']\n    reason: no\n");
    let request = Request { model_id: "m", session_id: "s", tool_name: "x", input: &json!({}), calls: &NoCalls };
    let decision = policy.evaluate(&request, NOW);
    assert_eq!(decision.verdict.effect, Effect::Allow);
    assert_eq!(decision.verdict.reason, "the policy is in shadow mode, so only the key's scope is enforced");
    assert_eq!(decision.shadow.unwrap().effect, Effect::Deny);
}

#[test]
fn shadow_allow_rule_reports_deciding_rule() {
    let policy = policy(
        "default: allow\nrules:\n  - id: a\n    action: allow\n    mode: shadow\n    tools: ['*']\n    reason: fine\n",
    );
    let request = Request { model_id: "m", session_id: "s", tool_name: "x", input: &json!({}), calls: &NoCalls };
    let decision = policy.evaluate(&request, NOW);
    assert_eq!(decision.verdict.effect, Effect::Allow);
    assert_eq!(decision.shadow.map(|s| s.effect), Some(Effect::Allow));
}

const LIMITS: &str = r#"
default: allow
limits:
  - id: per-session
    per: session
    max_calls: 3
    window: 1m
  - id: per-model-search
    per: model
    max_calls: 5
    window: 1h
    tools: ["search.*"]
"#;

#[test]
fn session_limit_denies_the_call_past_max() {
    let policy = policy(LIMITS);
    let mut counters = WindowCounters::new();
    let input = json!({});
    let mut effects = Vec::new();
    for second in 0..5 {
        let now = NOW + time::Duration::seconds(second);
        let request =
            Request { model_id: "m", session_id: "s1", tool_name: "calendar.x", input: &input, calls: &counters };
        let decision = policy.evaluate(&request, now);
        effects.push(decision.verdict.effect);
        if decision.is_allowed() {
            counters.record(&decision.counted, now);
        }
    }
    assert_eq!(effects, [Effect::Allow, Effect::Allow, Effect::Allow, Effect::Deny, Effect::Deny]);

    let other_session =
        Request { model_id: "m", session_id: "s2", tool_name: "calendar.x", input: &input, calls: &counters };
    assert!(policy.evaluate(&other_session, NOW).is_allowed());

    let later = NOW + time::Duration::seconds(61);
    let same_session = Request { session_id: "s1", ..other_session };
    assert!(policy.evaluate(&same_session, later).is_allowed(), "window slid past the first calls");
}

#[test]
fn limit_reason_names_limit_and_count() {
    let policy = policy(LIMITS);
    let mut counters = WindowCounters::new();
    let input = json!({});
    let mut last = None;
    for _ in 0..4 {
        let request = Request { model_id: "m", session_id: "s1", tool_name: "t", input: &input, calls: &counters };
        let decision = policy.evaluate(&request, NOW);
        if decision.is_allowed() {
            counters.record(&decision.counted, NOW);
        }
        last = Some(decision);
    }
    let decision = last.unwrap();
    assert_eq!(decision.verdict.rule.as_deref(), Some("per-session"));
    assert_eq!(
        decision.verdict.reason,
        "call limit `per-session` reached: at most 3 calls per 1m per session (3 calls in the last 1m)"
    );
}

#[test]
fn model_limit_counts_across_sessions() {
    let policy = policy(LIMITS);
    let mut counters = WindowCounters::new();
    let input = json!({});
    let mut allowed = 0;
    for index in 0..8 {
        let session = format!("s{index}");
        let request =
            Request { model_id: "m", session_id: &session, tool_name: "search.web", input: &input, calls: &counters };
        let decision = policy.evaluate(&request, NOW);
        if decision.is_allowed() {
            allowed += 1;
            counters.record(&decision.counted, NOW);
        }
    }
    assert_eq!(allowed, 5);
}

#[test]
fn counters_prune_idle_entries() {
    let policy = policy(LIMITS);
    let mut counters = WindowCounters::new();
    let input = json!({});
    let request = Request { model_id: "m", session_id: "s1", tool_name: "t", input: &input, calls: &NoCalls };
    counters.record(&policy.evaluate(&request, NOW).counted, NOW);
    assert_eq!(counters.len(), 1);
    counters.prune(NOW + time::Duration::hours(2));
    assert!(counters.is_empty());
}

#[test]
fn counters_stay_bounded_with_new_sessions() {
    let policy = policy(LIMITS);
    let mut counters = WindowCounters::new();
    let input = json!({});
    for index in 0..50_000 {
        let now = NOW + time::Duration::seconds(index);
        let session = format!("s{index}");
        let request = Request { model_id: "m", session_id: &session, tool_name: "t", input: &input, calls: &NoCalls };
        counters.record_and_prune(&policy.evaluate(&request, now).counted, now);
    }
    // One call per second with a one-minute session window leaves about 60 live counters, and
    // pruning at each doubling keeps at most twice the minimum of 1024.
    assert!(counters.len() <= 2048, "{} counters kept", counters.len());
}

#[test]
fn authorize_checks_scope_then_policy() {
    let keys = KeySet::from_yaml("k", "models:\n  m:\n    key: secret\n    tools: ['search.*']\n").unwrap();
    let principal = keys.authenticate("m", Some("secret"), NOW).unwrap();
    let policy = policy("default: allow\n");
    let input = json!({});
    let request = |tool| Request { model_id: "m", session_id: "s", tool_name: tool, input: &input, calls: &NoCalls };

    assert!(authorize(&principal, &policy, &request("search.web"), NOW).is_allowed());
    let outside = authorize(&principal, &policy, &request("calendar.x"), NOW);
    assert!(!outside.is_allowed());
    assert_eq!(outside.verdict.reason, "tool `calendar.x` is outside the scope of this model's key");

    let spoofed = Request { model_id: "other", ..request("search.web") };
    assert!(!authorize(&principal, &policy, &spoofed, NOW).is_allowed());
}

fn rule_strategy() -> impl Strategy<Value = (bool, String, String)> {
    (
        any::<bool>(),
        prop_oneof![Just("*"), Just("gpt-*"), Just("m"), Just("x")],
        prop_oneof![Just("*"), Just("search.*"), Just("calendar.*"), Just("search.web")],
    )
        .prop_map(|(deny, model, tool)| (deny, model.to_owned(), tool.to_owned()))
}

fn render(rules: &[(bool, String, String)], order: &[usize], default: &str) -> String {
    let mut text = format!("default: {default}\nrules:\n");
    for &index in order {
        let (deny, model, tool) = &rules[index];
        let action = if *deny { "deny" } else { "allow" };
        text.push_str(&format!("  - id: r{index}\n    action: {action}\n    models: ['{model}']\n    tools: ['{tool}']\n    reason: rule {index}\n"));
    }
    text
}

proptest! {
    #[test]
    fn deny_overrides_in_any_order(rules in prop::collection::vec(rule_strategy(), 1..8), seed in any::<u64>(), default in prop_oneof![Just("allow"), Just("deny")]) {
        let forward: Vec<usize> = (0..rules.len()).collect();
        let mut shuffled = forward.clone();
        let mut state = seed;
        for index in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(index, (state >> 33) as usize % (index + 1));
        }
        let a = policy(&render(&rules, &forward, default));
        let b = policy(&render(&rules, &shuffled, default));
        let input = json!({});
        for model in ["gpt-4o", "m", "x"] {
            for tool in ["search.web", "calendar.create", "mail.send"] {
                let request = Request { model_id: model, session_id: "s", tool_name: tool, input: &input, calls: &NoCalls };
                let first = a.evaluate(&request, NOW);
                let second = b.evaluate(&request, NOW);
                prop_assert_eq!(&first, &second);

                let any_deny = first.matched.iter().any(|m| m.action == Effect::Deny);
                let any_allow = first.matched.iter().any(|m| m.action == Effect::Allow);
                if any_deny {
                    prop_assert_eq!(first.verdict.effect, Effect::Deny);
                } else if any_allow {
                    prop_assert_eq!(first.verdict.effect, Effect::Allow);
                } else {
                    prop_assert_eq!(first.verdict.effect.as_str(), default);
                }
            }
        }
    }
}

#[test]
fn may_allow_table() {
    let policy = policy(RULES);
    let cases = [
        ("gpt-4o", "search.web", true),
        ("gpt-4o", "calendar.create_event", true),
        ("mistral", "calendar.create_event", false),
        ("gpt-4o", "calendar.delete_event", false),
        ("gpt-4o", "mail.send", false),
    ];
    for (model, tool, expected) in cases {
        assert_eq!(policy.may_allow(model, tool), expected, "{model} {tool}");
    }
    assert!(self::policy("default: allow\n").may_allow("m", "anything"));
    assert!(self::policy("mode: shadow\n").may_allow("m", "anything"));
}
