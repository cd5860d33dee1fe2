// What every browser test file in web/test/ sets up the same way: one product (signalling and
// worker) and one Chromium for the whole file, scenarios whose participants are closed after
// them (a failure carries their consoles and the product's log), room names that don't
// collide between runs, and figures printed in the one format the test logs are read in.

import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { Participant, launchBrowser } from './browser.mjs';
import { startProduct } from './product.mjs';

/**
 * Starts the product and a browser before the file's tests and stops both after them. The
 * returned suite's `product` and `browser` are set once the tests run; `scenario` runs one
 * test against them, `room(label)` names a fresh room.
 */
export function browserSuite(prefix, { scenarioTimeoutMs = 120000 } = {}) {
  const suite = {
    product: null,
    browser: null,
    room: (label) => `${prefix}-${label}-${randomBytes(3).toString('hex')}`,
    /**
     * One scenario: `body(open)` opens participants with `open(name, params, inBrowser?)`;
     * all are closed afterwards, and a failure carries their consoles and the product's log.
     */
    scenario(name, body, { timeoutMs = scenarioTimeoutMs, skip } = {}) {
      test(name, { timeout: timeoutMs, skip }, async () => {
        const participants = [];
        const open = async (who, params, inBrowser = suite.browser) => {
          const p = await Participant.open(inBrowser, suite.product, who, params);
          participants.push(p);
          return p;
        };
        try {
          await body(open);
        } catch (err) {
          err.message += `\n${participants.map((p) => p.diagnostics()).join('\n')}\n${suite.product.logs()}`;
          throw err;
        } finally {
          await Promise.all(participants.map((p) => p.close()));
        }
      });
    },
  };
  before(
    async () => {
      suite.product = await startProduct();
      suite.browser = await launchBrowser();
      console.log(`product (${suite.product.mode}) at ${suite.product.baseUrl}; logs in ${suite.product.logDir}`);
    },
    { timeout: 20 * 60 * 1000 },
  );
  after(async () => {
    await suite.browser?.close();
    await suite.product?.stop();
  });
  return suite;
}

/** Prints `figure: name = value unit` (or n/a): timings are figures, never assertions. */
export function figure(name, value, unit = 'ms') {
  console.log(`figure: ${name} = ${value === null || value === undefined ? 'n/a' : `${Math.round(value)} ${unit}`}`);
}
