// The sections of docs/benchmarks.md that separate runs write, each from
// its own file (one heading level down, between markers), so that
// `scripts/bench` keeps them and the script that measures one replaces it:
//   docs/benchmarks-scale.md          scripts/bench --scale
//   docs/benchmarks-redis-cluster.md  scripts/bench-redis-cluster
//   docs/benchmarks-archivers.md      scripts/bench-archivers
//   node bench/scale-section.mjs      puts them into docs/benchmarks.md
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const SECTIONS = [
  ['scale', 'docs/benchmarks-scale.md', 'scripts/bench --scale'],
  ['redis-cluster', 'docs/benchmarks-redis-cluster.md', 'scripts/bench-redis-cluster'],
  ['archivers', 'docs/benchmarks-archivers.md', 'scripts/bench-archivers'],
];

const markers = (tag, script) => [`<!-- ${tag}: written by ${script} -->`, `<!-- /${tag} -->`];

function section([tag, file, script]) {
  if (!existsSync(file)) return null;
  const [title, ...body] = readFileSync(file, 'utf8').trimEnd().split('\n');
  const demoted = body.map((l) => (l.startsWith('#') ? `#${l}` : l));
  const name = file.replace('docs/', '');
  const [begin, end] = markers(tag, script);
  return [begin, title.replace(/^# /, '## '), ...demoted, '', `Also in [${name}](${name}).`, end].join('\n');
}

/// Every kept section, in order, for bench/report.mjs.
export function scaleSection() {
  const all = SECTIONS.map(section).filter(Boolean);
  return all.length ? all.join('\n\n') : null;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = 'docs/benchmarks.md';
  if (existsSync(file)) {
    let text = readFileSync(file, 'utf8');
    for (const s of SECTIONS) {
      const body = section(s);
      if (!body) continue;
      const [begin, end] = markers(s[0], s[2]);
      const [a, b] = [text.indexOf(begin), text.indexOf(end)];
      text = a >= 0 && b > a
        ? text.slice(0, a) + body + text.slice(b + end.length)
        : `${text.trimEnd()}\n\n${body}\n`;
    }
    writeFileSync(file, text);
  }
}
