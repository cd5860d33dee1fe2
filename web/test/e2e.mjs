// End-to-end calls in real Chromium through the locally started product (issue 5):
// the demo page, the client library, signalling and the worker, with real media.
//
//   node --test web/test/          (scripts/test-web.sh installs and builds what it needs)
//
// Environment: see web/testing/suite.product.mjs (FANOUT_E2E_MODE, FANOUT_E2E_WORKER_URL, ...).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { assertReceivesFrom, eventually, launchKillableBrowser, sleep } from '../testing/browser.mjs';
import { signJwt } from '../testing/product.mjs';
import { browserSuite, figure } from '../testing/suite.mjs';

/** How long an abruptly closed participant may stay visible to the others. */
const GONE_WITHIN_MS = 30000;

const suite = browserSuite('e2e');
const { scenario, room } = suite;

/** The worker's counters that a leaving participant must bring back down. */
const counters = ({ peers, transports, producers, consumers }) => ({ peers, transports, producers, consumers });

async function countersReturnTo(baseline, what) {
  let now;
  await eventually(
    async () => {
      now = counters(await suite.product.workerStats());
      return JSON.stringify(now) === JSON.stringify(baseline);
    },
    { timeoutMs: 15000, describe: () => `${what}: worker counters ${JSON.stringify(now)}, expected ${JSON.stringify(baseline)}` },
  );
}

scenario('two participants each decode the other one video and receive their audio', async (open) => {
  const name = room('pair');
  const ada = await open('ada', { room: name });
  await ada.join();
  const bob = await open('bob', { room: name });
  await bob.join();

  const atBob = await assertReceivesFrom(bob, [ada]);
  const atAda = await assertReceivesFrom(ada, [bob]);
  assert.ok(await ada.showsVideoOf(await bob.participantId()), "ada's page shows bob's video");
  assert.ok(await bob.showsVideoOf(await ada.participantId()), "bob's page shows ada's video");
  const video = atBob.find((r) => r.kind === 'video');
  assert.ok(video.frameWidth > 0 && video.frameHeight > 0, `decoded frames have a size: ${JSON.stringify(video)}`);
  for (const r of atAda) {
    const what = r.kind === 'video' ? `${r.framesDecoded} frames decoded` : `${r.packetsReceived} packets, level ${r.audioLevel}`;
    console.log(`ada receives bob's ${r.kind} (${r.codec}): ${what}`);
  }
  figure('join-to-first-remote-frame (second participant)', await bob.joinToFirstRemoteFrameMs(), 'ms');
});

scenario('a participant joining late receives both existing producers of everyone', async (open) => {
  const name = room('late');
  const ada = await open('ada', { room: name });
  await ada.join();
  const bob = await open('bob', { room: name });
  await bob.join();
  await assertReceivesFrom(ada, [bob]);

  const cleo = await open('cleo', { room: name });
  await cleo.join();
  const rows = await assertReceivesFrom(cleo, [ada, bob]);
  assert.equal(rows.length, 4, `cleo receives exactly 2 participants × (audio + video): ${JSON.stringify(rows)}`);
  // And the early ones get the newcomer.
  await assertReceivesFrom(ada, [cleo]);
  await assertReceivesFrom(bob, [cleo]);
  figure('join-to-first-remote-frame (late joiner)', await cleo.joinToFirstRemoteFrameMs(), 'ms');
});

scenario('closing a producer removes the remote video; leaving brings the worker counters back down', async (open) => {
  const baseline = counters(await suite.product.workerStats());
  const name = room('close');
  const ada = await open('ada', { room: name });
  await ada.join();
  const bob = await open('bob', { room: name });
  await bob.join();
  await assertReceivesFrom(bob, [ada]);
  await assertReceivesFrom(ada, [bob]);
  const during = counters(await suite.product.workerStats());
  assert.deepEqual(
    during,
    {
      peers: baseline.peers + 2,
      transports: baseline.transports + 4,
      producers: baseline.producers + 4,
      consumers: baseline.consumers + 4,
    },
    'two participants: 2 peers, a send and a recv transport each, audio and video each, each consuming the other',
  );

  const adaId = await ada.participantId();
  const producerId = await ada.unpublish('video');
  await eventually(
    async () => !(await bob.showsVideoOf(adaId)) && !(await bob.stats()).some((r) => r.producerId === producerId),
    { timeoutMs: 10000, describe: async () => `bob still has ada's video ${producerId}: ${JSON.stringify(await bob.stats())}` },
  );
  // Her audio goes on.
  const audio = await eventually(async () => (await bob.stats()).find((r) => r.participantId === adaId && r.kind === 'audio'));
  await sleep(1000);
  const later = (await bob.stats()).find((r) => r.producerId === audio.producerId);
  assert.ok(later && later.packetsReceived > audio.packetsReceived, "ada's audio still reaches bob");
  const afterClose = counters(await suite.product.workerStats());
  assert.equal(afterClose.producers, baseline.producers + 3, 'the closed producer is gone from the worker');
  assert.equal(afterClose.consumers, baseline.consumers + 3, "and bob's consumer of it");

  await ada.leave();
  await eventually(async () => !(await bob.participantList()).includes(adaId), {
    timeoutMs: 10000,
    describe: () => 'bob still lists ada after she left',
  });
  await bob.leave();
  await countersReturnTo(baseline, 'after both left');
});

for (const codec of ['VP8', 'VP9', 'H264']) {
  scenario(`${codec} carries video end to end`, async (open) => {
    const name = room(codec.toLowerCase());
    const ada = await open('ada', { room: name, codec });
    await ada.join();
    const bob = await open('bob', { room: name, codec });
    await bob.join();
    const rows = await assertReceivesFrom(bob, [ada], { videoCodec: `video/${codec}` });
    await assertReceivesFrom(ada, [bob], { videoCodec: `video/${codec}` });
    const video = rows.find((r) => r.kind === 'video');
    assert.ok(video.frameWidth > 0, `${codec} frames decoded with a size: ${JSON.stringify(video)}`);
    console.log(`${codec}: bob decoded ${video.framesDecoded} frames ${video.frameWidth}x${video.frameHeight}`);
  });
}

scenario("a publisher's estimate passes 1 Mbps within 10 s: the worker's transport-wide feedback feeds Chrome's estimator", async (open) => {
  const ada = await open('ada', { room: room('bwe') });
  await ada.join();
  // The clock starts when the video producer's transport is up and Chrome reports an estimate.
  await eventually(async () => (await ada.availableOutgoingBitrate()) !== null, { describe: () => 'no candidate pair with an estimate' });
  const started = Date.now();
  const curve = [];
  let reached = null;
  while (Date.now() - started < 10000) {
    const bps = await ada.availableOutgoingBitrate();
    const at = Date.now() - started;
    curve.push(`${(at / 1000).toFixed(1)}s:${(bps / 1e6).toFixed(2)}`);
    if (reached === null && bps > 1e6) reached = at;
    await sleep(500);
  }
  console.log(`figure: publisher availableOutgoingBitrate (Mbps) = ${curve.join(' ')}`);
  figure('publisher availableOutgoingBitrate above 1 Mbps after', reached, 'ms');
  assert.ok(reached !== null, `the estimate stayed at or below 1 Mbps for 10 s: ${curve.join(' ')}`);
});

scenario('a bad token is refused with a visible error and nothing is created on the worker', async (open) => {
  const before = await suite.product.workerStats();
  const forged = signJwt(
    { sub: 'mallory', name: 'Mallory', role: 'participant', exp: Math.floor(Date.now() / 1000) + 3600 },
    randomBytes(32).toString('hex'),
  );
  for (const [token, code] of [
    ['not-a-jwt', /TOKEN_MALFORMED|TOKEN_INVALID/],
    [forged, /TOKEN_INVALID_SIGNATURE/],
  ]) {
    const mallory = await open('mallory', { room: room('badtoken'), token });
    const state = await mallory.join({ expectError: true });
    assert.equal(state, 'error', 'the page is not in the room');
    const message = await mallory.message();
    assert.match(message, /token was refused/i, 'the message says what went wrong');
    assert.match(message, code, 'and names the code');
    assert.ok(await mallory.page.isVisible('#message'), 'the message is visible');
    assert.ok(await mallory.page.isHidden('#call'), 'no call view');
  }
  const now = await suite.product.workerStats();
  assert.deepEqual(
    { rooms: now.rooms, ...counters(now) },
    { rooms: before.rooms, ...counters(before) },
    'the worker has no new room, peer or transport',
  );
});

scenario('a participant whose page is closed abruptly disappears from the others', async (open) => {
  const baseline = counters(await suite.product.workerStats());
  const name = room('crash');
  const ada = await open('ada', { room: name });
  await ada.join();
  const bob = await open('bob', { room: name });
  await bob.join();
  // Dan has a browser of his own, so that it can die alone.
  const dansBrowser = await launchKillableBrowser();
  try {
    const dan = await open('dan', { room: name }, dansBrowser.browser);
    await dan.join();
    const danId = await dan.participantId();
    await assertReceivesFrom(ada, [dan]);
    await assertReceivesFrom(bob, [dan]);

    const started = Date.now();
    dansBrowser.kill();
    const gone = async (viewer) =>
      !(await viewer.participantList()).includes(danId) && !(await viewer.tiles()).includes(danId);
    await eventually(async () => (await gone(ada)) && (await gone(bob)), {
      timeoutMs: GONE_WITHIN_MS,
      intervalMs: 100,
      describe: async () => `ada lists ${await ada.participantList()}, bob lists ${await bob.participantList()}`,
    });
    figure('abruptly closed participant gone from the others after', Date.now() - started, 'ms');
    await countersReturnTo(
      { ...baseline, peers: baseline.peers + 2, transports: baseline.transports + 4, producers: baseline.producers + 4, consumers: baseline.consumers + 4 },
      "after dan's browser died",
    );
  } finally {
    await dansBrowser.close();
  }
});
