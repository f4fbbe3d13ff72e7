#!/usr/bin/env bash
# Build every fuzz target in fuzz/ and run each for a bounded time, failing on the first crash,
# panic or failed assertion. infra/test.sh runs this as one step.
#
# Usage: bash fuzz/run-bounded.sh [SECONDS]   (from any directory; SECONDS per target, default 20)
#
# cargo-fuzz comes from infra/install-test-deps.sh. It builds with libFuzzer, debug assertions
# and overflow checks, which need nightly rustc flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. This script builds without AddressSanitizer, because the crates under
# test forbid `unsafe` code, and without it the targets ran 4 to 20 times more inputs per
# second on 2 shared cores.
# The instrumented build goes to $FUZZ_TARGET_DIR, by default the folder `fuzz` inside
# CARGO_TARGET_DIR (or target/), so it does not replace the artifacts of the normal builds.
#
# Each target starts from its seed corpus in fuzz/corpus/<target>/, which libFuzzer only reads.
# The inputs it finds go to a temporary folder that is deleted at the end, so the run changes
# no file of the checkout; cargo fuzz only creates the empty folders fuzz/artifacts/<target>,
# which .gitignore lists. A failing input is saved as
# $FUZZ_TARGET_DIR/artifacts/<target>/crash-<sha1>; fuzz/README.md explains how to turn it into a
# regression test.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-20}"
TARGETS=(policy_yaml keys_yaml jsonrpc_request sse_reader)
CARGO_FUZZ_DIR="$ROOT/infra/.cargo-fuzz/bin"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/fuzz}"

# The dictionary of each target, in fuzz/dict/.
dictionary_of() {
    case "$1" in
        policy_yaml | keys_yaml) echo yaml.dict ;;
        jsonrpc_request) echo jsonrpc.dict ;;
        sse_reader) echo sse.dict ;;
    esac
}

if [[ ! -x "$CARGO_FUZZ_DIR/cargo-fuzz" ]]; then
    echo "fuzz: error: $CARGO_FUZZ_DIR/cargo-fuzz not found; run bash infra/install-test-deps.sh" >&2
    exit 1
fi
export PATH="$CARGO_FUZZ_DIR:$PATH"
export RUSTC_BOOTSTRAP=1
cd "$ROOT"
# `cargo fuzz run` builds again unless it gets the same options as `cargo fuzz build`.
CARGO_FUZZ_OPTIONS=(--fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" --sanitizer none)

echo "fuzz: building the fuzz targets into $FUZZ_TARGET_DIR"
cargo fuzz build "${CARGO_FUZZ_OPTIONS[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${TARGETS[@]}"; do
    artifacts="$FUZZ_TARGET_DIR/artifacts/$target"
    mkdir -p "$scratch/$target" "$artifacts"
    echo "fuzz: running $target for $SECONDS_PER_TARGET s"
    # -timeout is per input in seconds, -rss_limit_mb the memory limit of the whole process.
    cargo fuzz run "${CARGO_FUZZ_OPTIONS[@]}" "$target" \
        "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -dict="fuzz/dict/$(dictionary_of "$target")" -artifact_prefix="$artifacts/" \
        -print_final_stats=1 2>"$scratch/$target.log" || {
        cat "$scratch/$target.log" >&2
        echo "fuzz: error: $target failed; the input is in $artifacts/" >&2
        exit 1
    }
    grep -E '^stat::number_of_executed_units' "$scratch/$target.log" | sed "s/^/fuzz: $target /"
done
echo "fuzz: ${#TARGETS[@]} targets ran ${SECONDS_PER_TARGET} s each without a failure"
