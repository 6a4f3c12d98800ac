// The chat page (on the JavaScript client) across restarts of its node: a
// clean restart (the room's position survives: what was missed is
// recovered) and a crash (a new epoch: the page shows the latest history).
// Messages typed while the node is down wait and go out once it is back;
// every message shows exactly once on every page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { countText, enter, launchBrowser, openPage, waitForText } from './page.mjs';
import { startServer } from './server.mjs';

const SCREENSHOT = '/tmp/switchboard-restart.png';
const dir = mkdtempSync(join(tmpdir(), 'sb-restart-'));
const env = { DATABASE_URL: `sqlite://${join(dir, 'chat.db')}` };

let server;
let browser;

before(async () => {
  server = await startServer(env);
  browser = await launchBrowser();
});

after(async () => {
  try {
    await browser?.close();
    await server?.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function say(page, text) {
  await page.getByTestId('composer').fill(text);
  await page.getByTestId('composer').press('Enter');
}

async function restart(how) {
  const port = server.port;
  if (how === 'crash') await server.kill();
  else assert.equal(await server.stop(), 0, 'a clean stop exits 0');
  return port;
}

test('every message shows once on every page across a clean restart and a crash of the node', async (t) => {
  const room = `restart-${randomUUID().slice(0, 8)}`;
  const a = await openPage(browser, server.url);
  const b = await openPage(browser, server.url);
  await enter(a.page, 'ann', room);
  await enter(b.page, 'ben', room);
  const texts = [];
  const saying = async (page, text) => {
    texts.push(text);
    await say(page, text);
  };

  for (const how of ['clean', 'crash']) {
    for (let i = 0; i < 3; i++) await saying(a.page, `${how} before ${i} ${randomUUID().slice(0, 6)}`);
    await waitForText(b.page, texts.at(-1));
    // Acked before the node goes, so the store has them.
    await a.page.locator('[data-testid="message"][data-state="pending"]').waitFor({ state: 'detached' });

    const port = await restart(how);
    for (const { page } of [a, b]) {
      await page.locator('[data-testid="status"][data-state="reconnecting"]').waitFor();
    }
    // Typed while the node is down: shown as pending, sent when it is back.
    await saying(a.page, `${how} while down (ann) ${randomUUID().slice(0, 6)}`);
    await saying(b.page, `${how} while down (ben) ${randomUUID().slice(0, 6)}`);
    await a.page.locator('[data-testid="message"][data-state="pending"]').first().waitFor();
    await sleep(500);
    server = await startServer(env, { port });

    for (const { page } of [a, b]) {
      await page.locator('[data-testid="status"][data-state="online"]').waitFor({ timeout: 20_000 });
      // A crash started a new epoch: the page says it shows the latest.
      const gap = page.getByTestId('toast').filter({ hasText: 'could not be recovered' });
      if (how === 'crash') await gap.first().waitFor();
      else assert.equal(await gap.count(), 0, 'a clean restart loses nothing');
    }
    await saying(b.page, `${how} after (ben) ${randomUUID().slice(0, 6)}`);
    for (const [who, { page }] of [['ann', a], ['ben', b]]) {
      for (const text of texts) {
        await waitForText(page, text, 1, 20_000).catch(async (e) => {
          const shown = await page.evaluate(() => [...document.querySelectorAll('[data-testid="message"]')]
            .map((m) => `${m.dataset.state}: ${m.querySelector('[data-testid="message-text"]').textContent}`));
          throw new Error(`${who} does not show "${text}" (${how}); it shows ${JSON.stringify(shown)}`, { cause: e });
        });
      }
    }
  }
  for (const { page } of [a, b]) {
    await page.locator('[data-testid="message"][data-state="pending"]').waitFor({ state: 'detached' });
  }
  await sleep(500);
  for (const [who, { page }] of [['ann', a], ['ben', b]]) {
    for (const text of texts) assert.equal(await countText(page, text), 1, `${who} sees "${text}" once`);
    assert.equal(await page.locator('[data-testid="message"]').count(), texts.length, `${who} sees nothing else`);
  }
  await a.page.screenshot({ path: SCREENSHOT });
  t.diagnostic(`screenshot: ${SCREENSHOT}`);
  for (const { errors } of [a, b]) assert.deepEqual(errors, [], 'no uncaught page errors');
});
