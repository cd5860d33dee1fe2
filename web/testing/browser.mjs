// Debian's Chromium driven by playwright-core, and a participant of the demo page.

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.FANOUT_E2E_CHROMIUM || '/usr/bin/chromium';

// Fake camera and microphone, loopback ICE, no permission prompts, plus what a headless run as
// root in a container needs. Playwright gives every launch a fresh --user-data-dir of its own.
export const CHROMIUM_ARGS = [
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  // Remote audio plays without a click (the demo's Join click counts as one for people).
  '--autoplay-policy=no-user-gesture-required',
  // Hidden pages must keep decoding at full rate.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

const launchOptions = () => ({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });

export function launchBrowser() {
  return chromium.launch(launchOptions());
}

/**
 * A browser whose process the test may kill, to close its pages abruptly (no unload, no
 * goodbye on the socket). Returns {browser, kill()}.
 */
export async function launchKillableBrowser() {
  const server = await chromium.launchServer(launchOptions());
  const browser = await chromium.connect(server.wsEndpoint());
  return {
    browser,
    kill: () => server.process().kill('SIGKILL'),
    close: async () => {
      await browser.close().catch(() => {});
      await server.close().catch(() => {});
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value; fails with `describe()` after `timeoutMs`. */
export async function eventually(check, { timeoutMs = 20000, intervalMs = 250, describe = () => '' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const detail = await describe(last);
      throw new Error(`not true within ${timeoutMs / 1000} s${detail ? `: ${detail}` : ''}${last instanceof Error ? ` (last error: ${last.message})` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** One person on the demo page, in their own browser context (own camera, own connection). */
export class Participant {
  constructor(name, page, context) {
    this.name = name;
    this.page = page;
    this.context = context;
    this.console = [];
    page.on('console', (m) => this.console.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => this.console.push(`[pageerror] ${e.message}`));
  }

  /** Opens the demo page; `params` are its URL parameters (room, name, codec, token). */
  static async open(browser, product, name, params) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const participant = new Participant(name, page, context);
    await page.goto(product.pageUrl({ name, ...params }));
    return participant;
  }

  /** Clicks Join and waits for the page to be in the room (or to show why not). */
  async join({ expectError = false, timeoutMs = 30000 } = {}) {
    await this.page.click('#join');
    await this.page.waitForFunction(() => ['joined', 'error'].includes(document.body.dataset.state), null, { timeout: timeoutMs });
    const state = await this.page.evaluate(() => document.body.dataset.state);
    if (!expectError && state !== 'joined') {
      throw new Error(`${this.name} could not join: ${await this.message()}\n${this.console.join('\n')}`);
    }
    return state;
  }

  /** The visible message, or '' when none is shown. */
  message() {
    return this.page.evaluate(() => {
      const box = document.getElementById('message');
      return box.hidden ? '' : box.textContent;
    });
  }

  participantId() {
    return this.page.evaluate(() => window.fanoutDemo.client?.participantId ?? null);
  }

  /** Every remote stream's getStats() figures (see demo.js allStats). */
  stats() {
    return this.page.evaluate(() => window.fanoutDemo.stats());
  }

  /** Names in the participant list. */
  participantList() {
    return this.page.$$eval('#participants li', (items) => items.map((li) => li.dataset.participantId));
  }

  /** Participant ids with a tile on this page. */
  tiles() {
    return this.page.$$eval('#tiles .tile.remote', (tiles) => tiles.map((t) => t.dataset.participantId));
  }

  /** Whether the tile of `participantId` shows a playing remote video. */
  showsVideoOf(participantId) {
    return this.page.evaluate((id) => {
      const tile = document.querySelector(`#tiles .tile.remote[data-participant-id="${id}"]`);
      const video = tile?.querySelector('video');
      return Boolean(tile && !tile.classList.contains('no-video') && video?.srcObject && video.videoWidth > 0);
    }, participantId);
  }

  /**
   * The send-side bandwidth estimate of this participant's `kind` producer's transport
   * (availableOutgoingBitrate of the selected candidate pair, from the RTCRtpSender's stats),
   * in bit/s; null before the transport is up.
   */
  availableOutgoingBitrate(kind = 'video') {
    return this.page.evaluate(async (k) => {
      const producer = window.fanoutDemo.producers.get(k);
      if (!producer) return null;
      let bps = null;
      (await producer.getStats()).forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && s.availableOutgoingBitrate !== undefined) bps = s.availableOutgoingBitrate;
      });
      return bps;
    }, kind);
  }

  /** The id of this participant's transport of `direction`, or null. */
  transportId(direction) {
    return this.page.evaluate((d) => window.fanoutDemo.client?.transport(d)?.id ?? null, direction);
  }

  /** Transports the server closed under this page: [{direction, code, at}]. */
  transportCloses() {
    return this.page.evaluate(() => window.fanoutDemo.transportCloses);
  }

  joinToFirstRemoteFrameMs() {
    return this.page.evaluate(() => window.fanoutDemo.joinToFirstRemoteFrameMs);
  }

  /** Closes one of this participant's producers (by kind) through the client library. */
  unpublish(kind) {
    return this.page.evaluate(async (k) => {
      const demo = window.fanoutDemo;
      const producer = demo.producers.get(k);
      await demo.client.unpublish(producer);
      demo.producers.delete(k);
      return producer.id;
    }, kind);
  }

  async leave() {
    await this.page.click('#leave');
    await this.page.waitForFunction(() => document.body.dataset.state === 'idle');
  }

  async close() {
    await this.context.close().catch(() => {});
  }

  diagnostics() {
    return `--- console of ${this.name}\n${this.console.slice(-50).join('\n')}`;
  }
}

/**
 * Waits until `viewer` decodes video and receives audio from each of `senders`, with figures
 * growing between two samples. Returns the last stats rows.
 */
export async function assertReceivesFrom(viewer, senders, { timeoutMs = 30000, videoCodec } = {}) {
  const ids = await Promise.all(senders.map((s) => s.participantId()));
  const ready = (rows, previous) =>
    ids.every((id) => {
      const video = rows.find((r) => r.participantId === id && r.kind === 'video');
      const audio = rows.find((r) => r.participantId === id && r.kind === 'audio');
      if (!video || !audio || !previous) return false;
      const pv = previous.find((r) => r.producerId === video.producerId);
      const pa = previous.find((r) => r.producerId === audio.producerId);
      return (
        video.framesDecoded > 0 &&
        pv &&
        video.framesDecoded > pv.framesDecoded &&
        audio.packetsReceived > 0 &&
        pa &&
        audio.packetsReceived > pa.packetsReceived &&
        // The level is computed only while the track plays in an <audio> element.
        (audio.audioLevel > 0 || audio.totalAudioEnergy > 0) &&
        (!videoCodec || video.codec?.toLowerCase() === videoCodec.toLowerCase())
      );
    });
  let previous = null;
  let rows = [];
  await eventually(
    async () => {
      rows = await viewer.stats();
      const ok = ready(rows, previous);
      previous = rows;
      return ok;
    },
    {
      timeoutMs,
      intervalMs: 700,
      describe: async () =>
        `${viewer.name} does not receive from ${senders.map((s) => s.name).join(', ')} (ids ${ids.join(', ')}); stats: ${JSON.stringify(rows)}\n${viewer.diagnostics()}`,
    },
  );
  return rows;
}

/**
 * Samples what `viewer` decodes of `sender`'s video every `intervalMs` until `stop()`:
 * `progress` holds the times (ms since the epoch) of the samples that saw new frames. The
 * sender is found by its current participant id (it changes when it rejoins); a sample is
 * progress when framesDecoded grew on the same consumer, or a new consumer has frames.
 */
export function watchDecoding(viewer, sender, { intervalMs = 250 } = {}) {
  const progress = [];
  let last = null;
  let running = true;
  const done = (async () => {
    while (running) {
      const at = Date.now();
      const [rows, id] = await Promise.all([viewer.stats().catch(() => []), sender.participantId().catch(() => null)]);
      const row = rows.find((r) => r.participantId === id && r.kind === 'video');
      if (row) {
        const grew = last && last.consumerId === row.consumerId ? row.framesDecoded > last.framesDecoded : row.framesDecoded > 0;
        if (grew) progress.push(at);
        last = row;
      }
      await sleep(intervalMs);
    }
  })();
  return {
    progress,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/** The longest time between two of `times` (ascending) from `from` on, ms; Infinity if none. */
export function longestGap(times, from) {
  const after = times.filter((t) => t >= from);
  let gap = 0;
  for (let i = 1; i < after.length; i++) gap = Math.max(gap, after[i] - after[i - 1]);
  return after.length ? gap : Infinity;
}
