// The embedded web chat page in a real (headless) Chromium: two people in one
// room see a message exactly once, the sender sees it acked, and someone who
// joins later finds it in the history.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { WAIT, countText, enter, launchBrowser, openPage as openPageAt, waitForText } from './page.mjs';
import { startServer } from './server.mjs';

const SCREENSHOT = '/tmp/switchboard-chat.png';

let server;
let browser;
const openPage = (viewport) => openPageAt(browser, server.url, viewport);

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
});

test('a message reaches the other member exactly once, is acked, and is in the history', async () => {
  const room = `e2e-${randomUUID().slice(0, 8)}`;
  const a = await openPage();
  const b = await openPage();
  await enter(a.page, 'alice', room);
  await enter(b.page, 'bob', room);

  // Markup in the text must be shown as text, never parsed.
  const text = `hello bob <b>not bold</b> & <img src=x onerror="window.pwned=1"> ${randomUUID()}`;
  await a.page.getByTestId('composer').fill(text);
  await a.page.getByTestId('composer').press('Enter');
  await expectEmptyComposer(a.page);

  await waitForText(b.page, text);
  await a.page
    .locator('[data-testid="message"][data-state="sent"]')
    .filter({ has: a.page.getByTestId('message-text').getByText(text, { exact: true }) })
    .waitFor();

  // Give a duplicate time to show up before counting.
  await sleep(500);
  assert.equal(await countText(b.page, text), 1, 'bob sees the message exactly once');
  assert.equal(await countText(a.page, text), 1, 'alice sees her message exactly once');
  const rowA = a.page.locator('[data-testid="message"]', {
    has: a.page.getByTestId('message-text').getByText(text, { exact: true }),
  });
  assert.equal(await rowA.getAttribute('data-state'), 'sent', 'alice sees her message acked');
  assert.equal(await b.page.locator('[data-testid="message-text"] b, [data-testid="message-text"] img').count(), 0);
  assert.equal(await b.page.evaluate(() => window.pwned), undefined, 'no markup was executed');
  assert.equal(await b.page.getByTestId('message-from').filter({ hasText: 'alice' }).count(), 1);

  // Who is online: each page lists both names and says how many.
  for (const { page } of [a, b]) {
    await page.getByTestId('online').filter({ hasText: '2 online' }).waitFor();
    await page.getByTestId('person').filter({ hasText: 'alice' }).waitFor();
    await page.getByTestId('person').filter({ hasText: 'bob' }).waitFor();
  }

  // Shift+Enter is a new line, Enter sends.
  const composer = b.page.getByTestId('composer');
  await composer.click();
  await composer.pressSequentially('line one');
  await composer.press('Shift+Enter');
  await composer.pressSequentially('line two');
  await composer.press('Enter');
  await waitForText(a.page, 'line one\nline two');

  // Someone joining later gets both from the history, once each.
  const c = await openPage({ width: 390, height: 760 });
  await enter(c.page, 'carol', room);
  await waitForText(c.page, text);
  await waitForText(c.page, 'line one\nline two');
  await sleep(300);
  assert.equal(await countText(c.page, text), 1, 'carol sees the history message once');
  assert.equal(await countText(c.page, 'line one\nline two'), 1);

  // Carol arrives on alice's list; when she goes, she leaves it.
  await a.page.getByTestId('person').filter({ hasText: 'carol' }).waitFor();
  await c.page.screenshot({ path: SCREENSHOT.replace('.png', '-narrow.png') });
  await c.page.context().close();
  await a.page.getByTestId('online').filter({ hasText: '2 online' }).waitFor();
  assert.equal(await a.page.getByTestId('person').filter({ hasText: 'carol' }).count(), 0);

  // The display name is remembered for next time.
  assert.equal(await a.page.evaluate(() => localStorage.getItem('switchboard.name')), 'alice');

  for (const { errors } of [a, b, c]) assert.deepEqual(errors, [], 'no uncaught page errors');
  await a.page.screenshot({ path: SCREENSHOT });
});

test('a second room, unread counters, and bad room names', async () => {
  const lobby = `e2e-${randomUUID().slice(0, 8)}`;
  const side = `e2e-side-${randomUUID().slice(0, 8)}`;
  const a = await openPage();
  const b = await openPage();
  await enter(a.page, 'dora', lobby);
  await enter(b.page, 'eve', side);

  // Alice joins a second room from the sidebar, then switches back.
  await a.page.getByTestId('join-input').fill(side);
  await a.page.getByTestId('join').click();
  await a.page.locator(`[data-testid="room"][data-room="${side}"][data-state="joined"]`).waitFor();
  await a.page.locator(`[data-testid="room"][data-room="${lobby}"]`).click();

  // A message in the room she is not looking at shows as unread.
  await b.page.getByTestId('composer').fill('psst');
  await b.page.getByTestId('send').click();
  const badge = a.page.locator(`[data-testid="room"][data-room="${side}"] [data-testid="unread"]`);
  await badge.filter({ hasText: '1' }).waitFor();
  assert.equal(await countText(a.page, 'psst'), 0, 'not shown in the other room');
  await a.page.locator(`[data-testid="room"][data-room="${side}"]`).click();
  await waitForText(a.page, 'psst');
  assert.equal(await badge.isVisible(), false, 'reading the room clears its counter');

  // An invalid room name is refused politely, before reaching the server.
  await a.page.getByTestId('join-input').fill('no spaces allowed');
  await a.page.getByTestId('join').click();
  await a.page.getByTestId('toast').first().waitFor();
  assert.equal(await a.page.locator('[data-testid="room"]').count(), 2);

  // Leaving removes the room from the list.
  await a.page.locator(`[data-testid="room"][data-room="${side}"] [data-testid="leave"]`).click();
  await a.page.locator(`[data-testid="room"][data-room="${side}"]`).waitFor({ state: 'detached' });
  for (const { errors } of [a, b]) assert.deepEqual(errors, []);
});

test('after a dropped connection the page reconnects, catches up and resends, without duplicates', async () => {
  const room = `e2e-${randomUUID().slice(0, 8)}`;
  const a = await openPage();

  // Bob's page talks to the server through a proxy the test can cut: while
  // it is down, new connections are refused; `cutAfter` cuts the connection
  // right after forwarding the send of that text, before its ack comes back.
  const net = { up: true, cutAfter: null, live: new Set() };
  const cut = () => {
    net.up = false;
    for (const ws of net.live) ws.close({ code: 4000, reason: 'test outage' }).catch(() => {});
    net.live.clear();
  };
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  await context.routeWebSocket(/\/ws\?/, (ws) => {
    if (!net.up) {
      ws.close({ code: 4001, reason: 'test outage' }).catch(() => {});
      return;
    }
    const upstream = ws.connectToServer();
    net.live.add(ws);
    ws.onMessage((frame) => {
      upstream.send(frame);
      const f = JSON.parse(String(frame));
      if (f.type === 'send' && f.text === net.cutAfter) {
        net.cutAfter = null;
        cut();
      }
    });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(server.url);
  const b = { page, errors };

  await enter(a.page, 'ann', room);
  await enter(b.page, 'ben', room);

  // Sent, then the connection drops before the ack.
  const unacked = `unacked ${randomUUID()}`;
  net.cutAfter = unacked;
  await b.page.getByTestId('composer').fill(unacked);
  await b.page.getByTestId('composer').press('Enter');
  await b.page.locator('[data-testid="status"][data-state="reconnecting"]').waitFor();
  await b.page.getByTestId('banner').waitFor({ state: 'visible' });

  // Said while Bob is away, and typed by Bob while offline.
  const missed = `missed ${randomUUID()}`;
  await a.page.getByTestId('composer').fill(missed);
  await a.page.getByTestId('composer').press('Enter');
  const offline = `offline ${randomUUID()}`;
  await b.page.getByTestId('composer').fill(offline);
  await b.page.getByTestId('composer').press('Enter');
  await b.page.locator('[data-testid="message"][data-state="pending"]').first().waitFor();
  await sleep(800);

  net.up = true;
  await b.page.locator('[data-testid="status"][data-state="online"]').waitFor();
  await b.page.getByTestId('banner').waitFor({ state: 'hidden' });
  for (const text of [unacked, missed, offline]) {
    await waitForText(a.page, text);
    await waitForText(b.page, text);
  }
  const sent = (text) =>
    b.page
      .locator('[data-testid="message"][data-state="sent"]')
      .filter({ has: b.page.getByTestId('message-text').getByText(text, { exact: true }) })
      .waitFor();
  await sent(unacked);
  await sent(offline);
  await sleep(500);
  for (const text of [unacked, missed, offline]) {
    assert.equal(await countText(a.page, text), 1, `ann sees "${text}" once`);
    assert.equal(await countText(b.page, text), 1, `ben sees "${text}" once`);
  }
  for (const { errors } of [a, b]) assert.deepEqual(errors, []);
});

async function expectEmptyComposer(page) {
  await page.waitForFunction(() => document.querySelector('[data-testid="composer"]').value === '', null, {
    timeout: WAIT,
  });
}
