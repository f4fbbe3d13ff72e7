# syntax=docker/dockerfile:1
# The `mcpsec` container: the gateway in one process with its embedded SQLite store in /data.
#
#   docker build -t mcpsec .
#   docker run -p 8000:8000 -e ADMIN_KEY=change-me -v mcpsec-data:/data mcpsec
#
# See docs/deploy.md for the settings and the checks after a start.
# NOTE: hadolint and tests/template/test_render.py check this file, but it has not been built
# yet, because the machine where it was written has no Docker engine.

# Rust 1.91 or newer: the workspace sets rust-version 1.89 and edition 2024.
FROM rust:1.91-slim-bookworm AS build
WORKDIR /src

# Cargo loads every workspace member's manifest, so all members are copied, and
# shared/gateway embeds examples/*.yaml as its built-in configuration.
COPY Cargo.toml Cargo.lock ./
COPY shared shared
COPY functions functions
COPY tests tests
COPY examples examples

# The cache mounts keep downloaded crates and compiled dependencies between builds (BuildKit),
# so a change to the gateway recompiles only the workspace crates. The target folder is a cache
# mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mcpsec \
    && cp target/release/mcpsec /usr/local/bin/mcpsec

# debian-slim rather than distroless: the HEALTHCHECK needs a program that can send an HTTP
# request, `mcpsec` has no health subcommand, and distroless has no shell. The check uses
# bash's /dev/tcp, which the image already has, so it needs no curl and its libraries.
FROM debian:bookworm-slim

# A fixed uid and gid, so that a volume or disk mounted at /data can be given to this user.
RUN groupadd --gid 10001 mcpsec \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent \
        --shell /usr/sbin/nologin mcpsec \
    && mkdir /data \
    && chown 10001:10001 /data

# The binary links glibc and verifies TLS with rustls against the system CA bundle, so the
# bundle of the build stage (Debian bookworm's ca-certificates) is all it needs besides libc.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /usr/local/bin/mcpsec /usr/local/bin/mcpsec
COPY examples/model_keys.yaml examples/policies.yaml /etc/mcpsec/

# The model keys and policy are imported only into an empty store. The example keys are
# public, so replace them (mount other files and set these variables) before exposing the
# gateway. ADMIN_KEY and SESSION_SECRET are set at run time, never here.
ENV HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data \
    LOG_FORMAT=json \
    MODEL_KEYS_FILE=/etc/mcpsec/model_keys.yaml \
    POLICY_FILE=/etc/mcpsec/policies.yaml

VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000

# GET /readyz answers 200 when the store and the upstreams are reachable. The check reads the
# status line of the response, so any other status, a refused connection or the timeout
# marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${PORT}\" && printf 'GET /readyz HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r status <&3 && [[ $status == 'HTTP/1.1 200'* ]]"]

# On SIGTERM the gateway stops accepting connections, lets running calls finish and gives the
# SIEM forwarder and the anomaly detectors up to 10 s to catch up before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mcpsec"]
CMD ["serve"]
