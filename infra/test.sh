#!/usr/bin/env bash
# Install what the tests need, then run every test of the workspace.
#
# Usage: bash infra/test.sh   (from any directory)
#
# Steps: the test dependencies (infra/install-test-deps.sh: the reference MCP server from
# npm and the official MCP Python SDK from PyPI, skipped when already installed), a debug
# build of the `mcpsec` binary that the end-to-end tests start, then `cargo test` over the
# whole workspace. CARGO_TARGET_DIR, when set, keeps build output outside the checkout so
# that repeated runs from fresh clones reuse it.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

echo "test: installing test dependencies"
bash infra/install-test-deps.sh

JOBS="${CARGO_BUILD_JOBS:-$(nproc)}"
echo "test: building the mcpsec binary"
cargo build --locked -j "$JOBS" -p mcpsec

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export MCPSEC_BIN="$TARGET_DIR/debug/mcpsec"

echo "test: running the workspace tests"
cargo test --locked -j "$JOBS" --workspace --all-targets -- --test-threads "${TEST_THREADS:-4}"
