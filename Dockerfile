# syntax=docker/dockerfile:1
#
# One image with both binaries, built in release: `ingest` (Kafka -> MySQL -> Redis) and
# `gateway` (STOMP over SockJS/WebSocket and the inbox REST API). It runs as an unprivileged
# user (uid 10001) and carries a small `healthcheck` script for container health checks.
#
#   docker build -t notification .
#   docker run --rm notification ingest --help
#   docker run --rm notification gateway --help
#
# The command picks the binary: `ingest run` (the default subcommand), `ingest migrate`,
# `gateway`. Configuration is by environment variable (`--help` lists them).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# rdkafka builds librdkafka from source with its own ./configure and make (no cmake): it
# needs a C and a C++ compiler, make and python3 (its linker-script generator); zlib comes
# from the system through pkg-config. Versions are not pinned: the release's security updates
# replace them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config python3 zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The context is the workspace's manifests, sources and migrations (see .dockerignore);
# `migrations/` is embedded into `ingest` at compile time.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ingest -p gateway --bins \
    && install -D -m 0755 -t /out target/release/ingest target/release/gateway

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# Both binaries link only glibc, libgcc and zlib, all part of the base image.
RUN groupadd --system --gid 10001 notification \
    && useradd --system --uid 10001 --gid notification --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin notification
COPY --from=build /out/ /usr/local/bin/
# `healthcheck PORT [PATH]`: exit 0 when GET http://127.0.0.1:PORT/PATH (default /readyz)
# answers 200. The image has no curl; bash's /dev/tcp is enough for the admin listener.
COPY --chmod=0755 <<'EOF' /usr/local/bin/healthcheck
#!/bin/bash
set -eu
port=${1:?usage: healthcheck PORT [PATH]}
path=${2:-/readyz}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
IFS=' ' read -r -t 5 _ status _ <&3
[ "$status" = 200 ]
EOF

USER 10001:10001
# gateway: public 8084, admin 9092; ingest: admin 9091.
EXPOSE 8084 9091 9092
CMD ["gateway"]
