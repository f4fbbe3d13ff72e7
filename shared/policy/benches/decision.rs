//! Decision latency against large policies and key sets.
//!
//! Run with `cargo bench -p mcpsec-policy --bench decision`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use std::hint::black_box;

use criterion::BatchSize;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mcpsec_policy::{KeySet, NoCalls, Policy, PolicyDocument, Request};
use serde_json::json;
use time::macros::datetime;

/// Builds a policy of `count` rules shaped like real ones: per-namespace allow rules, deny
/// rules with input conditions, model-specific rules and two limits.
fn policy_text(count: usize) -> String {
    let mut text = String::from("default: deny\nrules:\n");
    for index in 0..count {
        let namespace = format!("ns{}", index % (count / 4).max(1));
        match index % 4 {
            0 => text.push_str(&format!("  - id: allow-{index}\n    action: allow\n    tools: ['{namespace}.*']\n    reason: namespace {namespace}\n")),
            1 => text.push_str(&format!(
                "  - id: deny-big-{index}\n    action: deny\n    tools: ['{namespace}.write_*']\n    reason: too large\n    when:\n      - path: /size\n        gt: 1000\n"
            )),
            2 => text.push_str(&format!("  - id: model-{index}\n    action: allow\n    models: ['model-{index}']\n    tools: ['{namespace}.admin_?']\n    reason: admin\n")),
            _ => text.push_str(&format!(
                "  - id: deny-host-{index}\n    action: deny\n    tools: ['{namespace}.fetch']\n    reason: internal host\n    when:\n      - path: /url\n        matches: 'http://10.*'\n"
            )),
        }
    }
    text.push_str("limits:\n  - id: burst\n    per: session\n    max_calls: 100\n    window: 1m\n  - id: hourly\n    per: model\n    max_calls: 5000\n    window: 1h\n");
    text
}

fn keys_text(count: usize) -> String {
    let mut text = String::from("models:\n");
    for index in 0..count {
        text.push_str(&format!("  model-{index}:\n    key: key-{index}-secret\n    tools: ['ns{index}.*', 'search.*']\n    expires: '2030-01-01T00:00:00Z'\n"));
    }
    text
}

fn decision(c: &mut Criterion) {
    let now = datetime!(2026-01-01 00:00 UTC);
    let input = json!({"size": 10, "url": "https://example.test/a", "query": "rust"});
    let mut group = c.benchmark_group("evaluate");
    for count in [10, 100, 1_000, 10_000] {
        let policy = Policy::from_yaml("bench", &policy_text(count)).unwrap_or_else(|error| panic!("{error}"));
        let tool = format!("ns{}.write_file", (count / 4).max(1) / 2);
        group.bench_with_input(BenchmarkId::from_parameter(count), &policy, |b, policy| {
            b.iter(|| {
                let request = Request {
                    model_id: "model-7",
                    session_id: "session-1",
                    tool_name: &tool,
                    input: &input,
                    calls: &NoCalls,
                };
                black_box(policy.evaluate(black_box(&request), now))
            });
        });
    }
    group.finish();
}

fn authenticate(c: &mut Criterion) {
    let now = datetime!(2026-01-01 00:00 UTC);
    let keys = KeySet::from_yaml("bench", &keys_text(1_000)).unwrap_or_else(|error| panic!("{error}"));
    c.bench_function("authenticate/1000-models", |b| {
        b.iter(|| black_box(keys.authenticate(black_box("model-500"), Some(black_box("key-500-secret")), now).is_ok()));
    });
    c.bench_function("authenticate/1000-models/scope", |b| {
        b.iter(|| {
            let principal = keys.authenticate("model-500", Some("key-500-secret"), now);
            black_box(principal.map(|p| p.entry.scope.allows(black_box("ns500.read"))))
        });
    });
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(20);
    for count in [100, 1_000] {
        let text = policy_text(count);
        group.bench_with_input(BenchmarkId::new("parse+compile", count), &text, |b, text| {
            b.iter(|| black_box(Policy::from_yaml("bench", text).is_ok()));
        });
        group.bench_with_input(BenchmarkId::new("compile", count), &text, |b, text| {
            let parse = || PolicyDocument::parse("bench", text).unwrap_or_else(|error| panic!("{error}"));
            b.iter_batched(parse, |document| black_box(Policy::compile(document).is_ok()), BatchSize::LargeInput);
        });
    }
    group.finish();
}

criterion_group!(benches, decision, authenticate, compile);
criterion_main!(benches);
