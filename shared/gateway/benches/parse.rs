//! Parsing of tool-call request bodies: what the model routes do to a body before
//! authentication and the policy.
//!
//! `rest` is a `POST /mcp/toolcall` body and `mcp` a JSON-RPC `tools/call` message for
//! `POST /mcp`, each with small and large tool arguments. The bodies are already in memory, so
//! reading them from the connection is not measured.
//!
//! Run with `cargo bench -p mcpsec-gateway --bench parse`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests and benchmarks fail loudly on unexpected values"
)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mcpsec_gateway::http::{check_mcp_body, check_toolcall_body};
use serde_json::{Value, json};

/// Minimum sizes of the serialized tool arguments in bytes, with their benchmark labels.
const ARGUMENT_SIZES: [(&str, usize); 3] = [("small", 0), ("16KiB", 16 * 1024), ("256KiB", 256 * 1024)];

/// Builds tool arguments of at least `bytes` bytes once serialized: a query and a list of
/// documents with numbers, short strings, a tag array and a paragraph of text each, as a
/// retrieval or upload tool receives them. Size 0 gives the one-field arguments of a search.
fn arguments(bytes: usize) -> Value {
    let mut documents = Vec::new();
    let mut size = 0;
    while size < bytes {
        let index = documents.len();
        let document = json!({
            "id": index,
            "title": format!("Quarterly report, part {index}"),
            "tags": ["finance", "draft", format!("q{}", index % 4 + 1)],
            "score": 0.5 + index as f64 / 1000.0,
            "text": "Revenue grew in every region while costs stayed flat; the board asks for a summary \
                     of risks, the hiring plan and the open questions before the next meeting. ",
        });
        size += document.to_string().len() + 1;
        documents.push(document);
    }
    if documents.is_empty() {
        return json!({"query": "q"});
    }
    json!({"query": "q", "documents": documents})
}

fn rest_body(arguments: &Value) -> Vec<u8> {
    let body = json!({"model_id": "gpt-4o", "session_id": "bench-1", "tool_name": "search.web", "input": arguments});
    serde_json::to_vec(&body).unwrap()
}

fn mcp_body(arguments: &Value) -> Vec<u8> {
    let body = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "search.web", "arguments": arguments},
    });
    serde_json::to_vec(&body).unwrap()
}

/// Builds a request body around tool arguments.
type BuildBody = fn(&Value) -> Vec<u8>;
/// A parse function under test.
type CheckBody = fn(&[u8]) -> Result<(), String>;

fn parse(c: &mut Criterion) {
    let routes: [(&str, BuildBody, CheckBody); 2] =
        [("rest", rest_body, check_toolcall_body), ("mcp", mcp_body, check_mcp_body)];
    for (route, build, check) in routes {
        let mut group = c.benchmark_group(route);
        for (label, size) in ARGUMENT_SIZES {
            let body = build(&arguments(size));
            // A rejected body would measure the error path instead.
            check(&body).unwrap_or_else(|reason| panic!("{route} body of size {label} is rejected: {reason}"));
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::from_parameter(label), &body, |b, body| {
                b.iter(|| black_box(check(black_box(body))));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
