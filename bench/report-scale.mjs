// Writes docs/benchmarks-scale.md (to stdout) and docs/benchmarks-scale.svg
// from the JSON of scripts/bench-scale.
//   node bench/report-scale.mjs DIR TOTAL NODES ROOMS RATE CONNECT_SECONDS SOCKSTAT_BEFORE SOCKSTAT_HELD SLOW_CUTS
import fs from 'node:fs';
import path from 'node:path';

const [dir, total, nodes, rooms, rate, connectSeconds, before, held, cuts] = process.argv.slice(2);
const read = (prefix) => fs.readdirSync(dir)
  .filter((f) => f.startsWith(prefix) && f.endsWith('.json'))
  .sort()
  .map((f) => ({ port: f.slice(prefix.length, -5), report: JSON.parse(fs.readFileSync(path.join(dir, f))).reports[0] }));
const idle = read('idle-');
const busy = read('rooms-');
const sock = (s) => Object.fromEntries(s.trim().split(/\s+/).filter(Boolean).map((kv) => {
  const [k, v] = kv.split('=');
  return [k, Number(v)];
}));
const [b, h] = [sock(before), sock(held)];
const page = 4096;
const sum = (xs) => xs.reduce((a, x) => a + x, 0);
const fmt = (n, d = 0) => Number(n).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

const opened = sum(idle.map((x) => x.report.connections));
const failed = sum(idle.map((x) => x.report.connect_failures));
const perConn = idle.map((x) => x.report.rss_kib_per_connection);
const rss = sum(idle.map((x) => x.report.servers[0].rss_kib));
const bufferBytes = ((h.mem ?? 0) - (b.mem ?? 0)) * page;
const slabBytes = ((h.slab ?? 0) - (b.slab ?? 0)) * 1024;
const sockets = (h.inuse ?? 0) - (b.inuse ?? 0);

const sent = sum(busy.map((x) => x.report.sent));
const delivered = sum(busy.map((x) => x.report.delivered));
const expected = sum(busy.map((x) => x.report.expected));
const lost = sum(busy.map((x) => x.report.lost));
const dups = sum(busy.map((x) => x.report.duplicates));
const p99s = busy.map((x) => x.report.latency_ms.p99);
const p50s = busy.map((x) => x.report.latency_ms.p50);
const cpu = busy.map((x) => x.report.servers[0].cpu_percent);

const out = [];
out.push(`# switchboard at ${fmt(total)} connections on one machine`);
out.push('');
out.push(`Written by \`scripts/bench --scale\` on ${new Date().toISOString().slice(0, 10)}: ${nodes} switchboard nodes on one Redis,`);
out.push(`one \`switchboard bench\` process per node, everything on this machine's ${(await import('node:os')).cpus().length} cores.`);
out.push('Absolute figures on these shared machines vary from day to day; the per-connection memory is the');
out.push('figure that travels.');
out.push('');
out.push('## Idle');
out.push('');
out.push('| | |');
out.push('| --- | --- |');
out.push(`| connections asked / open / failed | ${fmt(total)} / ${fmt(opened)} / ${fmt(failed)} |`);
out.push(`| connect time (first dial until the nodes count them all) | ${connectSeconds === 'null' ? 'not reached' : `${connectSeconds} s`} |`);
out.push(`| server RSS per connection, each node (KiB) | ${perConn.map((x) => x === null ? '-' : fmt(x, 2)).join(', ')} |`);
out.push(`| server RSS, all nodes together | ${fmt(rss / 1024, 0)} MiB |`);
out.push(`| kernel memory while held: slab growth (/proc/meminfo), both ends of every connection | ${fmt(slabBytes / 1048576, 1)} MiB for ${fmt(sockets)} more sockets: ${fmt(slabBytes / Math.max(1, sockets), 0)} bytes each |`);
out.push(`| of which TCP buffers (/proc/net/sockstat \`mem\`) | ${fmt(bufferBytes / 1048576, 1)} MiB (idle sockets keep none) |`);
out.push('');
out.push('![server RSS per connection, per node](benchmarks-scale.svg)');
out.push('');
out.push(`## Rooms: ${fmt(total)} connections in ${fmt(rooms)} rooms, each sending ${rate} msg/s`);
out.push('');
out.push('Each room has members on two nodes; each load process sends into its own rooms and measures');
out.push('send -> delivery for every member.');
out.push('');
out.push(`Sent ${fmt(sent)}, delivered ${fmt(delivered)} of ${fmt(expected)} expected: lost ${fmt(lost)}, duplicated ${fmt(dups)}.`);
out.push(`The nodes cut ${fmt(Number(cuts ?? 0))} connections as slow consumers (their queue of \`CLIENT_QUEUE_FRAMES\` filled:`);
out.push('a load process that could not read in time); the load generator does not reconnect, so what those');
out.push('connections would have received counts as lost. A real client reconnects and recovers it with `since`.');
out.push('');
out.push('| load process (node) | sent | lost | duplicated | p50 ms | p99 ms | node CPU % |');
out.push('| --- | --- | --- | --- | --- | --- | --- |');
busy.forEach((x, i) => out.push(`| ${x.port} | ${fmt(x.report.sent)} | ${fmt(x.report.lost)} | ${fmt(x.report.duplicates)} | ${fmt(p50s[i], 1)} | ${fmt(p99s[i], 1)} | ${fmt(cpu[i], 0)} |`));
const sending = busy.map((x, i) => [x.report.sent, i]).filter(([s]) => s > 0).map(([, i]) => i);
out.push(`| worst (of those that sent) | | | | ${fmt(Math.max(0, ...sending.map((i) => p50s[i])), 1)} | ${fmt(Math.max(0, ...sending.map((i) => p99s[i])), 1)} | |`);
out.push('');
console.log(out.join('\n'));

// A bar per node: RSS per connection, with the 4 KiB target as a line.
const w = 480, hgt = 220, pad = 40, target = 4;
const top = Math.max(target * 1.5, ...perConn.map((x) => x ?? 0)) * 1.1;
const bw = (w - 2 * pad) / Math.max(1, perConn.length);
const y = (v) => hgt - pad - (v / top) * (hgt - 2 * pad);
const bars = perConn.map((v, i) => {
  const x = pad + i * bw + bw * 0.15;
  const val = v ?? 0;
  return `<rect x="${x.toFixed(1)}" y="${y(val).toFixed(1)}" width="${(bw * 0.7).toFixed(1)}" height="${(hgt - pad - y(val)).toFixed(1)}" fill="#3a7bd5"/>`
    + `<text x="${(x + bw * 0.35).toFixed(1)}" y="${(y(val) - 4).toFixed(1)}" font-size="11" text-anchor="middle">${val.toFixed(2)}</text>`
    + `<text x="${(x + bw * 0.35).toFixed(1)}" y="${hgt - pad + 14}" font-size="11" text-anchor="middle">${idle[i].port}</text>`;
}).join('');
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${hgt}" font-family="sans-serif">`
  + `<rect width="100%" height="100%" fill="white"/>`
  + `<text x="${w / 2}" y="16" font-size="13" text-anchor="middle">server RSS per idle connection (KiB), ${fmt(opened)} connections, per node</text>`
  + bars
  + `<line x1="${pad}" x2="${w - pad}" y1="${y(target).toFixed(1)}" y2="${y(target).toFixed(1)}" stroke="#c33" stroke-dasharray="4 3"/>`
  + `<text x="${w - pad}" y="${(y(target) - 4).toFixed(1)}" font-size="11" text-anchor="end" fill="#c33">target 4 KiB</text>`
  + `<line x1="${pad}" x2="${w - pad}" y1="${hgt - pad}" y2="${hgt - pad}" stroke="#333"/>`
  + '</svg>\n';
fs.writeFileSync('docs/benchmarks-scale.svg', svg);
