// The admin console: logs in once with the token (the session is an
// HttpOnly cookie), then follows the cluster over one Server-Sent Events
// stream (/admin/live, a snapshot a second) and acts through
// /admin/api/... Everything shown is set as text, never as markup.
import { drawChart, format } from './chart.js';

const $ = (id) => document.getElementById(id);
const POINTS = 120;
const history = { in: [], out: [] };
let stream = null;

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function row(cells, attrs = {}) {
  const tr = el('tr', null, attrs);
  for (const c of cells) {
    const td = typeof c === 'object' && c !== null ? el('td', c.text, c.attrs ?? {}) : el('td', c);
    if (typeof c === 'object' && c?.numeric) td.className = 'n';
    tr.append(td);
  }
  return tr;
}

const num = (n) => ({ text: format(n ?? 0), numeric: true });

function uptime(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function bytes(n) {
  if (n == null) return '–';
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : `${Math.round(n / (1 << 20))} MiB`;
}

function note(text, bad = false) {
  const p = $('action-result');
  p.textContent = text;
  p.classList.toggle('bad', bad);
}

async function api(method, path) {
  const res = await fetch(path, { method, credentials: 'same-origin' });
  if (res.status === 401) {
    showLogin('The session ended: log in again.');
    throw new Error('unauthorized');
  }
  const body = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw new Error(body?.message ?? `HTTP ${res.status}`);
  return body;
}

function showLogin(message = '') {
  stream?.close();
  stream = null;
  $('console-view').hidden = true;
  $('logout').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = message;
  $('token').focus();
}

function showConsole() {
  $('login-view').hidden = true;
  $('console-view').hidden = false;
  $('logout').hidden = false;
  follow();
}

function follow() {
  stream?.close();
  stream = new EventSource('/admin/live');
  stream.addEventListener('snapshot', (e) => render(JSON.parse(e.data)));
  stream.onerror = async () => {
    // The browser retries on its own; a lost session does not come back.
    const res = await fetch('/admin/api/session').catch(() => null);
    if (res?.status === 401) showLogin('The session ended: log in again.');
  };
}

function render(s) {
  if (!s.nodes) return;
  const ready = $('ready');
  const down = new Set(s.ready.down);
  ready.replaceChildren(...['bus', 'journal', 'store'].map((part) => {
    const kind = s.ready[part];
    const bad = down.has(kind) || [...down].some((d) => d.startsWith(`${kind} `));
    return el('span', `${part}: ${kind} ${bad ? 'down' : 'ok'}`, { class: bad ? 'chip down' : 'chip', 'data-part': part });
  }));
  ready.dataset.state = down.size ? 'down' : 'ready';
  ready.title = down.size ? `Not reachable: ${[...down].join(', ')}` : 'Every part is reachable';

  const total = (key) => s.nodes.reduce((sum, n) => sum + (n[key] ?? 0), 0);
  for (const [key, field] of [['in', 'in_per_s'], ['out', 'out_per_s']]) {
    history[key].push(total(field));
    if (history[key].length > POINTS) history[key].shift();
  }
  drawChart($('chart'), [{ values: history.in, cls: 'in' }, { values: history.out, cls: 'out' }], POINTS);
  $('totals').textContent = `${format(total('connections'))} connections · ${format(total('in_per_s'))} in/s · ${format(total('out_per_s'))} out/s`;
  $('totals').dataset.connections = String(total('connections'));
  $('totals').dataset.in = String(total('in_per_s'));

  $('node-count').textContent = `${s.nodes.length} node${s.nodes.length === 1 ? '' : 's'} · this page is served by ${s.node}`;
  $('nodes').replaceChildren(...s.nodes.map((n) => row([
    n.id, n.address ?? '–', n.version, uptime(s.at - n.started_at), num(n.connections), num(n.rooms),
    num(n.in_per_s), num(n.out_per_s), num(n.slow_cuts), { text: bytes(n.rss_bytes), numeric: true },
    `${n.journal.kind}${n.journal.ready ? '' : ' (down)'} · ${n.journal.avg_ms} ms avg · ${n.journal.max_ms} max · ${n.journal.queued} queued`,
  ], { 'data-testid': 'node', 'data-node': n.id, 'data-connections': String(n.connections) })));

  $('rooms').replaceChildren(...s.rooms.map((r) => {
    const tr = row([r.room, num(r.per_s), num(r.names), num(r.connections)], {
      'data-testid': 'busy-room', 'data-room': r.room, 'data-rate': String(r.per_s), class: 'clickable', title: 'Look it up',
    });
    tr.onclick = () => { $('lookup-room').value = r.room; lookup(r.room); };
    return tr;
  }));

  $('processes').replaceChildren(...s.processes.map((p) => {
    const lag = Object.entries(p.status?.lag ?? {}).map(([part, n]) => `${part}: ${n}`).join(' · ');
    return row([`${p.kind} ${p.id}`, num(p.status?.records_per_s), num(p.status?.lag_total), lag || '–'],
      { 'data-testid': 'process', 'data-kind': p.kind });
  }));
  $('no-processes').hidden = s.processes.length > 0;
}

async function lookup(room) {
  if (!room) return;
  try {
    const r = await api('GET', `/admin/api/rooms/${encodeURIComponent(room)}`);
    $('lookup').hidden = false;
    $('lookup').dataset.room = r.room;
    $('lookup-title').textContent = `${r.room}: ${r.count} name${r.count === 1 ? '' : 's'}${r.truncated ? ' (first shown)' : ''}, ${r.connections_here} connection${r.connections_here === 1 ? '' : 's'} here`;
    $('lookup-names').replaceChildren(...r.members.map((m) => {
      const li = el('li', null, { 'data-testid': 'member', 'data-name': m.name });
      const b = el('button', 'Disconnect', { class: 'small danger', type: 'button', 'data-testid': 'disconnect', 'data-name': m.name });
      b.onclick = () => disconnect(m.name);
      li.append(el('span', `${m.name} (${m.connections})`), b);
      return li;
    }));
    $('lookup-messages').replaceChildren(...r.messages.map((m) => {
      const li = el('li', null, { 'data-testid': 'lookup-message', 'data-id': m.id });
      const text = m.deleted ? 'deleted' : (m.text || JSON.stringify(m.data ?? null));
      li.append(el('b', m.from), el('span', text, { class: m.deleted ? 'text gone' : 'text' }));
      if (!m.deleted) {
        const b = el('button', 'Delete', { class: 'small danger', type: 'button', 'data-testid': 'delete', 'data-id': m.id });
        b.onclick = () => remove(r.room, m.id);
        li.append(b);
      }
      return li;
    }));
    note('');
  } catch (e) {
    if (e.message !== 'unauthorized') note(`Look-up failed: ${e.message}`, true);
  }
}

async function disconnect(name) {
  if (!name) return;
  try {
    const r = await api('POST', `/admin/api/users/${encodeURIComponent(name)}/disconnect`);
    note(`${r.name}: ${r.disconnected_here} connection${r.disconnected_here === 1 ? '' : 's'} closed here; the other nodes close theirs.`);
    // The other nodes close theirs as the bus tells them: look again.
    const room = $('lookup').dataset.room;
    if (room) for (const ms of [500, 2000]) setTimeout(() => lookup(room), ms);
  } catch (e) {
    if (e.message !== 'unauthorized') note(`Disconnect failed: ${e.message}`, true);
  }
}

async function remove(room, id) {
  try {
    await api('DELETE', `/admin/api/rooms/${encodeURIComponent(room)}/messages/${id}`);
    note(`Message ${id} deleted everywhere.`);
    lookup(room);
  } catch (e) {
    if (e.message !== 'unauthorized') note(`Delete failed: ${e.message}`, true);
  }
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const token = $('token').value;
  const res = await fetch('/admin/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token }),
  }).catch(() => null);
  $('token').value = '';
  if (res?.status === 204) return showConsole();
  const body = await res?.json().catch(() => null);
  $('login-error').textContent = body?.message ?? 'The node did not answer.';
});

$('logout').addEventListener('click', async () => {
  await fetch('/admin/logout', { method: 'POST' }).catch(() => null);
  showLogin('Logged out.');
});

$('lookup-form').addEventListener('submit', (e) => {
  e.preventDefault();
  lookup($('lookup-room').value.trim());
});

$('disconnect-user').addEventListener('click', () => disconnect($('user-name').value.trim()));

const res = await fetch('/admin/api/session').catch(() => null);
if (res?.status === 204) showConsole();
else showLogin();
