// A signalling replica killed mid-call, in real Chromium: two fanout-signalling processes share
// a real redis-server and one fanout-worker; each replica sits behind its own address the way a
// Service sends new connections to live pods only (a small TCP proxy here, preferring its
// replica and falling back to the other). Four browsers in one room, two on each replica. The
// test SIGKILLs one replica and asserts that its browsers reconnect to the other and rejoin by
// themselves, that everybody decodes everybody again, that the killed replica's old
// participants leave the room (the survivors' lease sweep), and that media between browsers on
// the surviving replica never stalls. The disruption is printed as figures. Before that, a
// browser on replica B vanishes (its Chromium SIGKILLed): the browsers on replica A are told,
// and the worker's counters come back down.
//
//   node --test web/test/replicas.mjs     (scripts/test-web.sh runs every file in web/test/)

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { Participant, assertReceivesFrom, eventually, launchBrowser, launchKillableBrowser, longestGap, sleep, watchDecoding } from '../testing/browser.mjs';
import { Child, binary, freePort, startPageServer, waitHealthy } from '../testing/product.mjs';
import { figure } from '../testing/suite.mjs';

const LEASE_SECONDS = 3;
/** Longer than this without a decoded frame is a stall. */
const STALL_MS = 5000;

/** Waits until a Redis on `port` answers PING. */
async function redisUp(port, child, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const pong = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('error', () => resolve(false));
      socket.once('data', (d) => {
        socket.destroy();
        resolve(d.toString().startsWith('+PONG'));
      });
      socket.once('connect', () => socket.write('PING\r\n'));
    });
    if (pong) return;
    if (child.exited) throw new Error(`redis-server exited: ${child.tail()}`);
    await sleep(100);
  }
  throw new Error(`redis-server did not answer on ${port}: ${child.tail()}`);
}

/**
 * A TCP front for `ports`, in order of preference: each new connection goes to the first that
 * accepts it, as a Service routes to live pods. A connection whose backend dies is closed.
 */
async function failoverFront(ports) {
  const open = new Set();
  const server = net.createServer((client) => {
    open.add(client);
    client.pause();
    client.on('error', () => {});
    client.on('close', () => open.delete(client));
    const attempt = (i) => {
      if (i >= ports.length || client.destroyed) return client.destroy();
      const upstream = net.connect(ports[i], '127.0.0.1');
      let connected = false;
      upstream.on('error', () => (connected ? client.destroy() : attempt(i + 1)));
      upstream.on('connect', () => {
        connected = true;
        open.add(upstream);
        upstream.on('close', () => {
          open.delete(upstream);
          client.destroy();
        });
        client.on('close', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    attempt(0);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      for (const socket of open) socket.destroy();
      return new Promise((r) => server.close(r));
    },
  };
}

const cluster = { children: [], closers: [] };
let browser;

before(
  async () => {
    const logDir = mkdtempSync(join(tmpdir(), 'fanout-replicas-'));
    cluster.logDir = logDir;
    const env = { RUST_LOG: process.env.RUST_LOG || 'info' };
    const redisPort = await freePort();
    const redis = new Child('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { logDir, env });
    cluster.children.push(redis);
    await redisUp(redisPort, redis);

    const workerPort = await freePort();
    const rtcMin = 30000 + (process.pid % 100) * 100;
    const worker = new Child(
      'worker',
      binary('worker'),
      ['--listen-ip', '127.0.0.1', '--http-port', String(workerPort), '--rtc-min-port', String(rtcMin), '--rtc-max-port', String(rtcMin + 99), '--rtc-tcp-port', String(await freePort())],
      { logDir, env },
    );
    cluster.children.push(worker);
    const workerUrl = `http://127.0.0.1:${workerPort}`;
    cluster.workerUrl = workerUrl;
    await waitHealthy(`${workerUrl}/healthz`, cluster.children, 120000);

    const secret = randomBytes(24).toString('hex');
    cluster.replicas = [];
    for (const name of ['signalling-a', 'signalling-b']) {
      const port = await freePort();
      const replica = new Child(
        name,
        binary('signalling'),
        ['--listen-addr', '127.0.0.1', '--port', String(port), '--worker-url', workerUrl, '--redis-url', `redis://127.0.0.1:${redisPort}/`, '--replica-lease-seconds', String(LEASE_SECONDS)],
        { logDir, env: { ...env, FANOUT_JWT_SECRET: secret } },
      );
      cluster.children.push(replica);
      await waitHealthy(`http://127.0.0.1:${port}/healthz`, cluster.children, 120000);
      cluster.replicas.push({ child: replica, port });
    }
    const [a, b] = cluster.replicas;
    cluster.frontA = await failoverFront([a.port, b.port]);
    cluster.frontB = await failoverFront([b.port, a.port]);
    cluster.closers.push(cluster.frontA.close, cluster.frontB.close);

    const pagePort = await freePort();
    const pages = await startPageServer(secret, pagePort);
    cluster.closers.push(() => new Promise((r) => pages.close(r)));
    const pageBase = `http://127.0.0.1:${pagePort}/`;
    // What Participant.open needs of a product: the page's URL with its parameters.
    cluster.product = {
      pageUrl: (params) => {
        const url = new URL(pageBase);
        for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
        return url.toString();
      },
    };
    browser = await launchBrowser();
    console.log(`replicas at ${a.port} and ${b.port}, worker at ${workerUrl}; logs in ${logDir}`);
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

/** The worker's counters that a participant leaving must bring back down. */
async function workerCounters() {
  const { peers, transports, producers, consumers } = await (await fetch(`${cluster.workerUrl}/v1/stats`)).json();
  return { peers, transports, producers, consumers };
}

test('a browser that vanishes on one replica leaves the room for everybody on the other, and its worker objects go', { timeout: 180000 }, async () => {
  const room = `replicas-vanish-${randomBytes(3).toString('hex')}`;
  const people = [];
  // Dan has a browser of his own, so that it can die alone.
  const dansBrowser = await launchKillableBrowser();
  try {
    const baseline = await workerCounters();
    const ada = await Participant.open(browser, cluster.product, 'ada', { room, server: cluster.frontA.url });
    people.push(ada);
    await ada.join();
    const bob = await Participant.open(browser, cluster.product, 'bob', { room, server: cluster.frontA.url });
    people.push(bob);
    await bob.join();
    const dan = await Participant.open(dansBrowser.browser, cluster.product, 'dan', { room, server: cluster.frontB.url });
    people.push(dan);
    await dan.join();
    await assertReceivesFrom(ada, [bob, dan], { timeoutMs: 45000 });
    await assertReceivesFrom(dan, [ada, bob], { timeoutMs: 45000 });
    const danId = await dan.participantId();
    assert.ok((await ada.participantList()).includes(danId), 'ada lists dan');

    const killedAt = Date.now();
    dansBrowser.kill();
    // Replica B removes him from the worker; the worker's participant-left reaches replica A's
    // sockets through Redis.
    const gone = async (viewer) => !(await viewer.participantList()).includes(danId) && !(await viewer.tiles()).includes(danId);
    await eventually(async () => (await gone(ada)) && (await gone(bob)), {
      timeoutMs: 30000,
      intervalMs: 100,
      describe: async () => `ada lists ${await ada.participantList()}, bob lists ${await bob.participantList()}`,
    });
    figure('browser on replica B killed -> gone from the lists of the browsers on replica A', Date.now() - killedAt);
    // Ada and bob stay (2 peers, 4 transports, 4 producers, 4 consumers); dan's are all gone.
    const expected = { peers: baseline.peers + 2, transports: baseline.transports + 4, producers: baseline.producers + 4, consumers: baseline.consumers + 4 };
    let now;
    await eventually(
      async () => {
        now = await workerCounters();
        return JSON.stringify(now) === JSON.stringify(expected);
      },
      { timeoutMs: 15000, describe: () => `worker counters ${JSON.stringify(now)}, expected ${JSON.stringify(expected)}` },
    );
    figure('browser on replica B killed -> its peer, transports, producers and consumers gone from the worker', Date.now() - killedAt);
    await assertReceivesFrom(ada, [bob], { timeoutMs: 15000 });
  } catch (err) {
    err.message += `\n${people.map((p) => p.diagnostics()).join('\n')}\n${logs()}`;
    throw err;
  } finally {
    await Promise.all(people.filter((p) => p.name !== 'dan').map((p) => p.close()));
    await dansBrowser.close();
  }
});

test('a killed signalling replica: its browsers rejoin through the other, the others never stall', { timeout: 240000 }, async () => {
  const room = `replicas-${randomBytes(3).toString('hex')}`;
  const people = [];
  const open = async (name, front) => {
    const p = await Participant.open(browser, cluster.product, name, { room, server: front.url });
    people.push(p);
    return p;
  };
  try {
    // Ada and Bob on replica A, Carol and Dave on replica B.
    const ada = await open('ada', cluster.frontA);
    await ada.join();
    const bob = await open('bob', cluster.frontA);
    await bob.join();
    const carol = await open('carol', cluster.frontB);
    await carol.join();
    const dave = await open('dave', cluster.frontB);
    await dave.join();
    for (const viewer of [ada, bob, carol, dave]) {
      await assertReceivesFrom(viewer, [ada, bob, carol, dave].filter((p) => p !== viewer), { timeoutMs: 45000 });
    }
    const oldIds = { carol: await carol.participantId(), dave: await dave.participantId() };

    const every = { intervalMs: 200 };
    const adaSeesBob = watchDecoding(ada, bob, every);
    const adaSeesCarol = watchDecoding(ada, carol, every);
    const bobSeesAda = watchDecoding(bob, ada, every);
    const carolSeesAda = watchDecoding(carol, ada, every);
    await sleep(1500);

    const killedAt = Date.now();
    process.kill(-cluster.replicas[1].child.proc.pid, 'SIGKILL');
    // Their old participants leave the room: by their transports closing when the browsers
    // drop them, or else by replica A removing them when B's lease runs out.
    const ghostsGone = eventually(
      async () => {
        const listed = await ada.participantList();
        return !listed.includes(oldIds.carol) && !listed.includes(oldIds.dave) && Date.now();
      },
      { timeoutMs: 60000, intervalMs: 100, describe: async () => `ghosts stay in ada's list: ${JSON.stringify(await ada.participantList())}` },
    );

    // Carol and Dave come back by themselves, as new participants, through replica A.
    await eventually(
      async () => {
        const [c, d] = [await carol.participantId(), await dave.participantId()];
        return c && d && c !== oldIds.carol && d !== oldIds.dave && (await carol.page.evaluate(() => document.body.dataset.state)) === 'joined';
      },
      { timeoutMs: 60000, describe: async () => `carol and dave did not rejoin: ${await carol.message()} / ${await dave.message()}` },
    );
    for (const viewer of [ada, bob, carol, dave]) {
      await assertReceivesFrom(viewer, [ada, bob, carol, dave].filter((p) => p !== viewer), { timeoutMs: 45000 });
    }
    const ghostsGoneMs = (await ghostsGone) - killedAt;
    await sleep(1000);
    await Promise.all([adaSeesBob, adaSeesCarol, bobSeesAda, carolSeesAda].map((w) => w.stop()));

    // Between browsers on the surviving replica, media never stalled.
    const from = killedAt - 1000;
    const adaFromBob = longestGap(adaSeesBob.progress, from);
    const bobFromAda = longestGap(bobSeesAda.progress, from);
    figure('longest gap in ada decoding bob (both on the surviving replica) across the kill', adaFromBob);
    figure('longest gap in bob decoding ada (both on the surviving replica) across the kill', bobFromAda);
    // The gap is a figure (a loaded machine's browsers lengthen it); 5 s without a frame
    // would be media that stopped.
    assert.ok(adaFromBob < STALL_MS && bobFromAda < STALL_MS, `video between ada and bob stalled: ${adaFromBob} / ${bobFromAda} ms without a decoded frame`);

    // The killed replica's browsers: last frame before, first frame after.
    const disruption = (times) => {
      const before = times.filter((t) => t <= killedAt).at(-1) ?? killedAt;
      return longestGap(times, before);
    };
    figure('carol (killed replica) decoding ada: last frame before -> first frame after', disruption(carolSeesAda.progress));
    figure('ada decoding carol (killed replica): last frame before -> first frame after', disruption(adaSeesCarol.progress));
    figure('kill -> the killed replica\'s old participants gone from the room', ghostsGoneMs);
  } catch (err) {
    err.message += `\n${people.map((p) => p.diagnostics()).join('\n')}\n${logs()}`;
    throw err;
  } finally {
    await Promise.all(people.map((p) => p.close()));
  }
});
