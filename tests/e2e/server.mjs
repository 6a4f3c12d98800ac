// Starts the switchboard binary on a free port for one test file and stops
// it afterwards. SWITCHBOARD_BIN names the binary (the test script sets it).
import { spawn } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// With `{ capture: true }` the node's output is kept (not shown), and
// `logs()` returns it. `{ port }` starts it on that port (a restart).
export async function startServer(extraEnv = {}, { capture = false, port: given } = {}) {
  const bin = process.env.SWITCHBOARD_BIN ?? '../../target/debug/switchboard';
  const port = given ?? (await freePort());
  const child = spawn(bin, ['serve'], {
    env: {
      PATH: process.env.PATH,
      PORT: String(port),
      HOST: '127.0.0.1',
      DATABASE_URL: 'sqlite::memory:',
      RUST_LOG: process.env.SWITCHBOARD_LOG ?? 'warn',
      ...extraEnv,
    },
    stdio: ['ignore', capture ? 'pipe' : 'inherit', capture ? 'pipe' : 'inherit'],
  });
  const output = [];
  if (capture) {
    child.stdout.on('data', (chunk) => output.push(chunk));
    child.stderr.on('data', (chunk) => output.push(chunk));
  }
  const logs = () => Buffer.concat(output).toString('utf8');
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`switchboard exited with ${child.exitCode}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return { url, port, logs, stop: () => stop(child), kill: () => stop(child, 'SIGKILL') };
    } catch {}
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error('switchboard did not become healthy within 10 s');
}

async function stop(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill(signal);
  return exited;
}
