// Benchmark (prints, asserts nothing): how long `katafleet validate playbooks/kata.toml` takes as a user runs it
// (`node bin/katafleet.js`, a fresh process each time), next to a bare `node -e 0` on the same machine at the same
// moment, and, when given, another checkout's CLI (e.g. the code before the lazy command loading) interleaved run
// by run so that both see the same load.
//   npx tsx bench/validate.ts [RUNS] [OTHER_CHECKOUT]     e.g. npx tsx bench/validate.ts 15 /work/main
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';

const runs = Number(process.argv[2] ?? 10);
const other = process.argv[3];
const here = join(__dirname, '..');

function timeMs(args: string[], cwd: string): number {
  const started = process.hrtime.bigint();
  execFileSync(process.execPath, args, { cwd, stdio: 'ignore' });
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const validate = ['bin/katafleet.js', 'validate', 'playbooks/kata.toml'];
const samples: Record<string, number[]> = { 'node -e 0': [], 'katafleet validate (this checkout)': [] };
if (other) samples[`katafleet validate (${other})`] = [];
timeMs(validate, here); // warm tsx's transform cache
if (other) timeMs(validate, other);
for (let i = 0; i < runs; i++) {
  samples['node -e 0'].push(timeMs(['-e', '0'], here));
  samples['katafleet validate (this checkout)'].push(timeMs(validate, here));
  if (other) samples[`katafleet validate (${other})`].push(timeMs(validate, other));
}
const bare = median(samples['node -e 0']);
for (const [label, values] of Object.entries(samples)) {
  const m = median(values);
  process.stdout.write(`${label.padEnd(48)} median ${m.toFixed(0).padStart(5)} ms  min ${Math.min(...values).toFixed(0).padStart(5)} ms  max ${Math.max(...values).toFixed(0).padStart(5)} ms  ${(m / bare).toFixed(1)}× node -e 0\n`);
}
process.stdout.write(`(${runs} runs each, interleaved; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')})\n`);
