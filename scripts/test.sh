#!/usr/bin/env bash
# The whole test suite (README: "Run all tests"). Installs what it needs first: libssl-dev and
# pkg-config (apt) for the Socket.IO test client, redis-server (apt) for the replica tests,
# chromium (apt) and the web client's npm packages for the browser tests, ffmpeg (apt) for
# the recording tests.
# CI runs exactly this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs and re-run" >&2
  exit 1
fi

# Node.js for the browser tests, checked now rather than after the Rust suite.
./scripts/check-node.sh

# A run from clean writes about 10 GB under target/ and the Kubernetes API server tests about
# 500 MB under the temporary folder; a full disk shows up later as unrelated-looking failures
# (etcd refusing to start, a linker error), so say it first.
free_gb() { df -Pk "$1" 2>/dev/null | awk 'NR==2 {print int($4 / 1048576)}'; }
for dir in . "${TMPDIR:-/tmp}"; do
  if [ "$(free_gb "$dir")" -lt 12 ] 2>/dev/null; then
    echo "warning: only $(free_gb "$dir") GB free on the disk holding $dir; a run from clean needs about 12 GB" >&2
  fi
done

# The suite builds each crate once per run: incremental compilation's caches (several GB in a
# workspace this size) would only fill the disk. Set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The Socket.IO test client (rust_socketio) links OpenSSL: its headers and pkg-config.
if ! pkg-config --exists openssl 2>/dev/null; then
  echo "installing libssl-dev and pkg-config (apt) for the Socket.IO test client"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config >/dev/null
fi

# The worker's constrained-link test (worker/tests/constrained_link.rs) builds a network
# namespace, a veth pair and a tc limit as root: iproute2's ip and tc.
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
  echo "installing iproute2 (apt) for the worker's constrained-link test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi

# The worker's recording tests (worker/tests/recording.rs) encode clips with ffmpeg and check
# the recorded files with ffprobe (they print SKIPPED without them).
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "installing ffmpeg (apt) for the worker's recording tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

# Signalling's replica tests (signalling/tests/replicas.rs) start a real redis-server on a
# loopback port.
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server (apt) for signalling's several-replica tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi

# The operator's suite against a real Kubernetes API server (operator/tests/api_server) starts
# the workspace's kube-kit (<repo>/../shared/kube-kit, or FANOUT_KUBE_KIT), or envtest's
# binaries from KUBEBUILDER_ASSETS; without either its tests print "SKIPPED ... and why".
# The kit's up.sh installs etcd itself and needs xz, curl and openssl.
for d in . .. ../..; do
  if [ -x "$d/../shared/kube-kit/up.sh" ] || [ -n "${FANOUT_KUBE_KIT:-}" ]; then
    for tool in xz curl openssl; do
      if ! command -v "$tool" >/dev/null; then
        echo "installing $tool (apt) for the Kubernetes API server tests"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq xz-utils curl openssl >/dev/null
        break
      fi
    done
    break
  fi
done

# Rust: unit tests, reconcile tests against a fake API server and against a real one, CRD
# freshness.
cargo test --workspace --no-fail-fast
# Benchmarks are run on demand (README), but must keep compiling.
cargo check --workspace --benches --quiet

# Browser end-to-end calls in Debian's Chromium with mediasoup-client (installs chromium via
# apt and the web client's npm packages).
./scripts/test-web.sh
