// The switchboard client: one WebSocket to a node (any of several), kept
// open by itself, with the server's guarantees made automatic: every send
// resolves once durable and is resent with its id across reconnects, every
// room is rejoined with `since` and delivers each message once, in order.
// Plain ES module, no build step: browsers and Node 18+ run it as it is.

import { Backoff, retryDelay } from './backoff.js';
import { Outbox, SwitchboardError, uuid } from './outbox.js';
import { Emitter, Room } from './room.js';

export { Backoff } from './backoff.js';
export { Merge } from './merge.js';
export { Outbox, SwitchboardError } from './outbox.js';
export { Room } from './room.js';

const PING_EVERY = 25_000;
const DISCONNECTED = 4002;           // close code: the server API disconnected this user
const PONG_TIMEOUT = 10_000;
const RETRIES = 6;                   // automatic retries of `rate_limited` / `unavailable`
const REJOIN_RETRIES = 8;            // of a join answered `unavailable`
const RETRIABLE = new Set(['rate_limited', 'unavailable']);
const HELD_MAX = 10_000;             // live messages held while a cut recovery is filled

/**
 * Connects to switchboard and stays connected until `close()`.
 * @param {string | string[]} url a node's address (`http(s)://` or `ws(s)://`, with or without `/ws`), or several: each reconnect tries the next
 * @param {import('./index').ConnectOptions} [options]
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}

/**
 * A connection to a switchboard cluster. Made by {@link connect}. Its
 * events (`on`): `state` (the new state), `gap` (`{ room }`: messages were
 * lost while away) and `error` (an error not tied to a request).
 */
export class Client extends Emitter {
  /**
   * @param {string | string[]} url
   * @param {import('./index').ConnectOptions} options
   */
  constructor(url, options) {
    super();
    const urls = (Array.isArray(url) ? url : [url]).map(endpoints);
    if (urls.length === 0) throw new TypeError('connect needs at least one url');
    this.urls = urls;
    this.options = options;
    this.name = options.name;
    /** `connecting`, `open`, `reconnecting` or `closed`. */
    this.state = 'connecting';
    this.backoff = new Backoff({ min: options.backoffMin ?? 250, max: options.backoffMax ?? 10_000 });
    this.stableAfter = options.stableAfter ?? 10_000;
    this.connectTimeout = options.connectTimeout ?? 10_000;
    this.outbox = new Outbox(options.outboxMax ?? 1000);
    /** @type {Map<string, Room>} */
    this.rooms = new Map();
    /** @type {Map<string, { resolve: (f: any) => void, reject: (e: Error) => void, room?: Room, rejoin?: boolean, id?: string }>} */
    this.refs = new Map();
    this.token = options.token ?? null;
    this.next = 0;                   // index of the url to dial next
    /** The node of the current (or last) connection. */
    this.current = this.urls[0];
    this.refSeq = 0;
    /** @type {any} */
    this.ws = null;
    this.everOpen = false;
    this.failedOpen = false;         // the last attempt never opened
    this.timers = { reconnect: null, open: null, ping: null, pong: null, stable: null };
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this.retryTimers = new Set();
    this.dial();
  }

  /**
   * A listener threw: told to the `error` listeners (not again when one of them threw).
   * @param {unknown} e
   * @param {string} event
   */
  failed(e, event) {
    if (event !== 'error') this.emit('error', e);
  }

  /**
   * Joins `room`; resolves with the {@link Room} once the server said
   * `joined` (over the current or a later connection), rejects with the
   * server's code (`forbidden`, `bad_room`, `too_many_rooms`).
   * @param {string} name
   * @param {import('./index').JoinOptions} [options]
   * @returns {Promise<Room>}
   */
  join(name, options = {}) {
    if (this.state === 'closed') return Promise.reject(new SwitchboardError('closed', 'the client is closed'));
    if (this.rooms.has(name)) return Promise.reject(new SwitchboardError('already_joined', `${name} is joined already`));
    const room = new Room(this, name, options);
    this.rooms.set(name, room);
    return new Promise((resolve, reject) => {
      room.first = { resolve: () => resolve(room), reject };
      if (this.isOpen()) this.sendJoin(room);
    });
  }

  /**
   * Tries to connect now instead of waiting out the backoff (a page calls
   * it when the browser is back online); nothing while open or connecting.
   */
  reconnect() {
    if (this.state === 'closed' || this.ws !== null || !this.timers.reconnect) return;
    clearTimeout(this.timers.reconnect);
    this.backoff.reset();
    this.dial();
  }

  /** Closes for good: pending sends and joins are rejected with `closed`. */
  close() {
    if (this.state === 'closed') return;
    const closed = new SwitchboardError('closed', 'the client is closed');
    this.setState('closed');
    this.drop(1000, closed);
    clearTimeout(this.timers.reconnect ?? undefined);
    this.timers.reconnect = null;
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
    for (const room of [...this.rooms.values()]) this.forget(room, closed);
  }

  // ---------- the socket ----------

  isOpen() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /** @param {string} state */
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', state);
  }

  async dial() {
    this.timers.reconnect = null;
    if (this.state === 'closed') return;
    const target = this.urls[this.next % this.urls.length];
    this.next++;
    this.current = target;
    let sock;
    try {
      await this.refreshToken();
      const WS = await socketClass(this.options.WebSocket);
      if (this.state === 'closed') return;
      const q = new URLSearchParams();
      if (this.name) q.set('name', this.name);
      if (this.token) q.set('token', this.token);
      const query = q.toString();
      sock = new WS(query ? `${target.ws}?${query}` : target.ws);
    } catch (e) {
      this.emit('error', e);
      this.failedOpen = true;
      this.retryLater();
      return;
    }
    this.ws = sock;
    this.failedOpen = true;
    // A node that accepts but never answers is given up on, like one that refuses.
    this.timers.open = setTimeout(() => { if (this.ws === sock) this.drop(4000); }, this.connectTimeout);
    sock.onopen = () => this.opened(sock);
    sock.onmessage = (/** @type {{ data: unknown }} */ ev) => {
      if (this.ws !== sock) return;
      this.alive();
      let f;
      try {
        f = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      if (f && typeof f === 'object') this.frame(f);
    };
    sock.onclose = (/** @type {{ code: number }} */ ev) => {
      if (this.ws !== sock) return;
      if (ev.code === DISCONNECTED) {
        // The server API disconnected this user: not to be undone by reconnecting.
        this.emit('error', new SwitchboardError('disconnected', 'the server disconnected this user (4002)'));
        this.close();
        return;
      }
      this.drop(ev.code);
    };
    sock.onerror = () => {};
  }

  /** Asks `getToken` on the first dial, after a dial that never opened, and when the token expired. */
  async refreshToken() {
    const get = this.options.getToken;
    if (!get) return;
    if (this.token && !this.failedOpen && !expired(this.token)) return;
    this.token = await get();
  }

  /**
   * The server warned that the connection's token expires soon: with
   * `getToken`, a new one is asked for and sent (`refresh`), so the
   * connection goes on; without, the server closes it at expiry (4001)
   * and the client reconnects.
   */
  async renewToken() {
    const get = this.options.getToken;
    if (!get || !this.isOpen()) return;
    try {
      const token = await get();
      this.token = token;
      await this.request({ type: 'refresh', token });
    } catch (e) {
      this.emit('error', e);
    }
  }

  /** @param {any} sock */
  opened(sock) {
    if (this.ws !== sock) return;
    clearTimeout(this.timers.open ?? undefined);
    this.failedOpen = false;
    this.everOpen = true;
    this.setState('open');
    this.timers.stable = setTimeout(() => this.backoff.reset(), this.stableAfter);
    this.timers.ping = setInterval(() => this.ping(), PING_EVERY);
    for (const room of this.rooms.values()) this.sendJoin(room);
  }

  ping() {
    if (!this.isOpen()) return;
    this.write({ type: 'ping' });
    if (!this.timers.pong) this.timers.pong = setTimeout(() => this.drop(4000), PONG_TIMEOUT);
  }

  alive() {
    clearTimeout(this.timers.pong ?? undefined);
    this.timers.pong = null;
  }

  /**
   * The socket is gone: joins and sends wait for the next one, other
   * requests are rejected with `error`.
   * @param {number} code
   * @param {SwitchboardError} [error]
   */
  drop(code, error = new SwitchboardError('disconnected', 'the connection dropped before the answer')) {
    const sock = this.ws;
    this.ws = null;
    clearTimeout(this.timers.open ?? undefined);
    if (sock) {
      sock.onopen = sock.onmessage = sock.onclose = null;
      // Closing a socket still connecting makes `ws` emit an error: keep a listener.
      sock.onerror = () => {};
      try {
        sock.close(code >= 3000 || code === 1000 ? code : 1000);
      } catch {}
    }
    clearTimeout(this.timers.stable ?? undefined);
    clearInterval(this.timers.ping ?? undefined);
    this.alive();
    for (const e of this.outbox.pending()) e.inFlight = false;
    for (const room of this.rooms.values()) room.state = 'joining';
    const pending = [...this.refs.values()];
    this.refs.clear();
    for (const p of pending) if (!p.room && !p.id) p.reject(error);  // joins and sends go again
    if (this.state !== 'closed') this.retryLater();
  }

  retryLater() {
    if (this.state === 'closed' || this.timers.reconnect) return;
    this.setState(this.everOpen ? 'reconnecting' : 'connecting');
    this.timers.reconnect = setTimeout(() => this.dial(), this.backoff.next());
  }

  /** @param {object} frame */
  write(frame) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends a request and resolves with its answer (rejects with its error).
   * @param {Record<string, unknown>} frame
   * @returns {Promise<any>}
   */
  request(frame) {
    if (!this.isOpen()) return Promise.reject(new SwitchboardError('disconnected', 'not connected'));
    const ref = `r${++this.refSeq}`;
    return new Promise((resolve, reject) => {
      this.refs.set(ref, { resolve, reject });
      this.write({ ...frame, ref });
    });
  }

  // ---------- frames from the server ----------

  /** @param {any} f */
  frame(f) {
    const pending = typeof f.ref === 'string' ? this.refs.get(f.ref) : undefined;
    if (pending) this.refs.delete(f.ref);
    switch (f.type) {
      case 'message': {
        const room = this.rooms.get(f.room);
        this.own(f);
        if (room && room.state === 'joined') room.deliver(f);
        else if (room && room.state === 'filling') {
          // Bounded: past it, start over (the rejoin recovers from the same position).
          if (room.held.length >= HELD_MAX) this.drop(4000);
          else room.held.push(f);
        }
        return;
      }
      case 'ack':
        return this.acked(f);
      case 'joined':
        return this.joinedFrame(f, pending);
      case 'presence_change':
        this.rooms.get(f.room)?.presenceChange(f);
        return;
      case 'deleted':
        this.rooms.get(f.room)?.emit('deleted', { room: f.room, id: f.id });
        return;
      case 'token_expiring':
        return this.renewToken();
      case 'error':
        return this.errorFrame(f, pending);
      default:
        pending?.resolve(f);
    }
  }

  /**
   * @param {any} f
   * @param {any} pending
   */
  joinedFrame(f, pending) {
    const room = this.rooms.get(f.room);
    if (!room || (pending?.room && pending.room !== room)) {
      // Left while the join was under way.
      if (!room) this.write({ type: 'leave', room: f.room });
      return;
    }
    for (const m of Array.isArray(f.history) ? f.history : []) this.own(m);
    room.joined(f, !!pending?.rejoin);
    room.joinTries = 0;
    const first = room.first;
    room.first = undefined;
    first?.resolve();
    // Everything not acked yet goes out again with its same id, in order.
    for (const e of this.outbox.pending(room.name)) if (!e.inFlight && !e.timer) this.transmit(e);
  }

  /**
   * A message (live or in a history) that may be a send of ours: keeps
   * its position for the ack, which may come without one.
   * @param {any} m
   */
  own(m) {
    const mine = m && typeof m.id === 'string' ? this.outbox.get(m.id) : undefined;
    if (mine && typeof m.seq === 'number') Object.assign(mine, { seq: m.seq, epoch: m.epoch });
  }

  /** @param {any} f */
  acked(f) {
    const e = this.outbox.get(f.id);
    if (!e) return;
    const seq = typeof f.seq === 'number' ? f.seq : e.seq || null;
    const epoch = typeof f.epoch === 'string' ? f.epoch : e.epoch || null;
    this.outbox.resolve(f.id, { id: f.id, seq, epoch });
  }

  /**
   * @param {any} f
   * @param {any} pending
   */
  errorFrame(f, pending) {
    const code = String(f.code ?? 'error');
    const error = new SwitchboardError(code, f.message);
    if (pending?.room) return this.joinFailed(pending.room, code, error);
    const id = typeof f.id === 'string' && this.outbox.get(f.id) ? f.id : pending?.id;
    const e = id ? this.outbox.get(id) : undefined;
    if (e) return this.sendFailed(e, code, error);
    if (pending) return pending.reject(error);
    this.emit('error', error);
  }

  // ---------- joining ----------

  /** @param {Room} room */
  sendJoin(room) {
    const ref = `j${++this.refSeq}`;
    const frame = room.joinFrame(ref);
    this.refs.set(ref, { room, rejoin: !!frame.since, resolve() {}, reject() {} });
    room.state = 'joining';
    this.write(frame);
  }

  /**
   * @param {Room} room
   * @param {string} code
   * @param {SwitchboardError} error
   */
  joinFailed(room, code, error) {
    if (this.rooms.get(room.name) !== room) return;
    room.joinTries = (room.joinTries ?? 0) + 1;
    if (code === 'unavailable' && room.joinTries <= REJOIN_RETRIES) {
      this.later(() => { if (this.rooms.get(room.name) === room && this.isOpen()) this.sendJoin(room); }, retryDelay(room.joinTries));
      return;
    }
    if (room.joinedOnce) this.emit('error', error);
    this.forget(room, error);
  }

  /**
   * Drops `room`: its first join and unacked sends are rejected with `error`.
   * @param {Room} room
   * @param {SwitchboardError} error
   */
  forget(room, error) {
    if (this.rooms.get(room.name) === room) this.rooms.delete(room.name);
    room.state = 'left';
    const first = room.first;
    room.first = undefined;
    first?.reject(error);
    for (const e of this.outbox.pending(room.name)) this.outbox.reject(e.id, error);
  }

  // ---------- sending ----------

  /**
   * @param {Room} room
   * @param {string} text
   * @param {{ id?: string, data?: unknown, ephemeral?: boolean }} options
   */
  enqueue(room, text, { id, data, ephemeral }) {
    if (this.state === 'closed') return Promise.reject(new SwitchboardError('closed', 'the client is closed'));
    let added;
    try {
      added = this.outbox.add({ id: id ?? uuid(), room: room.name, text, data, ephemeral });
    } catch (e) {
      return Promise.reject(e);
    }
    if (room.state === 'joined') this.transmit(added.entry);
    return added.promise;
  }

  /** @param {import('./outbox.js').Pending} e */
  transmit(e) {
    const room = this.rooms.get(e.room);
    if (!room || room.state !== 'joined' || !this.isOpen()) return;  // again on `joined`
    const ref = `s${++this.refSeq}`;
    this.refs.set(ref, { id: e.id, resolve() {}, reject() {} });
    e.tries++;
    e.inFlight = true;
    /** @type {Record<string, unknown>} */
    const frame = { type: 'send', room: e.room, id: e.id, ref };
    if (e.text) frame.text = e.text;
    if (e.data !== undefined) frame.data = e.data;
    if (e.ephemeral) frame.ephemeral = true;
    this.write(frame);
  }

  /**
   * @param {import('./outbox.js').Pending} e
   * @param {string} code
   * @param {SwitchboardError} error
   */
  sendFailed(e, code, error) {
    e.inFlight = false;
    if (RETRIABLE.has(code) && e.retries < RETRIES) {
      e.retries++;
      e.timer = this.later(() => { e.timer = null; this.transmit(e); }, retryDelay(e.retries));
      return;
    }
    if (code === 'not_joined' && e.retries < RETRIES && this.rooms.has(e.room)) {
      // The server lost the membership: join again; `joined` resends.
      e.retries++;
      this.sendJoin(/** @type {Room} */ (this.rooms.get(e.room)));
      return;
    }
    this.outbox.reject(e.id, error);
  }

  /**
   * @param {() => void} fn
   * @param {number} ms
   */
  later(fn, ms) {
    const t = setTimeout(() => { this.retryTimers.delete(t); fn(); }, ms);
    this.retryTimers.add(t);
    return t;
  }
}

/**
 * A node's `/ws` and HTTP addresses from the address given.
 * @param {string} url
 */
function endpoints(url) {
  const base = typeof location === 'object' && location ? location.href : undefined;
  const u = new URL(url, base);
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  const path = u.pathname.replace(/\/+$/, '');
  const wsPath = path.endsWith('/ws') ? path : `${path}/ws`;
  const httpPath = wsPath.slice(0, -3);
  return { ws: `${secure ? 'wss' : 'ws'}://${u.host}${wsPath}`, http: `${secure ? 'https' : 'http'}://${u.host}${httpPath}` };
}

/**
 * The WebSocket class: the one given, the platform's, or the `ws` package.
 * @param {any} given
 */
async function socketClass(given) {
  if (given) return given;
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  try {
    return (await import('ws')).default;
  } catch {
    throw new SwitchboardError('no_websocket', 'this platform has no WebSocket: install the `ws` package');
  }
}

/**
 * Whether a JWT's `exp` has passed (read, not verified: the server checks).
 * @param {string} token
 */
function expired(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const { exp } = JSON.parse(atob(part));
    return typeof exp === 'number' && exp * 1000 <= Date.now();
  } catch {
    return false;
  }
}
