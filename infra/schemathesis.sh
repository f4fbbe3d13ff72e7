#!/usr/bin/env bash
# Check the gateway's HTTP API against its OpenAPI document with schemathesis.
#
# Starts the debug `mcpsec` binary with the demo tools on a free loopback port, a temporary
# DATA_DIR, an admin key and the example keys and policy. Then it validates /openapi.json
# against the OpenAPI 3.1 schema with openapi-spec-validator and runs schemathesis on it with
# the example model key and the admin key. schemathesis sends the documented examples, then
# generated valid and invalid requests, then chains of calls. No response may be a 5xx, and
# each one's status, content type, headers and body must be the ones the document declares for
# that operation. A method that a documented path does not serve must get 405 with `Allow`,
# and an operation that declares a key must reject a request without one. Any failure fails this
# script, which prints schemathesis's report with a curl command for each failure.
#
# Usage: MCPSEC_BIN=/path/to/mcpsec bash infra/schemathesis.sh   (from any directory)
# Without MCPSEC_BIN it uses target/debug/mcpsec under CARGO_TARGET_DIR or the checkout.
# It needs infra/.venv-schemathesis from infra/install-test-deps.sh.
#
# Bounds: at most MAX_EXAMPLES test cases per operation (`--max-examples`), a fixed seed, and
# no example database, so that two runs against the same binary send the same first requests.
# The responses to earlier requests steer later ones (a created key, a saved policy), so two
# runs need not match request for request. schemathesis's own --max-time is not used, because
# it repeats fuzzing until the budget is spent, which would make the amount of testing depend
# on the machine's speed. TIME_LIMIT is a ceiling instead: past it the run is stopped and fails.
# Measured with `time bash infra/schemathesis.sh` on 2 shared cores that were also compiling
# (load average 4 to 7): 76 to 93 s in all, for about 5,700 test cases on 30 operations.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="$ROOT/infra/.venv-schemathesis"
MCPSEC_BIN="${MCPSEC_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/mcpsec}"
MAX_EXAMPLES=200
SEED=20261205
TIME_LIMIT=180
ADMIN_KEY=schemathesis-admin-key
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
CHECKS+=,response_headers_conformance,unsupported_method,allow_header_conformance,ignored_auth

log() {
    echo "schemathesis: $*"
}

fail() {
    echo "schemathesis: error: $*" >&2
    exit 1
}

# Proxy variables would send the loopback requests of the gateway, of schemathesis and of the
# document download to a proxy, so the run ignores them.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY

[[ -x "$VENV_DIR/bin/schemathesis" ]] || fail "$VENV_DIR has no schemathesis; run infra/install-test-deps.sh"
[[ -x "$MCPSEC_BIN" ]] || fail "no mcpsec binary at $MCPSEC_BIN; run cargo build -p mcpsec or set MCPSEC_BIN"

# The first key of the example keys file; the gateway imports that file into its empty store.
MODEL_KEY="$(sed -n 's/^ *key: "\(.*\)"$/\1/p' "$ROOT/examples/model_keys.yaml" | head -n 1)"
[[ -n "$MODEL_KEY" ]] || fail "no key found in examples/model_keys.yaml"

WORK_DIR="$(mktemp -d)"
GATEWAY_PID=""

stop_gateway() {
    if [[ -n "$GATEWAY_PID" ]] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
        kill -TERM "$GATEWAY_PID"
        wait "$GATEWAY_PID" || true
    fi
    rm -rf "$WORK_DIR"
}
trap stop_gateway EXIT

# Every variable that could point the gateway at another host is unset, so that the run
# talks to the demo tools on loopback and nothing else.
start_gateway() {
    env -u TOOL_SERVER_URL -u UPSTREAMS_FILE -u SIEM_URL -u ALERT_WEBHOOK_URL -u GATEWAY_STORE \
        HOST=127.0.0.1 PORT=0 DATA_DIR="$WORK_DIR/data" ADMIN_KEY="$ADMIN_KEY" LOG_LEVEL=warn \
        MODEL_KEYS_FILE="$ROOT/examples/model_keys.yaml" POLICY_FILE="$ROOT/examples/policies.yaml" \
        "$MCPSEC_BIN" serve --demo-tools >"$WORK_DIR/gateway.out" 2>"$WORK_DIR/gateway.log" &
    GATEWAY_PID=$!
}

# Prints the gateway's base URL once it listens; fails when it exits or takes over 30 s.
wait_for_gateway() {
    local attempt address
    for attempt in $(seq 150); do
        address="$(sed -n 's/^mcpsec: listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$WORK_DIR/gateway.out")"
        if [[ -n "$address" ]]; then
            echo "$address"
            return
        fi
        kill -0 "$GATEWAY_PID" 2>/dev/null || break
        sleep 0.2
    done
    cat "$WORK_DIR/gateway.log" >&2
    fail "the gateway did not start listening within 30 s"
}

run_schemathesis() {
    local base="$1"
    # Run in the work folder, so that schemathesis reads no configuration file of the
    # checkout and writes nothing into it.
    (cd "$WORK_DIR" && timeout --kill-after=10 "$TIME_LIMIT" "$VENV_DIR/bin/schemathesis" run "$base/openapi.json" \
        --header "X-Model-Key: $MODEL_KEY" --header "X-Admin-Key: $ADMIN_KEY" \
        --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
        --generation-database none --request-timeout 10 --no-color)
}

main() {
    local start base status
    start="$(date +%s)"
    start_gateway
    base="$(wait_for_gateway)"
    log "gateway $MCPSEC_BIN listening on $base"

    "$VENV_DIR/bin/python" -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' \
        "$base/openapi.json" >"$WORK_DIR/openapi.json"
    "$VENV_DIR/bin/openapi-spec-validator" "$WORK_DIR/openapi.json" || fail "/openapi.json is not a valid OpenAPI document"

    status=0
    run_schemathesis "$base" || status=$?
    if [[ "$status" != 0 ]]; then
        [[ "$status" == 124 ]] && echo "schemathesis: error: the run took longer than $TIME_LIMIT s" >&2
        echo "schemathesis: the gateway's log:" >&2
        tail -n 50 "$WORK_DIR/gateway.log" >&2
        fail "schemathesis found answers that break /openapi.json (exit code $status)"
    fi
    log "no failures in $(($(date +%s) - start)) s"
}

main "$@"
