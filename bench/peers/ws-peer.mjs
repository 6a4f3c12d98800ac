// Peer 2: Node `ws` with plain Redis Pub/Sub and the same JSON contract as
// switchboard's /ws (join/leave/send in, joined/left/message/ack out), one
// Redis channel per room, subscribed while the node has members there.
import { WebSocketServer } from 'ws';
import { createClient } from 'redis';
import { randomUUID } from 'node:crypto';

const port = Number(process.env.PORT ?? 9100);
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = process.env.REDIS_PREFIX ?? 'wspeer';
const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

const rooms = new Map(); // room -> Set<ws>
const channel = (room) => `${prefix}:room:${room}`;

function deliver(room, raw) {
  for (const ws of rooms.get(room) ?? []) ws.send(raw);
}

async function join(ws, room) {
  let members = rooms.get(room);
  if (!members) {
    members = new Set();
    rooms.set(room, members);
    await sub.subscribe(channel(room), (raw) => deliver(room, raw));
  }
  members.add(ws);
}

async function leave(ws, room) {
  const members = rooms.get(room);
  if (!members) return;
  members.delete(ws);
  if (members.size === 0) {
    rooms.delete(room);
    await sub.unsubscribe(channel(room));
  }
}

const wss = new WebSocketServer({ port, host: '127.0.0.1', path: '/ws' });
wss.on('connection', (ws, req) => {
  const name = new URL(req.url, 'http://x').searchParams.get('name') ?? 'anon';
  const joined = new Set();
  ws.on('message', async (data) => {
    let f;
    try {
      f = JSON.parse(data.toString());
    } catch {
      return ws.send(JSON.stringify({ type: 'error', code: 'bad_frame', message: 'not JSON' }));
    }
    if (f.type === 'join') {
      await join(ws, f.room);
      joined.add(f.room);
      ws.send(JSON.stringify({ type: 'joined', room: f.room, history: [] }));
    } else if (f.type === 'leave') {
      joined.delete(f.room);
      await leave(ws, f.room);
      ws.send(JSON.stringify({ type: 'left', room: f.room }));
    } else if (f.type === 'send') {
      const msg = { type: 'message', id: randomUUID(), room: f.room, from: name, text: f.text, ts: Date.now() };
      await pub.publish(channel(f.room), JSON.stringify(msg));
      ws.send(JSON.stringify({ type: 'ack', ref: f.ref, id: msg.id }));
    } else if (f.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong' }));
    }
  });
  ws.on('close', () => {
    for (const room of joined) leave(ws, room);
  });
});
console.log(`ws peer on ${port}`);
process.on('SIGTERM', () => process.exit(0));
