// A line chart drawn as SVG: each series a polyline over the same x axis
// (one point a second), scaled to the largest value, with three grid lines.
const NS = 'http://www.w3.org/2000/svg';

function node(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

/** Draws `series` ([{ values: number[], cls }]) of `points` points into
 * `svg`, in its own pixels (so the labels are not stretched). */
export function drawChart(svg, series, points) {
  const [w, h] = [Math.max(100, svg.clientWidth || 600), 160];
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const top = Math.max(1, ...series.flatMap((s) => s.values));
  const scale = niceCeil(top);
  svg.replaceChildren();
  for (const f of [0.25, 0.5, 0.75, 1]) {
    const y = h - f * (h - 14);
    svg.append(node('line', { class: 'grid', x1: 0, x2: w, y1: y, y2: y }));
    svg.append(node('text', { x: 4, y: y - 2 }, format(scale * f)));
  }
  for (const s of series) {
    const start = points - s.values.length;
    const xy = s.values.map((v, i) => {
      const x = ((start + i) / Math.max(1, points - 1)) * w;
      const y = h - (v / scale) * (h - 14);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    svg.append(node('polyline', { class: `line ${s.cls}`, points: xy.join(' ') }));
  }
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function format(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(n * 10) / 10);
}
