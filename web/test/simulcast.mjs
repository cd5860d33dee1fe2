// Simulcast and SVC in real Chromium with the stock mediasoup-client (issue 14): a publisher
// sends its camera as three VP8 simulcast encodings, or as one VP9 L3T3_KEY encoding, and
// each subscriber gets one stream of the layer chosen for it; an H264 L1T3 publisher's
// temporal layers are dropped for a subscriber that asks for fewer.
//
//   node --test web/test/simulcast.mjs      (scripts/test-web.sh installs and builds what it needs)
//
// Chrome starts a publisher's send bandwidth estimate low and raises it over seconds, and only
// sends an encoding (or spatial layer) once the estimate carries it, so the tests wait on
// what the publisher's outbound-rtp stats say it sends, never on fixed sleeps.

import assert from 'node:assert/strict';

import { eventually } from '../testing/browser.mjs';
import { browserSuite } from '../testing/suite.mjs';

/**
 * The camera size the publisher asks Chrome's fake camera for. Chrome sends three simulcast
 * encodings, or three VP9 spatial layers, only from about 960x540 up (at 640x480 it sends
 * two), so the top layer is 1280 wide and the lowest a quarter of that.
 */
const FULL_WIDTH = 1280;
const FULL_HEIGHT = 720;

const suite = browserSuite('simulcast', { scenarioTimeoutMs: 180000 });
const { scenario, room } = suite;

/** The publisher's outbound-rtp rows of its camera, one per encoding. */
const outbound = (publisher) => publisher.page.evaluate(() => window.fanoutDemo.outboundVideoStats());

/** `viewer`'s row for the video of `publisher` (inbound-rtp figures and the consumer id). */
async function videoFrom(viewer, publisherId) {
  return (await viewer.stats()).find((r) => r.participantId === publisherId && r.kind === 'video');
}

/** The producer id of `viewer`'s remote video from `publisherId`. */
async function videoProducerOf(viewer, publisherId) {
  const row = await eventually(() => videoFrom(viewer, publisherId), { describe: () => `${viewer.name} has no video of ${publisherId}` });
  return row.producerId;
}

/**
 * Polls `viewer`'s video of `publisherId` every 250 ms until `done(row)`, and measures how it
 * decoded meanwhile: the longest time framesDecoded stood still, and frames dropped. Counts
 * from `since` (a row taken before the change being watched was asked for) when given: a
 * switch can be over by the first poll, and the frames across it still count.
 */
async function watch(viewer, publisherId, done, { timeoutMs = 60000, what, since = null } = {}) {
  const started = Date.now();
  let first = since;
  let last = null;
  let lastProgress = Date.now();
  let longestStallMs = 0;
  for (;;) {
    const row = await videoFrom(viewer, publisherId);
    if (row) {
      first ??= row;
      if (last && row.framesDecoded > last.framesDecoded) lastProgress = Date.now();
      longestStallMs = Math.max(longestStallMs, Date.now() - lastProgress);
      last = row;
      if (done(row)) {
        return { row, longestStallMs, framesDecoded: row.framesDecoded - first.framesDecoded, framesDropped: (row.framesDropped ?? 0) - (first.framesDropped ?? 0), ms: Date.now() - started };
      }
    }
    if (Date.now() - started > timeoutMs) {
      throw new Error(`${what ?? 'condition'} not met within ${timeoutMs / 1000} s; ${viewer.name} sees ${JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Waits until the publisher sends its top layer at full width (Chrome's estimate ramps up). */
async function publisherSendsFullWidth(publisher) {
  const started = Date.now();
  let rows = [];
  await eventually(
    async () => {
      rows = await outbound(publisher);
      return rows.some((r) => r.frameWidth === FULL_WIDTH && r.framesEncoded > 0);
    },
    { timeoutMs: 150000, intervalMs: 500, describe: () => `${publisher.name} sends ${JSON.stringify(rows)}` },
  );
  console.log(`figure: publisher sends its ${FULL_WIDTH}-wide layer after ${Date.now() - started} ms of waiting; ${JSON.stringify(rows)}`);
}

/**
 * The shared story: `ada` publishes with `params`; bob watches at the top layer; carol asks for
 * the lowest spatial layer, gets about a quarter of the width, asks for the top again and gets
 * it back, and neither subscriber's picture freezes meanwhile.
 */
/** A room where `ada` publishes with `params` and `bob` and `carol` only watch. */
async function oneSenderTwoViewers(open, label, params) {
  const name = room(label);
  const ada = await open('ada', { room: name, ...params });
  await ada.join();
  const adaId = await ada.participantId();
  // The subscribers only watch: on two cores, more encoders would make Chrome scale ada down.
  const bob = await open('bob', { room: name, publish: '0' });
  await bob.join();
  const carol = await open('carol', { room: name, publish: '0' });
  await carol.join();
  return { ada, adaId, bob, carol };
}

async function layersPerSubscriber(open, label, params) {
  const { ada, adaId, bob, carol } = await oneSenderTwoViewers(open, label, { width: FULL_WIDTH, height: FULL_HEIGHT, ...params });
  await publisherSendsFullWidth(ada);

  const top = await watch(bob, adaId, (r) => r.frameWidth === FULL_WIDTH, { what: `bob decodes ada at ${FULL_WIDTH}` });
  console.log(`${label}: bob decodes ${top.row.frameWidth}x${top.row.frameHeight} (${top.row.codec})`);
  await watch(carol, adaId, (r) => r.frameWidth === FULL_WIDTH, { what: `carol decodes ada at ${FULL_WIDTH} first` });

  const producerId = await videoProducerOf(carol, adaId);
  const beforeDown = await videoFrom(carol, adaId);
  const kept = await carol.page.evaluate((id) => window.fanoutDemo.client.setPreferredLayers(id, { spatialLayer: 0 }), producerId);
  assert.equal(kept.spatialLayer, 0, `the preference is kept: ${JSON.stringify(kept)}`);
  const down = await watch(carol, adaId, (r) => r.frameWidth > 0 && r.frameWidth <= FULL_WIDTH / 4 + 8, { what: 'carol at the lowest layer', since: beforeDown });
  console.log(
    `figure: ${label} switch down to ${down.row.frameWidth}x${down.row.frameHeight} took ${down.ms} ms; longest stall ${down.longestStallMs} ms; ${down.framesDecoded} frames decoded, ${down.framesDropped} dropped meanwhile`,
  );
  assert.ok(down.row.frameWidth >= FULL_WIDTH / 4 - 8, `about a quarter of ${FULL_WIDTH}: ${down.row.frameWidth}`);
  // It stays there while bob keeps the top layer.
  const steady = await watch(carol, adaId, (r) => r.framesDecoded > down.row.framesDecoded + 30, { what: 'carol goes on decoding the lowest layer' });
  assert.ok(steady.row.frameWidth <= FULL_WIDTH / 4 + 8, `still the lowest layer: ${JSON.stringify(steady.row)}`);
  assert.equal((await videoFrom(bob, adaId)).frameWidth, FULL_WIDTH, 'bob keeps the top layer');
  const layers = await carol.page.evaluate(
    (id) => window.fanoutDemo.client.remoteTracks().find((t) => t.producerId === id)?.layers ?? null,
    producerId,
  );
  assert.equal(layers?.spatialLayer, 0, `carol's client was told (remote-track-layers): ${JSON.stringify(layers)}`);

  const beforeUp = await videoFrom(carol, adaId);
  await carol.page.evaluate((id) => window.fanoutDemo.client.setPreferredLayers(id, { spatialLayer: 2 }), producerId);
  const up = await watch(carol, adaId, (r) => r.frameWidth === FULL_WIDTH, { what: 'carol back at the top layer', since: beforeUp });
  console.log(
    `figure: ${label} switch up took ${up.ms} ms; longest stall ${up.longestStallMs} ms; ${up.framesDecoded} frames decoded, ${up.framesDropped} dropped meanwhile`,
  );
  for (const [what, phase] of [['down', down], ['steady', steady], ['up', up]]) {
    assert.ok(phase.framesDecoded > 0, `${what}: frames decoded throughout`);
    assert.ok(phase.longestStallMs < 2000, `${what}: the picture never stood still for long (${phase.longestStallMs} ms)`);
  }
}

scenario('a VP8 publisher with three simulcast encodings: each subscriber gets the layer it asks for', async (open) => {
  await layersPerSubscriber(open, 'vp8', { codec: 'VP8', simulcast: '1' });
});

scenario('a VP9 L3T3_KEY publisher: each subscriber gets the spatial layers it asks for', async (open) => {
  await layersPerSubscriber(open, 'vp9', { codec: 'VP9', scalabilityMode: 'L3T3_KEY' });
});

/** Frames `viewer` decodes of `publisherId`'s video per second, over `ms` (from framesDecoded). */
async function decodedFps(viewer, publisherId, ms = 3000) {
  const a = await videoFrom(viewer, publisherId);
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, ms));
  const b = await videoFrom(viewer, publisherId);
  return ((b.framesDecoded - a.framesDecoded) * 1000) / (Date.now() - t0);
}

scenario('an H264 L1T3 publisher: a subscriber asking for temporal layer 0 gets a quarter of the frame rate', async (open) => {
  // Debian's Chromium encodes H264 with OpenH264, which makes temporal layers; their ids reach
  // the worker in the dependency descriptor header extension (H264 has no payload descriptor
  // carrying them), and the worker drops the upper layers for a subscriber that asks.
  const { ada, adaId, bob, carol } = await oneSenderTwoViewers(open, 'h264t', { width: 640, height: 360, codec: 'H264', scalabilityMode: 'L1T3' });
  await watch(carol, adaId, (r) => r.framesDecoded > 60, { what: 'carol decodes ada' });
  const row = await videoFrom(carol, adaId);
  assert.match(row.codec ?? '', /H264/i, `the call runs H264: ${JSON.stringify(row)}`);
  const [sent] = await outbound(ada);
  assert.equal(sent?.scalabilityMode, 'L1T3', `Chromium encodes L1T3: ${JSON.stringify(sent)}`);

  const full = await decodedFps(carol, adaId);
  const producerId = await videoProducerOf(carol, adaId);
  const kept = await carol.page.evaluate((id) => window.fanoutDemo.client.setPreferredLayers(id, { spatialLayer: 0, temporalLayer: 0 }), producerId);
  assert.equal(kept.temporalLayer, 0, `the preference is kept: ${JSON.stringify(kept)}`);
  // The change takes effect at once (temporal layer 0 frames are decodable on their own).
  await new Promise((r) => setTimeout(r, 1000));
  const since = await videoFrom(carol, adaId);
  const reduced = await decodedFps(carol, adaId);
  const steady = await watch(carol, adaId, (r) => r.framesDecoded > since.framesDecoded + 10, { what: 'carol goes on decoding layer 0', since });
  const bobFps = await decodedFps(bob, adaId);
  console.log(`figure: H264 L1T3 decoded fps: all layers ${full.toFixed(1)}, temporal layer 0 ${reduced.toFixed(1)}, the other subscriber meanwhile ${bobFps.toFixed(1)}`);
  assert.ok(full > 12, `all layers decode at a camera's rate: ${full}`);
  assert.ok(reduced < full * 0.4 && reduced > full * 0.12, `layer 0 is about a quarter of the rate: ${reduced} of ${full}`);
  assert.ok(bobFps > full * 0.7, `bob keeps every layer: ${bobFps} of ${full}`);
  assert.ok(steady.longestStallMs < 2000, `no freeze at layer 0 (${steady.longestStallMs} ms)`);
  assert.equal(steady.framesDropped, 0, 'the decoder drops nothing: what it gets is a whole temporal layer');

  await carol.page.evaluate((id) => window.fanoutDemo.client.setPreferredLayers(id, { spatialLayer: 0, temporalLayer: 2 }), producerId);
  await new Promise((r) => setTimeout(r, 1000));
  const back = await decodedFps(carol, adaId);
  console.log(`figure: H264 L1T3 back at temporal layer 2: ${back.toFixed(1)} fps`);
  assert.ok(back > full * 0.7, `every layer again: ${back} of ${full}`);
});
