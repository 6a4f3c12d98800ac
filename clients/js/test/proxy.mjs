// A TCP proxy for tests: forwards every connection to a target port, and
// `cut()` destroys every current pair of sockets at once (a network cut as
// the client sees it: no close frame, the TCP connection just ends).
import net from 'node:net';
import { once } from 'node:events';

/**
 * Starts a proxy on a free loopback port forwarding to `127.0.0.1:targetPort`.
 * @param {number} targetPort
 * @returns {Promise<{ port: number, url: string, connections: () => number, cuts: number, cut: () => number, close: () => Promise<void> }>}
 */
export async function startProxy(targetPort) {
  /** @type {Set<[net.Socket, net.Socket]>} */
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = /** @type {[net.Socket, net.Socket]} */ ([client, upstream]);
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  const proxy = {
    port,
    url: `http://127.0.0.1:${port}`,
    connections: () => pairs.size,
    cuts: 0,
    /** Destroys every current pair; returns how many there were. */
    cut() {
      const n = pairs.size;
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
      proxy.cuts++;
      return n;
    },
    async close() {
      proxy.cut();
      await new Promise((resolve) => server.close(() => resolve(undefined)));
    },
  };
  return proxy;
}
