#!/usr/bin/env bash
# Install what the tests need, then run every test of the workspace.
#
# Usage: bash infra/test.sh   (from any directory)
#
# Steps: the test dependencies (infra/install-test-deps.sh: the reference MCP server from
# npm and the official MCP Python SDK from PyPI, skipped when already installed), a debug
# build of the `mcpsec` binary that the end-to-end tests start, then `cargo test` over the
# whole workspace and the dashboard browser tests (tests/browser, Node.js and Chromium).
# Last, a release build of the four Lambda packages. CARGO_TARGET_DIR, when set, keeps build
# output outside the checkout so that repeated runs from fresh clones reuse it.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

echo "test: installing test dependencies"
bash infra/install-test-deps.sh
bash infra/check-template.sh

JOBS="${CARGO_BUILD_JOBS:-$(nproc)}"
echo "test: building the mcpsec binary"
cargo build --locked -j "$JOBS" -p mcpsec

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export MCPSEC_BIN="$TARGET_DIR/debug/mcpsec"

echo "test: running the workspace tests"
RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}" cargo test --locked -j "$JOBS" --workspace --all-targets

# Drives the /dash dashboard in Debian's Chromium against the binary in $MCPSEC_BIN. With
# UPDATE_SCREENSHOTS=1 it also rewrites the screenshots in docs/screenshots/.
echo "test: running the dashboard browser tests"
node --test tests/browser/

# One `bootstrap` per function in $TARGET_DIR/lambda/<function>/, as SAM deploys them.
# cargo-lambda (infra/.venv) links with Zig from the ziglang package against an older glibc
# than this machine's, so the binaries run on Lambda's provided.al2023 runtime. x86_64 only, because
# the aarch64 standard library is not installed here. Measured on 2 shared cores: 17 min
# with nothing built for the target yet, 5.5 min after a change to the gateway crate.
echo "test: building the Lambda packages"
PATH="$ROOT/infra/.venv/bin:$PATH" cargo lambda build --locked --release --x86-64 -j "$JOBS" \
    --lambda-dir "$TARGET_DIR/lambda" -p mcpsec-toolcall -p mcpsec-admin -p mcpsec-session -p mcpsec-stream
for function in toolcall admin session stream; do
    bootstrap="$TARGET_DIR/lambda/$function/bootstrap"
    echo "test: lambda package $function: $(du -h "$bootstrap" | cut -f1) $bootstrap"
done
