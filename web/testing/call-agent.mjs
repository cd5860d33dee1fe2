// Browsers in a call, driven over standard input by a test written in another language: the
// operator's drills (operator/tests/api_server/drills.rs) run the cluster, the operator and
// signalling themselves, and use this for the Chromium side, so that what rejoins and decodes
// is the real browser client on the real demo page.
//
//   node web/testing/call-agent.mjs '{"signalling": "http://127.0.0.1:8080", "secret": "..."}'
//
// It serves the demo page (tokens signed with `secret`, as product.mjs's page server does)
// and launches one Chromium. Then it reads one JSON command per line and answers each with
// one line `agent: {"id", ...}` (`"error"` when the command failed; other lines on standard
// output are logs):
//   {"id", "cmd": "open", "name", "room"}                  a page joins `room` through signalling
//   {"id", "cmd": "receives", "viewer", "senders", "timeoutMs"?}  waits until `viewer` decodes
//                                                          video and audio of each sender
//   {"id", "cmd": "watch", "pairs": [[viewer, sender], ...]}  samples what each viewer decodes of
//                                                          its sender's video every 250 ms, and
//                                                          records every page's `rejoining` events
//   {"id", "cmd": "report"}  -> {progress: {"viewer<-sender": [ms since epoch, ...]},
//                                rejoins: {name: [{reason, code?, at}]}, ids: {name: participantId},
//                                states: {name: page state}, messages: {name: shown message}}
//   {"id", "cmd": "diagnostics"} -> {text}: every page's recent console
// End of input closes the browser and the page server, and the process exits.

import { createInterface } from 'node:readline';

import { Participant, assertReceivesFrom, launchBrowser, watchDecoding } from './browser.mjs';
import { freePort, startPageServer } from './product.mjs';

const SAMPLE_MS = 250;

const options = JSON.parse(process.argv[2] ?? '{}');
if (!options.signalling || !options.secret) {
  console.error('usage: node web/testing/call-agent.mjs \'{"signalling": URL, "secret": JWT secret}\'');
  process.exit(2);
}

const pagePort = await freePort();
const pages = await startPageServer(options.secret, pagePort);
const product = {
  pageUrl: (params) => {
    const url = new URL(`http://127.0.0.1:${pagePort}/`);
    for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
    return url.toString();
  },
};
const browser = await launchBrowser();
/** Open pages by participant name. */
const people = new Map();
const progress = new Map();
const watchers = [];

function person(name) {
  const p = people.get(name);
  if (!p) throw new Error(`no participant ${name}`);
  return p;
}

const commands = {
  async open({ name, room }) {
    const p = await Participant.open(browser, product, name, { room, server: options.signalling });
    people.set(name, p);
    await p.join({ timeoutMs: 60000 });
    return { participantId: await p.participantId() };
  },
  async receives({ viewer, senders, timeoutMs = 45000 }) {
    await assertReceivesFrom(person(viewer), senders.map(person), { timeoutMs });
    return {};
  },
  async watch({ pairs }) {
    for (const p of people.values()) {
      await p.page.evaluate(() => {
        window.drillRejoins = [];
        window.fanoutDemo.client.on('rejoining', (e) => window.drillRejoins.push({ ...e, at: Date.now() }));
      });
    }
    for (const [viewer, sender] of pairs) {
      const watcher = watchDecoding(person(viewer), person(sender), { intervalMs: SAMPLE_MS });
      progress.set(`${viewer}<-${sender}`, watcher.progress);
      watchers.push(watcher);
    }
    return {};
  },
  async report() {
    const out = { progress: Object.fromEntries(progress), rejoins: {}, ids: {}, states: {}, messages: {} };
    for (const [name, p] of people) {
      out.rejoins[name] = await p.page.evaluate(() => window.drillRejoins ?? []);
      out.ids[name] = await p.participantId();
      out.states[name] = await p.page.evaluate(() => document.body.dataset.state);
      out.messages[name] = await p.message();
    }
    return out;
  },
  async diagnostics() {
    return { text: [...people.values()].map((p) => p.diagnostics()).join('\n') };
  },
};

function answer(reply) {
  process.stdout.write(`agent: ${JSON.stringify(reply)}\n`);
}

answer({ id: 0, ready: true });
const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  // One at a time, in order: a test's steps depend on the ones before.
  queue = queue.then(async () => {
    let command;
    try {
      command = JSON.parse(line);
      const run = commands[command.cmd];
      if (!run) throw new Error(`unknown command ${JSON.stringify(command.cmd)}`);
      answer({ id: command.id, ...(await run(command)) });
    } catch (err) {
      answer({ id: command?.id ?? null, error: String(err?.stack ?? err) });
    }
  });
});
lines.on('close', async () => {
  await queue;
  await Promise.all(watchers.map((w) => w.stop()));
  await Promise.all([...people.values()].map((p) => p.close().catch(() => {})));
  await browser.close();
  await new Promise((r) => pages.close(r));
  process.exit(0);
});
