//! Untrusted YAML must not exhaust memory or stack, and each limit it hits is named.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::{KeySet, LoadError, Policy};

/// Nine levels of ten aliases each, which would expand to 10^9 scalars.
fn policy_alias_bomb(levels: usize) -> String {
    let mut text = String::from(
        "default: deny\nrules:\n  - id: r\n    action: deny\n    reason: r\n    tools: ['*']\n    when:\n      - path: /x\n        one_of:\n          - &l0 [a, a, a, a, a, a, a, a, a, a]\n",
    );
    for level in 1..levels {
        let previous = format!("*l{}", level - 1);
        let items = vec![previous; 10].join(", ");
        text.push_str(&format!("          - &l{level} [{items}]\n"));
    }
    text
}

/// Builds a keys file with an alias bomb. Every value of a keys file has a fixed type and
/// unknown fields are errors, so the bomb is rejected before any alias expands.
fn keys_alias_bomb(levels: usize) -> String {
    let mut text = String::from("anchors:\n  - &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for level in 1..levels {
        let items = vec![format!("*l{}", level - 1); 10].join(", ");
        text.push_str(&format!("  - &l{level} [{items}]\n"));
    }
    text.push_str(&format!("models:\n  m:\n    key: k\n    tools: *l{}\n", levels - 1));
    text
}

/// Builds a policy with `count` aliases of 100 anchors, each small.
fn many_aliases(count: usize) -> String {
    let anchors: Vec<String> = (0..100).map(|index| format!("&a{index} v{index}")).collect();
    let aliases: Vec<String> = (0..count).map(|index| format!("*a{}", index % 100)).collect();
    format!(
        "default: deny\nrules:\n  - id: r\n    action: deny\n    reason: r\n    tools: ['*']\n    when:\n      - path: /x\n        one_of: [{}, {}]\n",
        anchors.join(", "),
        aliases.join(", ")
    )
}

/// Builds a policy with `count` aliases of one anchor.
fn aliases_of_one_anchor(count: usize) -> String {
    let aliases = vec!["*a"; count].join(", ");
    format!(
        "default: deny\nrules:\n  - id: r\n    action: deny\n    reason: &a r\n    tools: ['*']\n    when:\n      - path: /x\n        one_of: [{aliases}]\n"
    )
}

fn block_nesting(levels: usize) -> String {
    let mut text = String::from("default: deny\nrules:\n");
    for level in 0..levels {
        text.push_str(&"  ".repeat(level + 1));
        text.push_str("- \n");
    }
    text
}

enum Format {
    Policy,
    Keys,
}

fn load(format: &Format, text: &str) -> Result<(), LoadError> {
    match format {
        Format::Policy => Policy::from_yaml("policies.yaml", text).map(|_| ()),
        Format::Keys => KeySet::from_yaml("model_keys.yaml", text).map(|_| ()),
    }
}

#[test]
fn hostile_documents_are_rejected_with_the_limit_named() {
    let depth = 10_000;
    let cases = [
        ("policy alias bomb", Format::Policy, policy_alias_bomb(9)),
        ("keys alias bomb", Format::Keys, keys_alias_bomb(9)),
        ("policy with 1,001 aliases", Format::Policy, many_aliases(1_001)),
        ("policy with 101 aliases of one anchor", Format::Policy, aliases_of_one_anchor(101)),
        (
            "policy flow nesting 10,000 deep",
            Format::Policy,
            format!("default: deny\nrules: {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        ),
        (
            "keys flow nesting 10,000 deep",
            Format::Keys,
            format!("models:\n  m:\n    key: k\n    tools: {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        ),
        ("policy block nesting 200 deep", Format::Policy, block_nesting(200)),
        ("policy over 8 MiB", Format::Policy, format!("default: deny\n# {}\n", "x".repeat(9 * 1024 * 1024))),
        (
            "keys scalar over 16 MiB",
            Format::Keys,
            format!("models:\n  m:\n    key: '{}'\n    tools: ['*']\n", "k".repeat(17 * 1024 * 1024)),
        ),
        ("policy with two documents", Format::Policy, "default: deny\n---\ndefault: allow\n".to_owned()),
        ("keys with two documents", Format::Keys, "models: {}\n---\nmodels: {}\n".to_owned()),
        ("policy that is a list", Format::Policy, "- default: deny\n".to_owned()),
        ("policy with a tab indent", Format::Policy, "rules:\n\t- id: r\n".to_owned()),
        ("policy with a NUL byte", Format::Policy, "default: deny\0\n".to_owned()),
    ];

    let mut rendered = String::new();
    for (case, format, text) in cases {
        let error = load(&format, &text).expect_err(case);
        rendered.push_str(&format!("{case}\n  {error}\n"));
    }
    insta::assert_snapshot!("hostile_documents", rendered);
}

#[test]
fn policy_at_the_alias_limits_is_read() {
    let policy = Policy::from_yaml("policies.yaml", &many_aliases(1_000)).unwrap();
    assert_eq!(policy.rule_ids(), ["r"]);
    let policy = Policy::from_yaml("policies.yaml", &aliases_of_one_anchor(99)).unwrap();
    assert_eq!(policy.rule_ids(), ["r"]);
}

#[test]
fn policy_at_the_nesting_limit_is_read() {
    // The document, the rule list, a rule, `when` and a condition take five levels, so an
    // `equals` value may nest 19 lists.
    let value = format!("{}1{}", "[".repeat(19), "]".repeat(19));
    let text = format!(
        "rules:\n  - id: r\n    action: deny\n    reason: r\n    tools: ['*']\n    when:\n      - path: /x\n        equals: {value}\n"
    );
    assert!(Policy::from_yaml("policies.yaml", &text).is_ok());

    let deeper = text.replace(&value, &format!("[{value}]"));
    let error = Policy::from_yaml("policies.yaml", &deeper).unwrap_err().to_string();
    assert!(error.contains("deeper than the limit of 24 levels"), "{error}");
}
