#!/usr/bin/env bash
# Start-up benchmark: the time from process start to the first response to a call, for the
# container binary (`mcpsec serve`) and the four Lambda functions, and the size of each binary.
#
# Builds the release `mcpsec` binary and the Lambda packages with the command infra/test.sh
# uses (`cargo lambda build --release`, so the `bootstrap` files are the ones SAM deploys), then
# runs bench/startup.py. That script starts bench/upstream.js and moto on 127.0.0.1, serves the
# Lambda Runtime API to the functions itself, starts every binary repeatedly and prints Markdown
# tables. Its docstring describes what each figure includes. Every process it starts is
# stopped on exit.
#
# Usage: bench/startup.sh [startup.py options]   e.g. bench/startup.sh --runs 5 --only lambda
# Environment:
#   STARTUP_SKIP_BUILD=1   use the binaries already in $CARGO_TARGET_DIR (default: target)
# Needs cargo, python3, node, and moto_server and cargo-lambda in infra/.venv, which
# `bash infra/install-test-deps.sh` installs.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

fail() {
  echo "startup.sh: $*" >&2
  exit 1
}

for tool in cargo node python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing; install it and run again"
done
for tool in moto_server cargo-lambda; do
  [[ -x "infra/.venv/bin/$tool" ]] || fail "infra/.venv/bin/$tool not found; run 'bash infra/install-test-deps.sh'"
done

target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" = /* ]] || target_dir="$repo/$target_dir"
lambda_dir="$target_dir/lambda"

if [[ "${STARTUP_SKIP_BUILD:-0}" != 1 ]]; then
  jobs="${CARGO_BUILD_JOBS:-$(nproc)}"
  cargo build --locked --release -j "$jobs" -p mcpsec
  PATH="$repo/infra/.venv/bin:$PATH" cargo lambda build --locked --release --x86-64 -j "$jobs" \
    --lambda-dir "$lambda_dir" -p mcpsec-toolcall -p mcpsec-admin -p mcpsec-session -p mcpsec-stream
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "load average before the run (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/startup.py --mcpsec "$target_dir/release/mcpsec" --lambda-dir "$lambda_dir" "$@"
