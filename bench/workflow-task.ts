// Benchmark (prints figures, asserts nothing): what the worker's own code costs per workflow task, without the
// server, the network or the activities. It replays the saved node workflow histories (test/histories/node-*.json)
// through the SDK's replayer (the same workflow bundle, sandbox and activation path as the worker) `rounds` times
// and prints the time per replayed workflow task, beside the process's CPU time. Compared with the benchmark's
// "workflow task started → completed" (bench/rollout-vs-floor.ts), it tells the worker's code from waiting for a CPU.
//   npx tsx bench/workflow-task.ts [rounds]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { historyFromJsonText } from '../test/helpers/history-json';

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const rounds = Number(process.argv[2] ?? 20);
  const dir = join(__dirname, '..', 'test', 'histories');
  const histories = readdirSync(dir).filter((file) => file.startsWith('node-')).map((file) => ({
    workflowId: file,
    history: historyFromJsonText(readFileSync(join(dir, file), 'utf8')),
  }));
  const tasks = histories.reduce((sum, { history }) => sum + (history.events ?? []).filter((event) => event.workflowTaskCompletedEventAttributes).length, 0);
  const workflowBundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../workflows'), logger: new DefaultLogger('WARN') });
  // One round to warm up, not counted.
  for await (const result of Worker.runReplayHistories({ workflowBundle }, histories)) if (result.error) throw result.error;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const all = Array.from({ length: rounds }, (_, round) => histories.map(({ workflowId, history }) => ({ workflowId: `${workflowId}-${round}`, history }))).flat();
  for await (const result of Worker.runReplayHistories({ workflowBundle }, all)) if (result.error) throw result.error;
  const wallMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  const replayed = tasks * rounds;
  process.stdout.write([
    `${histories.length} node workflow histories, ${tasks} workflow tasks, replayed ${rounds} times (${replayed} tasks, one replay worker, the bundle built once)`,
    `wall ${(wallMs / replayed).toFixed(2)} ms per workflow task; CPU of this process (main thread + workflow thread) ${((cpu.user + cpu.system) / 1000 / replayed).toFixed(2)} ms per task`,
  ].join('\n') + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
