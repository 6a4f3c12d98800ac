// The chat page's entry point (an ES module, served as it is): the start
// form, signing out, and the page's event wiring.

import * as chat from './chat.js';
import { addRoom, leaveRoom, retry, submitComposer, switchTo } from './chat.js';
import { $, toast } from './dom.js';
import { colorFor, initial } from './format.js';
import { checkName, checkRoom, limits, loadLimits } from './limits.js';
import { rooms, state } from './state.js';
import { autosize, bindView, closeNav, nearBottom, renderRooms, updateCounter } from './view.js';

const NAME_KEY = 'switchboard.name';

loadLimits();
bindView({ leave: leaveRoom, select: switchTo, retry });

function start(name, room) {
  state.me = name;
  try { localStorage.setItem(NAME_KEY, name); } catch {}
  $('me-name').textContent = name;
  $('me-avatar').textContent = initial(name);
  $('me-avatar').style.background = colorFor(name);
  $('start-view').hidden = true;
  $('app-view').hidden = false;
  chat.start(name);
  addRoom(room, true);
}

function signOut() {
  chat.stop();
  $('messages').replaceChildren();
  $('app-view').hidden = true;
  $('start-view').hidden = false;
  $('name-input').value = state.me;
  $('name-input').focus();
  $('name-input').select();
}

$('start-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const n = checkName($('name-input').value);
  const r = checkRoom($('room-input').value);
  const err = n.error || r.error;
  $('start-error').textContent = err || '';
  if (err) {
    (n.error ? $('name-input') : $('room-input')).focus();
    return;
  }
  start(n.name, r.room);
});

$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('join-input');
  const r = checkRoom(input.value);
  if (r.error) { toast(r.error, 'warn'); input.focus(); return; }
  input.value = '';
  addRoom(r.room, true);
});

$('composer-form').addEventListener('submit', (e) => { e.preventDefault(); submitComposer(); });
$('composer').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    submitComposer();
  }
});
$('composer').addEventListener('input', () => { autosize(); updateCounter(); });

$('messages').addEventListener('scroll', () => {
  if (nearBottom()) {
    $('jump').hidden = true;
    const room = state.active && rooms.get(state.active);
    if (room && room.unread && document.visibilityState === 'visible') { room.unread = 0; renderRooms(); }
  }
});
$('jump').addEventListener('click', () => {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
});

$('status').addEventListener('click', chat.reconnectNow);
$('change-name').addEventListener('click', signOut);
$('menu-btn').addEventListener('click', () => $('app-view').classList.toggle('nav-open'));
$('backdrop').addEventListener('click', closeNav);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeNav(); });

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible') return;
  const room = state.active && rooms.get(state.active);
  if (room && room.unread && nearBottom()) { room.unread = 0; renderRooms(); }
  if (!state.stopped) chat.reconnectNow();
});
window.addEventListener('online', chat.reconnectNow);

// Prefill the start form.
try {
  const saved = localStorage.getItem(NAME_KEY);
  if (saved) $('name-input').value = saved;
} catch {}
const fromHash = decodeURIComponent(location.hash.slice(1));
if (fromHash && limits.roomRe.test(fromHash)) $('room-input').value = fromHash;
($('name-input').value ? $('room-input') : $('name-input')).focus();
updateCounter();
