//! Untrusted YAML must not exhaust memory or stack.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use mcpsec_policy::{KeySet, Policy};

fn alias_bomb(levels: usize) -> String {
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

#[test]
fn alias_bomb_is_rejected() {
    // Nine levels of ten aliases each would expand to 10^9 scalars.
    let error = Policy::from_yaml("policies.yaml", &alias_bomb(9)).unwrap_err().to_string();
    assert!(error.contains("budget") || error.contains("alias"), "{error}");
}

#[test]
fn deep_nesting_is_rejected() {
    let depth = 10_000;
    let text = format!("default: deny\nrules: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let error = Policy::from_yaml("policies.yaml", &text).unwrap_err().to_string();
    assert!(error.contains("recursion limit") || error.contains("depth"), "{error}");
}

#[test]
fn deep_block_nesting_is_rejected() {
    let mut text = String::from("default: deny\nrules:\n");
    for level in 0..200 {
        text.push_str(&"  ".repeat(level + 1));
        text.push_str("- \n");
    }
    let error = Policy::from_yaml("policies.yaml", &text).unwrap_err().to_string();
    assert!(!error.is_empty());
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let text = format!("default: deny\n# {}\n", "x".repeat(9 * 1024 * 1024));
    let error = Policy::from_yaml("policies.yaml", &text).unwrap_err().to_string();
    assert!(error.contains("more than the limit of 8388608 bytes"), "{error}");
}

#[test]
fn huge_scalar_is_rejected() {
    let text = format!("models:\n  m:\n    key: '{}'\n    tools: ['*']\n", "k".repeat(17 * 1024 * 1024));
    let error = KeySet::from_yaml("model_keys.yaml", &text).unwrap_err().to_string();
    assert!(error.contains("limit") || error.contains("budget"), "{error}");
}

#[test]
fn many_documents_are_rejected() {
    let error = Policy::from_yaml("policies.yaml", "default: deny\n---\ndefault: allow\n").unwrap_err().to_string();
    assert!(!error.is_empty());
}
