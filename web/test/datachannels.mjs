// Data channels in real Chromium with stock mediasoup-client (issue 17): one participant's
// DataProducer reaching two others' DataConsumers in order, a late joiner subscribing from the
// join answer, unreliable channels negotiated as such end to end, and a closed data producer
// (or its owner leaving) closing the others' channels. The pages are the demo page; the data
// channels are opened through its client (client.publishData, 'data-message'), which drives
// mediasoup-client's produceData/consumeData. Nobody publishes media (publish=0).
//
//   node --test web/test/datachannels.mjs

import assert from 'node:assert/strict';

import { eventually } from '../testing/browser.mjs';
import { browserSuite, figure } from '../testing/suite.mjs';

const suite = browserSuite('data');
const { scenario, room } = suite;

/**
 * Starts recording, in the page, what the client reports about data channels: messages as
 * [label, data, from] (binary as 'bin:<bytes joined by ,>'), and opened and ended channels.
 */
function listen(participant) {
  return participant.page.evaluate(() => {
    const client = window.fanoutDemo.client;
    const seen = { messages: [], opened: [], ended: [], firstAt: null, lastAt: null };
    window.dataSeen = seen;
    client.on('data-message', ({ label, data, participantId }) => {
      const now = Date.now();
      seen.firstAt ??= now;
      seen.lastAt = now;
      seen.messages.push([label, typeof data === 'string' ? data : `bin:${[...new Uint8Array(data)].join(',')}`, participantId]);
    });
    client.on('remote-data', ({ label, dataProducerId }) => seen.opened.push({ label, dataProducerId }));
    client.on('remote-data-ended', ({ dataProducerId, reason }) => seen.ended.push({ dataProducerId, reason }));
  });
}

const seen = (participant) => participant.page.evaluate(() => window.dataSeen);

/** Opens a data channel on `participant`'s page; resolves with its id once it is open. */
function publishData(participant, options) {
  return participant.page.evaluate(async (o) => {
    const channel = await window.fanoutDemo.client.publishData(o);
    window.channels ??= new Map();
    window.channels.set(o.label, channel);
    if (channel.readyState !== 'open') await new Promise((resolve) => channel.on('open', resolve));
    return channel.id;
  }, options);
}

/** Sends `messages` on the channel labelled `label`, in one go. */
function send(participant, label, messages) {
  return participant.page.evaluate(
    ({ label, messages }) => {
      const channel = window.channels.get(label);
      for (const m of messages) channel.send(typeof m === 'string' ? m : new Uint8Array(m.bytes).buffer);
      return Date.now();
    },
    { label, messages },
  );
}

/** Waits until `participant` has received exactly `expected` on `label` (in this order). */
async function receives(participant, label, expected, { timeoutMs = 15000 } = {}) {
  let got = [];
  await eventually(
    async () => {
      got = (await seen(participant)).messages.filter(([l]) => l === label).map(([, data]) => data);
      return got.length >= expected.length;
    },
    { timeoutMs, describe: () => `${participant.name} got ${got.length} of ${expected.length} messages on ${label}` },
  );
  assert.deepEqual(got, expected, `${participant.name} gets every message on ${label}, in order, once`);
}

/**
 * Waits until `participant` is subscribed to the data channel `dataProducerId` and its
 * browser-side channel is open (what the worker sends before that is not delivered, as with
 * mediasoup). Read from the client's state, not its events: a late joiner subscribes from the
 * join answer, possibly before `listen` ran. Resolves with {label, sctp, readyState}.
 */
async function subscribed(participant, dataProducerId) {
  let state;
  return eventually(
    async () => {
      state = await participant.page.evaluate((id) => {
        const entry = window.fanoutDemo.client.dataConsumers.get(id);
        const consumer = entry?.dataConsumer;
        return consumer ? { label: consumer.label, sctp: consumer.sctpStreamParameters, readyState: consumer.readyState } : null;
      }, dataProducerId);
      return state?.readyState === 'open' ? state : null;
    },
    { timeoutMs: 15000, describe: () => `${participant.name}'s data consumer of ${dataProducerId} is ${JSON.stringify(state)}` },
  );
}

async function joinListening(open, who, name) {
  const participant = await open(who, { room: name, publish: '0' });
  await participant.join();
  await listen(participant);
  return participant;
}

scenario('one data producer reaches two data consumers in order, and a late joiner from the join answer', async (open) => {
  const name = room('fanout');
  const ada = await joinListening(open, 'ada', name);
  const bob = await joinListening(open, 'bob', name);
  const cleo = await joinListening(open, 'cleo', name);

  const id = await publishData(ada, { label: 'whiteboard', protocol: 'strokes-v1' });
  const atBob = await subscribed(bob, id);
  await subscribed(cleo, id);
  assert.equal(atBob.label, 'whiteboard');
  assert.deepEqual((await seen(bob)).opened, [{ label: 'whiteboard', dataProducerId: id }], "bob's client said so once (remote-data)");
  assert.equal(atBob.sctp.ordered, true, 'a data producer is ordered and reliable by default');

  // 500 messages in one burst, of sizes from a few bytes to 16 KiB, binary ones among them:
  // about 150 KB, more than the SCTP window has in flight at once, and within what the worker
  // queues per data consumer (256 KiB, as mediasoup's sctpSendBufferSize; past it, messages
  // to that consumer are dropped and counted, so a sender paces itself by bufferedAmount).
  const messages = [];
  for (let i = 0; i < 500; i++) {
    if (i % 100 === 50) messages.push({ bytes: [i % 256, 0, 255, 7] });
    else messages.push(`stroke ${i} ${'.'.repeat(i % 100 === 0 ? 16 * 1024 : i % 200)}`);
  }
  const expected = messages.map((m) => (typeof m === 'string' ? m : `bin:${m.bytes.join(',')}`));
  const sentAt = await send(ada, 'whiteboard', messages);
  await receives(bob, 'whiteboard', expected);
  await receives(cleo, 'whiteboard', expected);
  const atCleo = await seen(cleo);
  figure('data channel: 500 messages (150 KB) from first send to last received at the second consumer', atCleo.lastAt - sentAt);
  assert.ok(atCleo.messages.every(([, , from]) => from === atCleo.messages[0][2]), 'every message is reported as from ada');
  assert.equal((await seen(ada)).messages.length, 0, 'a data producer does not echo to its own participant');

  // A participant who joins later gets the open data producer in its join answer.
  const dave = await joinListening(open, 'dave', name);
  await subscribed(dave, id);
  await send(ada, 'whiteboard', ['after dave joined']);
  await receives(dave, 'whiteboard', ['after dave joined']);
  await receives(bob, 'whiteboard', [...expected, 'after dave joined']);
});

scenario('an unreliable data producer is delivered unordered with no retransmissions, as negotiated', async (open) => {
  const name = room('unreliable');
  const ada = await joinListening(open, 'ada', name);
  const bob = await joinListening(open, 'bob', name);
  const cleo = await joinListening(open, 'cleo', name);

  const lossy = await publishData(ada, { label: 'cursor', ordered: false, maxRetransmits: 0 });
  const timed = await publishData(ada, { label: 'presence', ordered: false, maxPacketLifeTime: 500 });
  for (const viewer of [bob, cleo]) {
    const opened = await subscribed(viewer, lossy);
    assert.equal(opened.sctp.ordered, false, `${viewer.name}: unordered like its producer`);
    assert.equal(opened.sctp.maxRetransmits, 0, `${viewer.name}: no retransmissions like its producer`);
    const presence = await subscribed(viewer, timed);
    assert.equal(presence.sctp.ordered, false);
    assert.equal(presence.sctp.maxPacketLifeTime, 500, `${viewer.name}: the producer's packet lifetime`);
  }
  // The browser's own RTCDataChannel is what carries it: read its settings there.
  const channels = await bob.page.evaluate(() =>
    [...window.fanoutDemo.client.dataConsumers.values()].map((e) => ({
      label: e.dataConsumer.label,
      ordered: e.dataConsumer._dataChannel?.ordered,
      maxRetransmits: e.dataConsumer._dataChannel?.maxRetransmits,
      maxPacketLifeTime: e.dataConsumer._dataChannel?.maxPacketLifeTime,
      negotiated: e.dataConsumer._dataChannel?.negotiated,
    })),
  );
  const cursor = channels.find((c) => c.label === 'cursor');
  assert.deepEqual(cursor, { label: 'cursor', ordered: false, maxRetransmits: 0, maxPacketLifeTime: null, negotiated: true }, JSON.stringify(channels));

  // On loopback nothing is lost: every message arrives, once (order is not promised).
  const messages = Array.from({ length: 200 }, (_, i) => `cursor ${i}`);
  await send(ada, 'cursor', messages);
  for (const viewer of [bob, cleo]) {
    let got = [];
    await eventually(
      async () => {
        got = (await seen(viewer)).messages.filter(([l]) => l === 'cursor').map(([, d]) => d);
        return got.length >= messages.length;
      },
      { timeoutMs: 15000, describe: () => `${viewer.name} got ${got.length} of ${messages.length}` },
    );
    assert.deepEqual([...got].sort(), [...messages].sort(), `${viewer.name} gets each message once`);
  }
});

scenario('closing a data producer closes its consumers; its owner leaving closes the rest', async (open) => {
  const name = room('close');
  const ada = await joinListening(open, 'ada', name);
  const bob = await joinListening(open, 'bob', name);
  const cleo = await joinListening(open, 'cleo', name);

  const first = await publishData(ada, { label: 'first' });
  const second = await publishData(ada, { label: 'second' });
  for (const viewer of [bob, cleo]) {
    await subscribed(viewer, first);
    await subscribed(viewer, second);
  }
  await send(ada, 'first', ['before close']);
  await receives(bob, 'first', ['before close']);

  const closedAt = performance.now();
  await ada.page.evaluate(async () => {
    const channel = window.channels.get('first');
    await window.fanoutDemo.client.unpublishData(channel);
  });
  for (const viewer of [bob, cleo]) {
    await eventually(async () => (await seen(viewer)).ended.some((e) => e.dataProducerId === first), {
      timeoutMs: 10000,
      describe: async () => `${viewer.name} ended ${JSON.stringify((await seen(viewer)).ended)}`,
    });
    const ended = (await seen(viewer)).ended.find((e) => e.dataProducerId === first);
    assert.equal(ended.reason, 'producer-closed', JSON.stringify(ended));
  }
  figure('data producer close to both consumers closed', performance.now() - closedAt);
  // The worker reset the consumer's SCTP stream: the browser's channel really closed.
  await eventually(
    () =>
      bob.page.evaluate(() => {
        const all = window.fanoutDemo.client.dataConsumers;
        return [...all.values()].every((e) => e.label !== 'first');
      }),
    { timeoutMs: 5000, describe: () => 'bob still lists the closed channel' },
  );

  // The other channel still works.
  await send(ada, 'second', ['still here']);
  await receives(cleo, 'second', ['still here']);

  // Ada leaving closes her remaining data producer at both others.
  await ada.leave();
  for (const viewer of [bob, cleo]) {
    await eventually(async () => (await seen(viewer)).ended.some((e) => e.dataProducerId === second), {
      timeoutMs: 10000,
      describe: async () => `${viewer.name} ended ${JSON.stringify((await seen(viewer)).ended)}`,
    });
  }
  assert.equal((await bob.page.evaluate(() => window.fanoutDemo.client.dataConsumers.size)), 0, 'bob holds no data consumer');
});

scenario('a data producer on a transport created without SCTP is refused with a stable code', async (open) => {
  const name = room('refused');
  const ada = await joinListening(open, 'ada', name);
  // Straight through the protocol: a send transport without sctpCapabilities, then produce-data.
  const answer = await ada.page.evaluate(async (roomId) => {
    const client = window.fanoutDemo.client;
    const created = await client.request('create-transport', { roomId, direction: 'send' });
    try {
      await client.request('produce-data', {
        roomId,
        transportId: created.transportId ?? created.id,
        sctpStreamParameters: { streamId: 0, ordered: true },
        label: 'x',
      });
      return { ok: true };
    } catch (err) {
      return { code: err.code, message: err.message };
    }
  }, name);
  assert.equal(answer.code, 'SCTP_NOT_ENABLED', JSON.stringify(answer));
  assert.match(answer.message, /sctpCapabilities/, `the sentence says what to do: ${answer.message}`);
});
