// Peer 1: Node Socket.IO v4 with the official Redis adapter, implementing the
// original system's contract: `event:message` in, `event:listen` to everyone.
// PORT and REDIS_URL as for switchboard.
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';

const port = Number(process.env.PORT ?? 9000);
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer();
const io = new Server(http, {
  adapter: createAdapter(pub, sub, { key: process.env.REDIS_PREFIX ?? 'socket.io' }),
  transports: ['websocket', 'polling'],
});
io.on('connection', (socket) => {
  socket.on('event:message', (message) => {
    io.emit('event:listen', message);
  });
});
http.listen(port, '127.0.0.1', () => console.log(`socket.io peer on ${port}`));
process.on('SIGTERM', () => process.exit(0));
