// A joined room as the application sees it: its messages, exactly once and
// in order; sending with an ack once durable; history; presence; leaving.

import { Merge } from './merge.js';
import { SwitchboardError } from './outbox.js';

/** Messages per history page when filling a cut recovery. */
const FILL_PAGE = 100;

/** Listeners by event name. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
  }

  /**
   * Calls `fn` with every value of `event` from now on; returns a function
   * that stops it.
   * @param {string} event
   * @param {Function} fn
   */
  on(event, fn) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Calls the listeners of `event` with `value`; one that throws is told
   * to `failed` and the others still run.
   * @param {string} event
   * @param {unknown} value
   */
  emit(event, value) {
    for (const fn of [...(this.listeners.get(event) ?? [])]) {
      try {
        fn(value);
      } catch (e) {
        this.failed(e, event);
      }
    }
  }

  /**
   * A listener of `event` threw `e`.
   * @param {unknown} e
   * @param {string} event
   */
  failed(e, event) {}
}

/**
 * A room of a {@link Client}. Made by `client.join`; it stays joined across
 * reconnects (rejoined with `since`) until `leave()` or `client.close()`.
 * Its events (`on`): `message` (a message, once, in order), `presence` (a
 * `presence_change` object), `gap` (`{ room }`: messages were lost) and
 * `joined` (`{ room, count, rejoined }`: joined, the first time or again
 * after a reconnect, once that join's history was delivered).
 */
export class Room extends Emitter {
  /**
   * @param {import('./switchboard.js').Client} client
   * @param {string} name
   * @param {import('./index').JoinOptions} options
   */
  constructor(client, name, options) {
    super();
    this.client = client;
    this.name = name;
    this.options = options;
    /** `joining`, `joined`, or `left`. */
    this.state = 'joining';
    /** Names in the room (from `joined` and presence changes). */
    this.count = 0;
    this.merge = new Merge();
    /** Whether a `joined` arrived on some connection. */
    this.joinedOnce = false;
    /** @type {any[]} live messages waiting while a cut recovery is filled */
    this.held = [];
    if (options.onMessage) this.on('message', options.onMessage);
    if (options.onPresence) this.on('presence', options.onPresence);
    if (options.onDeleted) this.on('deleted', options.onDeleted);
  }

  /** The position of the last message delivered: `{ epoch, seq }` or null. */
  get position() {
    return this.merge.since();
  }

  /**
   * A listener threw: told to the client's `error` listeners.
   * @param {unknown} e
   */
  failed(e) {
    this.client.emit('error', e);
  }

  /**
   * Sends `text` (or null), with `options.data` (any JSON value, where the
   * room's policy takes data); resolves with `{ id, seq, epoch }` once the
   * message is durable (`ephemeral`: once handed to the cluster, without a
   * position), rejects with a {@link SwitchboardError} carrying the
   * server's code. Survives reconnects: it is resent with its id until acked.
   * @param {string | null} text
   * @param {{ id?: string, data?: unknown, ephemeral?: boolean }} [options]
   */
  send(text, options = {}) {
    if (this.client.state === 'closed') return Promise.reject(new SwitchboardError('closed', 'the client is closed'));
    if (this.state === 'left') return Promise.reject(new SwitchboardError('not_joined', `${this.name} was left`));
    return this.client.enqueue(this, text ?? '', options);
  }

  /**
   * Messages from the store over HTTP, oldest first: the latest `limit`
   * before message `before` (an id), or the room's latest.
   * @param {{ before?: string, limit?: number }} [options]
   */
  history({ before, limit } = {}) {
    const q = new URLSearchParams();
    if (limit !== undefined) q.set('limit', String(limit));
    if (before !== undefined) q.set('before', before);
    const query = q.toString();
    return getJson(this.client, `/api/rooms/${encodeURIComponent(this.name)}/messages${query ? `?${query}` : ''}`);
  }

  /** Who is in the room across every node: `{ count, members, truncated }`. */
  async presence() {
    const f = await this.client.request({ type: 'presence', room: this.name });
    return { count: f.count, members: f.members, truncated: f.truncated === true };
  }

  /** Leaves the room; its unacked sends are rejected with `not_joined`. */
  async leave() {
    if (this.state === 'left') return;
    this.client.forget(this, new SwitchboardError('not_joined', `${this.name} was left`));
    try {
      await this.client.request({ type: 'leave', room: this.name });
    } catch {
      // Not connected: the server dropped the membership with the socket.
    }
  }

  /**
   * The `join` frame to send with `ref`: after a first `joined`, with
   * `since` the last position, so the server answers what was missed.
   * @param {string} ref
   */
  joinFrame(ref) {
    const since = this.joinedOnce ? this.position : null;
    /** @type {Record<string, unknown>} */
    const frame = { type: 'join', room: this.name, ref };
    if (this.options.history !== undefined) frame.history = this.options.history;
    if (this.options.presence) frame.presence = true;
    if (since) frame.since = since;
    return frame;
  }

  /**
   * A message frame of this room: delivered when new.
   * @param {any} f
   */
  deliver(f) {
    const p = this.merge.position;
    if (this.state === 'joined' && p && typeof f.seq === 'number' && f.epoch === p.epoch && f.seq > p.seq + 1
      && !this.merge.recent.has(f.id)) {
      this.state = 'filling';
      this.held = [f];
      this.fillHole(p, f.seq).catch((e) => this.failed(e));
      return;
    }
    if (this.merge.accept(f)) this.show(f);
  }

  /**
   * An accepted message to the listeners: a tombstone (a deleted message
   * recovered or read back) as `deleted`, others as `message`.
   * @param {any} f
   */
  show(f) {
    if (f.deleted) this.emit('deleted', { room: this.name, id: f.id });
    else this.emit('message', toMessage(f));
  }

  /**
   * A `joined` frame: the history's new messages, and a gap when
   * messages were lost while away.
   * @param {any} f
   * @param {boolean} rejoined
   */
  joined(f, rejoined) {
    const since = this.merge.position;
    const history = Array.isArray(f.history) ? f.history : [];
    if (rejoined && f.recovered === false && f.truncated === true && since && f.epoch === since.epoch
      && history.length && history[0].seq > since.seq + 1) {
      // What was missed did not fit one frame: the rest is read from the
      // store by position before anything is delivered (live messages wait).
      this.state = 'filling';
      this.held = [];
      this.fill(f, since, history).catch((e) => this.failed(e));
      return;
    }
    this.finish(f, rejoined);
  }

  /**
   * Reads the messages between `since` and a cut recovery's first one
   * from the history API, then delivers everything in order; a gap only
   * if the store does not have them all (or the connection dropped: the
   * next rejoin recovers from the same position).
   * @param {any} f
   * @param {{ epoch: string, seq: number }} since
   * @param {any[]} history
   */
  async fill(f, since, history) {
    const { missing, complete } = await this.between(since, history[0].seq);
    if (this.state !== 'filling') return;
    this.finish({ ...f, history: [...missing, ...history], recovered: complete, truncated: !complete }, true);
    this.release();
  }

  /**
   * A live message past a hole (the node gave up waiting for what was
   * between): the hole is read from the store, then delivered in order,
   * a gap only if the store lacks part of it.
   * @param {{ epoch: string, seq: number }} since
   * @param {number} first
   */
  async fillHole(since, first) {
    const { missing, complete } = await this.between(since, first);
    if (this.state !== 'filling') return;
    this.state = 'joined';
    if (!complete) {
      this.gap();
    }
    for (const m of missing) this.deliver(m);
    // The message past the hole goes now, whether or not the hole was filled.
    const [past, ...rest] = this.held;
    this.held = rest;
    if (past && this.merge.accept(past)) this.show(past);
    this.release();
  }

  /**
   * The messages after `since` and before seq `first`, read from the
   * history API by position, and whether they are all there.
   * @param {{ epoch: string, seq: number }} since
   * @param {number} first
   */
  async between(since, first) {
    const missing = [];
    let after = since.seq;
    try {
      while (after + 1 < first) {
        const q = `after_seq=${after}&epoch=${encodeURIComponent(since.epoch)}&limit=${FILL_PAGE}`;
        const page = await getJson(this.client, `/api/rooms/${encodeURIComponent(this.name)}/messages?${q}`);
        const got = (Array.isArray(page) ? page : []).filter((m) => m.seq > after && m.seq < first);
        if (!got.length || got[0].seq !== after + 1) break;
        for (const m of got) {
          if (m.seq !== after + 1) break;
          missing.push(m);
          after = m.seq;
        }
      }
    } catch {
      // Unreadable: told as a gap.
    }
    return { missing, complete: after + 1 === first };
  }

  /** Delivers the live messages held while filling, in order (one may start another fill). */
  release() {
    const held = this.held;
    this.held = [];
    for (let i = 0; i < held.length; i++) {
      if (this.state === 'filling') {
        this.held.push(...held.slice(i));
        return;
      }
      this.deliver(held[i]);
    }
  }

  /**
   * @param {any} f
   * @param {boolean} rejoined
   */
  finish(f, rejoined) {
    const { messages, gap } = this.merge.joined(f, rejoined);
    const again = this.joinedOnce;
    this.state = 'joined';
    this.joinedOnce = true;
    if (typeof f.count === 'number') this.count = f.count;
    if (gap) {
      this.gap();
    }
    for (const m of messages) this.show(m);
    this.emit('joined', { room: this.name, count: this.count, rejoined: again });
  }

  /** Messages of this room were lost: told to the room's and the client's `gap` listeners. */
  gap() {
    const event = { room: this.name };
    this.emit('gap', event);
    this.client.emit('gap', event);
  }

  /** @param {any} f */
  presenceChange(f) {
    if (typeof f.count === 'number') this.count = f.count;
    this.emit('presence', { room: this.name, event: f.event, name: f.name, count: f.count });
  }
}

/**
 * GETs `path` from the node of the client's current (or last) connection,
 * with its token: the JSON answer, or a {@link SwitchboardError} with the
 * server's code (`unavailable` when the node could not be reached).
 * @param {import('./switchboard.js').Client} client
 * @param {string} path
 */
async function getJson(client, path) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (client.token) headers.authorization = `Bearer ${client.token}`;
  let res;
  try {
    res = await fetch(`${client.current.http}${path}`, { headers });
  } catch (e) {
    throw new SwitchboardError('unavailable', String(e));
  }
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new SwitchboardError(body?.code ?? `http_${res.status}`, body?.message);
  return body;
}

/**
 * The application's view of a message frame (without `type`).
 * @param {any} f
 * @returns {import('./index').Message}
 */
function toMessage(f) {
  const m = { id: f.id, room: f.room, from: f.from, text: f.text ?? '', ts: f.ts };
  if (f.data !== undefined) Object.assign(m, { data: f.data });
  if (typeof f.seq === 'number') Object.assign(m, { seq: f.seq, epoch: f.epoch });
  return m;
}
