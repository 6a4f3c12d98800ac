// No secret reaches the logs at any level: the binary at RUST_LOG=trace,
// tokens passed every way a client can (Socket.IO auth over polling and
// WebSocket, /ws query and header, the history API), and the API key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

const SECRET = 'a-logging-test-secret-of-32-bytes-or-more';
const API_KEY = 'logging-test-api-key-0123456789';

function jwt(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

function connect(url, transports, token) {
  const socket = io(url, { transports, reconnection: false, auth: { token } });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

test('tokens, the API key and the secret stay out of trace-level logs', async () => {
  const server = await startServer(
    { AUTH: 'required', JWT_SECRET: SECRET, API_KEY, RUST_LOG: 'trace' },
    { capture: true },
  );
  const exp = Math.floor(Date.now() / 1000) + 600;
  const tokens = ['polling', 'websocket', 'query', 'header', 'history'].map((how) =>
    jwt({ sub: `user-${how}`, name: how, exp, nonce: randomUUID() }),
  );
  const polling = await connect(server.url, ['polling'], tokens[0]);
  const overWs = await connect(server.url, ['websocket'], tokens[1]);
  const room = `logs-${randomUUID().slice(0, 8)}`;
  const joined = await overWs.emitWithAck('join', { room });
  assert.equal(joined.type, 'joined');
  const wsUrl = server.url.replace('http', 'ws');
  // One at a time, each made when awaited: a socket made earlier could open
  // before its `open` listener is attached.
  for (const open of [
    () => new WebSocket(`${wsUrl}/ws?token=${tokens[2]}`),
    () => new WebSocket(`${wsUrl}/ws`, { headers: { authorization: `Bearer ${tokens[3]}` } }),
  ]) {
    const ws = open();
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.close();
  }
  const history = await fetch(`${server.url}/api/rooms/${room}/messages?token=${tokens[4]}`);
  assert.equal(history.status, 200);
  const published = await fetch(`${server.url}/api/rooms/${room}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'from the server', from: 'ops' }),
  });
  assert.equal(published.status, 201);
  polling.close();
  overWs.close();
  assert.equal(await server.stop(), 0);
  const logs = server.logs();
  assert.ok(/connection opened/.test(logs) && /TRACE/.test(logs), 'the node logged at trace level');
  for (const token of tokens) {
    const signature = token.split('.')[2];
    assert.ok(!logs.includes(signature), `a token's signature is in the logs: ${token}`);
    assert.ok(!logs.includes(token.split('.')[1]), 'a token body is in the logs');
  }
  assert.ok(!logs.includes(API_KEY), 'the API key is in the logs');
  assert.ok(!logs.includes(SECRET), 'the JWT secret is in the logs');
});
