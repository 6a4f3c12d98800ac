// Room policies (CONFIG_FILE=deploy/switchboard.toml) over Socket.IO, the
// seed's clients: who may join and send, ephemeral rooms, history, presence
// and each namespace's message size, as on /ws.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';
import { startServer } from './server.mjs';

const EXAMPLE = fileURLToPath(new URL('../../deploy/switchboard.toml', import.meta.url));
const API_KEY = 'policies-e2e-api-key-0123456789';
let server;
const open = [];

before(async () => {
  server = await startServer({ CONFIG_FILE: EXAMPLE, API_KEY });
});
after(async () => {
  for (const s of open) s.close();
  await server?.stop();
});

function sio(name) {
  const socket = io(server.url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { name } });
  open.push(socket);
  return new Promise((resolve, reject) => socket.once('connect', () => resolve(socket)).once('connect_error', reject));
}

const emit = (socket, event, data) => socket.timeout(5000).emitWithAck(event, data);
const tag = () => randomUUID().slice(0, 8);

test('join = "granted" refuses a socket without a token naming the room', async () => {
  const s = await sio('anon');
  const refused = await emit(s, 'join', { room: `support:${tag()}` });
  assert.equal(refused.code, 'forbidden');
});

test('publish = "server": members read, only the server API writes', async () => {
  const room = `news:${tag()}`;
  const s = await sio('reader');
  assert.equal((await emit(s, 'join', { room })).type, 'joined');
  const refused = await emit(s, 'send', { room, text: 'me too' });
  assert.equal(refused.code, 'forbidden');
  const got = new Promise((resolve) => s.once('message', resolve));
  const res = await fetch(`${server.url}/api/rooms/${room}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'from the back end', from: 'ops' }),
  });
  assert.equal(res.status, 201);
  assert.equal((await got).text, 'from the back end');
});

test('store = false: live only, acked without a position, never in history; presence off; its own size', async () => {
  const room = `typing:${tag()}`;
  const a = await sio('ann');
  const b = await sio('ben');
  const joined = await emit(a, 'join', { room, history: 10 });
  assert.equal(joined.type, 'joined');
  assert.equal(joined.count, undefined, 'presence is off');
  await emit(b, 'join', { room });
  const got = new Promise((resolve) => b.once('message', resolve));
  const ack = await emit(a, 'send', { room, text: 'ann is typing' });
  assert.equal(ack.type, 'ack');
  assert.equal(ack.seq, undefined, 'no position');
  const m = await got;
  assert.equal(m.text, 'ann is typing');
  assert.equal(m.seq, undefined);
  assert.equal((await emit(a, 'presence', { room })).code, 'forbidden');
  assert.equal((await emit(a, 'send', { room, text: 'x'.repeat(300) })).code, 'too_large');
  const history = await (await fetch(`${server.url}/api/rooms/${room}/messages`)).json();
  assert.deepEqual(history, []);
  const c = await sio('cat');
  assert.deepEqual((await emit(c, 'join', { room, history: 10 })).history, [], 'history = 0');
});

test('outside any namespace the default applies: stored, history, presence; ephemeral refused', async () => {
  const room = `plain-${tag()}`;
  const a = await sio('ann');
  await emit(a, 'join', { room });
  const ack = await emit(a, 'send', { room, text: 'kept' });
  assert.equal(typeof ack.seq, 'number');
  assert.equal((await emit(a, 'send', { room, text: 'x', ephemeral: true })).code, 'forbidden');
  const b = await sio('ben');
  const joined = await emit(b, 'join', { room });
  assert.deepEqual(joined.history.map((m) => m.text), ['kept']);
  assert.equal(joined.count, 2);
});

test('data over Socket.IO: a JSON value in and out, refused where the policy takes text only', async () => {
  const room = `typing:${tag()}`;
  const [a, b] = [await sio('ann'), await sio('ben')];
  for (const s of [a, b]) assert.equal((await emit(s, 'join', { room })).type, 'joined');
  const got = new Promise((resolve) => b.once('message', resolve));
  const ack = await emit(a, 'send', { room, data: { typing: true, at: [1, 2] } });
  assert.equal(ack.type, 'ack');
  const m = await got;
  assert.deepEqual(m.data, { typing: true, at: [1, 2] });
  assert.equal(m.text, '');
  const plain = `plain-${tag()}`;
  assert.equal((await emit(a, 'join', { room: plain })).type, 'joined');
  assert.equal((await emit(a, 'send', { room: plain, data: 1 })).code, 'forbidden');
  assert.equal((await emit(a, 'send', { room: plain, text: '' })).code, 'bad_frame');
  // The original contract stays a string: event:message with an object is refused.
  const refused = await new Promise((resolve) => a.emit('event:message', { data: 1 }, resolve));
  assert.equal(refused.code, 'bad_frame');
});

test('moderation over Socket.IO: a deleted message is announced, and a disconnected user is told why', async () => {
  const room = `chat-${tag()}`;
  const [a, b] = [await sio('mod-target'), await sio('watcher')];
  for (const s of [a, b]) assert.equal((await emit(s, 'join', { room })).type, 'joined');
  const ack = await emit(a, 'send', { room, text: 'regrettable' });
  const deleted = new Promise((resolve) => b.once('deleted', resolve));
  const del = await fetch(`${server.url}/api/rooms/${room}/messages/${ack.id}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${API_KEY}` },
  });
  assert.equal(del.status, 204);
  assert.deepEqual(await deleted, { room, id: ack.id });
  const history = await (await fetch(`${server.url}/api/rooms/${room}/messages`)).json();
  assert.deepEqual(history.map((m) => [m.id, m.deleted, m.text]), [[ack.id, true, '']]);

  const told = new Promise((resolve) => a.once('error', resolve));
  const gone = new Promise((resolve) => a.once('disconnect', resolve));
  const res = await fetch(`${server.url}/api/users/mod-target/disconnect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}` },
  });
  assert.equal(res.status, 202);
  assert.deepEqual(await res.json(), { name: 'mod-target', disconnected_here: 1 });
  assert.equal((await told).code, 'disconnected');
  assert.equal(await gone, 'io server disconnect');
  assert.ok(b.connected, 'other users stay');
});
