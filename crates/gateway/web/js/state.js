// What the page shows: who it is, its rooms and their messages (its own
// sends included while they wait for their ack). The protocol's state
// (positions, resends, the socket) lives in the client library.

const MAX_KEPT = 1000;               // messages kept per room

export const state = {
  me: '',
  active: null,                      // active room name
  stopped: true,                     // true while on the start form
  client: null,                      // the switchboard client while signed in
};
export const rooms = new Map();      // name -> room state, in sidebar order
export const mineIds = new Set();    // ids this tab sent

export function newRoom(name) {
  return {
    name, msgs: new Map(), unread: 0, state: 'joining', joinedOnce: false, li: null,
    handle: null,                    // the client's Room once joined
    ready: null,                     // the join: a promise of that Room
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
  room.msgs.set(m.id, {
    id: m.id,
    from: String(m.from ?? ''),
    text: String(m.text ?? ''),
    ts: typeof m.ts === 'number' ? m.ts : Date.now(),
    state: msgState || 'sent',
    why: '',
    el: null,
  });
  return true;
}

const unsettled = (m) => m.state === 'pending' || m.state === 'failed';

export function trim(room) {
  if (room.msgs.size <= MAX_KEPT) return;
  const sorted = sortedMsgs(room);
  for (const m of sorted.slice(0, sorted.length - MAX_KEPT)) {
    if (!unsettled(m)) room.msgs.delete(m.id);
  }
}

export function sortedMsgs(room) {
  return [...room.msgs.values()].sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export const isMine = (m) => !!m && (mineIds.has(m.id) || m.from === state.me);
