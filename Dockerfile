# syntax=docker/dockerfile:1
#
# The weft binary in a small Debian image, non-root:
#
#   docker build -t weft:0.1.0 .
#   docker run --rm -p 1234:1234 weft:0.1.0            # `weft serve`, embedded store in /var/lib/weft
#   docker run --rm weft:0.1.0 persist --kafka-brokers ... --store postgres://...
#
# The arguments are `weft`'s (the entrypoint); every flag also has a WEFT_*
# variable. The image listens on 0.0.0.0 (WEFT_LISTEN, WEFT_PERSIST_LISTEN)
# rather than the binary's loopback default. The Helm chart in deploy/helm
# runs this image; docs/KUBERNETES.md describes both.
#
# No container engine runs where the project's tests run, so `make test`
# does not build this image: `make deploy-check` lints this file (hadolint)
# and tests the HEALTHCHECK script; the build itself is checked by reading.
#
# Stages: `web` builds the editor page (npm, pinned by web/package-lock.json),
# which cargo compiles into the binary; `build` compiles the binary;
# the last stage holds the binary and nothing else.

ARG NODE_IMAGE=node:20.20.2-bookworm-slim
ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/build.mjs ./
COPY web/src ./src
RUN npm run build

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
# librdkafka is compiled from the source rdkafka-sys bundles, with its own
# `./configure` and `make` (not cmake): C and C++ compilers, make, binutils,
# pkg-config and python3 (its build scripts). zlib comes from the system and
# is linked dynamically (libz.so.1 is in the runtime image).
# librdkafka links the system's OpenSSL (libssl-dev here, libssl3 in the
# runtime image) for Kafka's SSL and SASL_SSL; the rest of the TLS
# (listener, PostgreSQL, OTLP) is rustls, compiled in.
# Unpinned on purpose (DL3008): Debian drops superseded versions from its
# mirrors, so pinned versions break the build; the base image fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config python3 zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto ./proto
COPY crates ./crates
# crates/gateway embeds web/dist at compile time.
COPY --from=web /src/web/dist ./web/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weft-server \
 && cp target/release/weft /usr/local/bin/weft

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="weft" \
      org.opencontainers.image.description="A horizontally scalable backend for Yjs collaborative editors" \
      org.opencontainers.image.source="https://github.com/weft-collab/weft" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid (10001), which the Helm chart's securityContext names. Its
# home is the working directory, where the embedded store's default path
# (./weft-data) lands; mount a volume there to keep it.
# librdkafka's TLS (OpenSSL) and the trust store for brokers, PostgreSQL
# and OTLP collectors with public certificates (unpinned: see above).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 weft \
 && useradd --system --uid 10001 --gid weft --home-dir /var/lib/weft --create-home --shell /usr/sbin/nologin weft
COPY --from=build /usr/local/bin/weft /usr/local/bin/weft
COPY deploy/docker/healthcheck.sh /usr/local/bin/weft-healthcheck
WORKDIR /var/lib/weft
USER 10001:10001
ENV WEFT_LISTEN=0.0.0.0:1234 \
    WEFT_PERSIST_LISTEN=0.0.0.0:9464
# 1234: WebSocket and HTTP of `weft serve`; 9464: /healthz, /readyz and
# /metrics of `weft persist`.
EXPOSE 1234 9464
# Liveness for plain Docker (Kubernetes uses the chart's probes instead).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/weft-healthcheck"]
# SIGTERM drains (sessions closed with 1012, everything committed) within
# --shutdown-grace (25 s): give `docker stop` more, e.g. `--time 35`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/weft"]
CMD ["serve"]
