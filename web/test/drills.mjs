// A media worker stopped mid-call, in real Chromium: two fanout-worker processes behind one
// fanout-signalling with static placement over both (`--worker-url A,B`). Room R1 (ada, bob)
// lives on worker A, room R2 (carol, dave) on worker B, by the rendezvous hash signalling uses
// (computed here as signalling/src/worker_pool.rs does, then checked on the workers). Each
// drill stops worker A and asserts that R1's browsers are told and rejoin and republish by
// themselves, that they decode each other again with R1 now on worker B, and that R2's
// browsers never stall and never rejoin. The disruption is printed as figures. Two ways to stop:
// - SIGKILL: the worker dies; signalling's health watch moves R1 (`room-migrated`).
// - SIGTERM (what Kubernetes sends a pod it deletes): the worker shuts down, closing its rooms
//   and putting their peers out with `WORKER_SHUTDOWN`; the browser client rejoins and, while
//   signalling still places R1 on the stopping worker, retries the refused joins.
//
//   node --test web/test/drills.mjs     (scripts/test-web.sh runs every file in web/test/)

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { Participant, assertReceivesFrom, eventually, launchBrowser, longestGap, sleep, watchDecoding } from '../testing/browser.mjs';
import { Child, binary, freePort, startPageServer, waitHealthy } from '../testing/product.mjs';
import { figure } from '../testing/suite.mjs';

/** Longer than this without a decoded frame is a stall. */
const STALL_MS = 5000;
/** How often the receivers' framesDecoded is sampled. */
const SAMPLE_MS = 250;

/** signalling/src/worker_pool.rs `rendezvous_weight`: FNV-1a 64 over worker, 0xff, room; SplitMix64's finaliser. */
function rendezvousWeight(worker, room) {
  const mask = (1n << 64n) - 1n;
  let hash = 0xcbf29ce484222325n;
  for (const byte of [...Buffer.from(worker), 0xff, ...Buffer.from(room)]) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & mask;
  }
  hash = ((hash ^ (hash >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
  hash = ((hash ^ (hash >> 27n)) * 0x94d049bb133111ebn) & mask;
  return hash ^ (hash >> 31n);
}

/** The worker a new room goes to while all are healthy. */
function firstChoice(workers, room) {
  let best = 0;
  for (let i = 1; i < workers.length; i++) {
    if (rendezvousWeight(workers[i], room) > rendezvousWeight(workers[best], room)) best = i;
  }
  return workers[best];
}

/** A room name (with a random part, so reruns do not meet old rooms) whose first choice is `worker`. */
function roomOn(workers, worker, prefix) {
  const salt = randomBytes(3).toString('hex');
  for (let i = 0; ; i++) {
    const room = `${prefix}-${salt}-${i}`;
    if (firstChoice(workers, room) === worker) return room;
  }
}

/** Whether the worker at `url` has `room` open (its REST API; the drill's workers have no token). */
async function workerHasRoom(url, room) {
  const answer = await fetch(`${url}/v1/rooms/${room}`).catch(() => null);
  return answer?.status === 200;
}

const cluster = { children: [], closers: [] };
let browser;

/** Starts (or starts again, on the same ports) one of the drill's workers. */
async function startWorker(worker) {
  worker.starts = (worker.starts ?? 0) + 1;
  const name = worker.starts === 1 ? worker.name : `${worker.name}-${worker.starts}`;
  worker.child = new Child(name, binary('worker'), worker.args, { logDir: cluster.logDir, env: cluster.env });
  cluster.children.push(worker.child);
  // Only the processes meant to be running: a drill's stopped worker has exited on purpose.
  await waitHealthy(`${worker.url}/healthz`, cluster.children.filter((c) => !c.exited), 120000);
}

before(
  async () => {
    // The same weight as the Rust side's pinned value: both sides rank workers alike.
    assert.equal(rendezvousWeight('http://127.0.0.1:3000', 'demo'), 1059426594359690681n);
    const logDir = mkdtempSync(join(tmpdir(), 'fanout-drills-'));
    const env = { RUST_LOG: process.env.RUST_LOG || 'info' };
    cluster.logDir = logDir;
    cluster.env = env;
    cluster.workers = [];
    for (const [index, name] of ['worker-a', 'worker-b'].entries()) {
      const port = await freePort();
      const rtcMin = 31000 + (process.pid % 40) * 200 + index * 100;
      const args = ['--listen-ip', '127.0.0.1', '--http-port', String(port), '--rtc-min-port', String(rtcMin), '--rtc-max-port', String(rtcMin + 99), '--rtc-tcp-port', String(await freePort())];
      const worker = { name, args, url: `http://127.0.0.1:${port}` };
      await startWorker(worker);
      cluster.workers.push(worker);
    }
    const secret = randomBytes(24).toString('hex');
    const port = await freePort();
    const signalling = new Child(
      'signalling',
      binary('signalling'),
      ['--listen-addr', '127.0.0.1', '--port', String(port), '--worker-url', cluster.workers.map((w) => w.url).join(',')],
      { logDir, env: { ...env, FANOUT_JWT_SECRET: secret } },
    );
    cluster.children.push(signalling);
    await waitHealthy(`http://127.0.0.1:${port}/healthz`, cluster.children, 120000);
    cluster.signalling = `http://127.0.0.1:${port}`;

    const pagePort = await freePort();
    const pages = await startPageServer(secret, pagePort);
    cluster.closers.push(() => new Promise((r) => pages.close(r)));
    const pageBase = `http://127.0.0.1:${pagePort}/`;
    cluster.product = {
      pageUrl: (params) => {
        const url = new URL(pageBase);
        for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
        return url.toString();
      },
    };
    browser = await launchBrowser();
    console.log(`workers at ${cluster.workers.map((w) => w.url).join(' and ')}, signalling at ${cluster.signalling}; logs in ${logDir}`);
  },
  { timeout: 10 * 60 * 1000 },
);

after(async () => {
  await browser?.close();
  for (const close of cluster.closers.reverse()) await close();
  for (const child of cluster.children.reverse()) await child.stop();
});

function logs() {
  return cluster.children.map((c) => `--- ${c.name} (${c.logPath})\n${c.tail(40)}`).join('\n');
}

/** Records the client's `rejoining` events (with when) on the page. */
function recordRejoins(participant) {
  return participant.page.evaluate(() => {
    window.drillRejoins = [];
    window.fanoutDemo.client.on('rejoining', (e) => window.drillRejoins.push({ ...e, at: Date.now() }));
  });
}

/**
 * The drill: room R1 on worker A, R2 on worker B, a call in each; `signal` stops worker A
 * (SIGKILL: it dies; SIGTERM: it shuts down, closing its rooms and telling their peers
 * WORKER_SHUTDOWN). `stopped` names that in the figures.
 */
async function drill(signal, stopped) {
  const [a, b] = cluster.workers;
  const urls = cluster.workers.map((w) => w.url);
  const r1 = roomOn(urls, a.url, `drill-${signal.toLowerCase()}-r1`);
  const r2 = roomOn(urls, b.url, `drill-${signal.toLowerCase()}-r2`);
  const people = [];
  const open = async (name, room) => {
    const p = await Participant.open(browser, cluster.product, name, { room, server: cluster.signalling });
    people.push(p);
    await p.join();
    return p;
  };
  try {
    const ada = await open('ada', r1);
    const bob = await open('bob', r1);
    const carol = await open('carol', r2);
    const dave = await open('dave', r2);
    await assertReceivesFrom(ada, [bob], { timeoutMs: 45000 });
    await assertReceivesFrom(bob, [ada], { timeoutMs: 45000 });
    await assertReceivesFrom(carol, [dave], { timeoutMs: 45000 });
    await assertReceivesFrom(dave, [carol], { timeoutMs: 45000 });
    // Where the hash says.
    assert.ok(await workerHasRoom(a.url, r1), `${r1} is not on worker A`);
    assert.ok(await workerHasRoom(b.url, r2), `${r2} is not on worker B`);
    assert.ok(!(await workerHasRoom(a.url, r2)), `${r2} is on worker A too`);

    for (const p of [ada, bob, carol, dave]) await recordRejoins(p);
    const oldIds = new Map();
    for (const p of [ada, bob, carol, dave]) oldIds.set(p, await p.participantId());
    const watches = {
      adaFromBob: watchDecoding(ada, bob, { intervalMs: SAMPLE_MS }),
      bobFromAda: watchDecoding(bob, ada, { intervalMs: SAMPLE_MS }),
      carolFromDave: watchDecoding(carol, dave, { intervalMs: SAMPLE_MS }),
      daveFromCarol: watchDecoding(dave, carol, { intervalMs: SAMPLE_MS }),
    };
    const watchedFrom = Date.now();
    await sleep(2000);

    const killedAt = Date.now();
    process.kill(signal === 'SIGKILL' ? -a.child.proc.pid : a.child.proc.pid, signal);

    // R1's browsers are told, rejoin by themselves (new participant ids) and republish.
    await eventually(
      async () => {
        for (const p of [ada, bob]) {
          const id = await p.participantId();
          const state = await p.page.evaluate(() => document.body.dataset.state);
          if (!id || id === oldIds.get(p) || state !== 'joined') return false;
        }
        return true;
      },
      { timeoutMs: 60000, describe: async () => `ada and bob did not rejoin: ${await ada.message()} / ${await bob.message()}` },
    );
    await assertReceivesFrom(ada, [bob], { timeoutMs: 45000 });
    await assertReceivesFrom(bob, [ada], { timeoutMs: 45000 });
    assert.ok(await workerHasRoom(b.url, r1), `${r1} did not move to worker B`);
    await sleep(1000);
    await Promise.all(Object.values(watches).map((w) => w.stop()));

    const rejoins = new Map();
    for (const p of [ada, bob, carol, dave]) rejoins.set(p, await p.page.evaluate(() => window.drillRejoins));
    for (const p of [ada, bob]) {
      assert.ok(rejoins.get(p).length >= 1, `${p.name} rejoined without being told (no rejoining event)`);
      console.log(`${p.name} rejoined: ${rejoins.get(p).map((e) => `${e.reason}${e.code ? ` ${e.code}` : ''} at stop+${e.at - killedAt} ms`).join(', ')}`);
    }
    // R2 was never touched: same participants, no rejoin, video never stalled.
    for (const p of [carol, dave]) {
      assert.equal(await p.participantId(), oldIds.get(p), `${p.name} (room on the surviving worker) became another participant`);
      assert.deepEqual(rejoins.get(p), [], `${p.name} (room on the surviving worker) rejoined`);
    }
    const carolGap = longestGap(watches.carolFromDave.progress, watchedFrom);
    const daveGap = longestGap(watches.daveFromCarol.progress, watchedFrom);
    figure(`longest gap in carol decoding dave (room on the surviving worker) across the ${stopped} drill`, carolGap);
    figure(`longest gap in dave decoding carol (room on the surviving worker) across the ${stopped} drill`, daveGap);
    assert.ok(carolGap < STALL_MS && daveGap < STALL_MS, `video in the room on the surviving worker stalled: ${carolGap} / ${daveGap} ms without a decoded frame`);

    // The killed worker's room: last frame before -> first frame after, per receiver.
    const disruption = (times) => {
      const before = times.filter((t) => t <= killedAt).at(-1) ?? killedAt;
      return longestGap(times, before);
    };
    figure(`ada decoding bob (room on the ${stopped} worker): last frame before -> first frame after`, disruption(watches.adaFromBob.progress));
    figure(`bob decoding ada (room on the ${stopped} worker): last frame before -> first frame after`, disruption(watches.bobFromAda.progress));
    const told = Math.min(...[ada, bob].map((p) => rejoins.get(p)[0].at));
    figure(`${signal} -> first rejoin of a client in the ${stopped} worker's room`, told - killedAt);
    return { rejoins: rejoins.get(ada).concat(rejoins.get(bob)) };
  } catch (err) {
    err.message += `\n${people.map((p) => p.diagnostics()).join('\n')}\n${logs()}`;
    throw err;
  } finally {
    await Promise.all(people.map((p) => p.close()));
  }
}

test('a killed worker (SIGKILL): its rooms move to the other worker and rejoin, the other worker\'s room never stalls', { timeout: 240000 }, async () => {
  await drill('SIGKILL', 'killed');
});

test('a worker stopped gracefully (SIGTERM): its browsers are put out with WORKER_SHUTDOWN, rejoin on the other worker, the other room never stalls', { timeout: 240000 }, async () => {
  // Worker A died in the test before: start it again (same ports); signalling takes it back
  // for new rooms once its health probe answers.
  const [a] = cluster.workers;
  if (a.child.exited) await startWorker(a);
  await sleep(2500);
  const { rejoins } = await drill('SIGTERM', 'gracefully stopped');
  assert.ok(
    rejoins.some((e) => e.reason === 'removed' && e.code === 'WORKER_SHUTDOWN') || rejoins.some((e) => e.reason === 'room-migrated'),
    `the browsers were not told of the shutdown: ${JSON.stringify(rejoins)}`,
  );
});
