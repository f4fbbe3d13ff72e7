#!/usr/bin/env bash
# Install what the end-to-end tests need, and skip each step that is already
# up to date:
#   1. a Python venv at infra/.venv with infra/test-deps/requirements.txt,
#      which contains the official MCP Python SDK that tests/mcp_client.py uses,
#      moto's AWS emulator server (moto_server) for the AWS store tests, and
#      cargo-lambda with the Zig toolchain, which build the Lambda functions and
#      run them locally;
#   2. a Python venv at infra/.venv-sam with the AWS SAM CLI
#      (infra/test-deps/requirements-sam.txt), which validates template.yaml;
#   3. a Python venv at infra/.venv-schemathesis with schemathesis and
#      openapi-spec-validator (infra/test-deps/requirements-schemathesis.txt), which
#      infra/schemathesis.sh runs against the gateway's OpenAPI document;
#   4. `npm ci` in infra/test-deps, which installs the reference MCP server
#      @modelcontextprotocol/server-everything at the version in package.json;
#   5. Debian's chromium package at /usr/bin/chromium, when it is missing
#      (with apt-get, so only as root), and `npm ci` in tests/browser, which
#      installs playwright-core for the dashboard browser tests. Playwright
#      drives the system Chromium and never downloads a browser of its own;
#   6. cargo-fuzz from crates.io at infra/.cargo-fuzz/bin/cargo-fuzz, which
#      fuzz/run-bounded.sh uses to build and run the fuzz targets in fuzz/.
#
# Usage: bash infra/install-test-deps.sh   (from any directory)
# Environment: PYTHON selects the interpreter for the venv (default python3,
# version 3.10 or newer). Node.js 20 or newer and npm must be on PATH.
#
# Each step writes a stamp file with the sha256 of its inputs (the requirements
# or the lock file, plus the interpreter version) after it succeeds, so an
# interrupted install is redone on the next run. Delete infra/.venv, infra/.venv-sam,
# infra/.venv-schemathesis, infra/test-deps/node_modules or tests/browser/node_modules to
# force a reinstall. cargo-fuzz is skipped when infra/.cargo-fuzz contains the version in
# CARGO_FUZZ_VERSION.
#
# Starting the reference server in Streamable HTTP mode (read from
# server-everything 2026.8.31, dist/index.js and dist/transports/streamableHttp.js):
#   PORT=38080 node infra/test-deps/serve-everything.mjs
# - The upstream entry point takes the transport as its first argument
#   (`streamableHttp`) and the port from the PORT variable (default 3001).
#   serve-everything.mjs passes `streamableHttp` itself.
# - The MCP endpoint is http://127.0.0.1:PORT/mcp (POST, GET for the SSE
#   stream, DELETE to end a session). Sessions are stateful: the server sets
#   the Mcp-Session-Id header on the initialize response.
# - Upstream calls app.listen(PORT) without a host, which binds every
#   interface. serve-everything.mjs adds HOST (default 127.0.0.1, loopback
#   only) to that call. PORT=0 picks a free port.
# - It is ready when stderr shows
#   "serve-everything: listening on http://127.0.0.1:PORT/mcp".
#   Upstream also prints "MCP Streamable HTTP Server listening on port PORT"
#   to stderr, and logs each request to stdout, so drain or redirect stdout.
#
# Starting the AWS emulator (moto 5.2.5, moto/server.py): this script starts
# nothing, and the tests start their own:
#   infra/.venv/bin/moto_server -H 127.0.0.1 -p 0
# - `-p 0` picks a free port. The server is ready when stderr shows
#   " * Running on http://127.0.0.1:PORT", after about 1 to 2 s.
# - One server emulates every service (DynamoDB, DynamoDB Streams, S3) on
#   that port. Point clients at http://127.0.0.1:PORT with path-style S3
#   addresses and any static credentials.
# - It logs each request to stderr, so drain or redirect stderr.

set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEPS_DIR="$INFRA_DIR/test-deps"
VENV_DIR="$INFRA_DIR/.venv"
SAM_VENV_DIR="$INFRA_DIR/.venv-sam"
SCHEMATHESIS_VENV_DIR="$INFRA_DIR/.venv-schemathesis"
BROWSER_TESTS_DIR="$(cd "$INFRA_DIR/../tests/browser" && pwd)"
CHROMIUM_BIN=/usr/bin/chromium
CARGO_FUZZ_VERSION=0.13.2
CARGO_FUZZ_ROOT="$INFRA_DIR/.cargo-fuzz"
PYTHON="${PYTHON:-python3}"

log() {
    echo "install-test-deps: $*"
}

fail() {
    echo "install-test-deps: error: $*" >&2
    exit 1
}

# Print the sha256 of the given files' contents followed by the given text.
fingerprint() {
    local text="$1"
    shift
    { cat "$@"; printf '%s\n' "$text"; } | sha256sum | cut -d' ' -f1
}

# Print the seconds elapsed since the given `date +%s.%N` value.
elapsed_since() {
    awk -v start="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1f", now - start }'
}

check_python() {
    command -v "$PYTHON" >/dev/null ||
        fail "Python interpreter '$PYTHON' not found; install Python 3.10+ or set PYTHON"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        fail "$("$PYTHON" --version 2>&1) is too old; the mcp package needs Python 3.10+ (set PYTHON)"

    # Debian's own python3 ships ensurepip, which venv needs, in a separate package.
    if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
            log "python venv support missing: installing python3-venv with apt-get"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            fail "$PYTHON has no ensurepip module; install python3-venv (apt-get install python3-venv)"
        fi
    fi
}

# Create the venv $1 from the requirements file $2, unless its stamp shows that it already
# holds exactly those requirements for this interpreter.
install_python_venv() {
    local venv_dir="$1" requirements="$2"
    local name="infra/${venv_dir##*/}" stamp="$venv_dir/.requirements.sha256"
    local python_version expected
    python_version="$("$PYTHON" -c 'import sys; print(sys.version)')"
    expected="$(fingerprint "$python_version" "$requirements")"

    if [[ -x "$venv_dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$expected" ]]; then
        log "python venv $name: up to date with ${requirements##*/}, skipped"
        return
    fi

    local start
    start="$(date +%s.%N)"
    rm -rf "$venv_dir"
    "$PYTHON" -m venv "$venv_dir"
    "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
    echo "$expected" >"$stamp"
    log "python venv $name: created with $("$PYTHON" --version 2>&1) and installed ${requirements##*/} in $(elapsed_since "$start") s"
}

check_node() {
    command -v node >/dev/null || fail "node not found; install Node.js 20 or newer"
    command -v npm >/dev/null || fail "npm not found; install npm"
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)' ||
        fail "Node.js $(node --version) is too old; server-everything needs Node.js 20 or newer"
}

# Run `npm ci` in the folder $1 unless its stamp shows that node_modules already matches
# package-lock.json for this Node.js version and contains the file $2 (relative to node_modules).
install_node_modules() {
    local package_dir="$1" marker="$2"
    local name="${package_dir#"$(dirname "$INFRA_DIR")/"}/node_modules"
    local stamp="$package_dir/node_modules/.package-lock.sha256"
    local expected
    expected="$(fingerprint "$(node --version)" "$package_dir/package-lock.json")"

    if [[ -f "$stamp" && "$(cat "$stamp")" == "$expected" && -f "$package_dir/node_modules/$marker" ]]; then
        log "npm packages $name: up to date with package-lock.json, skipped"
        return
    fi

    local start
    start="$(date +%s.%N)"
    # npm ci deletes node_modules first, and with it any old stamp.
    (cd "$package_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$expected" >"$stamp"
    log "npm packages $name: ran npm ci from package-lock.json in $(elapsed_since "$start") s"
}

# Install Debian's chromium package for the dashboard browser tests when it is missing.
install_chromium() {
    if [[ -x "$CHROMIUM_BIN" ]]; then
        log "chromium $CHROMIUM_BIN: present, skipped"
        return
    fi
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        fail "$CHROMIUM_BIN not found; install Debian's chromium package as root (apt-get install chromium)"
    fi

    local start
    start="$(date +%s.%N)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    log "chromium $CHROMIUM_BIN: installed with apt-get in $(elapsed_since "$start") s"
}

# Install cargo-fuzz at CARGO_FUZZ_VERSION into infra/.cargo-fuzz, unless it is there already.
install_cargo_fuzz() {
    local binary="$CARGO_FUZZ_ROOT/bin/cargo-fuzz"
    if [[ -x "$binary" && "$("$binary" --version 2>/dev/null)" == "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
        log "cargo-fuzz infra/.cargo-fuzz: version $CARGO_FUZZ_VERSION present, skipped"
        return
    fi
    command -v cargo >/dev/null || fail "cargo not found; install a Rust toolchain"

    local start
    start="$(date +%s.%N)"
    # Without CARGO_TARGET_DIR, cargo install builds in a temporary folder that it deletes
    # afterwards, so the tool's build does not mix with the project's build output.
    env -u CARGO_TARGET_DIR cargo install --locked --quiet --force cargo-fuzz \
        --version "$CARGO_FUZZ_VERSION" --root "$CARGO_FUZZ_ROOT"
    log "cargo-fuzz infra/.cargo-fuzz: installed version $CARGO_FUZZ_VERSION with cargo install in $(elapsed_since "$start") s"
}

main() {
    # Serialize concurrent runs, for example two test binaries that both install.
    exec 9>"$INFRA_DIR/.install-test-deps.lock"
    flock 9

    check_python
    install_python_venv "$VENV_DIR" "$DEPS_DIR/requirements.txt"
    # The SAM CLI pins versions of click, pydantic and boto3 that conflict with the other
    # test packages, so it gets a venv of its own.
    install_python_venv "$SAM_VENV_DIR" "$DEPS_DIR/requirements-sam.txt"
    # schemathesis pulls in pytest and hypothesis, so it gets a venv of its own too.
    install_python_venv "$SCHEMATHESIS_VENV_DIR" "$DEPS_DIR/requirements-schemathesis.txt"
    check_node
    install_node_modules "$DEPS_DIR" "@modelcontextprotocol/server-everything/dist/index.js"
    install_chromium
    install_node_modules "$BROWSER_TESTS_DIR" "playwright-core/package.json"
    install_cargo_fuzz
}

main "$@"
