// What the page does with rooms and messages: joining, leaving and
// switching rooms, sending with retries by id, and the server's answers.

import { connected, isOpen, reconnectNow, send, sendJoin } from './connection.js';
import { $, toast } from './dom.js';
import { bytes, limits, uuid } from './limits.js';
import {
  advance, joinRefs, mineIds, newRoom, nextRef, outbox, rooms, sendRefs, state, trim, upsert, isMine,
} from './state.js';
import {
  autosize, closeNav, isWatching, renderMessagesSoon, renderPeople, renderRooms, updateCounter, updateMsgEl,
} from './view.js';

const SEND_TRIES = 4;                // automatic attempts after `unavailable`

const FRIENDLY = {
  too_large: 'That message is too long to send.',
  not_joined: 'You are not in that room any more.',
  bad_room: 'Room names may use letters, digits and _ . : - (up to 64).',
  too_many_rooms: 'You are in too many rooms. Leave one before joining another.',
  bad_frame: 'The server could not understand a request.',
  unavailable: 'The server is busy right now.',
  forbidden: 'You may not join that room.',
  rate_limited: 'You are sending too fast; slow down.',
};

// ---------- frames from the server ----------
export function handleFrame(f) {
  switch (f.type) {
    case 'joined': return onJoined(f);
    case 'message': return onMessage(f);
    case 'ack': return onAck(f);
    case 'presence': return onPresence(f);
    case 'presence_change': return onPresenceChange(f);
    case 'error': return onError(f);
    default: return;
  }
}

function onJoined(f) {
  if (f.ref != null) joinRefs.delete(f.ref);
  const room = rooms.get(f.room);
  if (!room) {
    // Left while the join was under way.
    send({ type: 'leave', room: f.room });
    return;
  }
  const fresh = !room.joinedOnce;
  if (f.recovered === false) {
    // What was missed cannot all be told (too much, or the server lost its
    // count): say so, and show the latest history instead of a gap.
    toast(`Some messages in #${room.name} could not be recovered; showing the latest.`, 'warn');
    for (const [id] of room.msgs) if (!outbox.has(id)) room.msgs.delete(id);
    room.position = null;
  }
  let added = 0;
  for (const m of Array.isArray(f.history) ? f.history : []) {
    if (upsert(room, m)) added++;
    advance(room, m);
  }
  advance(room, f);
  // Messages missed while disconnected count as unread in other rooms.
  if (!fresh && added && !isWatching(room)) room.unread += added;
  room.state = 'joined';
  room.joinedOnce = true;
  room.joinTries = 0;
  if (typeof f.count === 'number') room.count = f.count;
  // Who is online now; changes come as `presence_change`.
  send({ type: 'presence', room: room.name });
  trim(room);
  renderRooms();
  if (room.name === state.active) renderMessagesSoon(fresh ? 'bottom' : undefined);
  // Everything not acked yet goes out again with its same id.
  for (const p of outbox.values()) {
    if (p.room === room.name && !p.inFlight && !p.timer && p.state !== 'failed') transmit(p);
  }
}

function onMessage(f) {
  const room = rooms.get(f.room);
  if (!room || typeof f.id !== 'string') return;
  const isNew = upsert(room, f);
  advance(room, f);
  if (!isNew) {
    if (room.name === state.active) renderMessagesSoon();
    return;
  }
  trim(room);
  if (!isWatching(room) && !isMine(room.msgs.get(f.id))) {
    room.unread++;
    renderRooms();
  }
  if (room.name === state.active) renderMessagesSoon();
}

function onPresence(f) {
  const room = rooms.get(f.room);
  if (!room || !Array.isArray(f.members)) return;
  room.people = new Map(f.members.map((m) => [String(m.name), Number(m.connections) || 1]));
  room.count = Number(f.count) || room.people.size;
  if (room.name === state.active) renderPeople();
}

function onPresenceChange(f) {
  const room = rooms.get(f.room);
  if (!room) return;
  if (f.event === 'join' && typeof f.name === 'string') room.people.set(f.name, room.people.get(f.name) || 1);
  if (f.event === 'leave' && typeof f.name === 'string') room.people.delete(f.name);
  if (typeof f.count === 'number') room.count = f.count;
  if (room.name === state.active) renderPeople();
}

function onAck(f) {
  const p = outbox.get(f.id);
  if (f.ref != null) sendRefs.delete(f.ref);
  if (!p) return;
  clearTimeout(p.timer);
  outbox.delete(f.id);
  const room = rooms.get(p.room);
  const m = room && room.msgs.get(f.id);
  if (m) {
    m.state = 'sent';
    updateMsgEl(m);
  }
}

function onError(f) {
  const code = String(f.code || 'error');
  if (f.ref != null && joinRefs.has(f.ref)) return onJoinError(f, code);
  // An error about a message we sent.
  const ref = f.ref;
  const id = typeof f.id === 'string' && outbox.has(f.id) ? f.id : (ref != null ? sendRefs.get(ref) : undefined);
  if (ref != null) sendRefs.delete(ref);
  const p = id && outbox.get(id);
  if (p) return onSendError(f, code, p);
  toast(FRIENDLY[code] ? `${FRIENDLY[code]}${f.message ? ` (${f.message})` : ''}` : (f.message || code), 'error');
}

function onJoinError(f, code) {
  const name = joinRefs.get(f.ref);
  joinRefs.delete(f.ref);
  const room = rooms.get(name);
  if (!room) return;
  if (code === 'unavailable' && room.joinTries < 5) {
    room.joinTries++;
    room.joinTimer = setTimeout(() => { if (rooms.has(name) && connected()) sendJoin(room); }, 600 * 2 ** room.joinTries);
    return;
  }
  toast(`Could not join #${name}: ${FRIENDLY[code] || f.message || code}`, 'error');
  if (!room.joinedOnce) removeRoom(name);
}

function onSendError(f, code, p) {
  p.inFlight = false;
  if (code === 'unavailable' && p.tries < SEND_TRIES) {
    const delay = 400 * 2 ** (p.tries - 1) + Math.random() * 200;
    p.timer = setTimeout(() => { p.timer = 0; transmit(p); }, delay);
    return;
  }
  if (code === 'rate_limited') {
    // Not accepted, and not counted as a try: the budget refills.
    p.tries--;
    p.timer = setTimeout(() => { p.timer = 0; transmit(p); }, 1000 + Math.random() * 500);
    return;
  }
  if (code === 'not_joined' && p.tries < SEND_TRIES && rooms.has(p.room)) {
    // The server forgot our membership: join again; `joined` resends.
    const room = rooms.get(p.room);
    room.state = 'joining';
    sendJoin(room);
    renderRooms();
    return;
  }
  fail(p, code === 'too_large' ? 'Too long' : code === 'unavailable' ? 'Not delivered' : 'Not sent');
  toast(`Message not sent: ${FRIENDLY[code] || f.message || code}`, 'error');
}

// ---------- sending ----------
function transmit(p) {
  const room = rooms.get(p.room);
  if (!room || room.state !== 'joined') return false;  // sent again on `joined`
  const ref = nextRef('c');
  p.tries++;
  const frame = { type: 'send', room: p.room, text: p.text, ref, id: p.id };
  if (!send(frame)) { p.tries--; return false; }
  sendRefs.set(ref, p.id);
  p.inFlight = true;
  return true;
}

function fail(p, why) {
  clearTimeout(p.timer);
  p.timer = 0;
  p.inFlight = false;
  p.state = 'failed';
  const room = rooms.get(p.room);
  const m = room && room.msgs.get(p.id);
  if (m) { m.state = 'failed'; m.why = why; updateMsgEl(m); }
}

export function retry(id) {
  const p = outbox.get(id);
  if (!p) return;
  p.state = 'pending';
  p.tries = 0;
  const room = rooms.get(p.room);
  const m = room && room.msgs.get(id);
  if (m) { m.state = 'pending'; updateMsgEl(m); }
  if (!transmit(p) && !connected()) reconnectNow();
}

export function submitComposer() {
  const box = $('composer');
  const text = box.value;
  const active = state.active;
  if (!text.trim() || !active) return;
  if (bytes(text) > limits.maxTextBytes) {
    toast(`That message is too long (${bytes(text)} of ${limits.maxTextBytes} bytes).`, 'warn');
    return;
  }
  const id = uuid();
  mineIds.add(id);
  const room = rooms.get(active);
  const p = { id, room: active, text, tries: 0, timer: 0, inFlight: false, state: 'pending' };
  outbox.set(id, p);
  upsert(room, { id, room: active, from: state.me, text, ts: Date.now() }, 'pending');
  box.value = '';
  autosize();
  updateCounter();
  renderMessagesSoon('bottom');
  transmit(p);
}

// ---------- rooms ----------
export function addRoom(name, activate) {
  let room = rooms.get(name);
  if (!room) {
    room = newRoom(name);
    rooms.set(name, room);
    if (isOpen()) sendJoin(room);
  }
  if (activate) switchTo(name);
  else renderRooms();
}

function removeRoom(name) {
  const room = rooms.get(name);
  if (!room) return;
  clearTimeout(room.joinTimer);
  rooms.delete(name);
  for (const p of [...outbox.values()]) {
    if (p.room === name) { clearTimeout(p.timer); outbox.delete(p.id); }
  }
  if (state.active === name) {
    const next = rooms.keys().next();
    switchTo(next.done ? null : next.value);
  } else {
    renderRooms();
  }
}

export function leaveRoom(name) {
  if (!rooms.has(name)) return;
  send({ type: 'leave', room: name });
  removeRoom(name);
}

export function switchTo(name) {
  state.active = name;
  const room = name && rooms.get(name);
  if (room) room.unread = 0;
  $('room-title-text').textContent = name || 'No room';
  $('composer').disabled = !name;
  $('composer').placeholder = name ? `Message #${name}` : 'Join a room to start chatting';
  updateCounter();
  closeNav();
  renderRooms();
  renderPeople();
  renderMessagesSoon('bottom');
  if (name && matchMedia('(min-width: 761px)').matches) $('composer').focus();
}
