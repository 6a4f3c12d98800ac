// The client against the real binary: two `switchboard serve` processes
// sharing Redis and one SQLite file. A sender streams 2,000 messages while
// the node it uses is SIGKILLed twice and a receiver's connection is cut;
// every send is acked once, and both see every message once, in seq order.
// Then the refusals (too_large, forbidden, an expired token), close(), and
// history and presence as the server answers them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { connect, SwitchboardError } from '../switchboard.js';
import { binary, freePort, Node, reachable, until } from './nodes.mjs';
import { startProxy } from './proxy.mjs';

const { bin, missing } = binary();
const REDIS_URL = process.env.SWITCHBOARD_TEST_REDIS ?? 'redis://127.0.0.1:6379';
const RUN = randomBytes(4).toString('hex');
const PREFIX = `jsc-${RUN}`;
const SECRET = randomBytes(32).toString('hex');
const STREAM = 2000;

const dir = mkdtempSync(path.join(os.tmpdir(), `switchboard-js-${RUN}-`));
/** @type {Node[]} */
const nodes = [];
/** @type {{ close: () => unknown }[]} */
const closing = [];
/** @type {Node} */ let A;
/** @type {Node} */ let B;
/** @type {Node} */ let auth;
/** @type {Promise<unknown>[]} restarts under way, awaited in `after` */
const restarting = [];

/** A client of this run, closed in `after` whatever happens. */
function client(urls, options = {}) {
  const c = connect(urls, { WebSocket, backoffMin: 100, backoffMax: 1000, ...options });
  closing.push(c);
  return c;
}

/** Runs `body`; on failure adds the nodes' recent output to the error. */
async function withLogs(body) {
  try {
    await body();
  } catch (e) {
    for (const n of nodes) console.error(`\n=== ${n.label} output ===\n${n.logs(4000)}`);
    throw e;
  }
}

/** An HS256 JWT signed with the auth node's secret. */
function jwt(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

/**
 * A WebSocket class that notes what goes over the wire: how many times each
 * id was sent, and each join with its answer (asked `since`, `recovered`,
 * how many messages of history).
 */
function wire() {
  /** @type {Map<string, number>} */
  const sends = new Map();
  /** @type {{ since: boolean, recovered?: boolean, history: number }[]} */
  const joined = [];
  /** @type {Map<string, boolean>} */
  const asked = new Map();
  /** @type {Map<string, number>} error frames by code */
  const errors = new Map();
  class Noting extends WebSocket {
    constructor(/** @type {string} */ url) {
      super(url);
      this.on('message', (data) => {
        const f = JSON.parse(String(data));
        if (f.type === 'error') errors.set(f.code, (errors.get(f.code) ?? 0) + 1);
        if (f.type === 'joined') joined.push({ since: asked.get(f.ref) ?? false, recovered: f.recovered, history: f.history?.length ?? 0 });
      });
    }

    send(/** @type {string} */ data) {
      const f = JSON.parse(data);
      if (f.type === 'send') sends.set(f.id, (sends.get(f.id) ?? 0) + 1);
      if (f.type === 'join') asked.set(f.ref, f.since !== undefined);
      super.send(data);
    }
  }
  return { WebSocket: Noting, sends, joined, errors };
}

before(async () => {
  if (missing) return;
  await reachable(REDIS_URL).catch((e) => {
    throw new Error(`Redis at ${REDIS_URL} is not reachable (set SWITCHBOARD_TEST_REDIS): ${e.message}`);
  });
  const shared = {
    REDIS_URL,
    REDIS_PREFIX: PREFIX,
    DATABASE_URL: `sqlite://${dir}/db.sqlite`,
    RECOVERY_WINDOW: '5000',
    RATE_LIMIT_PER_SEC: '1000',
    RATE_LIMIT_BURST: '1000',
  };
  A = new Node('node A', bin, await freePort(), { ...shared, NODE_ID: `jsc-${RUN}-a` });
  B = new Node('node B', bin, await freePort(), { ...shared, NODE_ID: `jsc-${RUN}-b` });
  auth = new Node('auth node', bin, await freePort(), {
    DATABASE_URL: 'sqlite::memory:',
    AUTH: 'required',
    JWT_SECRET: SECRET,
    NODE_ID: `jsc-${RUN}-auth`,
  });
  nodes.push(A, B, auth);
  await Promise.all(nodes.map((n) => n.start()));
});

after(async () => {
  for (const c of closing) {
    try { c.close(); } catch {}
  }
  await Promise.all(nodes.map((n) => n.stop().catch(() => n.kill())));
  await Promise.allSettled(restarting);
  await Promise.all(nodes.map((n) => n.kill()));
  rmSync(dir, { recursive: true, force: true });
  // The run's keys in Redis (they would expire with RECOVERY_TTL anyway).
  const cli = promisify(execFile);
  try {
    const { stdout } = await cli('redis-cli', ['-u', REDIS_URL, '--scan', '--pattern', `*${PREFIX}*`]);
    const keys = stdout.split('\n').filter(Boolean);
    for (let i = 0; i < keys.length; i += 200) await cli('redis-cli', ['-u', REDIS_URL, 'DEL', ...keys.slice(i, i + 200)]);
  } catch {}
});

const opts = { skip: missing ?? false };

test('text over 4096 bytes is refused with too_large; 4096 bytes is acked', opts, () => withLogs(async () => {
  const c = client([B.url], { name: 'big' });
  const room = await c.join(`big-${RUN}`);
  await assert.rejects(room.send('x'.repeat(4097)), (e) => e instanceof SwitchboardError && e.code === 'too_large');
  // Escaped as JSON: 2,048 quotes cost 4,096 bytes, one more is too many.
  await assert.rejects(room.send('"'.repeat(2049)), (e) => e.code === 'too_large');
  const ack = await room.send('"'.repeat(2048));
  assert.equal(typeof ack.id, 'string');
  assert.equal((await room.send('y'.repeat(4096))).seq, ack.seq + 1);
  c.close();
}));

test('room.history() and room.presence() return the server\'s answers', opts, () => withLogs(async () => {
  const name = `hist-${RUN}`;
  const ann = client([A.url], { name: `ann-${RUN}` });
  const bob = client([B.url], { name: `bob-${RUN}` });
  const annRoom = await ann.join(name, { history: 0 });
  const bobRoom = await bob.join(name, { presence: true });
  const acks = [];
  for (const text of ['one', 'two', 'three']) acks.push(await annRoom.send(text));

  const history = await bobRoom.history();
  const raw = await (await fetch(`${B.url}/api/rooms/${name}/messages`)).json();
  assert.deepEqual(history, raw);
  assert.deepEqual(history.map((m) => m.id), acks.map((a) => a.id));
  assert.deepEqual(history.map((m) => m.text), ['one', 'two', 'three']);
  assert.ok(history.every((m) => m.from === `ann-${RUN}` && m.room === name));
  const older = await bobRoom.history({ before: acks[2].id, limit: 1 });
  assert.deepEqual(older.map((m) => m.id), [acks[1].id]);

  const ids = acks.map((a) => a.seq);
  assert.deepEqual(ids, [ids[0], ids[0] + 1, ids[0] + 2], 'acks carry consecutive positions');

  const who = await bobRoom.presence();
  const rawWho = await (await fetch(`${A.url}/api/rooms/${name}/presence`)).json();
  assert.equal(who.count, 2);
  assert.deepEqual(who.members.map((m) => m.name).sort(), [`ann-${RUN}`, `bob-${RUN}`]);
  assert.deepEqual(who, { count: rawWho.count, members: rawWho.members, truncated: rawWho.truncated });
  assert.ok(who.members.every((m) => m.connections === 1 && typeof m.since === 'number'));

  const changes = [];
  bobRoom.on('presence', (p) => changes.push(p));
  await annRoom.leave();
  await until(() => changes.some((p) => p.event === 'leave' && p.name === `ann-${RUN}`), 'the leave event');
  assert.equal(bobRoom.count, 1);
  assert.equal((await bobRoom.presence()).count, 1);
  await assert.rejects(annRoom.send('after leaving'), (e) => e.code === 'not_joined');
  ann.close();
  bob.close();
}));

test('close() rejects the sends waiting for their ack with closed and leaves the state closed', opts, () => withLogs(async () => {
  const c = client([A.url], { name: 'closer' });
  const states = [];
  c.on('state', (s) => states.push(s));
  const room = await c.join(`close-${RUN}`);
  const pending = Array.from({ length: 20 }, (_, i) => room.send(`pending ${i}`));
  c.close();
  const results = await Promise.allSettled(pending);
  assert.ok(results.every((r) => r.status === 'rejected' && r.reason.code === 'closed'), JSON.stringify(results.map((r) => r.status)));
  assert.equal(c.state, 'closed');
  assert.equal(states.at(-1), 'closed');
  await assert.rejects(room.send('after'), (e) => e.code === 'closed');
  await assert.rejects(c.join('another'), (e) => e.code === 'closed');
  await sleep(300);
  assert.equal(c.state, 'closed', 'no reconnect after close');
}));

test('a join the token\'s rooms claim does not allow is refused with forbidden', opts, () => withLogs(async () => {
  const token = jwt({ sub: 'carol', exp: now() + 600, rooms: [`team-${RUN}-*`] });
  const c = client([auth.url], { token });
  await assert.rejects(c.join(`secret-${RUN}`), (e) => e instanceof SwitchboardError && e.code === 'forbidden');
  const room = await c.join(`team-${RUN}-a`);
  const ack = await room.send('allowed');
  assert.equal(c.state, 'open');
  // history over HTTP carries the token, and the room is allowed.
  const history = await room.history();
  assert.deepEqual(history.map((m) => [m.id, m.from]), [[ack.id, 'carol']]);
  c.close();
}));

test('getToken is asked again after the server refused an expired token, then connects', opts, () => withLogs(async () => {
  const given = [];
  const c = client([auth.url], {
    backoffMin: 50,
    getToken: async () => {
      const exp = given.length === 0 ? now() - 3600 : now() + 600;
      const token = jwt({ sub: 'dave', exp, rooms: ['*'] });
      given.push({ exp, token });
      return token;
    },
  });
  const room = await c.join(`token-${RUN}`);
  assert.equal(given.length, 2, 'asked once, refused, asked again');
  assert.ok(given[0].exp < now() && given[1].exp > now());
  assert.equal(c.state, 'open');
  const ack = await room.send('with a fresh token');
  assert.equal((await room.history()).at(-1).id, ack.id);
  // The refusal of the expired token is the server's: it answers 401 to it.
  const refused = await new Promise((resolve, reject) => {
    const ws = new WebSocket(`${auth.url.replace('http', 'ws')}/ws?token=${given[0].token}`);
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
    });
    ws.on('open', () => { ws.close(); reject(new Error('the expired token was accepted')); });
    ws.on('error', () => {});
  });
  assert.equal(refused.status, 401);
  assert.equal(refused.body.code, 'unauthorized');
  c.close();
}));

test('a single node restarted after a crash: a gap, the latest history without repeats, then live again', opts, () => withLogs(async () => {
  const solo = new Node('solo node', bin, await freePort(), { DATABASE_URL: `sqlite://${dir}/solo.sqlite`, NODE_ID: `jsc-${RUN}-solo` });
  nodes.push(solo);
  await solo.start();
  const name = `solo-${RUN}`;
  const c = client([solo.url], { name: 'solo', backoffMin: 50, backoffMax: 200 });
  const seen = [];
  const gaps = [];
  c.on('gap', (g) => gaps.push(g));
  const room = await c.join(name, { history: 10, onMessage: (m) => seen.push(m) });
  const before = [];
  for (let i = 0; i < 5; i++) before.push(await room.send(`before ${i}`));
  await until(() => seen.length === 5, 'the five messages');
  const epoch = seen[0].epoch;
  await solo.kill();
  await solo.start();
  await until(() => gaps.length === 1 && room.state === 'joined', 'the gap after the crash', 20_000);
  assert.deepEqual(gaps, [{ room: name }]);
  assert.notEqual(room.position?.epoch, epoch, 'a new epoch');
  assert.equal(seen.length, 5, 'the history repeated nothing');
  const after = await room.send('after');
  await until(() => seen.length === 6, 'the message after the restart');
  assert.equal(seen[5].id, after.id);
  assert.equal(seen[5].epoch, after.epoch);
  assert.deepEqual(seen.slice(0, 5).map((m) => m.id), before.map((a) => a.id));
  c.close();
  await solo.stop();
}));

test('2,000 sends through two kills of a node and a cut: each acked once, each seen once in order', { ...opts, timeout: 240_000 }, () => withLogs(async () => {
  const room = `stream-${RUN}`;
  const receiverProxy = await startProxy(B.port);
  // The sender's way to B also goes through a proxy: cutting it sends the
  // sender back to A (its next address) so that A's second kill hits it too.
  const senderProxy = await startProxy(B.port);
  closing.push(receiverProxy, senderProxy);

  const track = (c) => {
    const t = { states: [], gaps: [], errors: [], seen: [] };
    c.on('state', (s) => t.states.push(s));
    c.on('gap', (g) => t.gaps.push(g));
    c.on('error', (e) => t.errors.push(String(e)));
    return t;
  };
  const receiverWire = wire();
  const senderWire = wire();
  const receiver = client([receiverProxy.url], { name: 'receiver', WebSocket: receiverWire.WebSocket });
  const sender = client([A.url, senderProxy.url], { name: 'sender', WebSocket: senderWire.WebSocket });
  const r = track(receiver);
  const s = track(sender);
  await receiver.join(room, { onMessage: (m) => r.seen.push(m) });
  const senderRoom = await sender.join(room, { onMessage: (m) => s.seen.push(m) });
  assert.ok(sender.current.ws.includes(`:${A.port}/`), 'the sender starts on A');

  const ids = Array.from({ length: STREAM }, () => randomUUID());
  const settled = new Array(STREAM).fill(0);
  const latency = new Array(STREAM).fill(0);
  /** @type {(import('../index').Ack | undefined)[]} */
  const acks = new Array(STREAM);
  /** @type {unknown[]} */
  const rejected = new Array(STREAM);
  const promises = [];
  const restarts = [];
  const where = {};   // which node the sender was on at each kill
  const t0 = Date.now();
  for (let i = 0; i < STREAM; i++) {
    if (i === 500 || i === 1200) {
      // On a loaded machine the sender may still be on its way back to A.
      await until(() => sender.state === 'open', 'the sender to be connected', 20_000);
      where[i] = sender.current.ws.includes(`:${A.port}/`) && sender.state === 'open' ? 'A' : `${sender.current.ws} (${sender.state})`;
      await A.kill();
      const restart = sleep(1000).then(() => A.start());
      restarting.push(restart.catch(() => {}));
      restarts.push(restart);
    }
    if (i === 800) assert.ok(receiverProxy.cut() >= 1, 'the receiver was connected through the proxy');
    if (i === 1000) {
      await restarts[0];
      assert.ok(senderProxy.cut() >= 1, 'the sender was on B through its proxy');
    }
    const sentAt = Date.now();
    const p = senderRoom.send(`message ${i}`, { id: ids[i] });
    promises.push(p.then(
      (ack) => { settled[i]++; acks[i] = ack; latency[i] = Date.now() - sentAt; },
      (e) => { settled[i]++; rejected[i] = e; latency[i] = Date.now() - sentAt; },
    ));
    // A steady rate: one send every 5 ms from t0, catching up when late.
    const due = t0 + (i + 1) * 5 - Date.now();
    await sleep(Math.max(due, 0));
  }
  const sendingMs = Date.now() - t0;
  await Promise.all(restarts);

  const wait = Promise.all(promises);
  await until(() => settled.every((n) => n > 0), `every send to settle (${settled.filter((n) => n > 0).length} of ${STREAM})`, 60_000);
  await wait;
  await until(() => r.seen.length >= STREAM && s.seen.length >= STREAM,
    `both to see ${STREAM} (receiver ${r.seen.length}, sender ${s.seen.length})`, 60_000);
  await sleep(500);   // time for a late duplicate to show
  const totalMs = Date.now() - t0;

  const failures = rejected.map((e, i) => (e ? `${i}: ${e}` : null)).filter(Boolean);
  assert.deepEqual(failures, [], 'no send rejected');
  assert.ok(settled.every((n) => n === 1), 'every send settled exactly once');
  assert.equal(acks.filter(Boolean).length, STREAM, 'every send acked');
  acks.forEach((ack, i) => assert.equal(ack?.id, ids[i], `ack ${i} names the id sent`));

  for (const [who, t] of [['receiver', r], ['sender', s]]) {
    const got = t.seen.map((m) => m.id);
    assert.equal(got.length, STREAM, `${who} saw each message once (${got.length} deliveries)`);
    assert.equal(new Set(got).size, STREAM, `${who} saw no repeat`);
    assert.deepEqual(new Set(got), new Set(ids), `${who} saw every message sent`);
    const epochs = new Set(t.seen.map((m) => m.epoch));
    assert.equal(epochs.size, 1, `${who} saw one epoch: ${[...epochs]}`);
    for (let k = 1; k < t.seen.length; k++) {
      assert.ok(t.seen[k].seq > t.seen[k - 1].seq, `${who}: seq ${t.seen[k].seq} after ${t.seen[k - 1].seq}`);
    }
    assert.deepEqual(t.gaps, [], `${who} had no gap`);
    const back = t.states.indexOf('reconnecting');
    assert.ok(back >= 0, `${who} went through reconnecting: ${t.states}`);
    assert.ok(t.states.slice(back).includes('open'), `${who} came back: ${t.states}`);
    assert.equal(t.states.at(-1), 'open', `${who} ends open`);
  }
  // The two saw the same stream, and each ack's position is where the message landed.
  assert.deepEqual(r.seen.map((m) => m.id), s.seen.map((m) => m.id), 'the same order for both');
  const seqOf = new Map(r.seen.map((m) => [m.id, m]));
  let positioned = 0;
  for (const ack of acks) {
    if (ack?.seq == null) continue;
    positioned++;
    assert.equal(ack.seq, seqOf.get(ack.id)?.seq, `the ack of ${ack.id} gives its seq`);
    assert.equal(ack.epoch, seqOf.get(ack.id)?.epoch);
  }
  assert.equal(where[500], 'A', 'the sender was on A at the first kill');
  assert.equal(where[1200], 'A', 'the sender was on A at the second kill');
  // What went over the wire: every rejoin recovered, and what was resent.
  for (const [who, w] of [['receiver', receiverWire], ['sender', senderWire]]) {
    const rejoins = w.joined.filter((j) => j.since);
    assert.ok(rejoins.length >= 1, `${who} rejoined`);
    assert.ok(rejoins.every((j) => j.recovered === true), `${who}'s rejoins all recovered: ${JSON.stringify(rejoins)}`);
  }
  const sent = [...senderWire.sends.values()];
  assert.equal(senderWire.sends.size, STREAM, 'every id went out');
  const resent = sent.filter((n) => n > 1).length;
  const texts = r.seen.map((m) => Number(m.text.split(' ')[1]));
  const outOfOrder = texts.filter((n, k) => k > 0 && n < texts[k - 1]).length;
  console.log(`# stream: ${STREAM} sends in ${sendingMs} ms, all settled and seen in ${totalMs} ms; ` +
    `${positioned} acks with a position; A started ${A.starts} times; ` +
    `sender states ${s.states.join('>')}; receiver states ${r.states.join('>')}; ` +
    `${resent} sends went out more than once (${sent.reduce((a, b) => a + b, 0)} send frames); ` +
    `rejoin histories: receiver ${receiverWire.joined.filter((j) => j.since).map((j) => j.history).join(',')}, ` +
    `sender ${senderWire.joined.filter((j) => j.since).map((j) => j.history).join(',')}; ` +
    `error frames to the sender ${JSON.stringify(Object.fromEntries(senderWire.errors))}; ` +
    `ack latency ms: median ${[...latency].sort((a, b) => a - b)[STREAM >> 1]}, max ${Math.max(...latency)}; ` +
    `${outOfOrder} deliveries after a later send; errors: sender ${s.errors.length}, receiver ${r.errors.length}`);
  sender.close();
  receiver.close();
}));
