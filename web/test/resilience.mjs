// The client and the demo page when things go wrong or are typed wrong, in real Chromium
// through the locally started product: a transport the worker closes (reported, replaced,
// media decodes again), the worker removing a participant (it rejoins), and the demo page's
// room names, blank fields, stats overlay and stopped cameras.
//
//   node --test web/test/resilience.mjs     (scripts/test-web.sh runs every file in web/test/)

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { assertReceivesFrom, eventually } from '../testing/browser.mjs';
import { browserSuite, figure } from '../testing/suite.mjs';

const suite = browserSuite('resilience');
const { scenario, room } = suite;

/** Waits until `who` has a transport of `direction` other than `old`; returns its id. */
async function replaced(who, direction, old) {
  return eventually(
    async () => {
      const now = await who.transportId(direction);
      return now && now !== old ? now : null;
    },
    { timeoutMs: 15000, describe: () => `${who.name}'s ${direction} transport ${old} was not replaced` },
  );
}

const onlyLocal = () => (process.env.FANOUT_E2E_MODE ?? 'local') !== 'local' && 'closing a transport needs the embedded mode\'s /dev endpoint';

scenario(
  'a transport the worker closes is reported, replaced, and media decodes again',
  async (open) => {
    const name = room('transport');
    const ada = await open('ada', { room: name });
    await ada.join();
    const bob = await open('bob', { room: name });
    await bob.join();
    await assertReceivesFrom(bob, [ada]);

    // Bob's receiving transport loses ICE consent.
    const recv = await bob.transportId('recv');
    let started = Date.now();
    await suite.product.closeTransport(name, recv, 'ICE_CONSENT_LOST');
    await eventually(async () => (await bob.transportCloses()).some((c) => c.code === 'ICE_CONSENT_LOST' && c.direction === 'recv'), {
      describe: async () => `bob's page was not told: ${JSON.stringify(await bob.transportCloses())}`,
    });
    assert.match(await bob.message(), /ICE_CONSENT_LOST/, 'and says so');
    await replaced(bob, 'recv', recv);
    await assertReceivesFrom(bob, [ada]);
    figure('receiving transport closed by the worker to media decoding again', Date.now() - started);

    // Ada's sending transport fails DTLS: she publishes again on a new one.
    const send = await ada.transportId('send');
    started = Date.now();
    await suite.product.closeTransport(name, send, 'DTLS_FAILED');
    await replaced(ada, 'send', send);
    await assertReceivesFrom(bob, [ada]);
    figure('sending transport closed by the worker to the others decoding again', Date.now() - started);
    // Her camera button controls the new producer.
    assert.equal(await ada.page.textContent('#toggle-camera'), 'Stop camera');
    assert.ok(await ada.page.isEnabled('#toggle-camera'));
  },
  { skip: onlyLocal() },
);

scenario(
  'a participant whose transports the worker all closed is removed, rejoins and decodes again',
  async (open) => {
    const name = room('removed');
    const ada = await open('ada', { room: name });
    await ada.join();
    const bob = await open('bob', { room: name });
    await bob.join();
    await assertReceivesFrom(bob, [ada]);
    await assertReceivesFrom(ada, [bob]);
    const before = await bob.participantId();
    const started = Date.now();
    // Both at once, as when his browser went away: the worker removes him with the last one.
    await suite.product.closePeerTransports(name, before, 'ICE_CONSENT_LOST');
    // The worker removed bob with his last transport; his page joined again as a new participant.
    const after = await eventually(
      async () => {
        const id = await bob.participantId();
        return id && id !== before ? id : null;
      },
      { timeoutMs: 20000, describe: () => `bob did not rejoin (still ${before})` },
    );
    await assertReceivesFrom(bob, [ada]);
    await assertReceivesFrom(ada, [bob]);
    figure('participant removed by the worker to media both ways again', Date.now() - started);
    assert.ok(!(await ada.participantList()).includes(before), 'ada no longer lists the old bob');
    assert.ok((await ada.participantList()).includes(after), 'and lists the new one');
  },
  { skip: onlyLocal() },
);

scenario('room names are normalised and said so, and a blank one is explained', async (open) => {
  const suffix = randomBytes(3).toString('hex');
  const ada = await open('ada', { room: `  Maths 101 ${suffix.toUpperCase()} ` });
  await ada.join();
  assert.equal(await ada.page.inputValue('#room'), `maths-101-${suffix}`);
  assert.match(await ada.message(), new RegExp(`joining "maths-101-${suffix}"`));
  assert.equal(await ada.page.evaluate(() => window.fanoutDemo.client.roomId), `maths-101-${suffix}`);
  // Typed the other way, it is the same room.
  const bob = await open('bob', { room: `maths-101-${suffix}` });
  await bob.join();
  await assertReceivesFrom(bob, [ada]);

  const blank = await open('cleo', { room: '   ' });
  await blank.page.click('#join');
  await eventually(async () => /Enter a room name/.test(await blank.message()), {
    timeoutMs: 5000,
    describe: async () => `the page says: ${await blank.message()}`,
  });
  assert.ok(await blank.page.isVisible('#join-form'), 'still on the form');
  assert.ok(await blank.page.isVisible('#message'), 'with the reason visible');
});

scenario('the stats sit under the video, and a stopped camera shows a placeholder', async (open) => {
  const name = room('tiles');
  const ada = await open('ada', { room: name });
  await ada.join();
  const bob = await open('bob', { room: name });
  await bob.join();
  await assertReceivesFrom(bob, [ada]);
  const adaId = await ada.participantId();
  const tile = `#tiles .tile.remote[data-participant-id="${adaId}"]`;
  await eventually(async () => (await bob.page.textContent(`${tile} .stats`))?.includes('kbps'), {
    timeoutMs: 10000,
    describe: () => 'no stats on the tile',
  });
  const video = await bob.page.locator(`${tile} video`).boundingBox();
  const stats = await bob.page.locator(`${tile} .stats`).boundingBox();
  assert.ok(stats.y >= video.y + video.height - 1, `the stats overlap the video: ${JSON.stringify({ video, stats })}`);

  await ada.page.click('#toggle-camera');
  await eventually(async () => bob.page.isVisible(`${tile} .placeholder`), {
    timeoutMs: 10000,
    describe: () => 'no placeholder for the stopped camera',
  });
  assert.equal(await bob.page.textContent(`${tile} .placeholder`), 'camera off');
  assert.ok(!(await bob.showsVideoOf(adaId)), 'no frozen frame');
  // Her own tile is redrawn by the same click, asynchronously: on a busy machine after bob's.
  await eventually(async () => ada.page.isVisible('#local-tile .placeholder'), {
    timeoutMs: 10000,
    describe: () => 'her own tile does not say it too',
  });
  await ada.page.click('#toggle-camera');
  await eventually(async () => bob.showsVideoOf(adaId), { timeoutMs: 10000, describe: () => 'the video did not come back' });
});
