// Socket.IO clients (the official socket.io-client) against the switchboard
// binary: the original contract, rooms, and mixing with /ws clients.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

let server;
const sockets = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const s of sockets) s.close?.() ?? s.disconnect?.();
  const code = await server.stop();
  assert.equal(code, 0, 'switchboard exits 0 on SIGTERM');
});

function connect(opts = {}) {
  const socket = io(server.url, { reconnection: false, forceNew: true, transports: ['websocket'], ...opts });
  sockets.push(socket);
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

function collect(socket, event) {
  const got = [];
  socket.on(event, (data) => got.push(data));
  return got;
}

async function until(fn, what, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return;
    await sleep(20);
  }
  assert.fail(`timed out waiting for ${what}`);
}

function wsClient(name) {
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws?name=${name}`);
  sockets.push(ws);
  const frames = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, frames, send: (f) => ws.send(JSON.stringify(f)) }));
    ws.once('error', reject);
  });
}

test('the original contract: event:message in, event:listen out, exactly once each', async () => {
  const a = await connect({ auth: { name: 'alice' } });
  const b = await connect({ auth: { name: 'bob' } });
  const atA = collect(a, 'event:listen');
  const atB = collect(b, 'event:listen');
  a.emit('event:message', 'Test Message');
  await until(() => atA.length >= 1 && atB.length >= 1, 'event:listen on both clients');
  await sleep(300);
  assert.deepEqual(atB, ['Test Message']);
  assert.deepEqual(atA, ['Test Message']);
  a.disconnect();
  b.disconnect();
});

test('polling transport works too, and the lobby message is stored', async () => {
  const a = await connect({ transports: ['polling'], query: { name: 'poller' } });
  const atA = collect(a, 'event:listen');
  const text = `polled ${randomUUID()}`;
  const ack = await a.timeout(5000).emitWithAck('event:message', text);
  assert.equal(ack.type, 'ack');
  await until(() => atA.includes(text), 'event:listen over polling');
  const res = await fetch(`${server.url}/api/rooms/lobby/messages?limit=500`);
  const stored = await res.json();
  const mine = stored.filter((m) => m.text === text);
  assert.equal(mine.length, 1);
  assert.equal(mine[0].from, 'poller');
  assert.equal(mine[0].id, ack.id);
  a.disconnect();
});

test('Socket.IO and /ws members of one room see each other', async () => {
  const room = `mixed-${randomUUID().slice(0, 8)}`;
  const sio = await connect({ auth: { name: 'sio' } });
  const sioMessages = collect(sio, 'message');
  const joined = await sio.timeout(5000).emitWithAck('join', { room, history: 10 });
  assert.equal(joined.type, 'joined');
  assert.equal(joined.room, room);
  assert.deepEqual(joined.history, []);

  const w = await wsClient('plain');
  w.send({ type: 'join', room });
  await until(() => w.frames.some((f) => f.type === 'joined'), '/ws joined');

  w.send({ type: 'send', room, text: 'from ws', ref: 'w1' });
  await until(() => sioMessages.length === 1, 'socket.io receives the /ws message');
  assert.equal(sioMessages[0].text, 'from ws');
  assert.equal(sioMessages[0].from, 'plain');

  const ack = await sio.timeout(5000).emitWithAck('send', { room, text: 'from sio', ref: 's1' });
  assert.equal(ack.type, 'ack');
  assert.equal(ack.ref, 's1');
  await until(() => w.frames.some((f) => f.type === 'message' && f.text === 'from sio'), '/ws receives the socket.io message');
  const got = w.frames.filter((f) => f.type === 'message' && f.text === 'from sio');
  assert.equal(got.length, 1);
  assert.equal(got[0].id, ack.id);
  assert.equal(got[0].from, 'sio');
  await sleep(200);
  assert.equal(sioMessages.filter((m) => m.text === 'from sio').length, 1, 'the sender gets its own message once');
  w.ws.close();
  sio.disconnect();
});

test('a Socket.IO client that comes back with since gets exactly what it missed', async () => {
  const room = `back-${randomUUID().slice(0, 8)}`;
  const talker = await connect({ auth: { name: 'talker' } });
  await talker.timeout(5000).emitWithAck('join', { room });
  const away = await connect({ auth: { name: 'away' } });
  const first = await away.timeout(5000).emitWithAck('join', { room });
  assert.equal(typeof first.epoch, 'string');
  const since = { seq: first.seq, epoch: first.epoch };
  away.disconnect();
  for (const text of ['one', 'two', 'three']) {
    const ack = await talker.timeout(5000).emitWithAck('send', { room, text });
    assert.equal(ack.type, 'ack');
  }
  const back = await connect({ auth: { name: 'away' } });
  const joined = await back.timeout(5000).emitWithAck('join', { room, since });
  assert.equal(joined.recovered, true, JSON.stringify(joined));
  assert.deepEqual(joined.history.map((m) => m.text), ['one', 'two', 'three']);
  assert.deepEqual(joined.history.map((m) => m.seq), [since.seq + 1, since.seq + 2, since.seq + 3]);
  assert.equal(joined.seq, since.seq + 3);
  const other = await back.timeout(5000).emitWithAck('join', { room, since: { seq: 0, epoch: 'elsewhere' } });
  assert.equal(other.recovered, false);
  const bad = await back.timeout(5000).emitWithAck('join', { room, since: { seq: 'x', epoch: 'e' } });
  assert.equal(bad.code, 'bad_frame');
  talker.disconnect();
  back.disconnect();
});

test('Socket.IO asks who is in a room and watches names come and go', async () => {
  const room = `who-${randomUUID().slice(0, 8)}`;
  const watcher = await connect({ auth: { name: 'watcher' } });
  const changes = [];
  watcher.on('presence_change', (c) => changes.push(c));
  const joined = await watcher.timeout(5000).emitWithAck('join', { room, presence: true });
  assert.equal(joined.count, 1);
  const ann = await connect({ auth: { name: 'ann' } });
  await ann.timeout(5000).emitWithAck('join', { room });
  await until(() => changes.some((c) => c.event === 'join' && c.name === 'ann'), 'ann joins');
  const who = await watcher.timeout(5000).emitWithAck('presence', { room });
  assert.equal(who.type, 'presence');
  assert.equal(who.count, 2);
  assert.deepEqual(who.members.map((m) => m.name).sort(), ['ann', 'watcher']);
  ann.disconnect();
  await until(() => changes.some((c) => c.event === 'leave' && c.name === 'ann' && c.count === 1), 'ann leaves');
  const other = await connect({ auth: { name: 'other' } });
  const outside = await other.timeout(5000).emitWithAck('presence', { room: 'elsewhere' });
  assert.equal(outside.code, 'not_joined', JSON.stringify(outside));
  watcher.disconnect();
  other.disconnect();
});

test('a Socket.IO join racing live messages gets each once, in its history or live', async () => {
  // A node of its own without a send rate, so one talker can keep the room busy.
  const busy = await startServer({ RATE_LIMIT_PER_SEC: '0', CONNECT_RATE_PER_IP: '0' });
  try {
    const room = `race-${randomUUID().slice(0, 8)}`;
    const talker = new WebSocket(`${busy.url.replace('http', 'ws')}/ws?name=talker`);
    await new Promise((resolve) => talker.once('open', resolve));
    talker.send(JSON.stringify({ type: 'join', room, history: 0 }));
    let n = 0;
    const flood = setInterval(() => {
      for (let i = 0; i < 5; i++) talker.send(JSON.stringify({ type: 'send', room, text: `m${n++}` }));
    }, 2);
    let doubled = 0;
    let live = 0;
    for (let j = 0; j < 30; j++) {
      const s = io(busy.url, { reconnection: false, forceNew: true, transports: ['websocket'], auth: { name: `j${j}` } });
      await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('connect_error', reject); });
      const seen = [];
      s.on('message', (m) => seen.push(m.id));
      const joined = await s.timeout(5000).emitWithAck('join', { room, history: 100 });
      assert.equal(joined.type, 'joined', JSON.stringify(joined));
      await sleep(30);
      const ids = [...joined.history.map((m) => m.id), ...seen];
      doubled += ids.length - new Set(ids).size;
      live += seen.length;
      s.disconnect();
    }
    clearInterval(flood);
    talker.close();
    assert.ok(live > 0, 'messages arrived live during the joins');
    assert.equal(doubled, 0, 'a message reached a joiner both in its history and live');
  } finally {
    await busy.stop();
  }
});

test('a /ws member of lobby sees event:message from Socket.IO', async () => {
  const w = await wsClient('watcher');
  w.send({ type: 'join', room: 'lobby', history: 0 });
  await until(() => w.frames.some((f) => f.type === 'joined'), '/ws joined lobby');
  const s = await connect({ auth: { name: 'legacy' } });
  const text = `hello ${randomUUID()}`;
  s.emit('event:message', text);
  await until(() => w.frames.some((f) => f.type === 'message' && f.text === text), '/ws receives the lobby message');
  w.ws.close();
  s.disconnect();
});

test('bad input gets error objects with stable codes', async () => {
  const s = await connect();
  const cases = [
    ['join', { room: 'bad room' }, 'bad_room'],
    ['join', 'lobby', 'bad_frame'],
    ['send', { room: 'never-joined', text: 'x' }, 'not_joined'],
    ['send', { room: 'lobby', text: '' }, 'bad_frame'],
    ['send', { room: 'lobby', text: 'x'.repeat(4097) }, 'too_large'],
    ['event:message', 42, 'bad_frame'],
    ['nonsense', {}, 'bad_frame'],
  ];
  for (const [event, data, code] of cases) {
    const reply = await s.timeout(5000).emitWithAck(event, data);
    assert.equal(reply.type, 'error', `${event} ${JSON.stringify(data)}`);
    assert.equal(reply.code, code, `${event} ${JSON.stringify(data)}`);
  }
  const errors = collect(s, 'error');
  s.emit('join', { room: 'bad room' });
  await until(() => errors.length === 1, 'an error event when there is no ack callback');
  assert.equal(errors[0].code, 'bad_room');
  s.disconnect();
});

test('an invalid handshake name is refused with a connect error', async () => {
  await assert.rejects(connect({ auth: { name: '' } }), /name/);
});

test('the binary serves Prometheus metrics and readiness', async () => {
  const s = await connect({ auth: { name: 'metered' } });
  await s.timeout(5000).emitWithAck('event:message', 'count me');
  const text = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(text, /switchboard_messages_accepted_total \d+/);
  assert.match(text, /switchboard_connections\{protocol="socket.io"\} [1-9]/);
  const ready = await fetch(`${server.url}/readyz`);
  assert.equal(ready.status, 200);
  s.disconnect();
});
