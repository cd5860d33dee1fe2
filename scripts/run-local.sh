#!/usr/bin/env bash
# Runs Fanout locally (README: "Run it locally"): signalling with an embedded worker and the
# demo page, no Kubernetes needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs and re-run" >&2
  exit 1
fi
exec cargo run --release -p fanout-signalling -- "$@"
