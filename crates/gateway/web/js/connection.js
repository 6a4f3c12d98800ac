// The page's one WebSocket: connecting, keepalive pings, and reconnecting
// with backoff when it drops. Frames other than `pong` go to the handler
// given to `onFrame`.

import { $, toast } from './dom.js';
import { limits } from './limits.js';
import { joinRefs, nextRef, outbox, rooms, sendRefs, state } from './state.js';
import { renderMessagesSoon, renderRooms } from './view.js';

const PING_EVERY = 25000;
const PONG_TIMEOUT = 10000;
const BACKOFF_MIN = 500;
const BACKOFF_MAX = 10000;

// With AUTH=required the page is opened as /#token=<JWT> (the fragment
// never reaches a server log); the token's name then wins over `me`.
const token = new URLSearchParams(location.hash.slice(1)).get('token');

let ws = null;
let attempt = 0;                     // reconnect attempts since the last successful open
let reconnectTimer = 0;
let reconnectAt = 0;
let countdownTimer = 0;
let pingTimer = 0;
let pongTimer = 0;
let everOnline = false;
let frameHandler = () => {};

export function onFrame(handler) {
  frameHandler = handler;
}

// Whether there is a socket (open or opening).
export const connected = () => ws !== null;
// Whether frames can be sent now.
export const isOpen = () => !!ws && ws.readyState === WebSocket.OPEN;

function wsUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const auth = token ? `&token=${encodeURIComponent(token)}` : '';
  return `${proto}//${location.host}/ws?name=${encodeURIComponent(state.me)}${auth}`;
}

function setStatus(s, text) {
  const status = $('status');
  status.dataset.state = s;
  $('status-text').textContent = text;
  status.title = s === 'reconnecting' ? 'Click to reconnect now' : 'Connection status';
  $('banner').hidden = s !== 'reconnecting';
}

// Connects from scratch (the start form was sent).
export function start() {
  everOnline = false;
  attempt = 0;
  connect();
}

// Disconnects for good (back to the start form).
export function stop() {
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  if (ws) dropped(1000);
}

function connect() {
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  reconnectTimer = 0;
  if (state.stopped) return;
  setStatus(everOnline ? 'reconnecting' : 'connecting', everOnline ? 'Reconnecting…' : 'Connecting…');
  let sock;
  try {
    sock = new WebSocket(wsUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  ws = sock;
  sock.onopen = () => {
    if (ws !== sock) return;
    attempt = 0;
    everOnline = true;
    setStatus('online', 'Online');
    startPing();
    for (const room of rooms.values()) {
      room.state = 'joining';
      sendJoin(room);
    }
    renderRooms();
  };
  sock.onmessage = (ev) => {
    if (ws !== sock) return;
    let frame;
    try { frame = JSON.parse(ev.data); } catch { return; }
    if (!frame || typeof frame !== 'object') return;
    if (frame.type === 'pong') clearTimeout(pongTimer);
    else frameHandler(frame);
  };
  sock.onclose = (ev) => {
    if (ws !== sock) return;
    dropped(ev.code);
  };
  sock.onerror = () => { /* onclose follows */ };
}

// The socket is gone (or declared dead): forget it and try again later.
function dropped(code) {
  const sock = ws;
  ws = null;
  if (sock) {
    sock.onopen = sock.onmessage = sock.onclose = sock.onerror = null;
    try { sock.close(); } catch {}
  }
  stopPing();
  for (const p of outbox.values()) p.inFlight = false;
  for (const room of rooms.values()) { room.state = 'joining'; clearTimeout(room.joinTimer); }
  joinRefs.clear();
  sendRefs.clear();
  renderRooms();
  renderMessagesSoon();
  if (state.stopped) return;
  if (code === 1009) toast('A request was too large for the server; reconnecting.', 'warn');
  else if (code === 1008) toast('The connection fell behind; reconnecting.', 'warn');
  else if (code === 1001 && everOnline) toast('The server is restarting; reconnecting.', 'warn');
  scheduleReconnect();
}

function scheduleReconnect() {
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** attempt);
  const delay = Math.round(base * (0.5 + Math.random() * 0.5));
  attempt++;
  reconnectAt = Date.now() + delay;
  const tick = () => {
    const left = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
    setStatus('reconnecting', left > 1 ? `Reconnecting in ${left}s…` : 'Reconnecting…');
  };
  tick();
  countdownTimer = setInterval(tick, 500);
  reconnectTimer = setTimeout(connect, delay);
}

export function reconnectNow() {
  if (state.stopped || ws) return;
  attempt = 0;
  connect();
}

function startPing() {
  stopPing();
  pingTimer = setInterval(() => {
    if (!send({ type: 'ping' })) return;
    clearTimeout(pongTimer);
    pongTimer = setTimeout(() => dropped(0), PONG_TIMEOUT);
  }, PING_EVERY);
}

function stopPing() {
  clearInterval(pingTimer);
  clearTimeout(pongTimer);
}

export function send(frame) {
  if (!isOpen()) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

export function sendJoin(room) {
  const ref = nextRef('j');
  joinRefs.set(ref, room.name);
  clearTimeout(room.joinTimer);
  // Back after a drop: ask for exactly what was missed.
  const since = room.joinedOnce && room.position ? { since: room.position } : {};
  send({ type: 'join', room: room.name, history: limits.history, presence: true, ref, ...since });
}
