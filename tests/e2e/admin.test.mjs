// The admin console in headless Chromium against two switchboard processes
// sharing the local Redis: a wrong token is refused, the right one logs in,
// both nodes show, a room's traffic moves the console without a reload,
// a look-up lists the room, and "disconnect" closes a user's socket on
// the other node. Screenshots (desktop and phone) go to target/screenshots.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { WAIT, launchBrowser } from './page.mjs';
import { startServer } from './server.mjs';

const REDIS_URL = process.env.SWITCHBOARD_TEST_REDIS ?? 'redis://127.0.0.1:6379';
const PREFIX = `e2e-admin-${randomUUID().slice(0, 8)}`;
const TOKEN = `admin-${randomUUID()}`;
const SHOTS = resolve(dirname(fileURLToPath(import.meta.url)), '../../target/screenshots');

let node1;
let node2;
let browser;
const sockets = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const env = (id) => ({ REDIS_URL, REDIS_PREFIX: PREFIX, NODE_ID: id, ADMIN_TOKEN: TOKEN });
  node1 = await startServer(env('admin-node-1'));
  node2 = await startServer(env('admin-node-2'));
  browser = await launchBrowser();
});

after(async () => {
  for (const ws of sockets) ws.terminate();
  try {
    await browser?.close();
  } finally {
    assert.equal(await node1.stop(), 0);
    assert.equal(await node2.stop(), 0);
  }
});

/** A /ws client of `server` named `name`, joined to `room`. */
async function member(server, name, room) {
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws?name=${name}`);
  sockets.push(ws);
  const frames = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
  await new Promise((ok, fail) => { ws.once('open', ok); ws.once('error', fail); });
  ws.send(JSON.stringify({ type: 'join', room }));
  const end = Date.now() + WAIT;
  while (!frames.some((f) => f.type === 'joined')) {
    assert.ok(Date.now() < end, 'joined');
    await new Promise((r) => setTimeout(r, 20));
  }
  return ws;
}

test('log in, watch two nodes and a busy room, look it up and disconnect a user', async (t) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${node1.url}/admin`);

  // A wrong token: refused, said so, no session.
  await page.getByTestId('admin-token').fill('not-the-token-at-all');
  await page.getByTestId('login').click();
  await page.locator('[data-testid="login-error"]:text("not the admin token")').waitFor();
  assert.equal((await context.cookies()).length, 0);

  await page.getByTestId('admin-token').fill(TOKEN);
  await page.getByTestId('login').click();
  await page.locator('[data-testid="node"][data-node="admin-node-1"]').waitFor();
  await page.locator('[data-testid="node"][data-node="admin-node-2"]').waitFor();
  const [cookie] = await context.cookies();
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.ok(!page.url().includes(TOKEN), 'no token in the URL');

  // Traffic in a room spread over both nodes.
  const room = `ops-${randomUUID().slice(0, 8)}`;
  const ann = await member(node1, 'ann', room);
  const ben = await member(node2, 'ben', room);
  let sending = true;
  const traffic = (async () => {
    for (let i = 0; sending; i++) {
      ann.send(JSON.stringify({ type: 'send', room, text: `tick ${i}` }));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    const row = page.locator(`[data-testid="busy-room"][data-room="${room}"]`);
    await row.waitFor({ timeout: 15_000 });
    await page.waitForFunction(
      (r) => Number(document.querySelector(`[data-testid="busy-room"][data-room="${r}"]`)?.dataset.rate) > 5,
      room,
      { timeout: 15_000 },
    );
    // The chart has points, and the nodes' connections add up.
    assert.ok((await page.locator('[data-testid="chart"] polyline').count()) === 2);
    await page.waitForFunction(() => Number(document.getElementById('totals').dataset.connections) >= 2);
    await page.screenshot({ path: `${SHOTS}/admin-console.png`, fullPage: true });
    t.diagnostic(`screenshot: ${SHOTS}/admin-console.png`);

    // Look the room up from its row: both names, the last messages.
    await row.click();
    await page.locator(`[data-testid="lookup"][data-room="${room}"]`).waitFor();
    await page.locator('[data-testid="member"][data-name="ann"]').waitFor();
    await page.locator('[data-testid="member"][data-name="ben"]').waitFor();
    await page.locator('[data-testid="lookup-message"]').first().waitFor();
  } finally {
    sending = false;
    await traffic;
  }

  // Disconnect ben (on node 2) from node 1's console.
  const closed = new Promise((ok) => ben.once('close', (code) => ok(code)));
  await page.locator('[data-testid="disconnect"][data-name="ben"]').click();
  await page.locator('[data-testid="action-result"]:text("ben")').waitFor();
  assert.equal(await closed, 4002);
  await page.locator('[data-testid="member"][data-name="ben"]').waitFor({ state: 'detached' });
  await page.screenshot({ path: `${SHOTS}/admin-lookup.png`, fullPage: true });

  // The same console on a phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.locator('[data-testid="node"][data-node="admin-node-2"]').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  await page.screenshot({ path: `${SHOTS}/admin-phone.png`, fullPage: true });
  t.diagnostic(`screenshots: ${SHOTS}/admin-lookup.png, ${SHOTS}/admin-phone.png`);

  // Logging out ends the session; the console's endpoints refuse it then.
  await page.getByTestId('logout').click();
  await page.getByTestId('admin-token').waitFor();
  const res = await fetch(`${node1.url}/admin/live`);
  assert.equal(res.status, 401);
  assert.deepEqual(errors, []);
  await context.close();
});
