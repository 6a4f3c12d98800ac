// scripts/cluster brings up the whole native topology (Redis, PostgreSQL,
// tansu, two nodes, one archiver): a message sent on one node reaches the
// other and lands in PostgreSQL once; `down` stops everything it started.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { freePort } from './server.mjs';

const run = promisify(execFile);
const id = randomUUID().slice(0, 8);
const env = {
  ...process.env,
  PORT_BASE: String(await freePort()),
  CLUSTER_DB: `cluster_${id}`,
  CLUSTER_DIR: mkdtempSync(join(tmpdir(), 'switchboard-cluster-')),
  SWITCHBOARD_BIN: resolve(process.env.SWITCHBOARD_BIN ?? '../../target/debug/switchboard'),
};
const base = Number(env.PORT_BASE);

after(async () => {
  await run('../../scripts/cluster', ['down'], { env });
});

function client(port, frames) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?name=n${port}`);
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  return new Promise((resolve) => ws.once('open', () => resolve(ws)));
}

async function until(fn, what, ms = 20_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await sleep(50);
  }
  assert.fail(`timed out waiting for ${what}`);
}

test('scripts/cluster up gives a working two-node cluster with the archive', { timeout: 120_000 }, async () => {
  // The second port may be taken by chance; the script fails clearly then.
  await run('../../scripts/cluster', ['up'], { env, timeout: 90_000 });
  const [framesA, framesB] = [[], []];
  const a = await client(base, framesA);
  const b = await client(base + 1, framesB);
  const room = `script-${id}`;
  a.send(JSON.stringify({ type: 'join', room }));
  b.send(JSON.stringify({ type: 'join', room }));
  await until(() => framesA.some((f) => f.type === 'joined') && framesB.some((f) => f.type === 'joined'), 'joins');
  const text = `through the cluster ${id}`;
  a.send(JSON.stringify({ type: 'send', room, text, ref: 'x' }));
  await until(() => framesA.some((f) => f.type === 'ack'), 'the ack (Kafka)');
  await until(() => framesB.some((f) => f.type === 'message' && f.text === text), 'delivery on the other node');
  await until(async () => {
    const res = await fetch(`http://127.0.0.1:${base + 1}/api/rooms/${room}/messages`);
    const rows = await res.json();
    return rows.length === 1 && rows[0].text === text;
  }, 'the message archived in PostgreSQL, once');
  a.close();
  b.close();
  const { stdout } = await run('../../scripts/cluster', ['status'], { env });
  assert.match(stdout, /node-1: running/);
  assert.match(stdout, /node-2: running/);
  assert.match(stdout, /archive: running/);
});
