// Users behind firewalls (issue 15): the participants' Chromium runs in a network namespace of
// its own, linked to the product by a veth pair with private addresses, and iptables in the
// namespace drops what a school or corporate firewall drops.
//
//   1. all UDP dropped: the call connects over ICE-TCP to the worker and video decodes;
//   2. TCP to the worker dropped too, only signalling's port and a real coturn (Debian's, with
//      use-auth-secret and the secret signalling makes credentials with) reachable over TCP:
//      the call goes through the TURN relay (iceTransportPolicy relay) and video decodes;
//   3. TURN dropped too: the page gets transport-failed, with its reason, in bounded time.
//
// Each step asserts the selected candidate pair from getStats. The product (signalling in
// embedded mode) runs outside the namespace and listens and announces media on the veth's
// host-side address. Needs root (ip netns, iptables) and coturn; says SKIPPED otherwise. The
// namespace (with its iptables rules) and the veth pair are removed, even on failure.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS, Participant, assertReceivesFrom, eventually, sleep } from '../testing/browser.mjs';
import { Child, repoDir, waitHealthy } from '../testing/product.mjs';
import { figure } from '../testing/suite.mjs';

/** How long a call may take to fail when no path works: the worker's ICE timeout, with margin. */
const FAILS_WITHIN_MS = 45000;

function commandExists(name) {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function skipReason() {
  if (process.getuid?.() !== 0) return 'not root: network namespaces and iptables need root';
  for (const tool of ['ip', 'iptables', 'turnserver']) {
    if (!commandExists(tool)) return `${tool} is missing (scripts/test-web.sh installs iproute2, iptables and coturn)`;
  }
  if ((process.env.FANOUT_E2E_MODE || 'local') !== 'local') return 'it starts its own product, so it runs in FANOUT_E2E_MODE=local only';
  return null;
}

const skip = skipReason();
if (skip) console.log(`SKIPPED firewall tests: ${skip}`);

const run = (command, args) => execFileSync(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const tryRun = (command, args) => {
  try {
    run(command, args);
  } catch {
    // Already gone.
  }
};

/** A namespace linked to this one by a veth pair: `hostIp` here, `nsIp` inside. */
class Namespace {
  constructor() {
    const n = 20 + (process.pid % 200);
    this.name = `fanout-fw-${process.pid}`;
    this.hostIf = `fwh${process.pid}`.slice(0, 15);
    this.nsIf = `fwn${process.pid}`.slice(0, 15);
    this.hostIp = `10.213.${n}.1`;
    this.nsIp = `10.213.${n}.2`;
  }

  create() {
    this.remove();
    run('ip', ['netns', 'add', this.name]);
    run('ip', ['link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf]);
    run('ip', ['link', 'set', this.nsIf, 'netns', this.name]);
    run('ip', ['addr', 'add', `${this.hostIp}/24`, 'dev', this.hostIf]);
    run('ip', ['link', 'set', this.hostIf, 'up']);
    this.exec('ip', ['addr', 'add', `${this.nsIp}/24`, 'dev', this.nsIf]);
    this.exec('ip', ['link', 'set', this.nsIf, 'up']);
    this.exec('ip', ['link', 'set', 'lo', 'up']);
  }

  exec(command, args) {
    return run('ip', ['netns', 'exec', this.name, command, ...args]);
  }

  /**
   * What leaves the namespace: never UDP; TCP only to `tcpPorts` of the host side, or any TCP
   * when `tcpPorts` is null. The rules live in the namespace, so they go with it.
   */
  firewall({ tcpPorts }) {
    this.exec('iptables', ['-F', 'OUTPUT']);
    this.exec('iptables', ['-A', 'OUTPUT', '-o', 'lo', '-j', 'ACCEPT']);
    this.exec('iptables', ['-A', 'OUTPUT', '-p', 'udp', '-j', 'DROP']);
    if (tcpPorts) {
      for (const port of tcpPorts) this.exec('iptables', ['-A', 'OUTPUT', '-p', 'tcp', '-d', this.hostIp, '--dport', String(port), '-j', 'ACCEPT']);
      this.exec('iptables', ['-A', 'OUTPUT', '-p', 'tcp', '-j', 'DROP']);
    }
  }

  remove() {
    // Deleting the namespace deletes its rules and its end of the pair, which takes the other.
    tryRun('ip', ['netns', 'del', this.name]);
    tryRun('ip', ['link', 'del', this.hostIf]);
  }
}

/** A port nothing listens on at `host` now. */
async function freePortOn(host) {
  const server = net.createServer();
  await new Promise((resolve, reject) => server.once('error', reject).listen(0, host, resolve));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

async function listening(host, port, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect({ host, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs / 1000} s`);
}

/**
 * The selected candidate pair of a participant's transport of `direction`, from the
 * mediasoup-client transport's getStats(): {state, local: {type, protocol, relayProtocol},
 * remote: {type, protocol, address, port}}, or null while there is none.
 */
function selectedPair(participant, direction) {
  return participant.page.evaluate(async (d) => {
    const transport = window.fanoutDemo.client?.transport(d);
    if (!transport) return null;
    const byId = new Map();
    let pairId;
    (await transport.getStats()).forEach((s) => {
      byId.set(s.id, s);
      if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    const pair = byId.get(pairId);
    if (!pair) return null;
    const local = byId.get(pair.localCandidateId) ?? {};
    const remote = byId.get(pair.remoteCandidateId) ?? {};
    return {
      state: pair.state,
      local: { type: local.candidateType, protocol: local.protocol, relayProtocol: local.relayProtocol },
      remote: { type: remote.candidateType, protocol: remote.protocol, address: remote.address, port: remote.port },
    };
  }, direction);
}

const ns = new Namespace();
const secret = randomBytes(16).toString('hex');
// Made in before(), so that a skipped run leaves nothing behind.
let logDir;
const children = [];
let browser = null;
let signallingPort;
let turnPort;

/** Signalling in embedded mode on the host-side address, with `args` added. */
async function startProduct(label, args = []) {
  const base = process.env.FANOUT_E2E_RUN_COMMAND || `FANOUT_WEB_ROOT=${repoDir}/web/dist exec ${repoDir}/target/debug/fanout-signalling`;
  const flags = ['--listen-addr', ns.hostIp, '--dev-on-network', '--rtc-ip', ns.hostIp, '--rtc-min-port', '47000', '--rtc-max-port', '47099', ...args];
  const child = new Child(`signalling-${label}`, 'bash', ['-c', `${base} ${flags.join(' ')}`], {
    logDir,
    env: { PORT: String(signallingPort), RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  children.push(child);
  const baseUrl = `http://${ns.hostIp}:${signallingPort}`;
  await waitHealthy(`${baseUrl}/healthz`, [child], 120000);
  return {
    child,
    pageUrl(params = {}) {
      const url = new URL('/', baseUrl);
      for (const [key, value] of Object.entries(params)) if (value !== undefined) url.searchParams.set(key, value);
      return url.toString();
    },
    logs: () => `--- ${child.logPath}\n${child.tail(60)}`,
    stop: () => child.stop(),
  };
}

/** A scenario's participants are closed after it; a failure carries their consoles and logs. */
async function withParticipants(product, body) {
  const participants = [];
  const open = async (name, room) => {
    const p = await Participant.open(browser, product, name, { room });
    participants.push(p);
    return p;
  };
  try {
    await body(open);
  } catch (err) {
    err.message += `\n${participants.map((p) => p.diagnostics()).join('\n')}\n${product.logs()}\n${children
      .filter((c) => c.name === 'coturn')
      .map((c) => `--- coturn\n${c.tail(30)}`)
      .join('\n')}`;
    throw err;
  } finally {
    await Promise.all(participants.map((p) => p.close()));
  }
}

const room = (label) => `firewall-${label}-${randomBytes(3).toString('hex')}`;

if (!skip) {
  process.on('exit', () => ns.remove());
  before(
    async () => {
      logDir = mkdtempSync(join(tmpdir(), 'fanout-firewall-'));
      ns.create();
      signallingPort = await freePortOn(ns.hostIp);
      turnPort = await freePortOn(ns.hostIp);
      // The participants' browser, inside the namespace: every packet of its calls crosses
      // the veth pair and the namespace's iptables.
      const wrapper = join(logDir, 'chromium-in-namespace');
      writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns.name} ${CHROMIUM} "$@"\n`);
      chmodSync(wrapper, 0o755);
      browser = await chromium.launch({
        executablePath: wrapper,
        headless: true,
        // The page is not on localhost, and the camera needs a secure origin.
        args: [...CHROMIUM_ARGS, `--unsafely-treat-insecure-origin-as-secure=http://${ns.hostIp}:${signallingPort}`],
      });
      console.log(`namespace ${ns.name}: browser at ${ns.nsIp}, product at ${ns.hostIp}; logs in ${logDir}`);
    },
    { timeout: 60000 },
  );
  after(async () => {
    await browser?.close().catch(() => {});
    for (const child of children.reverse()) await child.stop();
    ns.remove();
    if (logDir) rmSync(logDir, { recursive: true, force: true });
  });
}

/**
 * The story both connecting cases tell: ada publishes, bob decodes her video, and each one's
 * selected candidate pair is what `checkPair(pair, what)` expects of the path (`how`, for
 * messages and the figure).
 */
async function callConnects(product, label, how, checkPair) {
  await withParticipants(product, async (open) => {
    const name = room(label);
    const ada = await open('ada', name);
    await ada.join();
    const bob = await open('bob', name);
    await bob.join();
    const rows = await assertReceivesFrom(bob, [ada], { timeoutMs: 40000 });
    const video = rows.find((r) => r.kind === 'video');
    console.log(`bob decodes ada's video ${how}: ${video.framesDecoded} frames, ${video.frameWidth}x${video.frameHeight}`);
    for (const [who, direction] of [
      [ada, 'send'],
      [bob, 'recv'],
    ]) {
      const pair = await selectedPair(who, direction);
      const what = `${who.name}'s ${direction} transport`;
      console.log(`${what}: ${JSON.stringify(pair)}`);
      assert.equal(pair?.state, 'succeeded', `${what}'s pair: ${JSON.stringify(pair)}`);
      checkPair(pair, what);
    }
    figure(`join-to-first-remote-frame ${how}`, await bob.joinToFirstRemoteFrameMs(), 'ms');
  });
}

test('with UDP blocked, the call connects over ICE-TCP and video decodes', { skip: skip ?? false, timeout: 120000 }, async () => {
  const product = await startProduct('tcp');
  try {
    ns.firewall({ tcpPorts: null });
    await callConnects(product, 'tcp', 'over ICE-TCP', (pair, what) => {
      assert.equal(pair.local.protocol, 'tcp', `${what} runs over TCP: ${JSON.stringify(pair)}`);
      assert.equal(pair.remote.protocol, 'tcp', JSON.stringify(pair));
      assert.equal(pair.remote.address, ns.hostIp, `the worker's announced address: ${JSON.stringify(pair)}`);
    });
  } finally {
    await product.stop();
  }
});

test('with UDP and TCP to the worker blocked, the call goes through coturn over TCP and video decodes', { skip: skip ?? false, timeout: 120000 }, async () => {
  const turn = new Child(
    'coturn',
    'turnserver',
    [
      '-n',
      '--listening-ip', ns.hostIp,
      '--listening-port', String(turnPort),
      '--relay-ip', ns.hostIp,
      '--min-port', '47200',
      '--max-port', '47299',
      '--use-auth-secret',
      '--static-auth-secret', secret,
      '--realm', 'fanout.test',
      '--no-tls',
      '--no-dtls',
      '--no-cli',
      '--fingerprint',
      '--log-file', 'stdout',
      '--simple-log',
      '--pidfile', join(logDir, 'turnserver.pid'),
    ],
    { logDir },
  );
  children.push(turn);
  await listening(ns.hostIp, turnPort, 10000);
  const product = await startProduct('turn', [
    '--turn-urls', `turn:${ns.hostIp}:${turnPort}?transport=tcp`,
    '--turn-secret', secret,
    '--ice-transport-policy', 'relay',
  ]);
  try {
    // Only signalling's port and the TURN server's: what a network open to TCP 443 alone leaves.
    ns.firewall({ tcpPorts: [signallingPort, turnPort] });
    await callConnects(product, 'turn', 'through TURN over TCP', (pair, what) => {
      assert.equal(pair.local.type, 'relay', `${what} is relayed: ${JSON.stringify(pair)}`);
      assert.equal(pair.local.relayProtocol, 'tcp', `reaching the relay over TCP: ${JSON.stringify(pair)}`);
    });
  } finally {
    await product.stop();
  }
});

test('with no path to the worker, the page says transport-failed with a reason in bounded time', { skip: skip ?? false, timeout: 120000 }, async () => {
  const product = await startProduct('none');
  try {
    // Signalling only: no UDP, no TCP to the worker, and no TURN server configured.
    ns.firewall({ tcpPorts: [signallingPort] });
    await withParticipants(product, async (open) => {
      const ada = await open('ada', room('none'));
      await ada.join();
      const failures = await eventually(
        async () => {
          const list = await ada.page.evaluate(() => window.fanoutDemo.transportFailures);
          return list.length > 0 ? list : null;
        },
        { timeoutMs: FAILS_WITHIN_MS, intervalMs: 250, describe: async () => `no transport-failed; the page shows: ${await ada.message()}` },
      );
      const [first] = failures;
      console.log(`ada's ${first.direction} transport failed after ${Math.round(first.afterJoinMs)} ms: ${first.code}: ${first.reason}`);
      assert.equal(first.direction, 'send');
      assert.ok(['ICE_FAILED', 'ICE_TIMEOUT'].includes(first.code), JSON.stringify(first));
      assert.ok(first.reason.includes('TURN'), `the reason says what would help: ${first.reason}`);
      const shown = await ada.message();
      assert.match(shown, /could not be set up/, `the page tells the person: ${shown}`);
      figure('join-to-transport-failed with no path', first.afterJoinMs, 'ms');
    });
  } finally {
    await product.stop();
  }
});
