// AUTH=required on the built binary, with the official Socket.IO client:
// the handshake without a token, with a bad one and with a good one, and
// the token's name as the sender seen by a /ws client. Also the binary's
// exit code for an AUTH setting it cannot honour.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

const SECRET = 'an-end-to-end-test-secret-of-32-bytes-or-more';
let server;

function jwt(claims, secret = SECRET) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}
const inOneMinute = () => Math.floor(Date.now() / 1000) + 60;

before(async () => {
  server = await startServer({ AUTH: 'required', JWT_SECRET: SECRET });
});
after(async () => server?.stop());

function connect(auth) {
  const socket = io(server.url, { transports: ['websocket'], reconnection: false, auth });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => {
      socket.close();
      reject(err);
    });
  });
}

test('a Socket.IO handshake without a token, or with a bad one, is refused', async () => {
  await assert.rejects(connect({ name: 'nobody' }), (err) => err.message.startsWith('unauthorized:'));
  const expired = jwt({ sub: 'u', exp: Math.floor(Date.now() / 1000) - 3600 });
  await assert.rejects(connect({ token: expired }), (err) => /expired/.test(err.message));
  const forged = jwt({ sub: 'u', exp: inOneMinute() }, 'not-the-secret-but-just-as-long-as-it');
  await assert.rejects(connect({ token: forged }), (err) => {
    assert.ok(!err.message.includes(SECRET));
    return err.message.startsWith('unauthorized:');
  });
});

test("a token's name is the sender, on Socket.IO and on /ws", async () => {
  const socket = await connect({ token: jwt({ sub: 'u1', name: 'Ada', exp: inOneMinute() }), name: 'mallory' });
  const room = `auth-${randomUUID().slice(0, 8)}`;
  const token = jwt({ sub: 'u2', name: 'Bea', exp: inOneMinute() });
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws?token=${token}`);
  const frames = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  ws.send(JSON.stringify({ type: 'join', room }));
  await waitFor(() => frames.some((f) => f.type === 'joined'));
  const joined = await socket.emitWithAck('join', { room });
  assert.equal(joined.type, 'joined');
  const ack = await socket.emitWithAck('send', { room, text: 'hello from socket.io' });
  assert.equal(ack.type, 'ack');
  await waitFor(() => frames.some((f) => f.type === 'message'));
  const message = frames.find((f) => f.type === 'message');
  assert.equal(message.from, 'Ada');
  assert.equal(message.text, 'hello from socket.io');
  // The original contract works for an authenticated socket too.
  const heard = new Promise((resolve) => socket.once('event:listen', resolve));
  socket.emit('event:message', 'legacy hello');
  assert.equal(await heard, 'legacy hello');
  socket.close();
  ws.close();
});

test('a Socket.IO socket is warned before its token expires, may refresh it, and is disconnected at expiry', async () => {
  const short = await startServer({ AUTH: 'required', JWT_SECRET: SECRET, JWT_LEEWAY_SECS: '0', TOKEN_WARNING_MS: '1500' });
  const now = () => Math.floor(Date.now() / 1000);
  const open = (sub) => {
    const socket = io(short.url, { transports: ['websocket'], reconnection: false, auth: { token: jwt({ sub, exp: now() + 3 }) } });
    return new Promise((resolve, reject) => socket.once('connect', () => resolve(socket)).once('connect_error', reject));
  };
  try {
    const stays = await open('ann');
    const goes = await open('ben');
    const warnings = await Promise.all([stays, goes].map((s) => new Promise((resolve) => s.once('token_expiring', resolve))));
    for (const w of warnings) {
      assert.equal(w.type, 'token_expiring');
      assert.ok(w.in_ms > 0 && w.in_ms <= 1500, JSON.stringify(w));
    }
    const refused = await goes.timeout(5000).emitWithAck('refresh', { token: jwt({ sub: 'eve', exp: now() + 60 }) });
    assert.equal(refused.code, 'forbidden');
    const exp = now() + 60;
    const refreshed = await stays.timeout(5000).emitWithAck('refresh', { token: jwt({ sub: 'ann', exp }) });
    assert.deepEqual(refreshed, { type: 'refreshed', exp });
    const told = new Promise((resolve) => goes.once('error', resolve));
    const gone = new Promise((resolve) => goes.once('disconnect', resolve));
    assert.equal((await told).code, 'token_expired');
    assert.equal(await gone, 'io server disconnect');
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(stays.connected, 'the refreshed socket stays');
    const ack = await stays.timeout(5000).emitWithAck('join', { room: `r-${randomUUID().slice(0, 8)}` });
    assert.equal(ack.type, 'joined');
    stays.close();
  } finally {
    await short.stop();
  }
});

test('the binary refuses AUTH=required without a key, naming the variable, exit 64', () => {
  const bin = process.env.SWITCHBOARD_BIN ?? '../../target/debug/switchboard';
  const run = spawnSync(bin, ['serve'], { env: { PATH: process.env.PATH, AUTH: 'required' }, encoding: 'utf8' });
  assert.equal(run.status, 64);
  assert.match(run.stderr, /AUTH/);
  const short = spawnSync(bin, ['serve'], { env: { PATH: process.env.PATH, JWT_SECRET: 'short' }, encoding: 'utf8' });
  assert.equal(short.status, 64);
  assert.match(short.stderr, /JWT_SECRET/);
  assert.ok(!short.stderr.includes('short'), 'the secret is not echoed');
});

async function waitFor(check, ms = 5000) {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
