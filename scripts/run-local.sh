#!/usr/bin/env bash
# Runs Fanout locally (README: "Run it locally"): signalling with an embedded worker and the
# demo page, no Kubernetes needed. Installs the web client's npm packages and builds it, then
# builds and starts the server; open the URL it prints in two browser tabs.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs and re-run" >&2
  exit 1
fi
./scripts/check-node.sh
(cd web && npm ci --no-audit --no-fund && npm run build --silent)
cargo build --release -p fanout-signalling
exec env FANOUT_WEB_ROOT="$PWD/web/dist" ./target/release/fanout-signalling "$@"
