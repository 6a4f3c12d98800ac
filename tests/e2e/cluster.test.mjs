// Two switchboard processes sharing the local Redis behave as one chat: the
// original Socket.IO contract across nodes, and /ws with Socket.IO mixed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

const REDIS_URL = process.env.SWITCHBOARD_TEST_REDIS ?? 'redis://127.0.0.1:6379';
const PREFIX = `e2e-${randomUUID().slice(0, 8)}`;
let node1;
let node2;
const open = [];

before(async () => {
  const env = (id) => ({ REDIS_URL, REDIS_PREFIX: PREFIX, NODE_ID: id });
  node1 = await startServer(env('e2e-node-1'));
  node2 = await startServer(env('e2e-node-2'));
});

after(async () => {
  for (const s of open) s.close?.() ?? s.disconnect?.();
  assert.equal(await node1.stop(), 0);
  assert.equal(await node2.stop(), 0);
});

async function subscribers(room) {
  const { stdout } = await promisify(execFile)('redis-cli', ['-u', REDIS_URL, 'PUBSUB', 'NUMSUB', `{${PREFIX}:${room}}:ch`]);
  return Number(stdout.trim().split('\n')[1]);
}

async function until(fn, what, ms = 10_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await sleep(25);
  }
  assert.fail(`timed out waiting for ${what}`);
}

function sio(server, name) {
  const socket = io(server.url, { reconnection: false, forceNew: true, transports: ['websocket'], auth: { name } });
  open.push(socket);
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

test('event:message on node 1 reaches event:listen on node 2 exactly once', async () => {
  const a = await sio(node1, 'alice');
  const b = await sio(node2, 'bob');
  await until(async () => (await subscribers('lobby')) === 2, 'both nodes subscribed to lobby');
  const atA = [];
  const atB = [];
  a.on('event:listen', (t) => atA.push(t));
  b.on('event:listen', (t) => atB.push(t));
  a.emit('event:message', 'Test Message');
  await until(() => atA.length >= 1 && atB.length >= 1, 'event:listen on both nodes');
  await sleep(300);
  assert.deepEqual(atA, ['Test Message']);
  assert.deepEqual(atB, ['Test Message']);
});

test('a /ws client on node 2 and a Socket.IO client on node 1 share a room', async () => {
  const room = `x-${randomUUID().slice(0, 8)}`;
  const s = await sio(node1, 'sio');
  const sioMessages = [];
  s.on('message', (m) => sioMessages.push(m));
  await s.timeout(5000).emitWithAck('join', { room });
  const ws = new WebSocket(`${node2.url.replace('http', 'ws')}/ws?name=plain`);
  open.push(ws);
  const frames = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  await new Promise((resolve) => ws.once('open', resolve));
  ws.send(JSON.stringify({ type: 'join', room }));
  await until(async () => (await subscribers(room)) === 2, 'both nodes subscribed');
  ws.send(JSON.stringify({ type: 'send', room, text: 'from node 2' }));
  await until(() => sioMessages.some((m) => m.text === 'from node 2'), 'node 1 receives');
  const ack = await s.timeout(5000).emitWithAck('send', { room, text: 'from node 1' });
  assert.equal(ack.type, 'ack');
  await until(() => frames.some((f) => f.type === 'message' && f.text === 'from node 1'), 'node 2 receives');
  await sleep(300);
  assert.equal(frames.filter((f) => f.type === 'message').length, 2);
  assert.equal(sioMessages.length, 2);
});
