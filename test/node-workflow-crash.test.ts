// nodeWorkflow when things break under it: its worker (a separate OS process) killed with SIGKILL in
// the middle of `containerd-patch` and of `service-restart`, a command that hangs, and an SSH
// connection that drops mid-command. Each time the workflow finishes, and the node is patched
// exactly once. Every run first checks the node (its first step does: quarantine, journals left behind) and
// deletes its journal when it succeeds (its last step commits the run). The steps are kata.toml's `containerd` and `restart` (no Kubernetes needed).
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { patchContainerdConfig } from '../activities/containerd-config';
import type { Step } from '../playbooks/schema';
import { nodeExec, readFleetRecord } from '../sim/fleet';
import type { nodeWorkflow } from '../workflows/node';
import type { NodeProgress } from '../workflows/node-messages';
import { startTestTemporal } from './helpers/temporal';
import { activityAttempts, backupAppears, kataSteps, onNode, restartHanging, runningStep, startNodeFleet, startNodeWorkflow, waitFor, type NodeFleet } from './helpers/node-workflow';
import { startWorkerProcess, type WorkerProcess } from './helpers/worker-process';

let env: TestWorkflowEnvironment;
let nodes: NodeFleet;
let worker: WorkerProcess | undefined;
let workerLog: string;
let patchAndRestart: Step[];

beforeAll(async () => {
  [env, nodes] = await Promise.all([startTestTemporal(), startNodeFleet('node-workflow-crash', { nodes: [{ name: 'crash-patch' }, { name: 'crash-restart' }, { name: 'cancel' }] })]);
  workerLog = join(nodes.fleet.dir, '..', 'worker.log');
  patchAndRestart = await kataSteps(['containerd', 'restart']);
  // crash-patch: the step is held before its swap, so that the kill comes mid-step, not after it (the step takes a
  // fraction of a second: a watch for its backup once saw the swap already done). containerd-patch checks its
  // backup's sha256 on the node before it swaps; that sha256sum (found first on PATH) waits while the flag exists
  // and the config is not yet patched.
  await onNode(nodes, 'crash-patch', `cat > /usr/local/bin/sha256sum <<'EOF'
#!/bin/sh
while [ -e /run/kf-test-hang-before-swap ] && ! grep -q 'runtimes.kata' /etc/containerd/config.toml 2>/dev/null; do sleep 0.2; done
exec /usr/bin/sha256sum "$@"
EOF
chmod 0755 /usr/local/bin/sha256sum`);
  await startWorker();
}, 300_000);

afterAll(async () => {
  await worker?.kill();
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

/** (Re)starts the worker process; the previous one must be gone. */
async function startWorker(): Promise<void> {
  worker = await startWorkerProcess(env.address, workerLog, 120_000);
}

function startNode(name: string, steps: Step[], runName: string): Promise<WorkflowHandle<typeof nodeWorkflow>> {
  // A dead worker's attempt is given to another worker after 10 s without a heartbeat (default 30 s).
  return startNodeWorkflow(env.client, nodes, name, steps, { rolloutId: runName, heartbeatTimeout: '10s' });
}

/** The node's config, its katafleet backups (name → sha256), and what exactly-once patching would make of `original`. */
async function configState(name: string, original: string) {
  const config = await onNode(nodes, name, 'cat /etc/containerd/config.toml');
  const backups = await onNode(nodes, name, 'cd /etc/containerd && for f in *.katafleet-*; do test -e "$f" && sha256sum "$f"; done; true');
  const containerdStep = patchAndRestart[0] as Extract<Step, { kind: 'containerd-patch' }>;
  const once = patchContainerdConfig(original, containerdStep.runtimes, { replace: containerdStep.replace, mode: containerdStep.mode });
  return { config, backups: backups.trim().split('\n').filter(Boolean).map((line) => line.split(/\s+/).reverse()), patchedOnce: once.content };
}

async function sha256Of(name: string, path: string): Promise<string> {
  return (await onNode(nodes, name, `sha256sum ${path}`)).split(/\s+/)[0];
}

/** The activity the workflow is running now, as Temporal sees it (attempt included). */
async function pendingActivity(handle: WorkflowHandle): Promise<{ type: string; attempt: number } | undefined> {
  const pending = (await handle.describe()).raw.pendingActivities ?? [];
  return pending[0] ? { type: pending[0].activityType?.name ?? '?', attempt: pending[0].attempt ?? 0 } : undefined;
}

describe('the worker killed with SIGKILL mid-step, then restarted', () => {
  it('in the middle of containerd-patch: the workflow finishes, the config is patched once, one backup equal to the original', async () => {
    const original = await onNode(nodes, 'crash-patch', 'cat /etc/containerd/config.toml');
    const originalSha = await sha256Of('crash-patch', '/etc/containerd/config.toml');
    await onNode(nodes, 'crash-patch', 'touch /run/kf-test-hang-before-swap');
    const handle = await startNode('crash-patch', patchAndRestart, 'kill-mid-patch');

    await backupAppears(nodes, 'crash-patch');
    await waitFor('the step held before its swap', async () => ((await onNode(nodes, 'crash-patch', "pgrep -f '^/bin/sh /usr/local/bin/sha256sum' || true")).trim() ? true : undefined), 60_000, 100);
    await worker!.kill();
    const patchedAtKill = (await onNode(nodes, 'crash-patch', 'cat /etc/containerd/config.toml')) !== original;
    await onNode(nodes, 'crash-patch', 'rm -f /run/kf-test-hang-before-swap');
    await startWorker();

    const result = await handle.result();
    expect(result.phase).toBe('succeeded');
    expect(result.steps.map((s) => [s.id, s.status])).toEqual([['containerd', 'changed'], ['restart', 'changed']]);
    expect(patchedAtKill).toBe(false);
    const state = await configState('crash-patch', original);
    expect(state.config).toBe(state.patchedOnce);
    expect(state.backups).toEqual([[expect.stringMatching(/^config\.toml\.katafleet-.*\.bak$/), originalSha]]);
    expect(result.facts.backupSha256).toBe(originalSha);
    // The dead worker's run of steps timed out (no heartbeat); the new worker ran its steps in activities of their own,
    // each as its attempt 2 (either may have had its first in the run).
    expect((await activityAttempts(handle)).map((a) => [a.activityType, a.attempt, a.result])).toEqual([['runSteps', 1, 'timed-out'], ['containerdPatch', 2, 'completed'], ['serviceRestart', 2, 'completed']]);
  }, 240_000);

  it('in the middle of service-restart: the workflow finishes, containerd runs the kata handler, one backup', async () => {
    const original = await onNode(nodes, 'crash-restart', 'cat /etc/containerd/config.toml');
    const originalSha = await sha256Of('crash-restart', '/etc/containerd/config.toml');
    // `systemctl restart` hangs until the switch is off: the kill surely lands while the step runs.
    await nodes.fleet.setFault('crash-restart', 'command-hangs', true);
    try {
      const handle = await startNode('crash-restart', patchAndRestart, 'kill-mid-restart');
      await waitFor('systemctl restart hanging on the node', () => restartHanging(nodes, 'crash-restart'), 60_000, 200);
      expect(await runningStep(handle)).toEqual({ activityType: 'serviceRestart', stepId: 'restart' });
      await worker!.kill();
      await nodes.fleet.setFault('crash-restart', 'command-hangs', false);
      await startWorker();

      const result = await handle.result();
      expect(result.phase).toBe('succeeded');
      const state = await configState('crash-restart', original);
      expect(state.config).toBe(state.patchedOnce);
      expect(state.backups).toEqual([[expect.stringMatching(/\.bak$/), originalSha]]);
      const crictl = JSON.parse(await onNode(nodes, 'crash-restart', 'crictl --runtime-endpoint unix:///run/containerd/containerd.sock info')) as { config: { containerd: { runtimes: Record<string, unknown> } } };
      expect(Object.keys(crictl.config.containerd.runtimes).sort()).toEqual(['kata', 'runc']);
      // The run of steps (containerd done in it, the restart cut by the kill) timed out; the new worker ran both steps
      // alone: containerd-patch found its effect in place.
      expect((await activityAttempts(handle)).map((a) => [a.activityType, a.attempt, a.result])).toEqual([['runSteps', 1, 'timed-out'], ['containerdPatch', 2, 'completed'], ['serviceRestart', 2, 'completed']]);
    } finally {
      await nodes.fleet.setFault('crash-restart', 'command-hangs', false);
    }
  }, 240_000);
});

describe('commands that hang or lose their connection', () => {
  /** The restart step alone, on a node whose config is newer than its containerd (so it must restart). */
  async function restartOnly(name: string, edits: Partial<Step>): Promise<Step[]> {
    await onNode(nodes, name, 'touch /etc/containerd/config.toml');
    return kataSteps(['restart'], { restart: edits });
  }
  const retry = { max_attempts: 3, initial_interval: '1s', backoff: 1, non_retryable: [] };

  it('a hanging restart is cut by its timeout and retried per the policy; the next attempt succeeds', async () => {
    const steps = await restartOnly('crash-restart', { timeout: '15s', retry });
    await nodes.fleet.setFault('crash-restart', 'command-hangs', true);
    try {
      const handle = await startNode('crash-restart', steps, 'hang');
      await waitFor('the second attempt of the restart', async () => ((await pendingActivity(handle))?.attempt ?? 0) >= 2 || undefined, 60_000, 500);
      await nodes.fleet.setFault('crash-restart', 'command-hangs', false);
      const result: NodeProgress = await handle.result();
      expect(result.phase).toBe('succeeded');
      expect(await activityAttempts(handle)).toEqual([
        { activityType: 'serviceRestart', attempt: 2, lastFailureType: 'CommandTimedOut', result: 'completed' },
      ]);
    } finally {
      await nodes.fleet.setFault('crash-restart', 'command-hangs', false);
    }
  }, 120_000);

  it('a connection dropped mid-command (its sshd killed) is recovered: the outcome-unknown attempt is retried', async () => {
    const steps = await restartOnly('crash-restart', { timeout: '60s', retry });
    const initPid = (await readFleetRecord(nodes.fleet.dir))!.nodes.find((n) => n.name === 'crash-restart')!.initPid;
    await nodes.fleet.setFault('crash-restart', 'command-hangs', true);
    try {
      const handle = await startNode('crash-restart', steps, 'dropped-connection');
      await waitFor('systemctl restart hanging on the node', () => restartHanging(nodes, 'crash-restart'), 60_000, 200);
      // Every per-connection sshd of the node (not the listener): the worker's connection dies mid-command.
      const { stdout } = await nodeExec(initPid, ['sh', '-c', "pids=$(pgrep -f '^sshd: [^/]'); kill -9 $pids; echo $pids"]);
      expect(stdout.trim()).not.toBe('');
      await nodes.fleet.setFault('crash-restart', 'command-hangs', false);
      const result: NodeProgress = await handle.result();
      expect(result.phase).toBe('succeeded');
      expect(await activityAttempts(handle)).toEqual([
        { activityType: 'serviceRestart', attempt: 2, lastFailureType: 'CommandOutcomeUnknown', result: 'completed' },
      ]);
      expect((await onNode(nodes, 'crash-restart', 'systemctl is-active containerd')).trim()).toBe('active');
    } finally {
      await nodes.fleet.setFault('crash-restart', 'command-hangs', false);
    }
  }, 120_000);
});

describe('a node rollout cancelled mid-step (rollout abort)', () => {
  it('rolls back what the interrupted containerd-patch did: the config keeps its original bytes', async () => {
    const originalSha = await sha256Of('cancel', '/etc/containerd/config.toml');
    const handle = await startNode('cancel', patchAndRestart, 'cancel-mid-patch');
    await backupAppears(nodes, 'cancel');
    await handle.cancel();
    const err = await handle.result().then(() => undefined, (e: unknown) => e as { cause?: { type?: string; details?: unknown[] } });
    expect(err?.cause?.type).toBe('NodeRolloutCancelled');
    expect(await sha256Of('cancel', '/etc/containerd/config.toml')).toBe(originalSha);
    expect((await onNode(nodes, 'cancel', 'systemctl is-active containerd')).trim()).toBe('active');
    const progress = err?.cause?.details?.[0] as NodeProgress;
    expect(progress.steps.map((s) => [s.id, s.status])).toEqual([['containerd', 'changed'], ['restart', 'failed']]);
    expect(progress).toMatchObject({ phase: 'rolled-back', rollback: [{ stepId: 'containerd', ok: true }] });
  }, 120_000);
});
