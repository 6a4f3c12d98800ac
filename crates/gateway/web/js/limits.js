// The server's rules (GET /api/config), and the checks the page makes
// with them before anything is sent.

// These defaults until /api/config answers.
export const limits = {
  roomRe: /^[A-Za-z0-9_.:-]{1,64}$/,
  maxTextBytes: 4096,
  history: 50,
  maxNameChars: 32,
};

export function loadLimits() {
  return fetch('/api/config')
    .then((r) => (r.ok ? r.json() : null))
    .then((c) => {
      if (!c) return;
      limits.roomRe = new RegExp(c.room_pattern);
      limits.maxTextBytes = c.max_message_bytes;
      limits.history = Math.min(c.history_default, c.history_max);
      limits.maxNameChars = c.max_name_chars;
    })
    .catch(() => {});
}

const encoder = new TextEncoder();
// What a text costs against the server's limit: its size escaped as a
// JSON string (a control character counts six bytes, a quote two).
export const bytes = (s) => encoder.encode(JSON.stringify(s)).length - 2;

export function checkName(raw) {
  const name = raw.trim();
  const n = [...name].length;
  if (n < 1) return { error: 'Please enter a display name.' };
  if (n > limits.maxNameChars) return { error: `Display names can be at most ${limits.maxNameChars} characters.` };
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return { error: 'Display names cannot contain control characters.' };
  return { name };
}

export function checkRoom(raw) {
  const room = raw.trim().replace(/^#/, '');
  if (!room) return { error: 'Please enter a room name.' };
  if (room.length > 64) return { error: 'Room names can be at most 64 characters.' };
  if (!limits.roomRe.test(room)) return { error: 'Room names may use letters, digits and _ . : - only.' };
  return { room };
}

export const uuid = () => (crypto.randomUUID ? crypto.randomUUID() : fallbackUuid());

function fallbackUuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
