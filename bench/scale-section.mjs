// The scale run's section of docs/benchmarks.md (docs/benchmarks-scale.md,
// one heading level down, between markers), so that `scripts/bench` keeps
// it and `scripts/bench --scale` replaces it.
//   node bench/scale-section.mjs    puts the section into docs/benchmarks.md
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BEGIN = '<!-- scale: written by scripts/bench --scale -->';
const END = '<!-- /scale -->';

export function scaleSection() {
  if (!existsSync('docs/benchmarks-scale.md')) return null;
  const [title, ...body] = readFileSync('docs/benchmarks-scale.md', 'utf8').trimEnd().split('\n');
  const demoted = body.map((l) => (l.startsWith('#') ? `#${l}` : l));
  return [BEGIN, title.replace(/^# /, '## '), ...demoted, '', 'Also in [benchmarks-scale.md](benchmarks-scale.md).', END].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const section = scaleSection();
  const file = 'docs/benchmarks.md';
  if (section && existsSync(file)) {
    const text = readFileSync(file, 'utf8');
    const [a, b] = [text.indexOf(BEGIN), text.indexOf(END)];
    const next = a >= 0 && b > a
      ? text.slice(0, a) + section + text.slice(b + END.length)
      : `${text.trimEnd()}\n\n${section}\n`;
    writeFileSync(file, next);
  }
}
