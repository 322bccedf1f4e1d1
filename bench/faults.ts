// Benchmark (prints, asserts nothing): the fault matrix of issue 11. Each step kind that works on the node
// itself × each fault below, injected while that step runs, on a fresh simulated node (kata.toml's
// `install`, `containerd` and `restart` steps; a real Temporal dev server with SQLite, so it can be
// restarted; the worker as its own OS process). Prints the final state of every node:
//   converged                 the run succeeded; Kata's release active at /opt/kata, configured and offered by containerd
//   restored byte-exact       config.toml, /opt/kata and its links, and containerd's handlers are as before
//   quarantined               /var/lib/katafleet/quarantine.json (phase needs-attention)
//   changed and unrecorded    anything else: the state katafleet must never leave (target: 0 cells)
// A terminated run is judged after the next run on the node (no steps of its own) has recovered it.
// "containerd refuses to start" (one-shot) runs with a single restart attempt, so the run must roll back.
//   npx tsx bench/faults.ts [KIND ...]       KIND: release-tarball containerd-patch service-restart
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import type { Step } from '../playbooks/schema';
import { nodeExec, readFleetRecord } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { startDevServer, type RunningDevServer } from '../worker/dev-server';
import { nodeWorkflowId, type nodeWorkflow } from '../workflows/node';
import { activityByKind } from '../workflows/step-activities';
import { kataSteps, nodeInput, onNode, startNodeFleet, type NodeFleet } from '../test/helpers/node-workflow';
import { startWorkerProcess, type WorkerProcess } from '../test/helpers/worker-process';

const faults = ['worker SIGKILL', 'Temporal server restart', 'SSH connection dropped', 'command hangs', 'containerd refuses to start', 'rollout terminated'] as const;
type Kind = 'release-tarball' | 'containerd-patch' | 'service-restart';
const allKinds: Kind[] = ['release-tarball', 'containerd-patch', 'service-restart'];
type Outcome = 'converged' | 'restored byte-exact' | 'quarantined' | 'changed and unrecorded';

/** `kata`: where /opt/kata leads, the release directories and the links in /usr/local/bin (what release-tarball changes). */
interface NodeState { configSha: string; kata: string; handlers: string; quarantined: boolean }

const stateScript = [
  'sha256sum /etc/containerd/config.toml',
  'readlink /opt/kata || echo no-opt-kata; ls -A /opt/kata-releases 2>/dev/null; readlink /usr/local/bin/kata-runtime /usr/local/bin/containerd-shim-kata-v2; true',
  "crictl --runtime-endpoint unix:///run/containerd/containerd.sock info 2>/dev/null || echo '{}'",
  'test -e /var/lib/katafleet/quarantine.json && echo quarantined || true',
].join('; echo @@@; ');

async function nodeState(nodes: NodeFleet, name: string): Promise<NodeState> {
  const [config, kata, handlers, quarantine] = (await onNode(nodes, name, stateScript)).split('@@@\n');
  let runtimes: string[] = [];
  try {
    runtimes = Object.keys((JSON.parse(handlers) as { config?: { containerd?: { runtimes?: Record<string, unknown> } } }).config?.containerd?.runtimes ?? {}).sort();
  } catch {
    runtimes = ['(unreadable)'];
  }
  return { configSha: config.split(/\s+/)[0], kata, handlers: runtimes.join(','), quarantined: quarantine.trim() === 'quarantined' };
}

async function pendingActivity(handle: WorkflowHandle): Promise<string | undefined> {
  const pending = (await handle.describe()).raw.pendingActivities ?? [];
  return pending[0]?.activityType?.name ?? undefined;
}

async function waitUntil(what: string, probe: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  process.stderr.write(`  (not seen within ${timeoutMs / 1000} s: ${what})\n`);
  return false;
}

async function main(): Promise<void> {
  const kinds = (process.argv.slice(2).length > 0 ? process.argv.slice(2) : allKinds) as Kind[];
  const dir = await mkdtemp(join(tmpdir(), 'kf-bench-faults-'));
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const dbFile = join(dir, 'temporal.db');
  let server: RunningDevServer = await startDevServer({ dbFile, port, uiPort: port + 1 });
  const names = faults.flatMap((_, f) => kinds.map((_, k) => `f${f}k${k}`));
  const nodes = await startNodeFleet('bench-faults', { nodes: names.map((name) => ({ name })) });
  const fleetRecord = (await readFleetRecord(nodes.fleet.dir))!;
  const workerLog = join(dir, 'worker.log');
  let worker: WorkerProcess = await startWorkerProcess(server.address, workerLog, 120_000);
  const client = () => Connection.connect({ address: server.address }).then((connection) => new Client({ connection }));
  let temporal = await client();
  const stepsWith = (attempts: number) => kataSteps(['install', 'containerd', 'restart'], { restart: { timeout: '40s', retry: { max_attempts: attempts, initial_interval: '1s', backoff: 1, non_retryable: [] } } as Partial<Step> });
  const steps: Step[] = await stepsWith(3);
  // containerd's refusal is one-shot: with retries the restart's next attempt converges; with one attempt the run rolls back.
  const singleAttempt: Step[] = await stepsWith(1);
  const results: Record<string, Record<string, Outcome>> = {};
  const started = Date.now();

  try {
    for (const [f, fault] of faults.entries()) {
      process.stderr.write(`fault: ${fault}\n`);
      const cells = await Promise.all(kinds.map(async (kind, k) => {
        const name = `f${f}k${k}`;
        return { kind, name, before: await nodeState(nodes, name) };
      }));
      if (fault === 'containerd refuses to start') for (const cell of cells) await nodes.fleet.setFault(cell.name, 'containerd-refuses-start', true);
      const handles = await Promise.all(cells.map((cell) => temporal.workflow.start<typeof nodeWorkflow>('nodeWorkflow', {
        taskQueue, workflowId: nodeWorkflowId(cell.name), args: [nodeInput(nodes, cell.name, fault === 'containerd refuses to start' ? singleAttempt : steps, { rolloutId: `bench-${f}`, heartbeatTimeout: '10s', rollbackFor: '2m' })],
      })));
      // Each cell: wait until its step runs, then the fault (per node, or once for the whole round).
      await Promise.all(cells.map((cell, i) => waitUntil(`${cell.kind} running on ${cell.name}`, async () => (await pendingActivity(handles[i])) === activityByKind[cell.kind], 120_000)));
      switch (fault) {
        case 'worker SIGKILL':
          await worker.kill();
          worker = await startWorkerProcess(server.address, workerLog, 120_000);
          break;
        case 'Temporal server restart':
          await server.stop();
          server = await startDevServer({ dbFile, port, uiPort: port + 1 });
          temporal = await client();
          break;
        case 'SSH connection dropped':
          for (const cell of cells) {
            const initPid = fleetRecord.nodes.find((n) => n.name === cell.name)!.initPid;
            await nodeExec(initPid, ['sh', '-c', "pids=$(pgrep -f '^sshd: [^/]'); kill -9 $pids 2>/dev/null; true"]);
          }
          break;
        case 'command hangs':
          for (const cell of cells) await nodes.fleet.setFault(cell.name, 'command-hangs', true);
          await new Promise((resolve) => setTimeout(resolve, 20_000));
          for (const cell of cells) await nodes.fleet.setFault(cell.name, 'command-hangs', false);
          break;
        case 'rollout terminated':
          await Promise.all(handles.map((handle) => handle.terminate('bench: terminated mid-step')));
          break;
        case 'containerd refuses to start':
          break;
      }
      const fresh = (workflowId: string) => temporal.workflow.getHandle<typeof nodeWorkflow>(workflowId);
      await Promise.all(cells.map(async (cell) => {
        let succeeded = false;
        if (fault === 'rollout terminated') {
          // The next run on the node: it recovers the journal before anything else.
          const next = await temporal.workflow.start<typeof nodeWorkflow>('nodeWorkflow', {
            taskQueue, workflowId: nodeWorkflowId(cell.name), args: [nodeInput(nodes, cell.name, [], { rolloutId: `bench-${f}-next`, heartbeatTimeout: '10s' })],
          });
          await next.result().catch(() => undefined);
        } else {
          succeeded = await fresh(nodeWorkflowId(cell.name)).result().then((r) => r.phase === 'succeeded', () => false);
        }
        const after = await nodeState(nodes, cell.name);
        const restored = after.configSha === cell.before.configSha && after.kata === cell.before.kata && after.handlers === cell.before.handlers;
        const converged = succeeded && after.handlers.split(',').includes('kata') && after.kata.startsWith('/opt/kata-releases/');
        const outcome: Outcome = after.quarantined ? 'quarantined' : converged ? 'converged' : restored ? 'restored byte-exact' : 'changed and unrecorded';
        (results[cell.kind] ??= {})[fault] = outcome;
        process.stderr.write(`  ${cell.kind} × ${fault}: ${outcome}\n`);
      }));
      if (fault === 'containerd refuses to start') for (const cell of cells) await nodes.fleet.setFault(cell.name, 'containerd-refuses-start', false);
    }
  } finally {
    await worker.kill().catch(() => undefined);
    await server.stop().catch(() => undefined);
    await nodes.fleet.stop().catch(() => undefined);
  }

  const width = Math.max(...kinds.map((k) => k.length));
  const lines = [`| step kind ${' '.repeat(Math.max(0, width - 9))}| ${faults.join(' | ')} |`, `|${'-'.repeat(width + 2)}|${faults.map((f) => '-'.repeat(f.length + 2)).join('|')}|`];
  for (const kind of kinds) lines.push(`| ${kind.padEnd(width)} | ${faults.map((fault) => (results[kind]?.[fault] ?? '?').padEnd(fault.length)).join(' | ')} |`);
  const counts = (['converged', 'restored byte-exact', 'quarantined', 'changed and unrecorded'] as Outcome[]).map((o) => `${o}: ${Object.values(results).flatMap((r) => Object.values(r)).filter((v) => v === o).length}`);
  process.stdout.write(`${lines.join('\n')}\n\n${counts.join(', ')} (${Math.round((Date.now() - started) / 1000)} s)\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
