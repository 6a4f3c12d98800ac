// Types of the switchboard client (switchboard.js). Hand-written; the
// tests check them with `tsc --noEmit --strict` against examples/typed.ts.

/** A message of a room, delivered once, in `seq` order. */
export interface Message {
  /** The message's id (a UUID): its idempotency key. */
  id: string;
  room: string;
  /** The sender's display name. */
  from: string;
  /** Empty when the message carries only `data`. */
  text: string;
  /** A JSON value, when the sender gave one. */
  data?: unknown;
  /** When the server accepted it, Unix milliseconds. */
  ts: number;
  /** Its place in the room: 1, 2, 3, ... within `epoch`; absent without a position. */
  seq?: number;
  epoch?: string;
}

/** A deleted message of a room. */
export interface Deleted {
  room: string;
  id: string;
}

/** A durable send: its id and the position it was given. */
export interface Ack {
  id: string;
  seq: number | null;
  epoch: string | null;
}

/** A room's place in its stream. */
export interface Position {
  epoch: string;
  seq: number;
}

export interface Member {
  name: string;
  /** Its connections to the room on every node. */
  connections: number;
  /** When the earliest of them joined, Unix milliseconds. */
  since: number;
}

export interface PresenceList {
  /** Names in the room. */
  count: number;
  /** At most 1,000 of them, the earliest first. */
  members: Member[];
  truncated: boolean;
}

/** A `presence_change`: a name arrived or left, or (in a large room) the count. */
export interface PresenceChange {
  room: string;
  event: 'join' | 'leave' | 'count';
  name?: string;
  count: number;
}

/** Messages of `room` were lost while away (the server could not recover them). */
export interface Gap {
  room: string;
}

/** A room was joined: the first time, or again after a reconnect (`rejoined`), its history delivered. */
export interface Joined {
  room: string;
  /** Names in the room. */
  count: number;
  rejoined: boolean;
}

export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ConnectOptions {
  /** The display name (a token's `name` wins over it). */
  name?: string;
  /** A JWT for servers with authentication. */
  token?: string;
  /**
   * Asked for a token before the first connection, after one was refused, when it expired, and when
   * the server warns that it expires soon (`token_expiring`): the new one is sent as `refresh`, and
   * the connection goes on.
   */
  getToken?: () => string | Promise<string>;
  /** The shortest reconnect delay, ms (default 250). */
  backoffMin?: number;
  /** The longest reconnect delay, ms (default 10,000). */
  backoffMax?: number;
  /** How long a connection must stay open before the backoff starts over, ms (default 10,000). */
  stableAfter?: number;
  /** How long a connection may take to open before the next node is tried, ms (default 10,000). */
  connectTimeout?: number;
  /** Sends waiting for their ack at most (default 1,000); past it `send` rejects with `outbox_full`. */
  outboxMax?: number;
  /** The WebSocket class to use (default: the platform's, else the `ws` package). */
  WebSocket?: unknown;
}

export interface JoinOptions {
  /** Messages of history to deliver on the first join (the server's default when left out; 0 for none). */
  history?: number;
  /** Watch presence changes (`onPresence`, the room's `presence` event). */
  presence?: boolean;
  onMessage?: (message: Message) => void;
  onPresence?: (change: PresenceChange) => void;
  /** A message of the room was deleted, also one in the join's history. */
  onDeleted?: (deleted: Deleted) => void;
}

/** An error with the server's (or the client's) stable code. */
export class SwitchboardError extends Error {
  constructor(code: string, message?: string);
  /**
   * `forbidden`, `too_large`, `rate_limited`, `unavailable`, `bad_room`, `bad_frame`,
   * `not_joined`, `too_many_rooms`, `unauthorized`, or the client's own: `closed`, `disconnected`,
   * `outbox_full`, `duplicate_id`, `already_joined`, `no_websocket`, `http_<status>`.
   */
  readonly code: string;
}

export class Room {
  readonly name: string;
  /** `joining` (also while reconnecting), `filling` (reading from the store what a cut recovery left out, or a hole in the live stream; live messages wait), `joined`, or `left`. */
  readonly state: 'joining' | 'filling' | 'joined' | 'left';
  /** Names in the room, from `joined` and presence changes. */
  readonly count: number;
  /** The position of the last message delivered, or null. */
  readonly position: Position | null;
  on(event: 'message', fn: (message: Message) => void): () => void;
  on(event: 'presence', fn: (change: PresenceChange) => void): () => void;
  on(event: 'gap', fn: (gap: Gap) => void): () => void;
  on(event: 'joined', fn: (joined: Joined) => void): () => void;
  /** A message of the room was deleted (moderation): forget it. */
  on(event: 'deleted', fn: (deleted: Deleted) => void): () => void;
  /**
   * Sends a text, a JSON value (`options.data`, where the room's policy takes data) or both.
   * Resolves once the message is durable (`ephemeral`: once handed to the cluster, `seq` null);
   * rejects with the server's code. Resent with its id across reconnects.
   */
  send(text: string | null, options?: { id?: string; data?: unknown; ephemeral?: boolean }): Promise<Ack>;
  /** Stored messages, oldest first: the latest `limit` before message `before`. */
  history(options?: { before?: string; limit?: number }): Promise<Message[]>;
  presence(): Promise<PresenceList>;
  leave(): Promise<void>;
}

export class Client {
  readonly state: State;
  on(event: 'state', fn: (state: State) => void): () => void;
  on(event: 'gap', fn: (gap: Gap) => void): () => void;
  on(event: 'error', fn: (error: unknown) => void): () => void;
  /** Resolves with the room once joined; stays joined across reconnects. Rejects with `forbidden`, `bad_room`, `too_many_rooms`, `already_joined`, `closed`. */
  join(room: string, options?: JoinOptions): Promise<Room>;
  /** Tries to connect now instead of waiting out the backoff; nothing while open or connecting. */
  reconnect(): void;
  /** For good: pending sends and joins reject with `closed`. */
  close(): void;
}

/** Connects to one node, or to several (each reconnect tries the next). */
export function connect(url: string | string[], options?: ConnectOptions): Client;

/** Reconnect delays: exponential, with jitter, capped. */
export class Backoff {
  constructor(options?: { min?: number; max?: number; factor?: number; random?: () => number });
  readonly attempt: number;
  next(): number;
  reset(): void;
}

/** One room's delivered stream: each message once, in `seq` order (used by `Room`). */
export class Merge {
  constructor(recentIds?: number);
  /** The position of the last message delivered, or null. */
  readonly position: Position | null;
  /** Whether `message` is new (not delivered by id, past the position); a new one moves the position. */
  accept(message: { id: string; seq?: number; epoch?: string }): boolean;
  /** The `since` to rejoin with, or null. */
  since(): Position | null;
  /** Takes a `joined` answer: its history's new messages and whether some were lost. */
  joined<M extends { id: string; seq?: number; epoch?: string }>(
    frame: { history?: M[]; epoch?: string; seq?: number; recovered?: boolean },
    rejoined: boolean,
  ): { messages: M[]; gap: boolean };
}

/** A pending send of an `Outbox`. */
export interface PendingSend {
  readonly id: string;
  readonly room: string;
  readonly text: string;
  readonly data?: unknown;
  readonly ephemeral: boolean;
}

/** Sends not acked yet, in the order they were made, at most `max` (used by `Client`). */
export class Outbox {
  constructor(max: number);
  readonly max: number;
  readonly size: number;
  /** Adds a send; throws `outbox_full` past the bound and `duplicate_id` for an id already pending. */
  add(send: { id: string; room: string; text: string; data?: unknown; ephemeral?: boolean }): {
    entry: PendingSend;
    promise: Promise<Ack>;
  };
  get(id: string): PendingSend | undefined;
  /** Settles a pending send with its ack; false when it was not pending. */
  resolve(id: string, ack: Ack): boolean;
  /** Settles a pending send with an error; false when it was not pending. */
  reject(id: string, error: Error): boolean;
  /** The pending sends of `room` (every room when left out), oldest first. */
  pending(room?: string): PendingSend[];
}
