#!/usr/bin/env bash
# Runs Fanout locally (README: "Run it locally"): signalling with an embedded worker and the
# demo page, no Kubernetes needed. Installs the web client's npm packages and builds it, then
# builds and starts the server; open the URL it prints in two browser tabs.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo npm node; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool is not installed (Rust from https://rustup.rs, Node.js 20+ with npm)" >&2
    exit 1
  fi
done
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
cargo build --release -p fanout-signalling
exec env FANOUT_WEB_ROOT="$PWD/web/dist" ./target/release/fanout-signalling "$@"
