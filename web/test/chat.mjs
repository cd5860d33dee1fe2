// Room chat in real Chromium through the demo page (issue 17): messages with the sender's name
// from its token, the history a late joiner gets, a refused message's reason on the page, and
// a moderator's delete reaching everybody. Nobody publishes media (publish=0): chat needs no
// media transport.
//
//   node --test web/test/chat.mjs

import assert from 'node:assert/strict';

import { eventually } from '../testing/browser.mjs';
import { browserSuite, figure } from '../testing/suite.mjs';

const suite = browserSuite('chat');
const { scenario, room } = suite;

/** Types `text` into the chat box and sends it. */
async function say(participant, text) {
  await participant.page.fill('#chat-text', text);
  await participant.page.click('#chat-send');
}

/** The chat as the page shows it: [{id, from, text, deletable}]. */
function chatLines(participant) {
  return participant.page.$$eval('#chat-messages li', (items) =>
    items.map((li) => ({
      id: li.dataset.messageId,
      from: li.querySelector('.from').firstChild.textContent,
      text: li.querySelector('.text').textContent,
      deletable: li.querySelector('button.delete') !== null,
    })),
  );
}

/** Waits until the page shows exactly `expected` ([from, text] pairs, in order). */
async function showsChat(participant, expected) {
  let lines = [];
  await eventually(
    async () => {
      lines = await chatLines(participant);
      return JSON.stringify(lines.map((l) => [l.from, l.text])) === JSON.stringify(expected);
    },
    { timeoutMs: 10000, describe: () => `${participant.name}'s chat shows ${JSON.stringify(lines)}, expected ${JSON.stringify(expected)}` },
  );
  return lines;
}

function chatError(participant) {
  return participant.page.evaluate(() => {
    const box = document.getElementById('chat-error');
    return box.hidden ? null : { code: box.dataset.code, text: box.textContent };
  });
}

scenario('two participants chat under their token names and a late joiner sees the history', async (open) => {
  const name = room('talk');
  const ada = await open('ada', { room: name, publish: '0' });
  await ada.join();
  const bob = await open('bob', { room: name, publish: '0' });
  await bob.join();

  const sentAt = performance.now();
  await say(ada, 'hello bob <b>not bold</b>');
  await showsChat(bob, [['ada', 'hello bob <b>not bold</b>']]);
  figure('chat message from send click to shown at the other participant', performance.now() - sentAt);
  assert.equal(await bob.page.$$eval('#chat-messages b', (b) => b.length), 0, 'text is shown as text, not HTML');
  await say(bob, 'hi ada');
  await showsChat(ada, [['ada (you)', 'hello bob <b>not bold</b>'], ['bob', 'hi ada']]);
  assert.equal(await ada.page.inputValue('#chat-text'), '', 'the box is emptied once sent');

  const cleo = await open('cleo', { room: name, publish: '0' });
  await cleo.join();
  await showsChat(cleo, [['ada', 'hello bob <b>not bold</b>'], ['bob', 'hi ada']]);
  await say(cleo, 'sorry I am late');
  await showsChat(ada, [['ada (you)', 'hello bob <b>not bold</b>'], ['bob', 'hi ada'], ['cleo', 'sorry I am late']]);
});

scenario('an over-long message is refused with the reason on the page and reaches nobody', async (open) => {
  const name = room('long');
  const ada = await open('ada', { room: name, publish: '0' });
  await ada.join();
  const bob = await open('bob', { room: name, publish: '0' });
  await bob.join();

  const long = 'x'.repeat(2001);
  await say(ada, long);
  let error;
  await eventually(async () => (error = await chatError(ada)) !== null, { timeoutMs: 10000, describe: () => 'no chat error shown' });
  assert.equal(error.code, 'CHAT_MESSAGE_TOO_LONG', JSON.stringify(error));
  assert.match(error.text, /2001 bytes.*2000 bytes/, 'the page says how long it is and the limit');
  assert.equal(await ada.page.inputValue('#chat-text'), long, 'the text stays in the box to shorten');

  // A shorter one goes, and the error goes away.
  await say(ada, 'x'.repeat(2000));
  await showsChat(bob, [['ada', 'x'.repeat(2000)]]);
  assert.equal(await chatError(ada), null);
  assert.equal((await chatLines(bob)).length, 1, 'the refused message never reached bob');
});

scenario('a moderator deletes a message and it disappears for everybody, late joiners included', async (open) => {
  const name = room('moderate');
  const ada = await open('ada', { room: name, publish: '0', role: 'student' });
  await ada.join();
  const bob = await open('bob', { room: name, publish: '0', role: 'student' });
  await bob.join();
  const tess = await open('tess', { room: name, publish: '0', role: 'teacher' });
  await tess.join();

  await say(ada, 'something regrettable');
  await say(bob, 'something fine');
  const atBob = await showsChat(bob, [['ada', 'something regrettable'], ['bob (you)', 'something fine']]);
  const atTess = await showsChat(tess, [['ada', 'something regrettable'], ['bob', 'something fine']]);
  const atAda = await showsChat(ada, [['ada (you)', 'something regrettable'], ['bob', 'something fine']]);
  assert.deepEqual(atBob.map((l) => l.deletable), [false, true], 'a student may delete only its own');
  assert.deepEqual(atAda.map((l) => l.deletable), [true, false], 'a student may delete only its own');
  assert.deepEqual(atTess.map((l) => l.deletable), [true, true], 'a teacher moderates');

  const deletedAt = performance.now();
  await tess.page.click(`#chat-messages li[data-message-id="${atTess[0].id}"] button.delete`);
  await showsChat(ada, [['bob', 'something fine']]);
  await showsChat(bob, [['bob (you)', 'something fine']]);
  await showsChat(tess, [['bob', 'something fine']]);
  figure('chat delete from click to gone at every participant', performance.now() - deletedAt);

  const cleo = await open('cleo', { room: name, publish: '0' });
  await cleo.join();
  await showsChat(cleo, [['bob', 'something fine']]);
});
