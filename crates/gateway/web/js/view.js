// Rendering: the room list, the messages of the active room, the composer.
// What a click asks for is handed to the handlers given to `bindView`.

import { $, el } from './dom.js';
import { appendLinkified, colorFor, dayKey, dayLabel, fmtTime, initial } from './format.js';
import { bytes, limits } from './limits.js';
import { isMine, mineIds, rooms, sortedMsgs, state } from './state.js';

const GROUP_GAP = 5 * 60 * 1000;     // consecutive messages of one sender within this are grouped

const handlers = { leave: () => {}, select: () => {}, retry: () => {} };

// `leave(name)`, `select(name)`, `retry(id)`.
export function bindView(h) {
  Object.assign(handlers, h);
}

export const isWatching = (room) =>
  room.name === state.active && document.visibilityState === 'visible' && nearBottom();

// ---------- rooms ----------
export function renderRooms() {
  const list = $('rooms');
  const items = [];
  let totalUnread = 0;
  for (const room of rooms.values()) {
    totalUnread += room.unread;
    if (!room.li) room.li = buildRoomItem(room);
    const li = room.li;
    li.classList.toggle('active', room.name === state.active);
    li.classList.toggle('has-unread', room.unread > 0);
    li.dataset.state = room.state;
    li.setAttribute('aria-current', room.name === state.active ? 'true' : 'false');
    const badge = li.querySelector('.badge');
    badge.hidden = room.unread === 0;
    badge.textContent = room.unread > 99 ? '99+' : String(room.unread);
    li.title = room.state === 'joining' ? `#${room.name} (joining…)` : `#${room.name}`;
    items.push(li);
  }
  const same = items.length === list.children.length && items.every((li, i) => list.children[i] === li);
  if (!same) list.replaceChildren(...items);
  if (!rooms.size && !list.children.length) {
    const note = el('li', 'room', 'No rooms yet');
    note.style.cursor = 'default';
    note.style.color = 'var(--faint)';
    list.append(note);
  }
  document.title = totalUnread
    ? `(${totalUnread}) switchboard`
    : (state.active ? `#${state.active} · switchboard` : 'switchboard');
  $('menu-btn').classList.toggle('unread', totalUnread > 0);
}

// ---------- who is online in the active room ----------
const PEOPLE_SHOWN = 50;

export function renderPeople() {
  const room = state.active && rooms.get(state.active);
  const online = $('online');
  const list = $('people');
  if (!room) {
    online.hidden = true;
    list.replaceChildren();
    return;
  }
  online.hidden = false;
  online.textContent = `${room.count} online`;
  const names = [...room.people.keys()].sort((a, b) => a.localeCompare(b));
  online.title = names.slice(0, PEOPLE_SHOWN).join(', ');
  const items = names.slice(0, PEOPLE_SHOWN).map((name) => {
    const li = el('li', 'person');
    li.setAttribute('data-testid', 'person');
    const dot = el('span', 'avatar small', initial(name));
    dot.style.background = colorFor(name);
    dot.setAttribute('aria-hidden', 'true');
    li.append(dot, el('span', 'pname', name === state.me ? `${name} (you)` : name));
    return li;
  });
  if (room.count > names.length) items.push(el('li', 'person more', `and ${room.count - names.length} more`));
  list.replaceChildren(...items);
}

function buildRoomItem(room) {
  const li = el('li', 'room');
  li.setAttribute('data-testid', 'room');
  li.dataset.room = room.name;
  li.tabIndex = 0;
  li.setAttribute('role', 'button');
  li.append(el('span', 'hash', '#'), el('span', 'rname', room.name));
  const badge = el('span', 'badge');
  badge.setAttribute('data-testid', 'unread');
  li.append(badge);
  const leave = el('button', 'leave', '×');
  leave.type = 'button';
  leave.title = `Leave #${room.name}`;
  leave.setAttribute('aria-label', `Leave #${room.name}`);
  leave.setAttribute('data-testid', 'leave');
  leave.addEventListener('click', (e) => { e.stopPropagation(); handlers.leave(room.name); });
  li.append(leave);
  li.addEventListener('click', () => handlers.select(room.name));
  li.addEventListener('keydown', (e) => {
    if (e.target === li && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); handlers.select(room.name); }
  });
  return li;
}

// ---------- messages ----------
let renderQueued = false;
let scrollWish;

export function renderMessagesSoon(wish) {
  if (wish) scrollWish = wish;
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    const w = scrollWish;
    scrollWish = undefined;
    renderMessages(w);
  });
}

export function nearBottom() {
  const list = $('messages');
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function renderMessages(wish) {
  const list = $('messages');
  const stick = wish === 'bottom' || nearBottom();
  const room = state.active && rooms.get(state.active);
  if (!room) {
    list.replaceChildren(emptyState('💬', 'No room selected', 'Join a room from the sidebar to start chatting.'));
    $('jump').hidden = true;
    return;
  }
  const msgs = sortedMsgs(room);
  const nodes = [];
  if (!msgs.length) {
    nodes.push(room.state === 'joining' && !room.joinedOnce
      ? emptyState('⏳', 'Joining…', `Loading the history of #${room.name}.`)
      : emptyState('👋', 'No messages yet', `Be the first to say something in #${room.name}.`));
  }
  const continues = (prev, m) =>
    !!prev && !!m && prev.from === m.from && dayKey(prev.ts) === dayKey(m.ts) && m.ts - prev.ts < GROUP_GAP;
  msgs.forEach((m, i) => {
    const prev = msgs[i - 1];
    if (!prev || dayKey(prev.ts) !== dayKey(m.ts)) nodes.push(el('div', 'day', dayLabel(m.ts)));
    if (!m.el) m.el = buildMsgEl(m);
    m.el.classList.toggle('cont', continues(prev, m));
    m.el.classList.toggle('tail', !continues(m, msgs[i + 1]));
    updateMsgEl(m);
    nodes.push(m.el);
  });
  list.replaceChildren(...nodes);
  if (stick) {
    list.scrollTop = list.scrollHeight;
    $('jump').hidden = true;
  } else if (msgs.length) {
    $('jump').hidden = false;
  }
}

function emptyState(icon, title, text) {
  const d = el('div', 'empty');
  d.append(el('div', 'big', icon), el('b', null, title), el('span', null, text));
  return d;
}

function buildMsgEl(m) {
  const row = el('div', 'msg');
  row.setAttribute('data-testid', 'message');
  row.dataset.id = m.id;
  const av = el('div', 'avatar');
  av.setAttribute('aria-hidden', 'true');
  const body = el('div', 'body');
  const head = el('div', 'head');
  const from = el('span', 'from');
  from.setAttribute('data-testid', 'message-from');
  const time = el('time');
  head.append(from, time);
  const bubble = el('div', 'bubble');
  bubble.setAttribute('data-testid', 'message-text');
  appendLinkified(bubble, m.text);
  const meta = el('div', 'meta');
  body.append(head, bubble, meta);
  row.append(av, body);
  return row;
}

export function updateMsgEl(m) {
  const row = m.el;
  if (!row) return;
  const mine = isMine(m);
  row.classList.toggle('mine', mine);
  row.dataset.state = m.state;
  const av = row.querySelector('.avatar');
  av.textContent = initial(m.from);
  av.style.background = colorFor(m.from);
  row.querySelector('.from').textContent = mine ? 'You' : m.from;
  const time = row.querySelector('time');
  const d = new Date(m.ts);
  time.dateTime = d.toISOString();
  time.textContent = fmtTime(d);
  time.title = d.toLocaleString();
  const meta = row.querySelector('.meta');
  meta.replaceChildren();
  if (m.state === 'pending') {
    meta.append(el('span', null, 'Sending…'));
  } else if (m.state === 'failed') {
    meta.append(el('span', null, `${m.why || 'Not sent'} ·`));
    const b = el('button', null, 'Retry');
    b.type = 'button';
    b.onclick = () => handlers.retry(m.id);
    meta.append(b);
  } else if (mine && mineIds.has(m.id)) {
    const s = el('span', 'sent', '✓ Sent');
    s.setAttribute('data-testid', 'message-sent');
    meta.append(s);
  }
}

// ---------- composer and navigation ----------
export function autosize() {
  const box = $('composer');
  box.style.height = 'auto';
  box.style.height = `${Math.min(box.scrollHeight, 180)}px`;
}

export function updateCounter() {
  const text = $('composer').value;
  const n = bytes(text);
  const c = $('counter');
  c.textContent = n > limits.maxTextBytes * 0.8 ? `${n} / ${limits.maxTextBytes}` : '';
  c.className = n > limits.maxTextBytes ? 'over' : '';
  $('send').disabled = !state.active || !text.trim() || n > limits.maxTextBytes;
}

// Narrow screens: the room list slides over the messages.
export function closeNav() { $('app-view').classList.remove('nav-open'); }
