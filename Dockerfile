# syntax=docker/dockerfile:1
# Build: a release binary with the pinned toolchain (rust-version 1.89+; Cargo.lock is committed).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# make builds jemalloc (tikv-jemalloc-sys) from its bundled source; the slim image lacks it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY tests ./tests
RUN cargo build --release --locked --bin deploy-journey

# Runtime: small, non-root, with CA certificates for GitHub, Concourse and the OTLP collector
# over TLS. ca-certificates is deliberately not pinned: a pinned CA bundle goes stale and
# bookworm's point releases replace the pinned version, which would break the build.
FROM debian:bookworm-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-log-init --shell /usr/sbin/nologin \
       --home-dir /var/lib/deploy-journey --create-home deploy-journey
COPY --from=build /src/target/release/deploy-journey /usr/local/bin/deploy-journey
USER 10001:10001
WORKDIR /var/lib/deploy-journey
# /metrics, the JSON API, the landing page, /healthz and /readyz.
EXPOSE 9853
# Mount the config at /etc/deploy-journey/config.yaml (state_path under /var/lib/deploy-journey,
# a volume); secrets come from the environment (GITHUB_TOKEN, CONCOURSE_PASSWORD,
# OTEL_EXPORTER_OTLP_HEADERS) or from mounted files named in the config.
ENTRYPOINT ["/usr/local/bin/deploy-journey"]
CMD ["serve", "--config", "/etc/deploy-journey/config.yaml"]
