// Starts Fanout for the browser tests and tells them where it is.
//
// FANOUT_E2E_MODE selects how:
//   local (default)  the README's run command, scripts/run-local.sh: signalling in embedded mode
//                    (in-process worker, demo page at /, development tokens at /dev/token), on a
//                    free port passed as PORT (and FANOUT_PORT), listening on 127.0.0.1.
//                    FANOUT_E2E_RUN_COMMAND replaces the command line (run with bash -c).
//   split            the two binaries, as in a deployment: fanout-worker, and fanout-signalling
//                    with --worker-url and an HS256 secret; this file serves web/dist and a
//                    /dev/token of its own that signs with that secret, and the page is pointed
//                    at signalling with ?server=. Binaries: FANOUT_E2E_WORKER_BIN and
//                    FANOUT_E2E_SIGNALLING_BIN, default target/{release,debug}/fanout-*.
//   external         a product already running at FANOUT_E2E_URL (nothing is started).
//
// The worker's REST address (for /v1/stats): FANOUT_E2E_WORKER_URL when set; otherwise found
// in the product's log, or at the signalling URL itself. FANOUT_E2E_WORKER_TOKEN is sent as
// its bearer token when set.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const repoDir = resolve(webDir, '..');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/** A process whose output goes to a log file, in its own process group so it can be stopped whole. */
export class Child {
  constructor(name, command, args, { env, logDir }) {
    this.name = name;
    this.logPath = join(logDir, `${name}.log`);
    const log = createWriteStream(this.logPath);
    this.output = '';
    this.exited = null;
    this.proc = spawn(command, args, {
      cwd: repoDir,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    for (const stream of [this.proc.stdout, this.proc.stderr]) {
      stream.on('data', (chunk) => {
        log.write(chunk);
        // Enough to find printed URLs; the file has everything.
        if (this.output.length < 1_000_000) this.output += chunk.toString();
      });
    }
    this.proc.on('exit', (code, signal) => {
      this.exited = { code, signal };
      log.end();
    });
  }

  /** The start and the end of the output (an error is often first, a backtrace after it). */
  tail(lines = 40) {
    const all = this.output.trim().split('\n');
    if (all.length <= lines + 20) return all.join('\n');
    return [...all.slice(0, 20), `[... ${all.length - lines - 20} lines ...]`, ...all.slice(-lines)].join('\n');
  }

  async stop() {
    if (this.exited) return;
    const group = -this.proc.pid;
    try {
      process.kill(group, 'SIGTERM');
    } catch {
      return;
    }
    for (let i = 0; i < 50 && !this.exited; i++) await sleep(100);
    if (!this.exited) {
      try {
        process.kill(group, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
}

async function httpOk(url, init) {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(2000) });
    return response.ok ? response : null;
  } catch {
    return null;
  }
}

/** Waits until `url` answers 2xx, or fails with the child's log when it exits or time runs out. */
export async function waitHealthy(url, children, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await httpOk(url)) return;
    for (const child of children) {
      if (child.exited) {
        throw new Error(
          `${child.name} exited (${JSON.stringify(child.exited)}) before ${url} answered; its log (${child.logPath}) ends:\n${child.tail()}`,
        );
      }
    }
    await sleep(250);
  }
  throw new Error(
    `${url} did not answer within ${timeoutMs / 1000} s; logs:\n` + children.map((c) => `--- ${c.logPath}\n${c.tail()}`).join('\n'),
  );
}

function urlsIn(text) {
  const urls = new Set();
  for (const match of text.matchAll(/https?:\/\/[^\s"'<>,)]+/g)) urls.add(match[0].replace(/\/+$/, '').replace(/\.$/, ''));
  return [...urls];
}

/** HS256 JWT, as an application backend would issue it. */
export function signJwt(claims, secret) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

const contentTypes = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** Serves web/dist and a /dev/token that signs with `secret` (split mode only). */
export async function startPageServer(secret, port) {
  const dist = join(webDir, 'dist');
  if (!existsSync(join(dist, 'index.html'))) throw new Error(`${dist} is not built; run npm run build in web/`);
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === '/dev/token') {
      const name = url.searchParams.get('name') || 'guest';
      const room = url.searchParams.get('room');
      const claims = {
        sub: `${name}-${randomBytes(4).toString('hex')}`,
        name,
        email: `${name}@example.test`,
        role: url.searchParams.get('role') || 'participant',
        exp: Math.floor(Date.now() / 1000) + 3600,
        ...(room ? { rooms: [room] } : {}),
      };
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ token: signJwt(claims, secret) }));
      return;
    }
    const file = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    if (file.includes('..')) {
      res.statusCode = 400;
      res.end();
      return;
    }
    try {
      const body = await readFile(join(dist, file));
      res.setHeader('content-type', contentTypes[extname(file)] ?? 'application/octet-stream');
      res.end(body);
    } catch {
      res.statusCode = 404;
      res.end('not found');
    }
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return server;
}

export function binary(name) {
  const override = process.env[`FANOUT_E2E_${name.toUpperCase()}_BIN`];
  if (override) return override;
  for (const profile of ['release', 'debug']) {
    const path = join(repoDir, 'target', profile, `fanout-${name}`);
    if (existsSync(path)) return path;
  }
  throw new Error(`no fanout-${name} binary in target/release or target/debug; build it (cargo build -p fanout-${name}) or set FANOUT_E2E_${name.toUpperCase()}_BIN`);
}

/**
 * Starts the product. Returns {mode, baseUrl, pageUrl(params), workerStats(), logs(), stop()}.
 */
export async function startProduct() {
  const mode = process.env.FANOUT_E2E_MODE || 'local';
  const logDir = mkdtempSync(join(tmpdir(), 'fanout-e2e-'));
  const startTimeoutMs = Number(process.env.FANOUT_E2E_START_TIMEOUT_S || 900) * 1000;
  const children = [];
  const closers = [];
  let baseUrl;
  let signallingUrl;
  let workerUrls = [];

  const stop = async () => {
    for (const close of closers.reverse()) await close();
    for (const child of children.reverse()) await child.stop();
  };

  try {
    if (mode === 'external') {
      baseUrl = process.env.FANOUT_E2E_URL;
      if (!baseUrl) throw new Error('FANOUT_E2E_MODE=external needs FANOUT_E2E_URL');
      baseUrl = baseUrl.replace(/\/+$/, '');
      signallingUrl = baseUrl;
    } else if (mode === 'local') {
      const port = Number(process.env.FANOUT_E2E_PORT) || (await freePort());
      // FANOUT_E2E_RUN_COMMAND: another command line for the same thing (e.g. a debug build).
      const command = process.env.FANOUT_E2E_RUN_COMMAND;
      const child = new Child('run-local', command ? 'bash' : join(repoDir, 'scripts', 'run-local.sh'), command ? ['-c', command] : [], {
        logDir,
        env: {
          PORT: String(port),
          FANOUT_PORT: String(port),
          FANOUT_LISTEN_ADDR: '127.0.0.1',
          RUST_LOG: process.env.RUST_LOG || 'info',
        },
      });
      children.push(child);
      baseUrl = `http://127.0.0.1:${port}`;
      signallingUrl = baseUrl;
      await waitHealthy(`${baseUrl}/healthz`, children, startTimeoutMs);
      // The worker's REST address, if the log names one (embedded mode may print it).
      workerUrls = urlsIn(child.output).filter((u) => !u.startsWith(baseUrl));
    } else if (mode === 'split') {
      const workerPort = await freePort();
      const signallingPort = await freePort();
      const pagePort = await freePort();
      const secret = randomBytes(24).toString('hex');
      const rtcMin = 20000 + (process.pid % 200) * 100;
      // The ICE-TCP port is one per worker: a free one, so runs side by side do not collide.
      const rtcTcpPort = await freePort();
      const worker = new Child(
        'worker',
        binary('worker'),
        ['--listen-ip', '127.0.0.1', '--http-port', String(workerPort), '--rtc-min-port', String(rtcMin), '--rtc-max-port', String(rtcMin + 99), '--rtc-tcp-port', String(rtcTcpPort)],
        { logDir, env: { RUST_LOG: process.env.RUST_LOG || 'info' } },
      );
      children.push(worker);
      const workerUrl = `http://127.0.0.1:${workerPort}`;
      await waitHealthy(`${workerUrl}/healthz`, children, startTimeoutMs);
      const signalling = new Child(
        'signalling',
        binary('signalling'),
        ['--listen-addr', '127.0.0.1', '--port', String(signallingPort), '--worker-url', workerUrl],
        { logDir, env: { FANOUT_JWT_SECRET: secret, RUST_LOG: process.env.RUST_LOG || 'info' } },
      );
      children.push(signalling);
      signallingUrl = `http://127.0.0.1:${signallingPort}`;
      await waitHealthy(`${signallingUrl}/healthz`, children, startTimeoutMs);
      const pages = await startPageServer(secret, pagePort);
      closers.push(() => new Promise((r) => pages.close(r)));
      baseUrl = `http://127.0.0.1:${pagePort}`;
      workerUrls = [workerUrl];
    } else {
      throw new Error(`unknown FANOUT_E2E_MODE ${mode}: local, split or external`);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  if (process.env.FANOUT_E2E_WORKER_URL) workerUrls = [process.env.FANOUT_E2E_WORKER_URL.replace(/\/+$/, '')];
  let statsUrl = null;
  const statsHeaders = process.env.FANOUT_E2E_WORKER_TOKEN ? { authorization: `Bearer ${process.env.FANOUT_E2E_WORKER_TOKEN}` } : {};

  /** The worker's GET /v1/stats: {rooms, peers, transports, producers, consumers, ...}. */
  async function workerStats() {
    if (!statsUrl) {
      // Embedded mode serves the in-process worker's stats at /dev/stats.
      const candidates = [...workerUrls.map((u) => `${u}/v1/stats`), `${signallingUrl}/v1/stats`, `${signallingUrl}/dev/stats`];
      for (const candidate of candidates) {
        const response = await httpOk(candidate, { headers: statsHeaders });
        const body = response && (await response.json().catch(() => null));
        if (body && typeof body.peers === 'number') {
          statsUrl = candidate;
          break;
        }
      }
      if (!statsUrl) {
        throw new Error(
          `cannot find the worker's /v1/stats (tried ${[...workerUrls, signallingUrl].join(', ')}); ` +
            'set FANOUT_E2E_WORKER_URL (and FANOUT_E2E_WORKER_TOKEN) or make the product print or proxy it',
        );
      }
    }
    const response = await fetch(statsUrl, { headers: statsHeaders });
    if (!response.ok) throw new Error(`${statsUrl} answered ${response.status}`);
    return response.json();
  }

  /**
   * Has the worker close a transport as its media engine would (`code`: ICE_CONSENT_LOST,
   * DTLS_FAILED, ...), or with `closePeerTransports` every transport of a participant at once
   * (the worker then removes it). Embedded mode only (`POST /dev/rooms/...`); null elsewhere,
   * where the tests that need it are skipped.
   */
  const devClose = async (path, code) => {
    const url = `${signallingUrl}/dev/rooms/${path}/close?code=${code}`;
    const response = await fetch(url, { method: 'POST' });
    if (!response.ok) throw new Error(`${url} answered ${response.status}: ${await response.text()}`);
  };
  const e = encodeURIComponent;
  const closeTransport = mode === 'local' ? (room, transportId, code) => devClose(`${e(room)}/transports/${e(transportId)}`, code) : null;
  const closePeerTransports =
    mode === 'local' ? (room, participantId, code) => devClose(`${e(room)}/peers/${e(participantId)}/transports`, code) : null;

  function pageUrl(params = {}) {
    const url = new URL('/', baseUrl);
    if (signallingUrl !== baseUrl) url.searchParams.set('server', signallingUrl);
    for (const [key, value] of Object.entries(params)) if (value !== undefined && value !== null) url.searchParams.set(key, value);
    return url.toString();
  }

  function logs() {
    return children.map((c) => `--- ${c.name} (${c.logPath})\n${c.tail(60)}`).join('\n');
  }

  return { mode, baseUrl, signallingUrl, pageUrl, workerStats, closeTransport, closePeerTransports, logs, logDir, stop };
}
