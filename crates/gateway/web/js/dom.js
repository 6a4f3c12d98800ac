// DOM helpers and toasts.

export const $ = (id) => document.getElementById(id);

export const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
};

export function toast(text, kind = 'info', ms = 5000) {
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
