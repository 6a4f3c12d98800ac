// What the page does with rooms and messages, on the switchboard client
// (/client/switchboard.js): it connects, joins, sends and shows; the
// client reconnects, rejoins with `since`, resends by id and delivers each
// message once.

import { connect } from '/client/switchboard.js';
import { $, toast } from './dom.js';
import { bytes, limits, uuid } from './limits.js';
import { isMine, mineIds, newRoom, rooms, state, trim, upsert } from './state.js';
import {
  autosize, closeNav, isWatching, renderMessagesSoon, renderPeople, renderRooms, updateCounter, updateMsgEl,
} from './view.js';

const FRIENDLY = {
  too_large: 'That message is too long to send.',
  not_joined: 'You are not in that room any more.',
  bad_room: 'Room names may use letters, digits and _ . : - (up to 64).',
  too_many_rooms: 'You are in too many rooms. Leave one before joining another.',
  bad_frame: 'The server could not understand a request.',
  unavailable: 'The server is busy right now.',
  forbidden: 'You may not join that room.',
  rate_limited: 'You are sending too fast; slow down.',
  outbox_full: 'Too many messages are waiting to be sent.',
};
const friendly = (e) => FRIENDLY[e?.code] || e?.message || String(e);

// With AUTH=required the page is opened as /#token=<JWT> (the fragment
// never reaches a server log); the token's name then wins over `me`.
const token = new URLSearchParams(location.hash.slice(1)).get('token');

// ---------- the connection ----------
const STATUS = {
  connecting: ['connecting', 'Connecting…'],
  open: ['online', 'Online'],
  reconnecting: ['reconnecting', 'Reconnecting…'],
  closed: ['offline', 'Offline'],
};

function setStatus(clientState) {
  const [s, text] = STATUS[clientState] ?? STATUS.connecting;
  const status = $('status');
  status.dataset.state = s;
  $('status-text').textContent = text;
  status.title = s === 'reconnecting' ? 'Click to reconnect now' : 'Connection status';
  $('banner').hidden = s !== 'reconnecting';
  if (clientState !== 'open') for (const room of rooms.values()) room.state = 'joining';
  renderRooms();
}

// Signs in as `name`: one client for the page's life on the start form.
export function start(name) {
  state.stopped = false;
  state.client = connect(location.origin, { name, ...(token ? { token } : {}) });
  state.client.on('state', setStatus);
  // What the page shows stays; the room's latest history (without what
  // it has already) follows.
  state.client.on('gap', ({ room }) => {
    toast(`Some messages in #${room} could not be recovered; showing the latest.`, 'warn');
  });
  state.client.on('error', (e) => console.warn('switchboard:', e));
  setStatus(state.client.state);
}

// Signs out: the client closes, every room goes.
export function stop() {
  state.stopped = true;
  state.client?.close();
  state.client = null;
  rooms.clear();
  state.active = null;
}

export function reconnectNow() {
  state.client?.reconnect();
}

// ---------- rooms ----------
export function addRoom(name, activate) {
  let room = rooms.get(name);
  if (!room) {
    room = newRoom(name);
    rooms.set(name, room);
    join(room);
  }
  if (activate) switchTo(name);
  else renderRooms();
}

function join(room) {
  const client = state.client;
  room.ready = client.join(room.name, {
    history: limits.history,
    presence: true,
    onMessage: (m) => onMessage(room, m),
    onPresence: (change) => onPresenceChange(room, change),
  }).then((handle) => {
    if (rooms.get(room.name) !== room) return handle.leave();
    room.handle = handle;
    handle.on('joined', () => onJoined(room));
    onJoined(room);
    return handle;
  }, (e) => {
    if (rooms.get(room.name) === room && state.client === client) {
      toast(`Could not join #${room.name}: ${friendly(e)}`, 'error');
      removeRoom(room.name);
    }
    throw e;
  });
  room.ready.catch(() => {});
}

// Joined (the first time, or again after a reconnect).
function onJoined(room) {
  const fresh = !room.joinedOnce;
  room.state = 'joined';
  room.joinedOnce = true;
  room.count = room.handle.count;
  renderRooms();
  if (room.name === state.active) renderMessagesSoon(fresh ? 'bottom' : undefined);
  // Who is online now; changes come as presence events.
  room.handle.presence().then((p) => {
    room.people = new Map(p.members.map((m) => [String(m.name), Number(m.connections) || 1]));
    room.count = p.count;
    if (room.name === state.active) renderPeople();
  }, () => {});
}

function onMessage(room, m) {
  const isNew = upsert(room, m);
  if (!isNew) {
    if (room.name === state.active) renderMessagesSoon();
    return;
  }
  trim(room);
  // Messages missed while disconnected count as unread too.
  if (!isWatching(room) && !isMine(room.msgs.get(m.id)) && room.joinedOnce) {
    room.unread++;
    renderRooms();
  }
  if (room.name === state.active) renderMessagesSoon();
}

function onPresenceChange(room, f) {
  if (f.event === 'join' && typeof f.name === 'string') room.people.set(f.name, room.people.get(f.name) || 1);
  if (f.event === 'leave' && typeof f.name === 'string') room.people.delete(f.name);
  if (typeof f.count === 'number') room.count = f.count;
  if (room.name === state.active) renderPeople();
}

function removeRoom(name) {
  if (!rooms.delete(name)) return;
  if (state.active === name) {
    const next = rooms.keys().next();
    switchTo(next.done ? null : next.value);
  } else {
    renderRooms();
  }
}

export function leaveRoom(name) {
  const room = rooms.get(name);
  if (!room) return;
  room.handle?.leave();
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

// ---------- sending ----------
export function submitComposer() {
  const box = $('composer');
  const text = box.value;
  const room = state.active && rooms.get(state.active);
  if (!text.trim() || !room) return;
  if (bytes(text) > limits.maxTextBytes) {
    toast(`That message is too long (${bytes(text)} of ${limits.maxTextBytes} bytes).`, 'warn');
    return;
  }
  const id = uuid();
  mineIds.add(id);
  upsert(room, { id, room: room.name, from: state.me, text, ts: Date.now() }, 'pending');
  box.value = '';
  autosize();
  updateCounter();
  renderMessagesSoon('bottom');
  deliver(room, id, text);
}

// Hands a send to the client (again, for a retry: the same id is stored
// once) and shows how it ended.
async function deliver(room, id, text) {
  const settle = (msgState, why) => {
    const m = room.msgs.get(id);
    if (!m) return;
    m.state = msgState;
    m.why = why;
    updateMsgEl(m);
  };
  try {
    // A room still joining takes sends once joined.
    const handle = await room.ready;
    await handle.send(text, { id });
    settle('sent', '');
  } catch (e) {
    settle('failed', e.code === 'too_large' ? 'Too long' : e.code === 'unavailable' ? 'Not delivered' : 'Not sent');
    if (rooms.get(room.name) === room && e.code !== 'closed') toast(`Message not sent: ${friendly(e)}`, 'error');
  }
}

export function retry(id) {
  const room = state.active && rooms.get(state.active);
  const m = room && room.msgs.get(id);
  if (!m || m.state !== 'failed') return;
  m.state = 'pending';
  updateMsgEl(m);
  deliver(room, id, m.text);
}
