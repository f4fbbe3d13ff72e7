//! End-to-end tests of the `mcpsec` binary. Each test starts its own gateway on a free
//! 127.0.0.1 port with a fresh data folder. Where a test needs an upstream, it also starts
//! its own reference MCP server (`@modelcontextprotocol/server-everything`). The tests drive
//! the gateway over REST, over MCP with the official Python SDK client (`tests/mcp_client.py`),
//! and through its command line.
//!
//! Before running them, build the binary and install the Node and Python dependencies:
//!
//! ```sh
//! bash infra/install-test-deps.sh
//! cargo build -j2 -p mcpsec && cargo test -j2 -p mcpsec-e2e
//! ```
//!
//! The tests use `target/debug/mcpsec` (or `debug/mcpsec` under `CARGO_TARGET_DIR`), or the
//! binary named by `MCPSEC_BIN`. They fail, and never skip, when a dependency is missing.
//! NOTE: `cargo test -p mcpsec-e2e` does not rebuild the gateway, so a stale binary is tested
//! until `cargo build -p mcpsec` runs again.

#[path = "../support/mod.rs"]
mod support;

mod aws_store;
mod bad_input;
mod cli;
mod demo_smoke;
mod denials;
mod faults;
mod hostile_config;
mod no_upstream;
mod ops;
mod secrets;
mod session_trace;
mod siem;
mod smuggling;
mod soak;
mod tool_calls;
mod tools_list;
mod transport;
