// What the page knows: who it is, its rooms and their messages, and what
// it sent that the server has not acknowledged yet.

const MAX_KEPT = 1000;               // messages kept per room

export const state = {
  me: '',
  active: null,                      // active room name
  stopped: true,                     // true while on the start form
};
export const rooms = new Map();      // name -> room state, in sidebar order
export const outbox = new Map();     // id -> { id, room, text, tries, timer, inFlight, state }
export const joinRefs = new Map();   // ref -> room
export const sendRefs = new Map();   // ref -> id
export const mineIds = new Set();    // ids this tab sent

let refSeq = 0;
export const nextRef = (prefix) => `${prefix}${++refSeq}`;

export function newRoom(name) {
  return {
    name, msgs: new Map(), unread: 0, state: 'joining', joinedOnce: false, joinTries: 0, joinTimer: 0, li: null,
    position: null,                  // { epoch, seq } of the last message seen, to rejoin `since`
    people: new Map(),               // name -> connections, who is online (a large room: count only)
    count: 0,                        // names in the room
  };
}

// Adds a message or refreshes a known one; true when it was new.
export function upsert(room, m, msgState) {
  if (!m || typeof m.id !== 'string') return false;
  const known = room.msgs.get(m.id);
  if (known) {
    if (typeof m.ts === 'number') known.ts = m.ts;
    if (typeof m.from === 'string') known.from = m.from;
    return false;
  }
  const pending = outbox.get(m.id);
  room.msgs.set(m.id, {
    id: m.id,
    from: String(m.from ?? ''),
    text: String(m.text ?? ''),
    ts: typeof m.ts === 'number' ? m.ts : Date.now(),
    state: msgState || (pending ? pending.state : 'sent'),
    why: '',
    el: null,
  });
  return true;
}

export function trim(room) {
  if (room.msgs.size <= MAX_KEPT) return;
  const sorted = sortedMsgs(room);
  for (const m of sorted.slice(0, sorted.length - MAX_KEPT)) {
    if (!outbox.has(m.id)) room.msgs.delete(m.id);
  }
}

export function sortedMsgs(room) {
  return [...room.msgs.values()].sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

// Moves the room's position forward past `m` (a message or a `joined`
// frame) when it counts in the same epoch, or starts it over in a new one.
export function advance(room, m) {
  if (typeof m.seq !== 'number' || typeof m.epoch !== 'string') return;
  const p = room.position;
  if (!p || p.epoch !== m.epoch || m.seq > p.seq) room.position = { epoch: m.epoch, seq: m.seq };
}

export const isMine = (m) => !!m && (mineIds.has(m.id) || m.from === state.me);
