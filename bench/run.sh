#!/usr/bin/env bash
# HTTP load benchmark of the gateway against direct calls to its upstream.
#
# Builds the release binary, starts bench/upstream.js and runs bench/load.py, which starts the
# gateways in front of it, runs every phase, prints the tables and draws the plots. One gateway
# keeps DATA_DIR in a fresh temporary folder on disk. Another keeps it on /dev/shm, which shows
# what the durable audit writes cost. The scaling phases start one more gateway per policy size
# and per session count. Every process that the run starts is stopped on exit. Traffic goes to
# 127.0.0.1 only. docs/benchmarks-harness.md describes the phases and options.
#
# Usage: bench/run.sh [load.py options]   e.g. bench/run.sh --smoke, bench/run.sh --phases scaling
# Environment:
#   BENCH_SHM=0          skip the /dev/shm gateway
#   BENCH_RESULTS=FILE   also write all results as JSON to FILE
#   BENCH_TMPDIR=DIR     parent folder of the on-disk DATA_DIRs (default: $TMPDIR or /tmp)
#   BENCH_BINARY=PATH    benchmark this mcpsec binary instead of building
#                        $CARGO_TARGET_DIR/release/mcpsec (default CARGO_TARGET_DIR: target)
# Needs cargo, node, python3 and wrk, and installs wrk with apt-get when it is missing. The
# plots need matplotlib, which the script installs with pip into bench/.venv on first use.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

venv="$repo/bench/.venv"
started_pids=()
work=""
shm_work=""

cleanup() {
  local status=$?
  for pid in "${started_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${started_pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [[ -n "$work" ]] && rm -rf "$work"
  [[ -n "$shm_work" ]] && rm -rf "$shm_work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "run.sh: $*" >&2
  exit 1
}

# Waits up to 20 s for process $1 to print a line matching the regular expression $3 into
# file $2, then prints the first match.
wait_for_line() {
  local pid=$1 file=$2 pattern=$3
  for _ in $(seq 200); do
    if grep -m1 -E "$pattern" "$file" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || fail "process $pid exited before it was ready; its output: $(cat "$file")"
    sleep 0.1
  done
  fail "process $pid printed no line matching '$pattern' within 20 s; its output: $(cat "$file")"
}

for tool in cargo node python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing; install it and run again"
done
if ! command -v wrk >/dev/null; then
  echo "installing wrk with apt-get" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } \
    || fail "installing wrk failed; run 'apt-get install wrk' as root"
fi

if [[ -n "${BENCH_BINARY:-}" ]]; then
  binary=$(realpath "$BENCH_BINARY")
  [[ -x "$binary" ]] || fail "BENCH_BINARY=$BENCH_BINARY is not an executable file"
else
  cargo build --release -j2 -p mcpsec
  binary="${CARGO_TARGET_DIR:-target}/release/mcpsec"
  [[ "$binary" = /* ]] || binary="$repo/$binary"
fi
echo "binary: $binary, modified $(date -u -r "$binary" '+%Y-%m-%d %H:%M UTC')"

# The venv is kept between runs, and set up again when matplotlib cannot be imported from it.
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  echo "installing matplotlib into $venv" >&2
  python3 -m venv "$venv" || fail "creating the venv $venv failed; install the python3-venv package"
  "$venv/bin/pip" install --quiet -r bench/requirements.txt \
    || fail "installing matplotlib into $venv failed; see pip's message above"
fi

work=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/mcpsec-bench.XXXXXX")
node bench/upstream.js 0 >"$work/upstream.out" 2>&1 &
upstream_pid=$!
started_pids+=("$upstream_pid")
upstream_url=$(wait_for_line "$upstream_pid" "$work/upstream.out" 'listening on http://' | sed -E 's/.*(http:[^ ]+).*/\1/')

load_args=(--upstream "$upstream_url" --upstream-pid "$upstream_pid" --binary "$binary" --work-dir "$work")
if [[ "${BENCH_SHM:-1}" != 0 && -d /dev/shm ]]; then
  shm_work=$(mktemp -d /dev/shm/mcpsec-bench.XXXXXX)
  load_args+=(--shm-dir "$shm_work")
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "load average before the run (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
echo "upstream: $upstream_url (pid $upstream_pid); gateway data under $work"
"$venv/bin/python" bench/load.py "${load_args[@]}" --json "$work/results.json" "$@"

if [[ -n "${BENCH_RESULTS:-}" ]]; then
  cp "$work/results.json" "$BENCH_RESULTS"
fi
echo "gateway data after the run: $(cd "$work" && du -sh -- */data 2>/dev/null | awk '{printf "%s %s; ", $2, $1}')"
kill -0 "$upstream_pid" 2>/dev/null || fail "the upstream (pid $upstream_pid) exited during the benchmark; see $work/upstream.out"
