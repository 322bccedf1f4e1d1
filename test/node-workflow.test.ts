// nodeWorkflow on a real dev server, against a simulated fleet with a real Kubernetes control plane:
// a fresh node goes all the way to "proven to run Kata pods", a second run changes nothing, every
// failure leaves the node exactly as it was, and the per-node lock refuses a second rollout.
// Injection attempts in inventory and playbook values are refused before anything runs: see
// test/playbook-injection.test.ts.
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { startRollout } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import type { Step } from '../playbooks/schema';
import { taskQueue } from '../worker/connection';
import type { NodeProgress } from '../workflows/node-messages';
import type { nodeWorkflow } from '../workflows/node';
import { rolloutProgressQuery } from '../workflows/rollout-messages';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import {
  activityAttempts,
  kataSteps,
  kubectl,
  nodeSnapshot,
  onNode,
  runningStep,
  startNodeFleet,
  startNodeWorkflow,
  waitFor,
  type NodeFleet,
} from './helpers/node-workflow';

let env: TestWorkflowEnvironment;
let nodes: NodeFleet;
let katafleetWorker: RunningTestWorker;

beforeAll(async () => {
  [env, nodes] = await Promise.all([
    startTestTemporal(),
    startNodeFleet('node-workflow', { nodes: [{ name: 'fresh' }, { name: 'victim' }], kubernetes: true }),
  ]);
  // The rollout service starts workflows on katafleet's own task queue; this dev server is the test's alone.
  katafleetWorker = await runKatafleetWorker(env, taskQueue);
}, 300_000);

afterAll(async () => {
  await katafleetWorker?.stop();
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

function startNode(name: string, steps: Step[], runName: string): Promise<WorkflowHandle<typeof nodeWorkflow>> {
  return startNodeWorkflow(env.client, nodes, name, steps, { rolloutId: runName });
}

/** The NodeProgress a failed nodeWorkflow carries in its failure's details. */
async function failedProgress(handle: WorkflowHandle<typeof nodeWorkflow>): Promise<{ message: string; type?: string; progress: NodeProgress }> {
  const err = await handle.result().then(
    () => { throw new Error(`${handle.workflowId} succeeded, but it should have failed`); },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause as { message: string; type?: string; details?: unknown[] };
  return { message: cause.message, type: cause.type, progress: cause.details?.[0] as NodeProgress };
}

describe('a fresh node', () => {
  let first: NodeProgress;

  it('rolls out end to end: kata handler in containerd, Node labeled, RuntimeClass, a pod in a VM', async () => {
    const steps = await kataSteps();
    const handle = await startNode('fresh', steps, 'first');
    const seenWhileRunning = await waitFor('a running step (or run of steps) in the nodeProgress query', async () => {
      const progress = await handle.query<NodeProgress>('nodeProgress');
      return progress.currentStep || progress.currentRun ? progress : undefined;
    }, 60_000, 100);
    expect(seenWhileRunning).toMatchObject({ node: 'fresh', rolloutId: 'first', phase: 'running' });

    first = await handle.result();
    expect(first.phase).toBe('succeeded');
    expect(first.steps.map((s) => [s.id, s.status])).toEqual([
      ['prereq', 'changed'], ['install', 'changed'], ['kata-check', 'unchanged'], ['containerd', 'changed'], ['restart', 'changed'],
      ['ready', 'unchanged'], ['label', 'changed'], ['runtime-class', 'changed'], ['verify', 'unchanged'],
    ]);
    expect(await handle.query<NodeProgress>('nodeProgress')).toEqual(first);
    expect(first.facts.guestKernel).toMatch(/./);
    expect(first.facts.guestKernel).not.toBe(first.facts.hostKernel);
    expect(first.undos.map((u) => u.kind)).toEqual(['remove-node-labels', 'restore-containerd-config', 'remove-release', 'restore-file']);

    const after = await nodeSnapshot(nodes, 'fresh');
    expect(after).toMatchObject({ containerd: 'active', ready: 'True', handlers: expect.arrayContaining(['kata', 'runc']) });
    expect(after.labels?.['katacontainers.io/kata-runtime']).toBe('true');
    expect(Object.values(after.backups)).toEqual([first.facts.backupSha256]);
    expect(await kubectl(nodes, 'get runtimeclass kata -o jsonpath={.handler}')).toBe('kata');
  }, 300_000);

  it('changes nothing when rolled out again, and succeeds', async () => {
    const before = await nodeSnapshot(nodes, 'fresh');
    const again = await (await startNode('fresh', await kataSteps(), 'again')).result();
    expect(again.phase).toBe('succeeded');
    expect(again.steps.filter((s) => s.status !== 'unchanged')).toEqual([]);
    expect(again.undos).toEqual([]);
    expect(await nodeSnapshot(nodes, 'fresh')).toEqual(before);
  }, 240_000);

  it('kata-uninstall failing after it removed the Kata release: every remove step is undone (release, runtime, labels)', async () => {
    const before = await nodeSnapshot(nodes, 'fresh');
    const uninstall = (await loadPlaybook('kata-uninstall')).steps.filter((step) => step.kind !== 'runtime-class');
    // A last step that cannot succeed: containerd never offers a handler called "absent".
    const failing = { id: 'never', kind: 'service-restart', service: 'containerd', wait_for_handlers: ['absent'], timeout: '15s', retry: { max_attempts: 1, initial_interval: '1s', backoff: 1, non_retryable: [] } } as unknown as Step;
    const { progress } = await failedProgress(await startNode('fresh', [...uninstall, failing], 'uninstall-fails'));
    expect(progress.steps.map((s) => [s.id, s.status])).toEqual([['unlabel', 'changed'], ['containerd', 'changed'], ['restart', 'changed'], ['ready', 'unchanged'], ['remove-kata', 'changed'], ['never', 'failed']]);
    expect(progress.phase).toBe('rolled-back');
    expect(progress.rollback?.map((r) => [r.stepId, r.ok])).toEqual([['remove-kata', true], ['containerd', true], ['unlabel', true]]);
    expect(progress.rollback?.[0].summary).toBe('/opt/kata-releases/ back; /opt/kata → /opt/kata-releases/3.32.0/opt/kata again; link /usr/local/bin/kata-runtime again; link /usr/local/bin/containerd-shim-kata-v2 again');
    expect(await onNode(nodes, 'fresh', 'kata-runtime --version | head -1')).toBe('kata-runtime  : 3.32.0\n');
    // The rollback restarted containerd: the simulated kubelet reports the node Ready again a moment later, as a real one.
    const after = await waitFor('node fresh Ready again after the rollback', async () => {
      const snapshot = await nodeSnapshot(nodes, 'fresh');
      return snapshot.ready === before.ready ? snapshot : undefined;
    }, 60_000);
    // The uninstall's own backup of the kata config stays next to it; everything else is as before.
    expect({ ...after, backups: undefined, containerdFiles: after.containerdFiles.filter((f) => !f.includes('.katafleet-')) })
      .toEqual({ ...before, backups: undefined, containerdFiles: before.containerdFiles.filter((f) => !f.includes('.katafleet-')) });
  }, 300_000);
});

describe('a failure leaves the node exactly as it was', () => {
  /** Runs the steps on the victim node with `fault` on; returns the failure, and checks the node is as before. */
  async function failOnVictim(steps: Step[], fault: Parameters<NodeFleet['fleet']['setFault']>[1] | undefined, runName: string) {
    const before = await nodeSnapshot(nodes, 'victim');
    if (fault) await nodes.fleet.setFault('victim', fault, true);
    // A host key changes when the host is reinstalled or replaced: the worker's pooled connection is gone then too.
    if (fault === 'host-key-changed') await katafleetWorker.pool.close('victim');
    let failure: Awaited<ReturnType<typeof failedProgress>>;
    let handle: WorkflowHandle<typeof nodeWorkflow>;
    try {
      handle = await startNode('victim', steps, runName);
      failure = await failedProgress(handle);
    } finally {
      if (fault) await nodes.fleet.setFault('victim', fault, false);
    }
    const after = await waitFor('the victim node Ready again', async () => {
      const snapshot = await nodeSnapshot(nodes, 'victim');
      return snapshot.ready === 'True' && snapshot.containerd === 'active' ? snapshot : undefined;
    }, 60_000, 1_000);
    const { currentDetails } = await handle!.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    return { ...failure, before, after, attempts: await activityAttempts(handle!), uiDetails: currentDetails ?? '' };
  }

  /**
   * The node as before, apart from the backup of the original config the rollback restored from
   * (returned).
   */
  function expectRestored(result: Awaited<ReturnType<typeof failOnVictim>>) {
    const { before, after } = result;
    const newBackups = Object.entries(after.backups).filter(([name]) => !(name in before.backups));
    for (const [, sha] of newBackups) expect(sha).toBe(before.configSha256);
    expect({ ...after, backups: before.backups }).toEqual(before);
    return newBackups;
  }

  it('no virtualization: fails at prereq, changes nothing, phase failed', async () => {
    const result = await failOnVictim(await kataSteps(), 'no-virtualization', 'no-virtualization');
    expect(result.type).toBe('NodeRolloutFailed');
    expect(result.progress).toMatchObject({ phase: 'failed', rollback: [], failure: { stepId: 'prereq', type: 'NodeNotCapable' } });
    expect(result.message).toMatch(/prereq-check "prereq" failed on node victim: Node victim cannot run Kata Containers: CPU has no vmx or svm flag.*; nothing had changed, so nothing was rolled back/);
    expect(result.progress.steps.map((s) => s.status)).toEqual(['failed', ...Array(8).fill('skipped')]);
    // The first step checks the node first (no prepareNode activity); after the failure the recovery finds nothing in the journal.
    expect(result.attempts.map((a) => [a.activityType, a.attempt])).toEqual([['prereqCheck', 1], ['recoverRun', 1]]);
    expect(expectRestored(result)).toEqual([]);
  }, 120_000);

  it('install failure (the release cannot be downloaded): retried per policy, then fails with nothing installed', async () => {
    // A release the mirror does not have: the worker's download fails (HTTP 404), which is retried.
    const steps = await kataSteps(undefined, { install: { version: '3.99.0', sha256: { amd64: 'e'.repeat(64) }, retry: { max_attempts: 2, initial_interval: '1s', backoff: 1, non_retryable: [] } } as Partial<Step> });
    const result = await failOnVictim(steps, undefined, 'release-unreachable');
    expect(result.progress.failure).toMatchObject({ stepId: 'install', type: 'ReleaseDownloadFailed' });
    // Its first attempt in the run of steps, its second (the last of max_attempts 2) in an activity of its own.
    expect(result.attempts.map((a) => [a.activityType, a.attempt, a.result])).toEqual([['prereqCheck', 1, 'completed'], ['releaseTarball', 1, 'failed'], ['releaseTarball', 2, 'failed'], ['recoverRun', 1, 'completed']]);
    // prereq-check had persisted the modules in /etc/modules-load.d: that file is taken back too.
    expect(result.progress.phase).toBe('rolled-back');
    // The failed download changed nothing (no journal, no /opt/kata-releases left): only prereq is undone.
    expect(result.progress.rollback?.map((r) => [r.stepId, r.ok])).toEqual([['prereq', true]]);
    expect(await onNode(nodes, 'victim', 'ls -d /opt/kata-releases /opt/kata 2>/dev/null; ls /var/lib/katafleet 2>/dev/null | grep release-; true')).toBe('');
    expect(expectRestored(result)).toEqual([]);
  }, 180_000);


  it('containerd refuses the new config: config restored byte for byte, containerd active, Node Ready, no label', async () => {
    const steps = await kataSteps(undefined, { restart: { timeout: '30s', retry: { max_attempts: 1, initial_interval: '1s', backoff: 1, non_retryable: [] } } });
    const result = await failOnVictim(steps, 'containerd-refuses-start', 'refused');
    expect(result.progress.failure).toMatchObject({ stepId: 'restart', type: 'ServiceNotActive' });
    expect(result.progress.phase).toBe('rolled-back');
    expect(result.progress.rollback?.map((r) => [r.stepId, r.ok])).toEqual([['containerd', true], ['install', true], ['prereq', true]]);
    expect(result.progress.rollback?.[0].summary).toMatch(/^restored \/etc\/containerd\/config\.toml from .*\(sha256 [0-9a-f]{12}…, equal to the original\); restarted containerd: active$/);
    expect(result.message).toMatch(/^service-restart "restart" failed on node victim: Node victim: containerd is not active [\s\S]*; rolled back: /);
    expect(result.after.labels?.['katacontainers.io/kata-runtime']).toBeUndefined();
    expect(expectRestored(result)).toHaveLength(1);
    // The Temporal UI's details pane: the failed step's reason (with containerd's log lines) stays one list line.
    expect(result.uiDetails.split('\n').filter((line) => line.startsWith('- **restart**'))).toEqual([expect.stringMatching(/^- \*\*restart\*\* \(service-restart\) — failed: Node victim: containerd is not active .{0,300}$/)]);
    expect(result.uiDetails).toMatch(/^\*\*victim\*\*: rolled-back\n[\s\S]*\*\*Rollback\*\*\n\n- undone containerd: restored /);
  }, 180_000);

  it('the verification pod never runs (a runtime_type whose shim the node lacks): rolled back, pod deleted', async () => {
    const kata = (await kataSteps(['containerd'])) as Extract<Step, { kind: 'containerd-patch' }>[];
    const steps = await kataSteps(undefined, {
      // kata-deploy's name for the QEMU flavour without its runtime_path: containerd looks for containerd-shim-kata-qemu-v2
      // on its PATH, and nothing made that link (kata-deploy 3.0–3.7 did; KATA.md §3.1, §3.3).
      containerd: { runtimes: [{ ...kata[0].runtimes[0], runtime_type: 'io.containerd.kata-qemu.v2', runtime_path: undefined }] } as Partial<Step>,
      verify: { timeout: '20s', retry: { max_attempts: 1, initial_interval: '1s', backoff: 1, non_retryable: [] } },
    });
    const result = await failOnVictim(steps, undefined, 'pod-never-runs');
    expect(result.progress.failure).toMatchObject({ stepId: 'verify', type: 'VerificationPodNotRunning' });
    expect(result.progress.failure?.reason).toMatch(/did not reach Running within 20s: FailedCreatePodSandBox: .*kata-qemu/);
    expect(result.progress.phase).toBe('rolled-back');
    expect(result.progress.rollback?.map((r) => [r.stepId, r.ok])).toEqual([['label', true], ['containerd', true], ['install', true], ['prereq', true]]);
    expect(expectRestored(result)).toHaveLength(1);
    const pods = JSON.parse(await kubectl(nodes, 'get pods -n katafleet-verify -l katafleet.dev/verify=true --field-selector spec.nodeName=victim -o json')) as { items: { metadata: { deletionTimestamp?: string } }[] };
    expect(pods.items.filter((pod) => !pod.metadata.deletionTimestamp)).toEqual([]);
  }, 180_000);

  it('host key changed: HostKeyMismatch on the first attempt, no retry, nothing run', async () => {
    const result = await failOnVictim(await kataSteps(), 'host-key-changed', 'host-key');
    // The check every run makes first (quarantine, journals left behind) is where it stops: the first step cannot make
    // it (NodeNeedsPrepare), and the run's prepareNode activity meets the changed key.
    expect(result.progress).toMatchObject({ phase: 'failed', failure: { stepId: '(prepare)', type: 'HostKeyMismatch' } });
    expect(result.attempts).toEqual([
      { activityType: 'prereqCheck', attempt: 1, result: 'failed', failureType: 'NodeNeedsPrepare', inRun: true },
      { activityType: 'prepareNode', attempt: 1, result: 'failed', failureType: 'HostKeyMismatch' },
    ]);
    expect(expectRestored(result)).toEqual([]);
  }, 120_000);
});

describe('the per-node lock', () => {
  it('refuses a second nodeWorkflow for a node while one runs, and the rollout service says the node is busy', async () => {
    await nodes.fleet.setFault('victim', 'command-hangs', true);
    try {
      const steps = await kataSteps(['containerd', 'restart']);
      const holder = await startNode('victim', steps, 'holder');
      await waitFor('the restart step running', async () => ((await runningStep(holder))?.stepId === 'restart' ? true : undefined), 60_000);
      await expect(startNode('victim', steps, 'second')).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);

      const inventory = await loadInventory(nodes.fleet.inventoryPath);
      const started = await startRollout(env.client, await loadPlaybook('kata'), { ...inventory, nodes: inventory.nodes.filter((n) => n.name !== 'fresh') });
      // The busy canary is tried again at the end of its wave, still busy, so the rollout halts (issue 11).
      await expect(env.client.workflow.getHandle(started.workflowId).result()).rejects.toThrow();
      const rollout = await env.client.workflow.getHandle(started.workflowId).query(rolloutProgressQuery);
      expect(rollout.phase).toBe('halted');
      expect(rollout.nodes).toEqual([expect.objectContaining({
        name: 'victim',
        status: 'skipped',
        busy: true,
        reason: 'node is busy: workflow katafleet-node-victim (another rollout or drift repair) holds its lock, still after its retries',
      })]);
      expect((await holder.describe()).status.name).toBe('RUNNING');
      await nodes.fleet.setFault('victim', 'command-hangs', false);
      expect((await holder.result()).phase).toBe('succeeded');
    } finally {
      await nodes.fleet.setFault('victim', 'command-hangs', false);
    }
  }, 180_000);
});
