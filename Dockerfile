# syntax=docker/dockerfile:1
# hubcast container image: a release build of the `hubcast` binary on Debian slim,
# running as an unprivileged user (uid/gid 10001).
#
#   docker build -t hubcast:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9464:9464 hubcast:0.1.0 --insecure   # development only
#
# The image holds nothing secret: keys come from the environment (HUBCAST_ACCESS_KEY,
# HUBCAST_TOKEN_KEY, HUBCAST_MASTER_KEY) and the config file from a mount (HUBCAST_CONFIG).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The workspace's manifests and sources; --locked refuses to build if Cargo.lock is out
# of date. bench/ is a workspace member, so Cargo needs it to load the workspace even
# though only the hubcast binary is built.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY bench/Cargo.toml ./bench/Cargo.toml
COPY bench/src ./bench/src
# BuildKit cache mounts keep the registry and the target directory between builds; the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hubcast \
    && install -D -m 0755 target/release/hubcast /out/hubcast

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates for TLS connections (rediss://, an https connect proxy) should the
# build enable them; nothing else is installed. `sleep` (coreutils) is what the Helm
# chart's preStop hook runs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hubcast \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin hubcast
COPY --from=build /out/hubcast /usr/local/bin/hubcast

# Container defaults: JSON logs, listen on every interface. Override with -e.
ENV HUBCAST_LOG_FORMAT=json \
    HUBCAST_LISTEN=0.0.0.0:8080 \
    HUBCAST_METRICS_LISTEN=0.0.0.0:9464 \
    RUST_LOG=info

USER 10001:10001
# 8080: hubs (negotiate + WebSocket), publish API, /healthz, /readyz. 9464: /metrics.
EXPOSE 8080 9464
# SIGTERM drains: every client gets Close{allowReconnect:true}, then the process exits
# within timeouts.shutdown_ms (10 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hubcast"]
