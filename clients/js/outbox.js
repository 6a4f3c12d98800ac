// Sends not yet acknowledged: each keeps its id across reconnects, so a
// resend is stored and delivered once, and its promise settles exactly once.

/** An error the server (or the client) gave a request, with a stable code. */
export class SwitchboardError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   */
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'SwitchboardError';
    this.code = code;
  }
}

/**
 * The pending sends, in the order they were made (a resend after a
 * reconnect keeps that order), at most `max` of them.
 */
export class Outbox {
  /** @param {number} max */
  constructor(max) {
    this.max = max;
    /** @type {Map<string, Pending>} */
    this.entries = new Map();
  }

  get size() {
    return this.entries.size;
  }

  /**
   * Adds a send; throws `outbox_full` past the bound and `duplicate_id`
   * for an id already pending.
   * @param {{ id: string, room: string, text: string, data?: unknown, ephemeral?: boolean }} send
   * @returns {{ entry: Pending, promise: Promise<Ack> }}
   */
  add({ id, room, text, data, ephemeral = false }) {
    if (this.entries.size >= this.max) throw new SwitchboardError('outbox_full', `${this.max} sends are waiting for their ack`);
    if (this.entries.has(id)) throw new SwitchboardError('duplicate_id', `a send with id ${id} is already pending`);
    /** @type {Pending} */
    const entry = { id, room, text, data, ephemeral, tries: 0, retries: 0, inFlight: false, timer: null, seq: 0, epoch: '', resolve: () => {}, reject: () => {} };
    const promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    this.entries.set(id, entry);
    return { entry, promise };
  }

  /** @param {string} id */
  get(id) {
    return this.entries.get(id);
  }

  /**
   * Settles a pending send with its ack; false when it was not pending
   * (settled already), so nothing settles twice.
   * @param {string} id
   * @param {Ack} ack
   */
  resolve(id, ack) {
    const entry = this.take(id);
    if (!entry) return false;
    entry.resolve(ack);
    return true;
  }

  /**
   * Settles a pending send with an error; false when it was not pending.
   * @param {string} id
   * @param {SwitchboardError} error
   */
  reject(id, error) {
    const entry = this.take(id);
    if (!entry) return false;
    entry.reject(error);
    return true;
  }

  /**
   * The pending sends of `room` (every room when left out), oldest first.
   * @param {string} [room]
   */
  pending(room) {
    const all = [...this.entries.values()];
    return room === undefined ? all : all.filter((e) => e.room === room);
  }

  /** @param {string} id */
  take(id) {
    const entry = this.entries.get(id);
    if (!entry) return undefined;
    this.entries.delete(id);
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = null;
    return entry;
  }
}

/** A random UUID v4: a send's idempotency key. */
export function uuid() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * @typedef {{ id: string, seq: number | null, epoch: string | null }} Ack
 * @typedef {{
 *   id: string, room: string, text: string, data: unknown, ephemeral: boolean,
 *   tries: number, retries: number, inFlight: boolean,
 *   timer: ReturnType<typeof setTimeout> | null,
 *   seq: number, epoch: string,
 *   resolve: (ack: Ack) => void, reject: (error: Error) => void,
 * }} Pending
 */
