// Turns scripts/bench's JSON results into docs/benchmarks.md (stdout) and
// docs/benchmarks.svg (p99 latency against offered load, one line per system).
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { scaleSection } from './scale-section.mjs';

const [dir, steps, connections, senders, p99Limit, roomsConnections, rooms, roomsRate] = process.argv.slice(2);
const systems = [
  ['ceiling', 'ceiling reference (1 process, hand-framed /ws, 20 ms batches)', '#6b7280'],
  ['single', 'switchboard (1 node, embedded journal)', '#0891b2'],
  ['switchboard', 'switchboard (2 nodes, Redis, embedded journal)', '#2563eb'],
  ['socketio', 'Socket.IO 4 + @socket.io/redis-adapter (2 nodes)', '#dc2626'],
  ['ws', 'ws + Redis Pub/Sub (2 nodes)', '#16a34a'],
];
const baseline = existsSync(`${dir}/baseline.txt`) ? readFileSync(`${dir}/baseline.txt`, 'utf8').trim() : null;
if (baseline) systems.splice(1, 0, ['baseline', `switchboard, ${baseline.replace(/^baseline: /, '')} (the same setup)`, '#7c3aed']);
const load = (name) => (existsSync(`${dir}/${name}.json`) ? JSON.parse(readFileSync(`${dir}/${name}.json`, 'utf8')) : null);
const fmt = (n, d = 0) => (n === null || n === undefined ? '-' : Number(n).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));

const results = systems.map(([key, label, color]) => ({
  key,
  label,
  color,
  broadcast: load(`${key}-broadcast`),
  rooms: load(`${key}-rooms`),
  idle: load(`${key}-idle`),
}));
const best = Object.fromEntries(results.map((r) => [r.key, r.broadcast?.highest_held ?? null]));
const ours = best.switchboard;

const lines = [];
lines.push('# Benchmarks', '');
if (baseline) lines.push(`This run measured an earlier commit beside the current one (\`BASELINE\`): ${baseline}.`, '');
lines.push(`Made by \`scripts/bench\` on ${new Date().toISOString().slice(0, 10)}: each system runs as two nodes sharing one local Redis, one system after the other, on the same 2-core machine as the load generator (\`switchboard bench\`, whose own CPU is reported). Numbers move between runs on a shared machine; compare the ratios within one run.`, '');
lines.push(`## Broadcast: ${connections} connections in one room, ${senders} senders, 64-byte payloads`, '');
lines.push(`The offered load steps through ${steps.split(',').length} rates (deliveries/s); a step *holds* when p99 <= ${p99Limit} ms with nothing lost or duplicated.`, '');
lines.push('| system | highest offered rate that held (deliveries/s) | switchboard (2 nodes) is |', '|---|---:|---:|');
for (const r of results) {
  const b = best[r.key];
  const ratio = r.key === 'switchboard' || !b || !ours ? '' : `${fmt(ours / b, 2)}x`;
  lines.push(`| ${r.label} | ${fmt(b)} | ${ratio} |`);
}
lines.push('');
// Against the ceiling reference: CPU per delivery (every server process of
// the system, Redis included) and p99, at each offered rate.
const cpuPerDelivery = (s) => (s && s.deliveries_per_second > 0
  ? (s.servers.reduce((sum, p) => sum + (p.cpu_percent ?? 0), 0) / 100) * 1e6 / s.deliveries_per_second
  : null);
const ceiling = results.find((r) => r.key === 'ceiling')?.broadcast;
if (ceiling) {
  const probe = ['before', 'after'].map((w) => load(`probe-${w}`)).filter(Boolean);
  if (probe.length) {
    lines.push(`Machine state: the fixed CPU probe (\`switchboard-ceiling --probe\`, 200 million xorshift steps) took ${probe.map((p) => `${fmt(p.cpu_ms)} ms`).join(' before the run and ')} after, and copying 64 MiB eight times ${probe.map((p) => `${fmt(p.memory_ms)} ms`).join(' and ')}; compare those with another day's before comparing its figures.`, '');
  }
  lines.push('### Against the ceiling reference', '');
  lines.push('CPU per delivery is the CPU time of every server process of the system (its nodes, and Redis for the systems that use it) per message delivered, in microseconds; each ratio is to the ceiling reference at the same offered rate, in this run (1.00: as cheap or as fast as the reference).', '');
  const others = results.filter((r) => r.key !== 'ceiling' && r.broadcast);
  lines.push(`| offered/s | ceiling: CPU µs/delivery, p99 ms | ${others.map((r) => `${r.key}: CPU µs (ratio), p99 ms (ratio)`).join(' | ')} |`);
  lines.push(`|---:|---:|${others.map(() => '---:').join('|')}|`);
  for (const c of ceiling.reports) {
    const base = cpuPerDelivery(c);
    const cells = others.map((r) => {
      const s = r.broadcast.reports.find((x) => x.offered_per_second === c.offered_per_second);
      if (!s) return '-';
      const cpu = cpuPerDelivery(s);
      const held = s.lost === 0 && s.duplicates === 0 ? '' : ' (lost/dup)';
      return `${fmt(cpu, 2)} (${base ? fmt(cpu / base, 2) : '-'}x), ${fmt(s.latency_ms.p99, 1)} (${fmt(s.latency_ms.p99 / c.latency_ms.p99, 2)}x)${held}`;
    });
    lines.push(`| ${fmt(c.offered_per_second)} | ${fmt(base, 2)}, ${fmt(c.latency_ms.p99, 1)} | ${cells.join(' | ')} |`);
  }
}
lines.push('', '![p99 latency against offered load](benchmarks.svg)', '');
for (const r of results) {
  if (!r.broadcast) continue;
  lines.push(`### ${r.label}`, '', '| offered/s | delivered/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | dup | server CPU % (each process: nodes, then Redis) | generator CPU % |', '|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|');
  for (const s of r.broadcast.reports) {
    const cpu = s.servers.map((p) => fmt(p.cpu_percent)).join(', ');
    lines.push(`| ${fmt(s.offered_per_second)} | ${fmt(s.deliveries_per_second)} | ${fmt(s.latency_ms.p50, 2)} | ${fmt(s.latency_ms.p99, 2)} | ${fmt(s.latency_ms.p999, 2)} | ${fmt(s.latency_ms.max, 2)} | ${fmt(s.lost)} | ${fmt(s.duplicates)} | ${cpu} | ${fmt(s.client_cpu_percent)} |`);
  }
  lines.push('');
}
lines.push(`## Rooms: ${fmt(roomsConnections)} connections in ${fmt(rooms)} rooms, every connection sending ${roomsRate} msg/s`, '');
lines.push('Connections alternate between the two nodes and room *k* gets connections *k*, *k* + rooms, ...: each room lives on one node, so a node should receive nothing from Redis.', '');
lines.push('| system | delivered/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | lost | dup | server CPU % (each process: nodes, then Redis) | generator CPU % |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|');
for (const r of results) {
  const s = r.rooms?.reports?.[0];
  if (!s) continue;
  const cpu = s.servers.map((p) => fmt(p.cpu_percent)).join(', ');
  lines.push(`| ${r.label} | ${fmt(s.deliveries_per_second)} | ${fmt(s.latency_ms.p50, 2)} | ${fmt(s.latency_ms.p90, 2)} | ${fmt(s.latency_ms.p99, 2)} | ${fmt(s.latency_ms.p999, 2)} | ${fmt(s.latency_ms.max, 2)} | ${fmt(s.lost)} | ${fmt(s.duplicates)} | ${cpu} | ${fmt(s.client_cpu_percent)} |`);
}
const bus = load('switchboard-rooms-bus');
if (bus) {
  lines.push('', "switchboard's Redis traffic per node in that run (from each node's `/metrics`): " + bus.map((n, i) => `node ${i + 1} published ${fmt(n.published)} messages and received ${fmt(n.received)}`).join('; ') + '.');
}
lines.push('');
lines.push('## Idle connections', '', '| system | connections | server RSS per connection (KiB) |', '|---|---:|---:|');
const idleMax = load('switchboard-idle-max')?.reports?.[0];
const oneNode = results.find((r) => r.key === 'single')?.label ?? 'switchboard (1 node)';
for (const r of [...results.map((r) => [r.label, r.idle?.reports?.[0]]), ...(idleMax ? [[oneNode, idleMax]] : [])]) {
  const [label, i] = r;
  lines.push(`| ${label} | ${fmt(i?.connections)} | ${fmt(i?.rss_kib_per_connection, 2)} |`);
}
lines.push('');
// The scale run (scripts/bench --scale), kept from its own run.
const scale = scaleSection();
if (scale) lines.push(scale, '');
// The hand-written reading of the figures, kept beside the generator.
if (existsSync('bench/analysis.md')) lines.push(readFileSync('bench/analysis.md', 'utf8'));
process.stdout.write(lines.join('\n'));

// The chart: log-scale offered load on x, log-scale p99 on y.
const W = 760, H = 420, L = 70, R = 20, T = 30, B = 60;
const pts = results.flatMap((r) => (r.broadcast?.reports ?? []).map((s) => [s.offered_per_second, Math.max(s.latency_ms.p99, 0.1)]));
if (pts.length) {
  const [xmin, xmax] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  const [ymin, ymax] = [Math.min(0.5, ...pts.map((p) => p[1])), Math.max(1000, ...pts.map((p) => p[1]))];
  const x = (v) => L + ((Math.log10(v) - Math.log10(xmin)) / (Math.log10(xmax) - Math.log10(xmin) || 1)) * (W - L - R);
  const y = (v) => H - B - ((Math.log10(v) - Math.log10(ymin)) / (Math.log10(ymax) - Math.log10(ymin))) * (H - T - B);
  const svg = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`, `<rect width="100%" height="100%" fill="white"/>`];
  for (let e = Math.ceil(Math.log10(ymin)); e <= Math.log10(ymax); e++) {
    svg.push(`<line x1="${L}" x2="${W - R}" y1="${y(10 ** e)}" y2="${y(10 ** e)}" stroke="#e5e7eb"/><text x="${L - 8}" y="${y(10 ** e) + 4}" text-anchor="end">${10 ** e} ms</text>`);
  }
  for (let e = Math.floor(Math.log10(xmin)); e <= Math.log10(xmax); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v < xmin * 0.999 || v > xmax * 1.001) continue;
      svg.push(`<line y1="${T}" y2="${H - B}" x1="${x(v)}" x2="${x(v)}" stroke="#e5e7eb"/><text y="${H - B + 18}" x="${x(v)}" text-anchor="middle">${fmt(v)}</text>`);
    }
  }
  svg.push(`<line x1="${L}" x2="${W - R}" y1="${y(Number(p99Limit))}" y2="${y(Number(p99Limit))}" stroke="#9ca3af" stroke-dasharray="4 4"/><text x="${W - R}" y="${y(Number(p99Limit)) - 4}" text-anchor="end" fill="#6b7280">p99 limit ${p99Limit} ms</text>`);
  svg.push(`<text x="${(W + L) / 2}" y="${H - 20}" text-anchor="middle">offered deliveries/s (log)</text><text x="16" y="${(H - B + T) / 2}" transform="rotate(-90 16 ${(H - B + T) / 2})" text-anchor="middle">p99 latency (log)</text>`);
  results.forEach((r, i) => {
    const rs = r.broadcast?.reports ?? [];
    if (!rs.length) return;
    const d = rs.map((s, j) => `${j ? 'L' : 'M'}${x(s.offered_per_second).toFixed(1)},${y(Math.max(s.latency_ms.p99, 0.1)).toFixed(1)}`).join(' ');
    svg.push(`<path d="${d}" fill="none" stroke="${r.color}" stroke-width="2"/>`);
    for (const s of rs) svg.push(`<circle cx="${x(s.offered_per_second).toFixed(1)}" cy="${y(Math.max(s.latency_ms.p99, 0.1)).toFixed(1)}" r="3" fill="${r.color}"/>`);
    svg.push(`<rect x="${L + 10}" y="${T + 6 + i * 18}" width="12" height="3" fill="${r.color}"/><text x="${L + 28}" y="${T + 10 + i * 18}">${r.label}</text>`);
  });
  svg.push('</svg>');
  writeFileSync('docs/benchmarks.svg', svg.join('\n'));
}
