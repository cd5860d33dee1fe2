#!/usr/bin/env bash
# The browser side's tests (issue 5): end-to-end calls in Debian's Chromium, driven by
# playwright-core, through the product started locally (web/testing/product.mjs says how;
# FANOUT_E2E_MODE=split|external choose other ways of starting it).
# Installs what it needs: Chromium (apt), the web dependencies (npm ci), the demo build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null || [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the browser tests"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: chromium is missing and installing it needs root: apt-get install -y chromium" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The firewall test (web/test/firewall.mjs) puts Chromium in a network namespace behind
# iptables and relays through a real coturn; without root it says SKIPPED.
if [ "$(id -u)" -eq 0 ] && ! { command -v ip && command -v iptables && command -v turnserver; } >/dev/null; then
  echo "installing iproute2, iptables and coturn for the firewall test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables coturn >/dev/null
fi
# The replica drill (web/test/replicas.mjs) starts a real redis-server.
if [ "$(id -u)" -eq 0 ] && ! command -v redis-server >/dev/null; then
  echo "installing redis-server for the replica drill"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
./scripts/check-node.sh

(cd web && npm ci --no-audit --no-fund && npm run build)

# The product as the README's run command starts it (signalling in embedded mode), but from
# the debug build the Rust tests already made, so CI does not build everything twice.
if [ "${FANOUT_E2E_MODE:-local}" = local ] && [ -z "${FANOUT_E2E_RUN_COMMAND:-}" ]; then
  # The worker binary too, for the drills that run it as its own process.
  cargo build -p fanout-signalling -p fanout-worker
  export FANOUT_E2E_RUN_COMMAND="FANOUT_WEB_ROOT=$PWD/web/dist exec $PWD/target/debug/fanout-signalling"
  # The tests that start the binaries themselves (drills, replicas, recording) would take a
  # release build first if one is there, however old: these are the ones just built.
  export FANOUT_E2E_WORKER_BIN="${FANOUT_E2E_WORKER_BIN:-$PWD/target/debug/fanout-worker}"
  export FANOUT_E2E_SIGNALLING_BIN="${FANOUT_E2E_SIGNALLING_BIN:-$PWD/target/debug/fanout-signalling}"
fi

status=0
node --test web/test/ || status=$?

# The operator's failure drills (operator/tests/api_server/drills.rs): Chromium through the
# operator on the real Kubernetes API server, with worker and signalling processes. They need
# what is installed above, so `cargo test` alone lists them as ignored; one at a time, since
# each runs four browsers.
cargo build -p fanout-signalling -p fanout-worker
cargo test -p fanout-operator --test api_server drills -- --ignored --test-threads 1 || status=$?
exit $status
