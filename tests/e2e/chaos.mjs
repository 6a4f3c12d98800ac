// Fault survival: the whole topology (two `serve` nodes, one `archive`,
// Redis, tansu with its log in SQLite, PostgreSQL) as private processes of
// this run, under steady load from clients that resend every unacked
// message with the same id until it is acked. One fault after another:
// kill -9 a node, restart Redis, restart the broker, stop PostgreSQL, kill -9
// the archiver. Clients dropped by a fault rejoin with `since`. At the end
// every acked message must be in PostgreSQL exactly once and must have
// reached every client exactly once. Prints a table (and writes it as JSON
// with --json FILE).
//
//   node chaos.mjs [--short] [--json FILE]
//
// Environment: SWITCHBOARD_BIN (the binary), CHAOS_CLIENTS, CHAOS_RATE
// (messages per second per client). Run through scripts/chaos.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, writeFileSync, rmSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import net from 'node:net';
import WebSocket from 'ws';
import { freePort } from './server.mjs';

const args = process.argv.slice(2);
const short = args.includes('--short');
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : null;
const bin = resolve(process.env.SWITCHBOARD_BIN ?? '../../target/debug/switchboard');
const clientsN = Number(process.env.CHAOS_CLIENTS ?? (short ? 8 : 16));
const rate = Number(process.env.CHAOS_RATE ?? (short ? 5 : 10));
const steady = short ? 3000 : 8000; // ms of load between faults
const pgOutage = short ? 5000 : 15000;
const tag = randomUUID().slice(0, 8);
const room = `chaos-${tag}`;
const dir = mkdtempSync(join(tmpdir(), 'switchboard-chaos-'));
const started = Date.now();
const log = (...a) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s]`, ...a);

// ---- processes ----------------------------------------------------------

const procs = new Map();
function run(name, cmd, argv, env = {}, opts = {}) {
  // Each process's output goes to DIR/NAME.log, appended across restarts.
  const out = openSync(join(dir, `${name}.log`), 'a');
  const child = spawn(cmd, argv, {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', out, out],
    ...opts,
  });
  closeSync(out);
  procs.set(name, child);
  return child;
}
function kill9(name) {
  const child = procs.get(name);
  procs.delete(name);
  if (child && child.exitCode === null) child.kill('SIGKILL');
  return child ? new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r))) : Promise.resolve();
}
async function waitPort(port, ms = 20000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listens on ${port}`);
}
async function waitReady(port, ms = 30000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return;
    } catch {}
    await sleep(100);
  }
  throw new Error(`node on ${port} is not ready`);
}

const ports = {
  redis: await freePort(),
  kafka: await freePort(),
  pg: await freePort(),
  nodes: [await freePort(), await freePort()],
};

// PostgreSQL: a private cluster (initdb refuses root: run it as postgres).
const asPostgres = process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--']] : null;
const pgBin = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' }).stdout?.trim()
  || spawnSync('sh', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1'], { encoding: 'utf8' }).stdout.trim();
const pgData = join(dir, 'pg');
function pgCmd(tool, argv) {
  const [cmd, pre] = asPostgres ?? [join(pgBin, tool), []];
  const full = asPostgres ? [...pre, join(pgBin, tool), ...argv] : argv;
  const r = spawnSync(cmd, full, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${tool} failed: ${r.stderr || r.stdout}`);
}
function pgStart() {
  pgCmd('pg_ctl', ['-D', pgData, '-o', `-p ${ports.pg} -k ${pgData} -c listen_addresses=127.0.0.1`, '-l', join(dir, 'pg.log'), '-w', 'start']);
}
function pgStop() {
  pgCmd('pg_ctl', ['-D', pgData, '-m', 'fast', '-w', 'stop']);
}
function psql(sql) {
  const r = spawnSync('psql', ['-h', '127.0.0.1', '-p', String(ports.pg), '-U', 'postgres', '-d', 'postgres', '-tAc', sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
  return r.stdout.trim();
}

const dbUrl = () => `postgres://postgres@127.0.0.1:${ports.pg}/postgres`;
const common = () => ({
  DATABASE_URL: dbUrl(),
  REDIS_URL: `redis://127.0.0.1:${ports.redis}`,
  REDIS_PREFIX: `chaos-${tag}`,
  KAFKA_BROKERS: `127.0.0.1:${ports.kafka}`,
  KAFKA_TOPIC: `chaos-${tag}`,
  ARCHIVE_GROUP: `chaos-${tag}`,
  KAFKA_PARTITIONS: '3',
  RUST_LOG: 'warn',
});
function startRedis() {
  run('redis', 'redis-server', ['--port', String(ports.redis), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  return waitPort(ports.redis);
}
function startKafka() {
  const url = `tcp://127.0.0.1:${ports.kafka}`;
  run('kafka', 'tansu', ['broker', '--listener-url', url, '--advertised-listener-url', url, '--storage-engine', 'sqlite://broker.db'], {}, { cwd: dir });
  return waitPort(ports.kafka);
}
async function startNode(i) {
  run(`node-${i + 1}`, bin, ['serve'], { ...common(), PORT: String(ports.nodes[i]), HOST: '127.0.0.1', NODE_ID: `chaos-node-${i + 1}` });
  await waitReady(ports.nodes[i]);
}
function startArchiver() {
  run('archive', bin, ['archive'], common());
}

// ---- load ---------------------------------------------------------------

const acked = new Map(); // id -> phase in which it was first acked
let phase = 'steady';
let sending = false; // set once every client has joined, so each can see every acked message
let stopSending = false;

class LoadClient {
  constructor(i) {
    this.i = i;
    this.node = i % 2;
    this.pending = new Map(); // id -> {text, sentAt}
    this.seq = 0;
    this.lastAckAt = 0;
    // The room as this client saw it: its position, and how many times
    // each message id reached it (live or recovered).
    this.epoch = null;
    this.last = 0;
    this.seen = new Map();
    this.unrecovered = 0;
    this.connect();
    this.timer = setInterval(() => this.tick(), 1000 / rate);
  }
  connect() {
    const ws = new WebSocket(`ws://127.0.0.1:${ports.nodes[this.node]}/ws?name=load-${this.i}`);
    this.ws = ws;
    this.joined = false;
    ws.on('open', () => {
      // Back after a drop: ask for exactly what was missed.
      const since = this.epoch ? { epoch: this.epoch, seq: this.last } : undefined;
      ws.send(JSON.stringify({ type: 'join', room, history: 0, since }));
    });
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString());
      if (f.type === 'joined') {
        if (this.epoch && f.recovered !== true) this.unrecovered++;
        for (const m of f.history) this.see(m);
        if (f.epoch !== undefined && (f.epoch !== this.epoch || f.seq > this.last)) {
          this.epoch = f.epoch;
          this.last = f.seq;
        }
        this.joined = true;
        for (const [id, p] of this.pending) this.transmit(id, p); // resend, same ids
      } else if (f.type === 'message') {
        this.see(f);
      } else if (f.type === 'ack') {
        if (this.pending.delete(f.id) && !acked.has(f.id)) acked.set(f.id, phase);
        this.lastAckAt = Date.now();
      }
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      if (this.closed) return;
      // Reconnect, to the other node: the one we were on may be gone.
      this.node = 1 - this.node;
      setTimeout(() => this.connect(), 200);
    });
  }
  see(m) {
    this.seen.set(m.id, (this.seen.get(m.id) ?? 0) + 1);
    if (m.epoch !== undefined && (m.epoch !== this.epoch || m.seq > this.last)) {
      this.epoch = m.epoch;
      this.last = m.seq;
    }
  }
  transmit(id, p) {
    p.sentAt = Date.now();
    if (this.joined && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: 'send', room, id, text: p.text }));
    }
  }
  tick() {
    const now = Date.now();
    // Unacked for 3 s (an `unavailable`, or a reply lost with a node): again, same id.
    for (const [id, p] of this.pending) if (now - p.sentAt > 3000) this.transmit(id, p);
    if (stopSending || !sending) return;
    const id = randomUUID();
    const p = { text: `c${this.i}-${this.seq++}` };
    this.pending.set(id, p);
    this.transmit(id, p);
  }
  close() {
    this.closed = true;
    clearInterval(this.timer);
    this.ws.terminate();
  }
}

// ---- measuring recovery ---------------------------------------------------

/** A message sent through node a arrives at node b, both ways. */
async function crossNodeOk() {
  const open = (port, name) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?name=${name}`);
    const frames = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    ws.on('open', () => ws.send(JSON.stringify({ type: 'join', room, history: 0 })));
    ws.on('error', reject);
    const t = setInterval(() => {
      if (frames.some((f) => f.type === 'joined')) { clearInterval(t); resolve({ ws, frames }); }
    }, 10);
    setTimeout(() => { clearInterval(t); reject(new Error('join timed out')); }, 2000);
  });
  let a, b;
  try {
    [a, b] = await Promise.all([open(ports.nodes[0], 'probe-a'), open(ports.nodes[1], 'probe-b')]);
    const ta = `probe-${randomUUID()}`, tb = `probe-${randomUUID()}`;
    a.ws.send(JSON.stringify({ type: 'send', room, text: ta, id: randomUUID() }));
    b.ws.send(JSON.stringify({ type: 'send', room, text: tb, id: randomUUID() }));
    const until = Date.now() + 1000;
    while (Date.now() < until) {
      if (b.frames.some((f) => f.text === ta) && a.frames.some((f) => f.text === tb)) return true;
      await sleep(20);
    }
    return false;
  } catch {
    return false;
  } finally {
    a?.ws.terminate();
    b?.ws.terminate();
  }
}

const storedCount = () => Number(psql(`select count(*) from messages where room = '${room}' and body not like 'probe-%'`));

/**
 * ms from `since` until every client has an ack newer than `since`, nodes
 * talk across Redis, and (for archive faults) the table holds at least
 * `backlog` messages: what had been acked when the fault was repaired.
 */
async function recovered(since, clients, { backlog = 0, limit = 90000 } = {}) {
  while (Date.now() - since < limit) {
    const acksOk = clients.every((c) => c.lastAckAt > since);
    let archiveOk = true;
    if (backlog) {
      try { archiveOk = storedCount() >= backlog; } catch { archiveOk = false; }
    }
    if (acksOk && archiveOk && (await crossNodeOk())) return Date.now() - since;
    await sleep(100);
  }
  return null;
}

// ---- the run --------------------------------------------------------------

const results = [];
let clients = [];
try {
  if (asPostgres) spawnSync('chown', ['postgres', dir]);
  chmodSync(dir, 0o777);
  pgCmd('initdb', ['-D', pgData, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  pgStart();
  await startRedis();
  await startKafka();
  const mig = spawnSync(bin, ['migrate'], { env: { PATH: process.env.PATH, ...common() }, encoding: 'utf8' });
  if (mig.status !== 0) throw new Error(`migrate failed: ${mig.stderr}`);
  startArchiver();
  await startNode(0);
  await startNode(1);
  log(`topology up in ${dir}: nodes ${ports.nodes}, redis ${ports.redis}, tansu ${ports.kafka}, postgres ${ports.pg}`);

  clients = Array.from({ length: clientsN }, (_, i) => new LoadClient(i));
  const joinUntil = Date.now() + 20000;
  while (!clients.every((c) => c.joined) && Date.now() < joinUntil) await sleep(50);
  sending = true;
  await sleep(steady);

  const faults = [
    ['kill -9 node 1', async () => {
      await kill9('node-1');
      await sleep(1000);
      await startNode(0);
    }, {}],
    ['restart Redis', async () => {
      await kill9('redis');
      await sleep(1000);
      await startRedis();
    }, {}],
    ['restart the broker (tansu)', async () => {
      await kill9('kafka');
      await sleep(1000);
      await startKafka();
    }, {}],
    [`stop PostgreSQL for ${pgOutage / 1000} s`, async () => {
      pgStop();
      await sleep(pgOutage);
      pgStart();
    }, { archive: true }],
    // Restarted a second later, as a supervisor would, while the broker
    // still lists the dead member: the archiver rejoins the group when it
    // holds no partitions past the session timeout (crates/archive).
    ['kill -9 the archiver (restarted after 1 s)', async () => {
      await kill9('archive');
      await sleep(1000);
      startArchiver();
    }, { archive: true }],
  ];
  for (const [name, fault, opts] of faults) {
    phase = name;
    const before = acked.size;
    log(`fault: ${name}`);
    const at = Date.now();
    await fault();
    const ms = await recovered(at, clients, opts.archive ? { backlog: acked.size } : {});
    log(`  recovered in ${ms === null ? 'NOT RECOVERED' : `${(ms / 1000).toFixed(1)} s`} (from the fault)`);
    results.push({ fault: name, recover_ms: ms, acked_before: before });
    await sleep(steady);
  }

  // Drain: stop new sends, keep resending until everything is acked.
  phase = 'drain';
  stopSending = true;
  const drainUntil = Date.now() + 60000;
  while (clients.some((c) => c.pending.size > 0) && Date.now() < drainUntil) await sleep(100);
  const unacked = clients.reduce((n, c) => n + c.pending.size, 0);
  // Every client saw every acked message exactly once (live, or recovered
  // with `since` after a drop).
  const missedBy = (c) => [...acked.keys()].filter((id) => !c.seen.has(id)).length;
  const seenUntil = Date.now() + 10000;
  while (clients.some((c) => missedBy(c) > 0) && Date.now() < seenUntil) await sleep(100);
  const missed = clients.reduce((n, c) => n + missedBy(c), 0);
  const doubled = clients.reduce((n, c) => n + [...c.seen.values()].filter((k) => k > 1).length, 0);
  const unrecovered = clients.reduce((n, c) => n + c.unrecovered, 0);
  for (const c of clients) c.close();
  // Wait for the archive to hold every acked message.
  const archiveUntil = Date.now() + 60000;
  while (storedCount() < acked.size && Date.now() < archiveUntil) await sleep(200);

  // Verify: every acked id stored exactly once.
  const rows = psql(`select id, count(*) over (partition by id) from messages where room = '${room}' and body not like 'probe-%'`)
    .split('\n').filter(Boolean).map((l) => l.split('|'));
  const storedIds = new Map(rows.map(([id, n]) => [id, Number(n)]));
  const byPhase = new Map();
  for (const [id, ph] of acked) {
    const s = byPhase.get(ph) ?? { acked: 0, stored: 0, lost: 0, duplicates: 0 };
    s.acked++;
    const n = storedIds.get(id) ?? 0;
    if (n >= 1) s.stored++; else s.lost++;
    if (n > 1) s.duplicates++;
    byPhase.set(ph, s);
  }
  const totalRows = Number(psql(`select count(*) from messages where room = '${room}' and body not like 'probe-%'`));
  const distinct = Number(psql(`select count(distinct id) from messages where room = '${room}' and body not like 'probe-%'`));

  const table = [['phase', 'time to recover', 'acked', 'stored', 'lost', 'duplicates']];
  for (const ph of ['steady', ...faults.map((f) => f[0]), 'drain']) {
    const s = byPhase.get(ph) ?? { acked: 0, stored: 0, lost: 0, duplicates: 0 };
    const r = results.find((x) => x.fault === ph);
    const rec = r ? (r.recover_ms === null ? 'not recovered' : `${(r.recover_ms / 1000).toFixed(1)} s`) : '-';
    table.push([ph, rec, s.acked, s.stored, s.lost, s.duplicates]);
  }
  const sum = (k) => [...byPhase.values()].reduce((n, s) => n + s[k], 0);
  table.push(['total', '', sum('acked'), sum('stored'), sum('lost'), sum('duplicates')]);
  console.log('\n| ' + table[0].join(' | ') + ' |\n|' + table[0].map((_, i) => (i ? '---:' : '---')).join('|') + '|');
  for (const row of table.slice(1)) console.log('| ' + row.join(' | ') + ' |');
  console.log(`\nrows in the table: ${totalRows}, distinct ids: ${distinct}; never acked at the end: ${unacked}`);
  console.log(`clients' view: ${missed} acked messages missed, ${doubled} delivered twice, ${unrecovered} rejoins not recovered`);
  console.log(`clients: ${clientsN} at ${rate} msg/s each; ${short ? 'short' : 'full'} run, ${((Date.now() - started) / 1000).toFixed(0)} s`);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ clients: clientsN, rate, short, table, totalRows, distinct, unacked, missed, doubled, unrecovered }, null, 2));

  const failures = [];
  if (sum('lost') > 0) failures.push(`${sum('lost')} acked messages are not in PostgreSQL`);
  if (totalRows !== distinct || sum('duplicates') > 0) failures.push('duplicate ids in PostgreSQL');
  if (results.some((r) => r.recover_ms === null)) failures.push('a fault was not recovered from');
  if (unacked > 0) failures.push(`${unacked} messages were never acked`);
  if (sum('acked') === 0) failures.push('nothing was acked');
  if (missed > 0) failures.push(`clients missed ${missed} acked messages`);
  if (doubled > 0) failures.push(`${doubled} messages reached a client twice`);
  if (failures.length) {
    console.error(`FAILED: ${failures.join('; ')}`);
    process.exitCode = 1;
  } else {
    console.log('OK: every acked message is stored exactly once and reached every client exactly once');
  }
} catch (e) {
  console.error(`chaos run failed: ${e.stack ?? e}`);
  process.exitCode = 1;
} finally {
  for (const c of clients) c.close();
  for (const name of [...procs.keys()]) await kill9(name);
  try { pgStop(); } catch {}
  if (process.exitCode !== 1) rmSync(dir, { recursive: true, force: true });
  else console.error(`(kept ${dir} for its logs)`);
}
