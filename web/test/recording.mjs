// Recording a real call (issue 17): Chromium publishes its camera (VP8, VP9, then H264) and microphone (Opus)
// through signalling to a worker started with --recording-dir; the worker's recording API
// records the room for 10 s, with the microphone muted for a while in the middle, while
// another participant goes on watching. Debian's ffprobe then reads each file's codec and
// duration, and ffmpeg decodes it whole with no error.
//
//   node --test web/test/recording.mjs      (needs ffmpeg: scripts/test.sh installs it)

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { Participant, assertReceivesFrom, launchBrowser, longestGap, sleep, watchDecoding } from '../testing/browser.mjs';
import { Child, binary, freePort, startPageServer, waitHealthy } from '../testing/product.mjs';
import { figure } from '../testing/suite.mjs';

const RECORD_MS = 10000;
const hasFfmpeg = ['ffprobe', 'ffmpeg'].every((tool) => {
  try {
    execFileSync(tool, ['-version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});

const cluster = { children: [], closers: [] };
let browser;

before(
  async () => {
    if (!hasFfmpeg) return;
    const logDir = mkdtempSync(join(tmpdir(), 'fanout-recording-'));
    cluster.logDir = logDir;
    cluster.recordings = join(logDir, 'recordings');
    const env = { RUST_LOG: process.env.RUST_LOG || 'info' };
    const workerPort = await freePort();
    const rtcMin = 26000 + (process.pid % 40) * 100;
    const worker = new Child(
      'worker',
      binary('worker'),
      ['--listen-ip', '127.0.0.1', '--http-port', String(workerPort), '--rtc-min-port', String(rtcMin), '--rtc-max-port', String(rtcMin + 99), '--rtc-tcp-port', String(await freePort()), '--recording-dir', cluster.recordings],
      { logDir, env },
    );
    cluster.children.push(worker);
    cluster.worker = `http://127.0.0.1:${workerPort}`;
    await waitHealthy(`${cluster.worker}/healthz`, cluster.children, 120000);
    const secret = randomBytes(24).toString('hex');
    const port = await freePort();
    const signalling = new Child('signalling', binary('signalling'), ['--listen-addr', '127.0.0.1', '--port', String(port), '--worker-url', cluster.worker], {
      logDir,
      env: { ...env, FANOUT_JWT_SECRET: secret },
    });
    cluster.children.push(signalling);
    await waitHealthy(`http://127.0.0.1:${port}/healthz`, cluster.children, 120000);
    const pagePort = await freePort();
    const pages = await startPageServer(secret, pagePort);
    cluster.closers.push(() => new Promise((r) => pages.close(r)));
    cluster.product = {
      pageUrl: (params) => {
        const url = new URL(`http://127.0.0.1:${pagePort}/`);
        url.searchParams.set('server', `http://127.0.0.1:${port}`);
        for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
        return url.toString();
      },
    };
    browser = await launchBrowser();
    console.log(`worker at ${cluster.worker} recording into ${cluster.recordings}; logs in ${logDir}`);
  },
  { timeout: 10 * 60 * 1000 },
);

after(async () => {
  await browser?.close();
  for (const close of cluster.closers.reverse()) await close();
  for (const child of cluster.children.reverse()) await child.stop();
});

/** One call to the worker's recording API; resolves with {status, body}. */
async function recordingApi(method, room, id) {
  const path = id === undefined ? '' : `/${encodeURIComponent(id)}`;
  const response = await fetch(`${cluster.worker}/v1/rooms/${encodeURIComponent(room)}/recordings${method === 'POST' ? '' : path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    ...(method === 'POST' ? { body: JSON.stringify({ recordingId: id }) } : {}),
  });
  return { status: response.status, body: await response.json() };
}

/** ffprobe's view of a file: {durationS, streams: [{codec_name, codec_type, width, height}]}. */
function probe(path) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration,format_name:stream=codec_name,codec_type,width,height', '-of', 'json', path], {
    encoding: 'utf8',
  });
  const parsed = JSON.parse(out);
  return { durationS: Number(parsed.format.duration), format: parsed.format.format_name, streams: parsed.streams };
}

/** What `ffmpeg -v error` says while decoding the whole file ('' when it decodes cleanly). */
function decodeErrors(path) {
  return execFileSync('ffmpeg', ['-nostdin', '-v', 'error', '-i', path, '-f', 'null', '-'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function logs() {
  return cluster.children.map((c) => `--- ${c.name} (${c.logPath})\n${c.tail(40)}`).join('\n');
}

for (const codec of ['VP8', 'VP9', 'H264']) {
  test(`10 s of a Chromium call recorded (${codec}): a file per producer that ffprobe and ffmpeg read`, { timeout: 240000, skip: hasFfmpeg ? false : 'SKIPPED: no ffprobe/ffmpeg (apt-get install -y ffmpeg)' }, async () => {
    const room = `recording-${codec.toLowerCase()}-${randomBytes(3).toString('hex')}`;
    const people = [];
    try {
      const ada = await Participant.open(browser, cluster.product, 'ada', { room, codec });
      people.push(ada);
      await ada.join();
      const bob = await Participant.open(browser, cluster.product, 'bob', { room, publish: '0' });
      people.push(bob);
      await bob.join();
      await assertReceivesFrom(bob, [ada]);

      assert.equal((await recordingApi('GET', room, 'lesson')).status, 404, 'no recording before it is started');
      const bobSees = watchDecoding(bob, ada, { intervalMs: 200 });
      const startedAt = Date.now();
      const started = await recordingApi('POST', room, 'lesson');
      assert.equal(started.status, 201, JSON.stringify(started.body));
      assert.equal(started.body.state, 'recording');
      assert.equal((await recordingApi('POST', room, 'lesson')).status, 200, 'starting it again is the same recording');

      // Muted in the middle: a pause must not corrupt the audio file.
      await sleep(4000);
      await ada.page.click('#toggle-mic');
      await sleep(2000);
      await ada.page.click('#toggle-mic');
      await sleep(RECORD_MS - (Date.now() - startedAt));
      const stopped = await recordingApi('DELETE', room, 'lesson');
      const recordedMs = Date.now() - startedAt;
      await bobSees.stop();
      assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
      assert.equal(stopped.body.state, 'stopped', JSON.stringify(stopped.body));
      assert.equal(stopped.body.error, null);
      assert.ok(stopped.body.stoppedAt, 'stoppedAt is set');

      const files = stopped.body.files;
      assert.deepEqual(files.map((f) => f.kind).sort(), ['audio', 'video'], JSON.stringify(files));
      for (const file of files) {
        const path = join(cluster.recordings, file.path);
        assert.ok(existsSync(path), `${path} exists`);
        assert.equal(statSync(path).size, file.bytes, `${file.kind}: the size the API reports is the file's`);
        assert.match(file.path, new RegExp(`^${room}/lesson/`), 'under <room>/<recording>/');
        const probed = probe(path);
        figure(`recording: ${file.kind} file (${file.codec}) duration by ffprobe, recorded for ${recordedMs} ms`, probed.durationS * 1000, 'ms');
        figure(`recording: ${file.kind} file size`, file.bytes / 1024, 'KiB');
        // H264 goes to (fragmented) MP4, the rest to WebM.
        const mp4 = file.kind === 'video' && codec === 'H264';
        assert.equal(file.container, mp4 ? 'mp4' : 'webm', JSON.stringify(file));
        assert.match(probed.format, mp4 ? /mp4/ : /webm|matroska/, `the container: ${probed.format}`);
        assert.equal(probed.streams.length, 1, JSON.stringify(probed.streams));
        const [stream] = probed.streams;
        if (file.kind === 'video') {
          assert.equal(stream.codec_name, codec.toLowerCase());
          assert.ok(stream.width > 0 && stream.height > 0, `a picture size: ${JSON.stringify(stream)}`);
        } else {
          assert.equal(stream.codec_name, 'opus');
        }
        assert.ok(Math.abs(probed.durationS * 1000 - recordedMs) <= 500, `${file.kind}: ffprobe says ${probed.durationS} s for ${recordedMs} ms recorded`);
        assert.ok(Math.abs(file.durationMs - probed.durationS * 1000) <= 100, `${file.kind}: the API's durationMs ${file.durationMs} is ffprobe's ${probed.durationS} s`);
        assert.equal(decodeErrors(path), '', `${file.kind}: ffmpeg decodes it with no error`);
      }
      const gap = longestGap(bobSees.progress, startedAt);
      figure('recording: longest gap in bob decoding ada while the room was recorded', gap, 'ms');
      assert.ok(gap < 2000, `bob kept decoding ada while recording (${gap} ms gap)`);
      assert.equal((await recordingApi('GET', room, 'lesson')).body.state, 'stopped', 'a stopped recording stays readable');
    } catch (err) {
      err.message += `\n${people.map((p) => p.diagnostics()).join('\n')}\n${logs()}`;
      throw err;
    } finally {
      await Promise.all(people.map((p) => p.close()));
    }
  });
}
