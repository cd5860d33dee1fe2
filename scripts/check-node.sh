#!/usr/bin/env bash
# Checks for the Node.js and npm that web/ needs (scripts/run-local.sh and scripts/test-web.sh
# call it), and says what to install when they are missing or too old.
#
# Node.js 20 or newer: Node runs only esbuild (the bundle, Node >= 18) and the browser tests
# (node:test and playwright-core, Node >= 20). mediasoup-client 3.24 and three of its
# dependencies (awaitqueue, h264-profile-level-id, supports-color) declare Node >= 22, so npm
# prints EBADENGINE warnings on Node 20; they are bundled for the browser and never run in
# Node, and the build and every browser test pass on Node 20.
set -euo pipefail
need=20
install_hint="install Node.js $need or newer with npm (https://nodejs.org/en/download, or your distribution's nodejs package if it is $need+; Debian 12's is 18, too old)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "error: Node.js and npm are needed for the web client and its tests: $install_hint" >&2
  exit 1
fi
version="$(node --version)"
major="${version#v}"
major="${major%%.*}"
if [ "$major" -lt "$need" ]; then
  echo "error: Node.js $version is too old for the web client's build and tests: $install_hint" >&2
  exit 1
fi
if [ "$major" -lt 22 ]; then
  echo "note: Node.js $version: npm will warn that mediasoup-client 3.24 and some of its dependencies want Node >= 22 (EBADENGINE); they only run in the browser, so Node $major is enough here"
fi
