// Starting, killing and restarting switchboard processes for the client's
// tests against the real binary. SWITCHBOARD_BIN names it (default: the
// workspace's debug build, relative to clients/js).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Every process started and not yet gone: killed if this test process exits first. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** The binary to run, and why the tests cannot run when it is missing. */
export function binary() {
  const given = process.env.SWITCHBOARD_BIN;
  const bin = path.resolve(here, '..', given ?? '../../target/debug/switchboard');
  if (existsSync(bin)) return { bin, missing: null };
  // Named explicitly and absent is a failure; the default build absent is a skip.
  if (given) throw new Error(`SWITCHBOARD_BIN=${given} does not exist`);
  return { bin, missing: `no switchboard binary at ${bin}: build it (cargo build --bin switchboard) or set SWITCHBOARD_BIN` };
}

/** A free TCP port on the loopback address. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves when a TCP connection to `url`'s host and port opens; rejects after `ms`. */
export function reachable(url, ms = 2000) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(u.port || 6379), u.hostname);
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`${url} did not answer within ${ms} ms`)); }, ms);
    s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve(undefined); });
    s.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

/**
 * A switchboard node: one `switchboard serve` process at a time on a fixed
 * port, which can be killed and started again on that same port.
 */
export class Node {
  /**
   * @param {string} label for logs
   * @param {string} bin
   * @param {number} port
   * @param {Record<string, string>} env
   */
  constructor(label, bin, port, env) {
    this.label = label;
    this.bin = bin;
    this.port = port;
    this.env = env;
    this.url = `http://127.0.0.1:${port}`;
    /** @type {import('node:child_process').ChildProcess | null} */
    this.child = null;
    /** @type {Buffer[]} the output of every run, kept for a failure report */
    this.output = [];
    this.starts = 0;
    /** Set by `stop()`: a restart still on its way does not start it again. */
    this.stopped = false;
  }

  /** Starts the process and waits for `/healthz` (20 s, retrying a port still held by a killed run). */
  async start() {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.stopped) throw new Error(`${this.label} was stopped`);
      const child = spawn(this.bin, ['serve'], {
        env: {
          PATH: process.env.PATH ?? '',
          PORT: String(this.port),
          HOST: '127.0.0.1',
          RUST_LOG: process.env.SWITCHBOARD_LOG ?? 'warn',
          ...this.env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.starts++;
      running.add(child);
      child.once('exit', () => running.delete(child));
      this.output.push(Buffer.from(`--- ${this.label} run ${this.starts} (pid ${child.pid}) ---\n`));
      child.stdout?.on('data', (b) => this.output.push(b));
      child.stderr?.on('data', (b) => this.output.push(b));
      this.child = child;
      while (!this.stopped && Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
        try {
          const res = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(1000) });
          if (res.ok) return;
        } catch {}
        await sleep(50);
      }
      if (this.stopped) {
        await this.kill();
        throw new Error(`${this.label} was stopped`);
      }
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        throw new Error(`${this.label} did not become healthy within 20 s\n${this.logs()}`);
      }
      if (Date.now() >= deadline) throw new Error(`${this.label} exited with ${child.exitCode}\n${this.logs()}`);
      await sleep(200);   // e.g. the port not free yet: try again
    }
  }

  /** SIGKILL: no goodbye, nothing flushed. Resolves once the process is gone. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await gone;
  }

  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit code (null when killed). */
  async stop() {
    this.stopped = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const gone = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    const code = await gone;
    clearTimeout(timer);
    return code;
  }

  /** The last `bytes` of the output of every run. */
  logs(bytes = 8000) {
    const text = Buffer.concat(this.output).toString('utf8');
    return text.length > bytes ? `…${text.slice(-bytes)}` : text;
  }
}

/**
 * Polls `fn` until it returns true; fails naming `what` after `ms`.
 * @param {() => boolean | Promise<boolean>} fn
 * @param {string} what
 * @param {number} [ms]
 */
export async function until(fn, what, ms = 10_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}
