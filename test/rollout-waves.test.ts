// rolloutWorkflow against the simulated fleet: a real Temporal dev server, a real worker with the SSH
// activities, real nodes (sshd, containerd, apt). Waves, the failure budget, pause and resume.
//
// Cost: each node runs kata.toml's steps prereq, install, containerd and restart (the steps that touch
// the node itself); the Kubernetes steps (readiness, label, RuntimeClass, verification pod) need a control
// plane and are covered by test/rollout-abort.test.ts. One fleet of 16 nodes serves every test of this file.
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { WorkflowFailedError } from '@temporalio/client';
import { buildApi } from '../api/server';
import { controlRollout, getRollout, rolloutWorkflowId, startRollout, RolloutServiceError } from '../api/rollout-service';
import type { Playbook, RolloutOverrides } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { inventoryToml } from '../sim/inventory';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId } from '../workflows/node';
import { pauseSignal, resumeSignal, rolloutProgressQuery, type RolloutProgress } from '../workflows/rollout-messages';
import { searchAttributes } from '../workflows/search-attributes';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { childTimeline, configBackups, configHashes, historiesOfAllRuns, inventoryOf, kataSubset, nodeOf, nodeWorkflowExists, onNode, waitFor } from './rollout-helpers';

const tenNodes = Array.from({ length: 10 }, (_, i) => `n-${String(i + 1).padStart(2, '0')}`);
const budgetNodes = ['c-1', 'bad-1', 'c-2', 'bad-2', 'c-3', 'c-4'];

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let katafleetWorker: RunningTestWorker;
let playbook: Playbook;

beforeAll(async () => {
  [env, fleet, playbook] = await Promise.all([
    startTestTemporal(),
    startFleet({
      nodes: [...tenNodes, ...budgetNodes].map((name) => ({ name })),
      faults: { 'bad-1': ['no-virtualization'], 'bad-2': ['no-virtualization'] },
      dir: join(await mkdtemp(join(tmpdir(), 'kf-rollout-waves-')), 'fleet'),
    }),
    kataSubset(['prereq', 'install', 'containerd', 'restart'], 'kata-node-steps'),
  ]);
  katafleetWorker = await runKatafleetWorker(env, taskQueue);
}, 180_000);

afterAll(async () => {
  await katafleetWorker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

async function start(requestId: string, nodes: string[], overrides: RolloutOverrides) {
  const started = await startRollout(env.client, playbook, await inventoryOf(fleet, nodes), { requestId, overrides: { pause_between_waves: '0s', ...overrides } });
  expect(started.started).toBe(true);
  return env.client.workflow.getHandle(started.workflowId);
}

describe('rolloutWorkflow on the simulated fleet', () => {
  it('rolls out to 10 nodes with a canary of 1 and waves of 3, wave after wave', async () => {
    const before = await configHashes(fleet, tenNodes);
    const handle = await start('waves-10', tenNodes, { canary: 1, wave_size: 3, failure_budget: 0 });
    const result: RolloutProgress = await handle.result();

    expect(result.phase).toBe('succeeded');
    expect(result.waves).toEqual([['n-01'], ['n-02', 'n-03', 'n-04'], ['n-05', 'n-06', 'n-07'], ['n-08', 'n-09', 'n-10']]);
    expect(result.nodes.map((node) => node.status)).toEqual(Array(10).fill('succeeded'));

    // The rollout's own history: no node of wave k+1 was started before every node of wave k had closed.
    const children = childTimeline(await historiesOfAllRuns(env.client, handle.workflowId));
    expect(children.map((child) => nodeOf(child.workflowId))).toEqual(tenNodes);
    expect(children.every((child) => child.outcome === 'completed')).toBe(true);
    const waveOf = (child: (typeof children)[number]) => result.waves.findIndex((wave) => wave.includes(nodeOf(child.workflowId)));
    for (let wave = 0; wave < result.waves.length - 1; wave++) {
      const current = children.filter((child) => waveOf(child) === wave);
      const next = children.filter((child) => waveOf(child) === wave + 1);
      expect(Math.max(...current.map((child) => child.closedOrder!))).toBeLessThan(Math.min(...next.map((child) => child.initiatedOrder)));
      expect(Math.max(...current.map((child) => child.closedAt!))).toBeLessThanOrEqual(Math.min(...next.map((child) => child.startedAt!)));
    }
    // The nodes of one wave ran side by side (waves of 3, no max_parallel): all started before the first closed.
    const wave2 = children.filter((child) => waveOf(child) === 1);
    expect(Math.max(...wave2.map((child) => child.initiatedOrder))).toBeLessThan(Math.min(...wave2.map((child) => child.closedOrder!)));

    // Every node really changed: one backup holding the old bytes, and the kata runtime in the config.
    for (const node of tenNodes) {
      expect(await configBackups(fleet, node)).toEqual([{ path: expect.stringMatching(/^\/etc\/containerd\/config\.toml\.katafleet-.*\.bak$/), sha256: before[node] }]);
      expect(await onNode(fleet, node, 'grep -c "runtimes.kata\\]" /etc/containerd/config.toml')).toBe('1\n');
    }
    // README: "The steps run in one `runSteps` activity per node (a run of steps)": each node's history holds one activity.
    for (const node of tenNodes) {
      const events = (await env.client.workflow.getHandle(nodeWorkflowId(node)).fetchHistory()).events ?? [];
      const activities = events.flatMap((event) => event.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
      expect({ node, activities }).toEqual({ node, activities: ['runSteps'] });
    }
    // The Temporal UI list shows the outcome through the search attributes.
    const attributes = (await handle.describe()).typedSearchAttributes;
    expect(attributes.get(searchAttributes.phase)).toBe('succeeded');
    expect(attributes.get(searchAttributes.nodesDone)).toBe(10);
    expect(attributes.get(searchAttributes.nodesFailed)).toBe(0);
  }, 600_000);

  it('halts after the wave in which the failure budget is exceeded and never touches a later node', async () => {
    const before = await configHashes(fleet, budgetNodes);
    // Waves: [c-1] [bad-1 c-2] [bad-2 c-3] [c-4]. bad-1 uses up the budget of 1, bad-2 exceeds it.
    const handle = await start('budget-1', budgetNodes, { canary: 1, wave_size: 2, failure_budget: 1 });
    const failure = await handle.result().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    expect((failure as WorkflowFailedError).cause).toMatchObject({ type: 'RolloutHalted', message: expect.stringContaining('failure budget exceeded: 2 node(s) did not succeed (2 failed), budget 1') });

    const progress = await handle.query(rolloutProgressQuery);
    expect(progress.phase).toBe('halted');
    expect(Object.fromEntries(progress.nodes.map((node) => [node.name, node.status]))).toEqual({
      'c-1': 'succeeded',
      'bad-1': 'failed',
      'c-2': 'succeeded',
      'bad-2': 'failed',
      // Already running when bad-2 failed: it finishes.
      'c-3': 'succeeded',
      'c-4': 'skipped',
    });
    expect(progress.nodes.find((node) => node.name === 'bad-1')!.reason).toContain('no hardware virtualization');

    const children = childTimeline(await historiesOfAllRuns(env.client, handle.workflowId));
    expect(children.map((child) => nodeOf(child.workflowId))).toEqual(['c-1', 'bad-1', 'c-2', 'bad-2', 'c-3']);
    expect(await nodeWorkflowExists(env.client, 'c-4')).toBe(false);
    const after = await configHashes(fleet, budgetNodes);
    expect(after['c-4']).toBe(before['c-4']);
    expect(await configBackups(fleet, 'c-4')).toEqual([]);
    expect(await onNode(fleet, 'c-4', 'ls -A /opt/kata-releases 2>/dev/null; readlink /opt/kata; true')).toBe('');
    // The broken nodes were refused before anything changed on them.
    expect([after['bad-1'], after['bad-2']]).toEqual([before['bad-1'], before['bad-2']]);
    expect((await handle.describe()).typedSearchAttributes.get(searchAttributes.phase)).toBe('halted');
  }, 600_000);

  it('holds new node starts while paused (update or signal) and goes on after resume; resume when not paused is refused with a reason', async () => {
    // Nodes that already have Kata (first test): every step finds its effect in place, so each node takes seconds.
    const nodes = tenNodes.slice(0, 5);
    const handle = await start('pause-1', nodes, { canary: 0, wave_size: 5, max_parallel: 1, failure_budget: 0 });
    const progress = () => handle.query(rolloutProgressQuery);
    const startedCount = (p: RolloutProgress) => p.nodes.filter((node) => node.status !== 'pending').length;

    await waitFor('the first node to run', async () => ((await progress()).counts.running === 1 ? true : undefined));
    expect(await controlRollout(env.client, 'pause-1', 'pause')).toBe('paused');
    await expect(controlRollout(env.client, 'pause-1', 'pause')).rejects.toMatchObject({ type: 'RolloutRequestRejected', message: 'cannot pause: the rollout is paused' });

    /** Waits until the node that was running has finished, then watches for `ms`: no node may start. */
    async function expectHeld(ms: number): Promise<number> {
      const idle = await waitFor('the running node to finish', async () => {
        const p = await progress();
        return p.counts.running === 0 ? p : undefined;
      });
      expect(idle.phase).toBe('paused');
      const count = startedCount(idle);
      expect(count).toBeLessThan(nodes.length);
      const until = Date.now() + ms;
      while (Date.now() < until) {
        const p = await progress();
        expect([startedCount(p), p.counts.running]).toEqual([count, 0]);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      const children = childTimeline(await historiesOfAllRuns(env.client, handle.workflowId));
      expect(children).toHaveLength(count);
      return count;
    }

    const heldAt = await expectHeld(5_000);
    expect(await controlRollout(env.client, 'pause-1', 'resume')).toBe('running');
    const refusal = await controlRollout(env.client, 'pause-1', 'resume').catch((err: unknown) => err);
    expect(refusal).toBeInstanceOf(RolloutServiceError);
    expect(refusal).toMatchObject({ type: 'RolloutRequestRejected', message: 'cannot resume: the rollout is running, not paused or awaiting approval' });

    // The signal fallback: the same pause, for clients that cannot wait for an update's answer.
    await waitFor('a node after the first pause to run', async () => (startedCount(await progress()) > heldAt ? true : undefined));
    await handle.signal(pauseSignal);
    const heldAgainAt = await expectHeld(3_000);
    expect(heldAgainAt).toBeGreaterThan(heldAt);
    await handle.signal(resumeSignal);

    const result: RolloutProgress = await handle.result();
    expect(result.phase).toBe('succeeded');
    expect(result.counts.succeeded).toBe(nodes.length);
    expect((await getRollout(env.client, 'pause-1')).status).toBe('COMPLETED');
    expect(rolloutWorkflowId('pause-1')).toBe(handle.workflowId);
  }, 300_000);

  it('starts one rollout for two simultaneous POSTs with the same request id, and reports it through the API to the end', async () => {
    const token = 'rollout-test-token-0123456789abcdef01234';
    const api = await buildApi({ client: env.client, token, credentialsFile: join(fleet.dir, 'credentials.toml') });
    const baseUrl = await api.listen({ host: '127.0.0.1', port: 0 });
    try {
      // kata.toml's own text up to its Kubernetes steps (this fleet has no control plane); nodes that already have Kata.
      const kataToml = await readFile(join(__dirname, '..', 'playbooks', 'kata.toml'), 'utf8');
      const playbookToml = kataToml.slice(0, kataToml.indexOf('# 6. The node must come back Ready'));
      const nodes = fleet.nodes.filter((node) => ['n-06', 'n-07', 'n-08'].includes(node.name));
      const inventory = inventoryToml({ dir: fleet.dir, port: 22, nodes, kubernetes: false });
      const body = JSON.stringify({ playbook_toml: playbookToml, inventory_toml: inventory, request_id: 'api-twice', options: { canary: 1, wave_size: 2, pause_between_waves: '0s' } });
      const post = () => fetch(`${baseUrl}/v1/rollouts`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
      const answers = await Promise.all([post(), post()]);
      const bodies = await Promise.all(answers.map((answer) => answer.json() as Promise<{ rollout_id: string; started: boolean }>));
      expect(answers.map((answer) => answer.status)).toEqual([202, 202]);
      expect(bodies.map((answer) => answer.rollout_id)).toEqual(['api-twice', 'api-twice']);
      expect(bodies.map((answer) => answer.started).sort()).toEqual([false, true]);

      const get = async () => (await fetch(`${baseUrl}/v1/rollouts/api-twice`, { headers: { authorization: `Bearer ${token}` } })).json() as Promise<RolloutProgress & { status: string }>;
      const final = await waitFor('the rollout to close', async () => {
        const progress = await get();
        return progress.status === 'RUNNING' ? undefined : progress;
      }, 120_000, 500);
      expect(final).toMatchObject({ status: 'COMPLETED', phase: 'succeeded', counts: { total: 3, succeeded: 3 } });

      const executions = [];
      for await (const execution of env.client.workflow.list({ query: `WorkflowId = '${rolloutWorkflowId('api-twice')}'` })) executions.push(execution);
      expect(executions).toHaveLength(1);
      const children = childTimeline(await historiesOfAllRuns(env.client, rolloutWorkflowId('api-twice')));
      expect(children.map((child) => child.workflowId)).toEqual(['n-06', 'n-07', 'n-08'].map(nodeWorkflowId));
      // README: "The steps run in one `runSteps` activity per node": a rollout started through the API, its five steps
      // (prereq … restart) in each node's history as one activity.
      for (const child of children) {
        const events = (await env.client.workflow.getHandle(child.workflowId).fetchHistory()).events ?? [];
        expect({ node: child.workflowId, activities: events.flatMap((event) => event.activityTaskScheduledEventAttributes?.activityType?.name ?? []) }).toEqual({ node: child.workflowId, activities: ['runSteps'] });
      }
    } finally {
      await api.close();
    }
  }, 300_000);
});
