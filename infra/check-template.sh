#!/usr/bin/env bash
# Check template.yaml, the SAM template of the AWS deployment, without calling AWS, and the
# container files (Dockerfile, render.yaml), in four steps:
#   1. cfn-lint, with its informational rules on. Any error, warning or informational message
#      fails the check. To suppress a rule for one resource, list it in the resource's
#      Metadata.cfn-lint.config.ignore_checks and write the reason next to it.
#   2. hadolint on the Dockerfile. Any finding fails the check. To ignore a rule for one
#      instruction, put `# hadolint ignore=DLxxxx` above it with the reason.
#   3. The unittest tests in tests/template (security properties, IAM grants, routes, and
#      the Render Blueprint against the Dockerfile).
#   4. `sam validate --lint` and `sam validate`, which runs the SAM transform, with the SAM CLI
#      at infra/.venv-sam/bin/sam or at the path in SAM_CLI.
#
# Usage: bash infra/check-template.sh   (from any directory)
# cfn-lint and hadolint come from infra/.venv, which infra/install-test-deps.sh creates.
#
# The SAM CLI runs with dummy credentials, without the AWS config and credentials files, and
# with telemetry and the EC2 metadata lookup off. Where `unshare --net` works (as root), it also
# runs in a network namespace that has no network. Traced with strace, aws-sam-cli 1.170.0 made
# no connect() call for either command.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="$ROOT/infra/.venv/bin"
TEMPLATE="$ROOT/template.yaml"

log() {
    echo "check-template: $*"
}

fail() {
    echo "check-template: error: $*" >&2
    exit 1
}

[[ -x "$VENV_BIN/cfn-lint" ]] ||
    fail "$VENV_BIN/cfn-lint not found; run bash infra/install-test-deps.sh first"

log "cfn-lint $("$VENV_BIN/cfn-lint" --version | cut -d' ' -f2) on template.yaml"
"$VENV_BIN/cfn-lint" --format parseable --include-checks I -- "$TEMPLATE" ||
    fail "cfn-lint reported the problems above in template.yaml"

[[ -x "$VENV_BIN/hadolint" ]] ||
    fail "$VENV_BIN/hadolint not found; run bash infra/install-test-deps.sh first"

log "$("$VENV_BIN/hadolint" --version) on Dockerfile"
"$VENV_BIN/hadolint" -- "$ROOT/Dockerfile" || fail "hadolint reported the problems above in Dockerfile"

log "unittest tests/template"
(cd "$ROOT" && "$VENV_BIN/python" -m unittest discover --start-directory tests/template --top-level-directory tests/template)

SAM="${SAM_CLI:-$ROOT/infra/.venv-sam/bin/sam}"
[[ -x "$SAM" ]] || fail "no SAM CLI at $SAM; run bash infra/install-test-deps.sh first, or set SAM_CLI"

offline=()
if unshare --net true 2>/dev/null; then
    offline=(unshare --net)
fi

run_sam() {
    env -u AWS_PROFILE \
        AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline AWS_SESSION_TOKEN=offline \
        AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0 \
        "${offline[@]}" "$SAM" "$@" --region us-east-1 --template-file "$TEMPLATE"
}

sam_version="$("$SAM" --version)"
log "sam validate --lint ($sam_version${offline:+, no network})"
run_sam validate --lint || fail "sam validate --lint rejected template.yaml"

log "sam validate ($sam_version${offline:+, no network})"
run_sam validate || fail "sam validate rejected template.yaml"
