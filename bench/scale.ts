// Benchmark: one rollout of N cloud-named nodes through the HTTP API on the embedded dev server (bench/scale-run.ts
// says what is real and what is light), measured against Temporal's limits.
//   npx tsx bench/scale.ts --nodes 2000 [--hosts H] [--wave-size 25%] [--kube api|kubectl]
// --kube: how node-label reaches Kubernetes: `api` (the default) from the worker with the credential profile's
// kubeconfig, as README "The API from the worker" says; `kubectl` over SSH on the control plane (sessions 4-7).
// Prints: wall time, history events per run, largest payload, largest search attribute, largest API answer,
// pending children peak, the worker's CPU and peak RSS, and the engine's overhead per step (activity scheduled →
// started, median and p99, from the node workflows' histories), each limit as a share of Temporal's.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runScaleRollout, shareOfLimits, temporalLimits } from './scale-run';

const maxBenchNodes = 10_000;

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { nodes: { type: 'string', default: '500' }, hosts: { type: 'string' }, 'wave-size': { type: 'string' }, kube: { type: 'string', default: 'api' } } });
  const kube = values.kube;
  if (kube !== 'api' && kube !== 'kubectl') {
    process.stderr.write(`bench/scale.ts: --kube ${kube}: expected api or kubectl\n`);
    return 2;
  }
  const nodes = Number(values.nodes);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > maxBenchNodes) {
    process.stderr.write(`bench/scale.ts: --nodes ${values.nodes}: a whole number from 1 to ${maxBenchNodes}\n`);
    return 2;
  }
  const hosts = values.hosts === undefined ? undefined : Number(values.hosts);
  const waveSize = values['wave-size'] === undefined ? undefined : /^\d+$/.test(values['wave-size']) ? Number(values['wave-size']) : values['wave-size'];
  const m = await runScaleRollout({ nodes, hosts, waveSize, kube, dir: await mkdtemp(join(tmpdir(), 'kf-bench-scale-')), log: (line) => process.stdout.write(`${line}\n`) });
  const share = shareOfLimits(m);
  const pct = (value: number) => `${(value * 100).toFixed(1)} %`;
  const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
  const rows: [string, string, string][] = [
    ['outcome', `${m.status} ${m.phase}: ${m.counts.succeeded}/${m.counts.total} succeeded, ${m.counts.failed} failed; ${m.labelled} Nodes labelled`, ''],
    ['wall time (POST → closed)', `${m.wallSeconds.toFixed(1)} s (${(m.nodes / m.wallSeconds).toFixed(1)} nodes/s)`, ''],
    ['rollout history events per run', `${m.rolloutEventsPerRun.join(', ')} (${m.rolloutRuns} runs)`, `${pct(share.historyEvents)} of ${temporalLimits.historyEvents} (largest of any run or node)`],
    ['largest rollout history', kib(m.largestRolloutHistoryBytes), `${pct(share.historyBytes)} of 50 MiB`],
    ['largest payload', `${kib(m.largestPayload.bytes)} (${m.largestPayload.where})`, `${pct(share.payload)} of 2 MiB`],
    ['largest search attribute', `${m.largestSearchAttribute.bytes} B (${m.largestSearchAttribute.where})`, `${pct(share.searchAttribute)} of 2 KiB`],
    ['largest API answer (GET page)', kib(m.largestAnswerBytes), `${pct(share.answer)} of 4 MiB`],
    ['pending children peak', String(m.pendingChildrenPeak), `${pct(share.pendingChildren)} of ${temporalLimits.pendingChildren}`],
    ['worker CPU / peak RSS', `${m.worker.cpuSeconds.toFixed(1)} s / ${m.worker.peakRssMb} MB`, ''],
    ['engine overhead per step', `median ${m.engineOverheadMs.median.toFixed(0)} ms, p99 ${m.engineOverheadMs.p99.toFixed(0)} ms (${m.engineOverheadMs.samples} activities)`, ''],
  ];
  // The worker inherits this environment: its memory depends on these (docs/scale.md "Worker memory"); it is started
  // through bin/katafleet.js, which adds MALLOC_ARENA_MAX=2 and --max-semi-space-size=2 where they are missing.
  const memoryEnv = ['MALLOC_ARENA_MAX', 'NODE_OPTIONS', 'KATAFLEET_WORKFLOW_SEMI_SPACE_MB', 'KATAFLEET_HEAP_GROWING_PERCENT'].map((name) => `${name}=${process.env[name] ?? '(unset)'}`).join(', ');
  process.stdout.write(`\nscale: ${m.nodes} nodes on ${m.hosts} hosts, Kubernetes through ${kube === 'api' ? 'the API from the worker' : 'kubectl on the control plane'}; worker environment: ${memoryEnv} (bin/katafleet.js adds 2 and 2 where unset)\n| measure | value | share of limit |\n|---|---|---|\n${rows.map((row) => `| ${row.join(' | ')} |`).join('\n')}\n`);
  return m.phase === 'succeeded' ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
