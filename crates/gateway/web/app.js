(() => {
  'use strict';

  // ---------- constants ----------
  // The server's rules: these defaults until GET /api/config answers.
  let ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  let MAX_TEXT_BYTES = 4096;
  let HISTORY = 50;
  let MAX_NAME_CHARS = 32;
  const MAX_KEPT = 1000;              // messages kept per room
  const PING_EVERY = 25000;
  const PONG_TIMEOUT = 10000;
  const BACKOFF_MIN = 500;
  const BACKOFF_MAX = 10000;
  const SEND_TRIES = 4;               // automatic attempts after `unavailable`
  const GROUP_GAP = 5 * 60 * 1000;    // consecutive messages of one sender within this are grouped
  const NAME_KEY = 'switchboard.name';

  fetch('/api/config')
    .then((r) => (r.ok ? r.json() : null))
    .then((c) => {
      if (!c) return;
      ROOM_RE = new RegExp(c.room_pattern);
      MAX_TEXT_BYTES = c.max_message_bytes;
      HISTORY = Math.min(c.history_default, c.history_max);
      MAX_NAME_CHARS = c.max_name_chars;
    })
    .catch(() => {});

  const $ = (id) => document.getElementById(id);
  const encoder = new TextEncoder();
  // What a text costs against the server's limit: its size escaped as a
  // JSON string (a control character counts six bytes, a quote two).
  const bytes = (s) => encoder.encode(JSON.stringify(s)).length - 2;
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  };
  const uuid = () => (crypto.randomUUID ? crypto.randomUUID() : fallbackUuid());
  function fallbackUuid() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // ---------- state ----------
  let me = '';
  let ws = null;
  let attempt = 0;                   // reconnect attempts since the last successful open
  let reconnectTimer = 0;
  let reconnectAt = 0;
  let countdownTimer = 0;
  let pingTimer = 0;
  let pongTimer = 0;
  let everOnline = false;
  let stopped = true;                // true while on the start form
  let refSeq = 0;
  const rooms = new Map();           // name -> room state, in sidebar order
  let active = null;                 // active room name
  const outbox = new Map();          // id -> { id, room, text, ref, tries, timer, inFlight }
  const joinRefs = new Map();        // ref -> room
  const sendRefs = new Map();        // ref -> id
  const mineIds = new Set();         // ids this tab sent

  function newRoom(name) {
    return { name, msgs: new Map(), unread: 0, state: 'joining', joinedOnce: false, joinTries: 0, joinTimer: 0, li: null };
  }

  // ---------- validation ----------
  function checkName(raw) {
    const name = raw.trim();
    const n = [...name].length;
    if (n < 1) return { error: 'Please enter a display name.' };
    if (n > MAX_NAME_CHARS) return { error: `Display names can be at most ${MAX_NAME_CHARS} characters.` };
    if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return { error: 'Display names cannot contain control characters.' };
    return { name };
  }
  function checkRoom(raw) {
    const room = raw.trim().replace(/^#/, '');
    if (!room) return { error: 'Please enter a room name.' };
    if (room.length > 64) return { error: 'Room names can be at most 64 characters.' };
    if (!ROOM_RE.test(room)) return { error: 'Room names may use letters, digits and _ . : - only.' };
    return { room };
  }

  // ---------- toasts ----------
  function toast(text, kind = 'info', ms = 5000) {
    const box = $('toasts');
    // Do not stack the same note twice.
    for (const t of box.children) if (t.dataset.text === text) { t.remove(); }
    const t = el('div', `toast ${kind}`);
    t.dataset.text = text;
    t.setAttribute('data-testid', 'toast');
    t.append(el('p', null, text));
    const x = el('button', null, '×');
    x.type = 'button';
    x.setAttribute('aria-label', 'Dismiss');
    x.onclick = () => t.remove();
    t.append(x);
    box.append(t);
    while (box.children.length > 4) box.firstChild.remove();
    setTimeout(() => t.remove(), ms);
  }

  // ---------- connection ----------
  // With AUTH=required the page is opened as /#token=<JWT> (the fragment
  // never reaches a server log); the token's name then wins over `me`.
  const token = new URLSearchParams(location.hash.slice(1)).get('token');

  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const auth = token ? `&token=${encodeURIComponent(token)}` : '';
    return `${proto}//${location.host}/ws?name=${encodeURIComponent(me)}${auth}`;
  }

  function setStatus(state, text) {
    const s = $('status');
    s.dataset.state = state;
    $('status-text').textContent = text;
    s.title = state === 'reconnecting' ? 'Click to reconnect now' : 'Connection status';
  }

  function connect() {
    clearTimeout(reconnectTimer);
    clearInterval(countdownTimer);
    reconnectTimer = 0;
    if (stopped) return;
    setStatus(everOnline ? 'reconnecting' : 'connecting', everOnline ? 'Reconnecting…' : 'Connecting…');
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
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
      if (frame && typeof frame === 'object') handleFrame(frame);
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
    if (stopped) return;
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

  function reconnectNow() {
    if (stopped || ws) return;
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

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function sendJoin(room) {
    const ref = `j${++refSeq}`;
    joinRefs.set(ref, room.name);
    clearTimeout(room.joinTimer);
    send({ type: 'join', room: room.name, history: HISTORY, ref });
  }

  // ---------- frames from the server ----------
  function handleFrame(f) {
    switch (f.type) {
      case 'joined': return onJoined(f);
      case 'message': return onMessage(f);
      case 'ack': return onAck(f);
      case 'error': return onError(f);
      case 'left': return;
      case 'pong': clearTimeout(pongTimer); return;
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
    let added = 0;
    for (const m of Array.isArray(f.history) ? f.history : []) {
      if (upsert(room, m)) added++;
    }
    // Messages missed while disconnected count as unread in other rooms.
    if (!fresh && added && !isWatching(room)) room.unread += added;
    room.state = 'joined';
    room.joinedOnce = true;
    room.joinTries = 0;
    trim(room);
    renderRooms();
    if (room.name === active) renderMessagesSoon(fresh ? 'bottom' : undefined);
    // Everything not acked yet goes out again with its same id.
    for (const p of outbox.values()) {
      if (p.room === room.name && !p.inFlight && !p.timer && p.state !== 'failed') transmit(p);
    }
  }

  function onMessage(f) {
    const room = rooms.get(f.room);
    if (!room || typeof f.id !== 'string') return;
    const isNew = upsert(room, f);
    if (!isNew) {
      if (room.name === active) renderMessagesSoon();
      return;
    }
    trim(room);
    if (!isWatching(room) && !isMine(room.msgs.get(f.id))) {
      room.unread++;
      renderRooms();
    }
    if (room.name === active) renderMessagesSoon();
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

  function onError(f) {
    const code = String(f.code || 'error');
    const ref = f.ref;
    // An error about a join.
    if (ref != null && joinRefs.has(ref)) {
      const name = joinRefs.get(ref);
      joinRefs.delete(ref);
      const room = rooms.get(name);
      if (!room) return;
      if (code === 'unavailable' && room.joinTries < 5) {
        room.joinTries++;
        room.joinTimer = setTimeout(() => { if (rooms.has(name) && ws) sendJoin(room); }, 600 * 2 ** room.joinTries);
        return;
      }
      toast(`Could not join #${name}: ${FRIENDLY[code] || f.message || code}`, 'error');
      if (!room.joinedOnce) removeRoom(name);
      return;
    }
    // An error about a message we sent.
    const id = typeof f.id === 'string' && outbox.has(f.id) ? f.id : (ref != null ? sendRefs.get(ref) : undefined);
    if (ref != null) sendRefs.delete(ref);
    const p = id && outbox.get(id);
    if (p) {
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
      return;
    }
    toast(FRIENDLY[code] ? `${FRIENDLY[code]}${f.message ? ` (${f.message})` : ''}` : (f.message || code), 'error');
  }

  // ---------- sending ----------
  function transmit(p) {
    const room = rooms.get(p.room);
    if (!room || room.state !== 'joined') return false;  // sent again on `joined`
    const ref = `c${++refSeq}`;
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

  function retry(id) {
    const p = outbox.get(id);
    if (!p) return;
    p.state = 'pending';
    p.tries = 0;
    const room = rooms.get(p.room);
    const m = room && room.msgs.get(id);
    if (m) { m.state = 'pending'; updateMsgEl(m); }
    if (!transmit(p) && !ws) reconnectNow();
  }

  function submitComposer() {
    const box = $('composer');
    const text = box.value;
    if (!text.trim() || !active) return;
    if (bytes(text) > MAX_TEXT_BYTES) {
      toast(`That message is too long (${bytes(text)} of ${MAX_TEXT_BYTES} bytes).`, 'warn');
      return;
    }
    const id = uuid();
    mineIds.add(id);
    const room = rooms.get(active);
    const p = { id, room: active, text, tries: 0, timer: 0, inFlight: false, state: 'pending' };
    outbox.set(id, p);
    upsert(room, { id, room: active, from: me, text, ts: Date.now() }, 'pending');
    box.value = '';
    autosize();
    updateCounter();
    renderMessagesSoon('bottom');
    transmit(p);
  }

  // ---------- room state ----------
  // Adds a message or refreshes a known one; true when it was new.
  function upsert(room, m, state) {
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
      state: state || (pending ? pending.state : 'sent'),
      why: '',
      el: null,
    });
    return true;
  }

  function trim(room) {
    if (room.msgs.size <= MAX_KEPT) return;
    const sorted = sortedMsgs(room);
    for (const m of sorted.slice(0, sorted.length - MAX_KEPT)) {
      if (!outbox.has(m.id)) room.msgs.delete(m.id);
    }
  }

  function sortedMsgs(room) {
    return [...room.msgs.values()].sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  const isMine = (m) => !!m && (mineIds.has(m.id) || m.from === me);
  const isWatching = (room) => room.name === active && document.visibilityState === 'visible' && nearBottom();

  function addRoom(name, activate) {
    let room = rooms.get(name);
    if (!room) {
      room = newRoom(name);
      rooms.set(name, room);
      if (ws && ws.readyState === WebSocket.OPEN) sendJoin(room);
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
    if (active === name) {
      const next = rooms.keys().next();
      switchTo(next.done ? null : next.value);
    } else {
      renderRooms();
    }
  }

  function leaveRoom(name) {
    if (!rooms.has(name)) return;
    send({ type: 'leave', room: name });
    removeRoom(name);
  }

  function switchTo(name) {
    active = name;
    const room = name && rooms.get(name);
    if (room) room.unread = 0;
    $('room-title-text').textContent = name || 'No room';
    $('composer').disabled = !name;
    $('composer').placeholder = name ? `Message #${name}` : 'Join a room to start chatting';
    updateCounter();
    closeNav();
    renderRooms();
    renderMessagesSoon('bottom');
    if (name && matchMedia('(min-width: 761px)').matches) $('composer').focus();
  }

  // ---------- rendering: rooms ----------
  function renderRooms() {
    const list = $('rooms');
    const items = [];
    let totalUnread = 0;
    for (const room of rooms.values()) {
      totalUnread += room.unread;
      if (!room.li) room.li = buildRoomItem(room);
      const li = room.li;
      li.classList.toggle('active', room.name === active);
      li.classList.toggle('has-unread', room.unread > 0);
      li.dataset.state = room.state;
      li.setAttribute('aria-current', room.name === active ? 'true' : 'false');
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
    document.title = totalUnread ? `(${totalUnread}) switchboard` : (active ? `#${active} · switchboard` : 'switchboard');
    $('menu-btn').classList.toggle('unread', totalUnread > 0);
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
    leave.addEventListener('click', (e) => { e.stopPropagation(); leaveRoom(room.name); });
    li.append(leave);
    li.addEventListener('click', () => switchTo(room.name));
    li.addEventListener('keydown', (e) => {
      if (e.target === li && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); switchTo(room.name); }
    });
    return li;
  }

  // ---------- rendering: messages ----------
  let renderQueued = false;
  let scrollWish;
  function renderMessagesSoon(wish) {
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

  function nearBottom() {
    const list = $('messages');
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function renderMessages(wish) {
    const list = $('messages');
    const stick = wish === 'bottom' || nearBottom();
    const room = active && rooms.get(active);
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

  function updateMsgEl(m) {
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
      b.onclick = () => retry(m.id);
      meta.append(b);
    } else if (mine && mineIds.has(m.id)) {
      const s = el('span', 'sent', '✓ Sent');
      s.setAttribute('data-testid', 'message-sent');
      meta.append(s);
    }
  }

  // Text with http(s) links made clickable, built from text nodes only.
  function appendLinkified(parent, text) {
    const re = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]}]/g;
    let last = 0;
    for (const match of text.matchAll(re)) {
      if (match.index > last) parent.append(document.createTextNode(text.slice(last, match.index)));
      const a = document.createElement('a');
      a.href = match[0];
      a.textContent = match[0];
      a.target = '_blank';
      a.rel = 'noopener noreferrer nofollow';
      parent.append(a);
      last = match.index + match[0].length;
    }
    if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
  }

  function initial(name) {
    const ch = [...String(name).trim()][0];
    return ch ? ch.toUpperCase() : '?';
  }
  // Colours that all carry white text well.
  const PALETTE = ['#d9534f', '#e0702a', '#c0870f', '#3f9b4a', '#16918a', '#2f86c9',
    '#4f5bd5', '#7b54c9', '#b0489a', '#c9465f', '#5a6b7d', '#3d7a63'];
  function colorFor(name) {
    let h = 0;
    for (const c of String(name)) h = (h * 31 + c.codePointAt(0)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }
  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dateFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
  const fmtTime = (d) => timeFmt.format(d);
  function dayKey(ts) {
    const d = new Date(ts);
    return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
  }
  function dayLabel(ts) {
    const now = new Date();
    if (dayKey(ts) === dayKey(now.getTime())) return 'Today';
    if (dayKey(ts) === dayKey(now.getTime() - 86400000)) return 'Yesterday';
    return dateFmt.format(new Date(ts));
  }

  // ---------- composer ----------
  function autosize() {
    const box = $('composer');
    box.style.height = 'auto';
    box.style.height = `${Math.min(box.scrollHeight, 180)}px`;
  }
  function updateCounter() {
    const text = $('composer').value;
    const n = bytes(text);
    const c = $('counter');
    c.textContent = n > MAX_TEXT_BYTES * 0.8 ? `${n} / ${MAX_TEXT_BYTES}` : '';
    c.className = n > MAX_TEXT_BYTES ? 'over' : '';
    $('send').disabled = !active || !text.trim() || n > MAX_TEXT_BYTES;
  }

  // ---------- navigation (narrow screens) ----------
  function closeNav() { $('app-view').classList.remove('nav-open'); }

  // ---------- start / stop ----------
  function start(name, room) {
    me = name;
    try { localStorage.setItem(NAME_KEY, name); } catch {}
    $('me-name').textContent = name;
    $('me-avatar').textContent = initial(name);
    $('me-avatar').style.background = colorFor(name);
    $('start-view').hidden = true;
    $('app-view').hidden = false;
    stopped = false;
    everOnline = false;
    attempt = 0;
    addRoom(room, true);
    connect();
  }

  function signOut() {
    stopped = true;
    clearTimeout(reconnectTimer);
    clearInterval(countdownTimer);
    if (ws) dropped(1000);
    for (const p of outbox.values()) clearTimeout(p.timer);
    outbox.clear();
    for (const r of rooms.values()) clearTimeout(r.joinTimer);
    rooms.clear();
    active = null;
    $('messages').replaceChildren();
    $('app-view').hidden = true;
    $('start-view').hidden = false;
    $('name-input').value = me;
    $('name-input').focus();
    $('name-input').select();
  }

  // ---------- wiring ----------
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
      const room = active && rooms.get(active);
      if (room && room.unread && document.visibilityState === 'visible') { room.unread = 0; renderRooms(); }
    }
  });
  $('jump').addEventListener('click', () => {
    const list = $('messages');
    list.scrollTop = list.scrollHeight;
  });

  $('status').addEventListener('click', reconnectNow);
  $('change-name').addEventListener('click', signOut);
  $('menu-btn').addEventListener('click', () => $('app-view').classList.toggle('nav-open'));
  $('backdrop').addEventListener('click', closeNav);
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeNav(); });

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    const room = active && rooms.get(active);
    if (room && room.unread && nearBottom()) { room.unread = 0; renderRooms(); }
    if (!ws && !stopped) reconnectNow();
  });
  window.addEventListener('online', reconnectNow);

  // Prefill the start form.
  try {
    const saved = localStorage.getItem(NAME_KEY);
    if (saved) $('name-input').value = saved;
  } catch {}
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if (fromHash && ROOM_RE.test(fromHash)) $('room-input').value = fromHash;
  ($('name-input').value ? $('room-input') : $('name-input')).focus();
  updateCounter();
})();
