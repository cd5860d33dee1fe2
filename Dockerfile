# syntax=docker/dockerfile:1
#
# One image with Fanout's three programs, which the Helm chart (charts/fanout) runs:
#   /usr/local/bin/fanout-operator     the operator
#   /usr/local/bin/fanout-signalling   the signalling server; the demo page is in /usr/share/fanout/web
#   /usr/local/bin/fanout-worker       the SFU (the operator's worker pods run it by name)
# The image has no default program: the chart and the operator name the one to run.
#
# Build from the repository root:
#   docker build -t ghcr.io/fanout-dev/fanout:0.1.0 .

ARG RUST_VERSION=1
ARG NODE_VERSION=22

# The browser client and the demo page (web/dist).
FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# The three binaries. The cache mounts keep the registry and target/ between builds.
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin fanout-operator --bin fanout-signalling --bin fanout-worker \
 && mkdir -p /out \
 && cp target/release/fanout-operator target/release/fanout-signalling target/release/fanout-worker /out/

# Runtime: glibc and CA certificates, nothing else. Runs as uid/gid 65532, the user the
# operator's worker pods and the chart's pods ask for.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 fanout \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fanout
COPY --from=build /out/ /usr/local/bin/
COPY --from=web /src/web/dist/ /usr/share/fanout/web/
LABEL org.opencontainers.image.title="fanout" \
      org.opencontainers.image.description="Fanout: WebRTC SFU platform for Kubernetes (operator, signalling, worker)" \
      org.opencontainers.image.source="https://github.com/fanout-dev/fanout" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
WORKDIR /
# Signalling and the operator's metrics (8080), the worker's REST API (3000). The worker's
# UDP media ports (40000-49999 by default) are on the host network, not published here.
EXPOSE 8080 3000
