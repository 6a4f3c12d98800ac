// How names, times and message text look.

// Text with http(s) links made clickable, built from text nodes only.
export function appendLinkified(parent, text) {
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

export function initial(name) {
  const ch = [...String(name).trim()][0];
  return ch ? ch.toUpperCase() : '?';
}

// Colours that all carry white text well.
const PALETTE = ['#d9534f', '#e0702a', '#c0870f', '#3f9b4a', '#16918a', '#2f86c9',
  '#4f5bd5', '#7b54c9', '#b0489a', '#c9465f', '#5a6b7d', '#3d7a63'];

export function colorFor(name) {
  let h = 0;
  for (const c of String(name)) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
export const fmtTime = (d) => timeFmt.format(d);

export function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function dayLabel(ts) {
  const now = new Date();
  if (dayKey(ts) === dayKey(now.getTime())) return 'Today';
  if (dayKey(ts) === dayKey(now.getTime() - 86400000)) return 'Yesterday';
  return dateFmt.format(new Date(ts));
}
