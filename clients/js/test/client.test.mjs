// The client against a scripted stand-in for a node (no switchboard binary):
// what the real server cannot easily be made to do, such as never answering
// a handshake, or acking without a position.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket, { WebSocketServer } from 'ws';
import { connect, SwitchboardError } from '../switchboard.js';

const cleanup = [];
after(() => { for (const fn of cleanup.reverse()) fn(); });

/** A TCP server that accepts connections and never says a word. */
async function silentNode() {
  const sockets = new Set();
  const server = net.createServer((s) => { sockets.add(s); s.on('error', () => {}); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.push(() => { for (const s of sockets) s.destroy(); server.close(); });
  return `http://127.0.0.1:${server.address().port}`;
}

/**
 * A node played by a script: `answer(frame, reply, socket)` is called for
 * every frame a client sends; with `store(after, limit)`, its history API
 * answers reads by position (`after_seq`) with that page.
 */
async function scriptedNode(answer, { store } = {}) {
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (!store || !u.searchParams.has('after_seq')) {
      res.statusCode = 404;
      return res.end('{"code":"not_found"}');
    }
    const page = store(Number(u.searchParams.get('after_seq')), Number(u.searchParams.get('limit')));
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(page));
  });
  const wss = new WebSocketServer({ server, path: '/ws' });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const frames = [];
  wss.on('connection', (socket, req) => {
    frames.push({ type: '(connected)', url: req.url });
    socket.on('message', (data) => {
      const f = JSON.parse(String(data));
      frames.push(f);
      answer(f, (reply) => socket.send(JSON.stringify(reply)), socket);
    });
  });
  cleanup.push(() => { for (const c of wss.clients) c.terminate(); wss.close(); server.close(); });
  return { url: `http://127.0.0.1:${server.address().port}`, frames, wss };
}

/** Message `seq` of room `r` in epoch `e1`, as a node sends it. */
const positioned = (seq) => ({ id: `00000000-0000-4000-8000-${String(seq).padStart(12, '0')}`, room: 'r', from: 'a', text: `m${seq}`, ts: seq, seq, epoch: 'e1' });

async function until(fn, what, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return;
    await sleep(10);
  }
  assert.fail(`timed out waiting for ${what}`);
}

test('close() while the socket is still connecting rejects the join with closed and throws nothing', async () => {
  const url = await silentNode();
  const client = connect(url, { WebSocket });
  const joining = client.join('lobby');
  await until(() => client.ws && client.ws.readyState === 0, 'a socket in CONNECTING');
  client.close();
  await assert.rejects(joining, (e) => e instanceof SwitchboardError && e.code === 'closed');
  assert.equal(client.state, 'closed');
  await sleep(100);   // the socket's abort error would surface here as an uncaught exception
});

test('a node that never answers the handshake is given up on after connectTimeout', async () => {
  const silent = await silentNode();
  const node = await scriptedNode((f, reply) => {
    if (f.type === 'join') reply({ type: 'joined', room: f.room, history: [], epoch: 'e', seq: 0, ref: f.ref });
  });
  const states = [];
  const client = connect([silent, node.url], { WebSocket, connectTimeout: 300, backoffMin: 10, backoffMax: 20 });
  client.on('state', (s) => states.push(s));
  const started = Date.now();
  const room = await client.join('lobby');
  assert.ok(Date.now() - started >= 250, 'waited for the timeout');
  assert.equal(room.state, 'joined');
  assert.equal(client.state, 'open');
  assert.deepEqual(states, ['open']);
  client.close();
});

test('an ack without seq takes the position of our message, live or in a rejoin history', async () => {
  let connection = 0;
  const held = [];
  const node = await scriptedNode((f, reply, socket) => {
    if (f.type === 'join') {
      connection++;
      const history = connection === 2 ? held.map((m) => ({ ...m, type: undefined })) : [];
      reply({ type: 'joined', room: f.room, history, epoch: 'e1', seq: connection === 2 ? 2 : 0, recovered: connection === 2 ? true : undefined, ref: f.ref });
    } else if (f.type === 'send') {
      const m = { type: 'message', id: f.id, room: f.room, from: 'me', text: f.text, ts: 1, seq: held.length + 1, epoch: 'e1' };
      if (connection === 1 && held.length === 0) {
        held.push(m);
        reply(m);
        reply({ type: 'ack', id: f.id, ref: f.ref });            // the old server's ack: no position
      } else if (connection === 1) {
        held.push(m);
        socket.terminate();                                      // delivered nowhere, then the connection is gone
      } else {
        reply({ type: 'ack', id: f.id, ref: f.ref });            // the resend: already in the history
      }
    }
  });
  const client = connect(node.url, { WebSocket, backoffMin: 10, backoffMax: 20 });
  const seen = [];
  const room = await client.join('r', { onMessage: (m) => seen.push(m.seq) });
  assert.deepEqual(await room.send('one'), { id: held[0].id, seq: 1, epoch: 'e1' });
  const second = await room.send('two');
  assert.deepEqual(second, { id: held[1].id, seq: 2, epoch: 'e1' });
  assert.deepEqual(seen, [1, 2]);
  assert.equal(node.frames.filter((f) => f.type === 'send' && f.id === held[1].id).length, 2, 'resent with its id');
  client.close();
});

test('an ack with seq and epoch is taken as it is', async () => {
  const node = await scriptedNode((f, reply) => {
    if (f.type === 'join') reply({ type: 'joined', room: f.room, history: [], epoch: 'e', seq: 0, ref: f.ref });
    if (f.type === 'send') reply({ type: 'ack', id: f.id, ref: f.ref, seq: 99, epoch: 'e9' });
  });
  const client = connect(node.url, { WebSocket });
  const room = await client.join('r');
  const ack = await room.send('x', { id: '0b7e4b6e-4a57-4d64-9d49-3c5f6c7a0a01' });
  assert.deepEqual(ack, { id: '0b7e4b6e-4a57-4d64-9d49-3c5f6c7a0a01', seq: 99, epoch: 'e9' });
  client.close();
});

test('rate_limited is retried with the same id; too_large is not', async () => {
  let refused = 0;
  const node = await scriptedNode((f, reply) => {
    if (f.type === 'join') reply({ type: 'joined', room: f.room, history: [], epoch: 'e', seq: 0, ref: f.ref });
    if (f.type === 'send' && f.text === 'big') reply({ type: 'error', code: 'too_large', message: 'too long', ref: f.ref });
    else if (f.type === 'send' && refused++ < 2) reply({ type: 'error', code: 'rate_limited', message: 'slow down', ref: f.ref });
    else if (f.type === 'send') reply({ type: 'ack', id: f.id, ref: f.ref, seq: 1, epoch: 'e' });
  });
  const client = connect(node.url, { WebSocket });
  const room = await client.join('r');
  const ack = await room.send('small');
  const sends = node.frames.filter((f) => f.type === 'send');
  assert.equal(sends.length, 3);
  assert.ok(sends.every((f) => f.id === ack.id));
  await assert.rejects(room.send('big'), (e) => e.code === 'too_large');
  client.close();
});

test('after close(), send, join and presence reject with closed', async () => {
  const node = await scriptedNode((f, reply) => {
    if (f.type === 'join') reply({ type: 'joined', room: f.room, history: [], epoch: 'e', seq: 0, ref: f.ref });
  });
  const client = connect(node.url, { WebSocket });
  const room = await client.join('r');
  const pending = room.send('never acked');
  client.close();
  await assert.rejects(pending, (e) => e.code === 'closed');
  await assert.rejects(room.send('later'), (e) => e.code === 'closed');
  await assert.rejects(client.join('s'), (e) => e.code === 'closed');
  assert.equal(client.state, 'closed');
});

test('the room\'s joined event comes after every joined, with rejoined after a reconnect', async () => {
  const node = await scriptedNode((f, reply, socket) => {
    if (f.type === 'join') {
      reply({ type: 'joined', room: f.room, history: [], epoch: 'e', seq: 0, count: 1, recovered: f.since ? true : undefined, ref: f.ref });
      if (f.since === undefined && node.frames.filter((x) => x.type === 'join').length === 1) setTimeout(() => socket.terminate(), 50);
    }
  });
  const client = connect(node.url, { WebSocket, backoffMin: 10, backoffMax: 20 });
  const room = await client.join('r');
  const events = [];
  room.on('joined', (j) => events.push(j));
  await until(() => events.length === 1, 'the second joined');
  assert.deepEqual(events, [{ room: 'r', count: 1, rejoined: true }]);
  client.close();
});

test('reconnect() dials at once instead of waiting out the backoff; nothing while open', async () => {
  let up = false;
  const node = await scriptedNode((f, reply) => {
    if (f.type === 'join') reply({ type: 'joined', room: f.room, history: [], epoch: 'e', seq: 0, ref: f.ref });
  });
  // Refused until `up`: the client backs off for a long time.
  node.wss.options.verifyClient = () => up;
  const client = connect(node.url, { WebSocket, backoffMin: 60_000, backoffMax: 60_000 });
  await until(() => node.frames.length === 0 && client.timers.reconnect !== null, 'the first attempt refused');
  up = true;
  const started = Date.now();
  client.reconnect();
  await client.join('r');
  assert.ok(Date.now() - started < 5000, 'did not wait 30-60 s');
  assert.equal(client.state, 'open');
  const connections = node.frames.filter((f) => f.type === '(connected)').length;
  client.reconnect();
  await sleep(100);
  assert.equal(node.frames.filter((f) => f.type === '(connected)').length, connections, 'no second connection');
  client.close();
  client.reconnect();
  assert.equal(client.state, 'closed');
});

test('a recovery cut to fit one frame is completed from the history API, in order, without a gap', async () => {
  const E = 'e1';
  const msg = positioned;
  let joins = 0;
  // The store has 1 to 300.
  const store = (after, limit) => {
    const page = [];
    for (let s = after + 1; s <= Math.min(300, after + limit); s++) page.push(msg(s));
    return page;
  };
  const node = await scriptedNode((f, reply, socket) => {
    if (f.type !== 'join') return;
    joins++;
    if (joins === 1) {
      reply({ type: 'joined', room: 'r', ref: f.ref, epoch: E, seq: 2, history: [msg(1), msg(2)] });
      setTimeout(() => socket.terminate(), 50);
      return;
    }
    assert.deepEqual(f.since, { seq: 2, epoch: E });
    const cut = [];
    for (let s = 251; s <= 300; s++) cut.push(msg(s));
    reply({ type: 'joined', room: 'r', ref: f.ref, epoch: E, seq: 300, history: cut, truncated: true, recovered: false });
    reply({ type: 'message', ...msg(301) });
  }, { store });
  const client = connect(node.url, { WebSocket, backoffMin: 10 });
  cleanup.push(() => client.close());
  const seen = [];
  const gaps = [];
  client.on('gap', (g) => gaps.push(g));
  await client.join('r', { onMessage: (m) => seen.push(m.seq) });
  await until(() => seen.length >= 301, 'every message', 10_000);
  await sleep(100);
  assert.deepEqual(seen, Array.from({ length: 301 }, (_, i) => i + 1));
  assert.deepEqual(gaps, []);
});

test('a token_expiring warning asks getToken again and sends the new token as refresh', async () => {
  let asked = 0;
  const node = await scriptedNode((f, reply) => {
    if (f.type === 'refresh') reply({ type: 'refreshed', exp: 4102444800, ref: f.ref });
  });
  const client = connect(node.url, { WebSocket, getToken: () => `token-${++asked}` });
  cleanup.push(() => client.close());
  await until(() => client.state === 'open', 'open');
  assert.equal(asked, 1);
  for (const c of node.wss.clients) c.send(JSON.stringify({ type: 'token_expiring', in_ms: 30000 }));
  await until(() => node.frames.some((f) => f.type === 'refresh'), 'a refresh');
  const refresh = node.frames.find((f) => f.type === 'refresh');
  assert.equal(refresh.token, 'token-2');
  assert.equal(asked, 2);
  assert.equal(client.state, 'open');
  assert.match(node.frames[0].url, /token=token-1/);
});

test('a live message past a hole is held while the hole is read from the store; what the store lacks is a gap', async () => {
  const E = 'e1';
  const msg = positioned;
  const stored = new Set([4, 5]);   // the store has 4 and 5; 8 never made it
  const store = (after, limit) => {
    const page = [];
    for (let s = after + 1; s <= after + limit; s++) if (stored.has(s)) page.push(msg(s));
    return page;
  };
  const node = await scriptedNode((f, reply) => {
    if (f.type !== 'join') return;
    reply({ type: 'joined', room: 'r', ref: f.ref, epoch: E, seq: 2, history: [msg(1), msg(2)] });
    for (const s of [3, 6, 7, 9, 10]) reply({ type: 'message', ...msg(s) });
  }, { store });
  const client = connect(node.url, { WebSocket });
  cleanup.push(() => client.close());
  const seen = [];
  const gaps = [];
  await client.join('r', { onMessage: (m) => seen.push(m.seq), onGap: () => {} });
  client.on('gap', (g) => gaps.push(g.room));
  await until(() => seen.length >= 9, `the messages (saw ${seen})`, 5000);
  await sleep(100);
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 9, 10], 'the hole 4-5 filled in order; 8 is gone');
  assert.deepEqual(gaps, ['r'], 'what the store lacked (8) is a gap');
});

test('data and ephemeral sends go out as asked; data comes back on messages; deletions are told as deleted', async () => {
  const tomb = { id: 'c0000000-0000-4000-8000-000000000002', room: 'g', from: 'a', text: '', ts: 2, seq: 2, epoch: 'e', deleted: true };
  const node = await scriptedNode((f, reply) => {
    if (f.type === 'join') {
      const first = { id: 'c0000000-0000-4000-8000-000000000001', room: 'g', from: 'a', text: '', data: { move: 'e4' }, ts: 1, seq: 1, epoch: 'e' };
      reply({ type: 'joined', room: f.room, history: [first, tomb], epoch: 'e', seq: 2, ref: f.ref });
    }
    if (f.type === 'send') {
      reply({ type: 'ack', id: f.id, ref: f.ref, ...(f.ephemeral ? {} : { seq: 3, epoch: 'e' }) });
      if (!f.ephemeral) {
        reply({ type: 'message', id: f.id, room: 'g', from: 'me', text: f.text ?? '', data: f.data, ts: 3, seq: 3, epoch: 'e' });
        reply({ type: 'deleted', room: 'g', id: f.id });
      }
    }
  });
  const client = connect(node.url, { WebSocket });
  const messages = [];
  const deleted = [];
  const room = await client.join('g', { onMessage: (m) => messages.push(m), onDeleted: (d) => deleted.push(d.id) });
  await until(() => messages.length === 1 && deleted.length === 1, 'the history');
  assert.deepEqual(messages[0].data, { move: 'e4' });
  assert.equal(messages[0].text, '');
  assert.deepEqual(deleted, [tomb.id], 'a tombstone in the history is a deletion, not a message');
  const ack = await room.send(null, { data: [1, { x: null }] });
  assert.equal(ack.seq, 3);
  const live = await room.send('typing', { ephemeral: true });
  assert.equal(live.seq, null, 'an ephemeral send has no position');
  await until(() => messages.length === 2 && deleted.length === 2, 'the echo and its deletion');
  assert.deepEqual(messages[1].data, [1, { x: null }]);
  assert.equal(deleted[1], ack.id);
  const sends = node.frames.filter((f) => f.type === 'send');
  assert.deepEqual(sends.map((f) => [f.text, f.data, f.ephemeral]), [[undefined, [1, { x: null }], undefined], ['typing', undefined, true]]);
  client.close();
});

test('a close with 4002 (the server disconnected this user) closes the client instead of reconnecting', async () => {
  const node = await scriptedNode((f, reply, socket) => {
    if (f.type === 'join') {
      reply({ type: 'joined', room: f.room, history: [], epoch: 'e', seq: 0, ref: f.ref });
      setTimeout(() => socket.close(4002, 'disconnected by the server'), 20);
    }
  });
  const client = connect(node.url, { WebSocket });
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  await client.join('r');
  await until(() => client.state === 'closed', 'the client closed');
  assert.deepEqual(errors, ['disconnected']);
  await sleep(400);
  assert.equal(node.frames.filter((f) => f.type === '(connected)').length, 1, 'no reconnect');
});
