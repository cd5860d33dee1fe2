#!/usr/bin/env bash
# The whole test suite (README: "Run all tests"). Installs what it needs first.
# CI runs exactly this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs and re-run" >&2
  exit 1
fi

# Rust: unit tests, reconcile tests against a fake API server, CRD freshness.
cargo test --workspace --no-fail-fast
# Benchmarks are run on demand (README), but must keep compiling.
cargo check --workspace --benches --quiet
