// Abort with rollback on the simulated fleet with its Kubernetes control plane: every node the rollout
// changed (containerd config, package, node label) is back to exactly what it was.
//
// Cost: kata.toml's steps prereq, install, containerd, restart and label (the label needs the
// control plane); three workers, so that one node is done, one is running and one is never started.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { controlRollout, startRollout } from '../api/rollout-service';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { rolloutProgressQuery, type RolloutProgress } from '../workflows/rollout-messages';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { kubectlRunner } from './kube-helpers';
import { childTimeline, configBackups, configHashes, historiesOfAllRuns, inventoryOf, kataSubset, nodeOf, nodeWorkflowExists, onNode, waitFor } from './rollout-helpers';

const nodes = ['a-1', 'a-2', 'a-3'];
const kataLabel = 'katacontainers.io/kata-runtime';

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let katafleetWorker: RunningTestWorker;

beforeAll(async () => {
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: nodes.map((name) => ({ name, containerd: '1.6' as const })), kubernetes: true, dir: join(await mkdtemp(join(tmpdir(), 'kf-rollout-abort-')), 'fleet') }),
  ]);
  katafleetWorker = await runKatafleetWorker(env, taskQueue);
}, 240_000);

afterAll(async () => {
  await katafleetWorker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('abort with rollback', () => {
  it('stops new work and returns every node the rollout changed to its original bytes, without the label', async () => {
    const kubectl = kubectlRunner(join(kubernetesBinaries().binDir, 'kubectl'), fleet.controlPlane!.kubeconfig);
    const labelOf = async (node: string) => (await kubectl(['get', 'node', node, '-o', `jsonpath={.metadata.labels.katacontainers\\.io/kata-runtime}`])).stdout;
    const before = await configHashes(fleet, nodes);
    const playbook = await kataSubset(['prereq', 'install', 'containerd', 'restart', 'label'], 'kata-labelled');
    const started = await startRollout(env.client, playbook, await inventoryOf(fleet, nodes), {
      requestId: 'abort-1',
      overrides: { canary: 1, wave_size: 1, failure_budget: 0, pause_between_waves: '0s' },
    });
    const handle = env.client.workflow.getHandle(started.workflowId);

    // a-1 done and labelled; a-2 has its new containerd config; a-3 not started.
    // a-2's steps run in one activity (its progress learns their outcomes at its end): its new config is seen on the node.
    await waitFor('a-1 done and a-2 patched', async () => {
      const progress = await handle.query(rolloutProgressQuery);
      if (progress.nodes[0].status !== 'succeeded' || progress.nodes[1].status !== 'running') return undefined;
      return (await configHashes(fleet, ['a-2']))['a-2'] !== before['a-2'] ? true : undefined;
    }, 300_000, 50);
    expect(await labelOf('a-1')).toBe('true');
    expect((await configHashes(fleet, ['a-1', 'a-2']))).not.toEqual({ 'a-1': before['a-1'], 'a-2': before['a-2'] });

    expect(await controlRollout(env.client, 'abort-1', 'abort', { rollback: true, reason: 'test: abort with rollback' })).toBe('aborting');
    await expect(controlRollout(env.client, 'abort-1', 'abort', { rollback: true })).rejects.toMatchObject({ type: 'RolloutRequestRejected', message: 'cannot abort: the rollout is already aborting with rollback' });

    const result: RolloutProgress = await handle.result();
    expect(result).toMatchObject({ phase: 'aborted', reason: 'test: abort with rollback' });
    expect(result.nodes.map((node) => [node.name, node.status])).toEqual([
      ['a-1', 'rolled-back'],
      ['a-2', 'rolled-back'],
      ['a-3', 'skipped'],
    ]);

    // Byte for byte: the config's sha256 is the one from before the rollout; the Kata release and the label are gone.
    expect(await configHashes(fleet, nodes)).toEqual(before);
    for (const node of nodes) {
      expect(await labelOf(node)).toBe('');
      // kata.toml's install step: the release tarball under /opt/kata-releases, /opt/kata a link into it.
      expect(await onNode(fleet, node, 'ls -A /opt/kata-releases 2>/dev/null; readlink /opt/kata; true')).toBe('');
    }
    // The backup of each changed node holds the original bytes too.
    for (const node of ['a-1', 'a-2']) expect((await configBackups(fleet, node)).map((backup) => backup.sha256)).toEqual([before[node]]);
    expect(await kubectl(['get', 'nodes', '-l', kataLabel, '-o', 'name'])).toMatchObject({ code: 0, stdout: '' });

    // a-3 was never touched: no nodeWorkflow, no backup.
    const children = childTimeline(await historiesOfAllRuns(env.client, handle.workflowId));
    expect(children.map((child) => [nodeOf(child.workflowId), child.outcome])).toEqual([
      ['a-1', 'completed'],
      ['a-2', 'completed'],
      // The undo of a-2 and a-1 after the abort, newest wave first: nodeWorkflow in undo mode, under the same per-node lock.
      ['a-2', 'completed'],
      ['a-1', 'completed'],
    ]);
    expect(await nodeWorkflowExists(env.client, 'a-3')).toBe(false);
    expect(await configBackups(fleet, 'a-3')).toEqual([]);
  }, 600_000);
});
