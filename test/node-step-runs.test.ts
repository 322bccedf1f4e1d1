// Runs of steps (patch `node-step-runs`), on a real dev server against a simulated fleet with a real Kubernetes
// control plane: a node run's steps go through Temporal as one activity, each step still with its own timeout and
// retry policy; a step that fails there gets its other attempts in an activity of its own, and the steps after it run
// as a run again.
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Step } from '../playbooks/schema';
import { taskQueue } from '../worker/connection';
import type { NodeProgress } from '../workflows/node-messages';
import { formatNodeDetails, type nodeWorkflow } from '../workflows/node';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { activityAttempts, kataSteps, keepHistory, kubectl, nodeSnapshot, onNode, restartHanging, startNodeFleet, startNodeWorkflow, waitFor, type NodeFleet } from './helpers/node-workflow';

let env: TestWorkflowEnvironment;
let nodes: NodeFleet;
let worker: RunningTestWorker;

beforeAll(async () => {
  [env, nodes] = await Promise.all([
    startTestTemporal(),
    startNodeFleet('node-step-runs', { nodes: [{ name: 'runs-clean' }, { name: 'runs-retried' }], kubernetes: true }),
  ]);
  worker = await runKatafleetWorker(env, taskQueue);
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

function startNode(name: string, steps: Step[], runName: string): Promise<WorkflowHandle<typeof nodeWorkflow>> {
  return startNodeWorkflow(env.client, nodes, name, steps, { rolloutId: runName, heartbeatTimeout: '10s' });
}

it('the whole kata playbook on a fresh node is one activity: every step done, with its own summary and duration', async () => {
  const steps = await kataSteps();
  const handle = await startNode('runs-clean', steps, 'runs-clean');
  // While it runs: the Temporal UI's details name the run, the pending activity's heartbeat the step it runs.
  const pending = await waitFor('the run of steps heartbeating a step', async () => {
    const activity = (await handle.describe()).raw.pendingActivities?.[0];
    const details = activity?.heartbeatDetails?.payloads?.[0]?.data;
    return details ? { type: activity?.activityType?.name, details: JSON.parse(Buffer.from(details).toString('utf8')) as { step: string; of: number } } : undefined;
  }, 60_000, 100);
  expect(pending.type).toBe('runSteps');
  expect(steps.map((step) => step.id)).toContain(pending.details.step);
  expect(pending.details.of).toBe(steps.length);
  const details = await waitFor('the UI details naming the run', async () => {
    const progress = await handle.query<NodeProgress>('nodeProgress');
    return progress.currentRun ? formatNodeDetails(progress, Date.now()) : undefined;
  }, 60_000, 50);
  expect(details).toContain(`(steps ${steps[0].id} … ${steps[steps.length - 1].id} in one activity`);

  const result = await handle.result();
  expect(result.phase).toBe('succeeded');
  expect(result.steps.map((s) => [s.id, s.status])).toEqual([
    ['prereq', 'changed'], ['install', 'changed'], ['kata-check', 'unchanged'], ['containerd', 'changed'], ['restart', 'changed'],
    ['ready', 'unchanged'], ['label', 'changed'], ['runtime-class', 'changed'], ['verify', 'unchanged'],
  ]);
  for (const step of result.steps) expect(step.durationMs).toEqual(expect.any(Number));
  expect(result.facts.guestKernel).not.toBe(result.facts.hostKernel);
  expect(result.undos.map((u) => u.kind)).toEqual(['remove-node-labels', 'restore-containerd-config', 'remove-release', 'restore-file']);
  // No prepareNode, no commitRun: the run's first step checked the node, its last one committed the run.
  const history = await handle.fetchHistory();
  const scheduled = (history.events ?? []).flatMap((event) => event.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
  expect(scheduled).toEqual(['runSteps']);
  // Two workflow tasks: the one that scheduled the run, the one that finished the workflow (9 steps took 10 before).
  expect((history.events ?? []).filter((event) => event.workflowTaskCompletedEventAttributes).length).toBe(2);
  expect((await activityAttempts(handle)).map((a) => [a.activityType, a.attempt, a.result, a.inRun])).toEqual(steps.map(() => [expect.any(String), 1, 'completed', true]));
  // Committed: no journal left, the applied record in its place.
  expect((await onNode(nodes, 'runs-clean', 'ls -1 /var/lib/katafleet/journal 2>/dev/null; true')).trim()).toBe('');
  expect(await kubectl(nodes, 'get runtimeclass kata -o jsonpath={.handler}')).toBe('kata');
  await keepHistory(handle, 'node-step-runs-clean');
}, 300_000);

it('a step whose command runs past the step\'s own timeout in the run: its second attempt alone, after its retry interval, then the steps after it as a run again', async () => {
  const original = await onNode(nodes, 'runs-retried', 'cat /etc/containerd/config.toml');
  const steps = await kataSteps(['containerd', 'restart', 'ready', 'label'], {
    restart: { timeout: '8s', retry: { max_attempts: 3, initial_interval: '2s', backoff: 1, non_retryable: [] } },
  });
  // `systemctl restart` hangs until the switch is off: the restart's first attempt, in the run, runs past its 8 s.
  await nodes.fleet.setFault('runs-retried', 'command-hangs', true);
  try {
    const handle = await startNode('runs-retried', steps, 'runs-retried');
    await waitFor('systemctl restart hanging on the node', () => restartHanging(nodes, 'runs-retried'), 60_000, 200);
    // The run reports the restart's failure; the workflow waits its retry interval: switch the fault off meanwhile.
    await waitFor('the run of steps done with the restart failed', async () => {
      const attempts = await activityAttempts(handle);
      return attempts.some((a) => a.activityType === 'serviceRestart' && a.inRun && a.result === 'failed') ? true : undefined;
    }, 60_000, 100);
    await nodes.fleet.setFault('runs-retried', 'command-hangs', false);

    const result = await handle.result();
    expect(result.phase).toBe('succeeded');
    // The restart is `unchanged` when the first attempt's `systemctl restart`, released with the fault, restarted
    // containerd before the second attempt looked: either way containerd runs the patched config (below).
    expect(result.steps.map((s) => [s.id, s.id === 'restart' && s.status === 'unchanged' ? 'changed' : s.status])).toEqual([['containerd', 'changed'], ['restart', 'changed'], ['ready', 'unchanged'], ['label', 'changed']]);
    expect((await activityAttempts(handle)).map((a) => [a.activityType, a.attempt, a.result, a.failureType, a.inRun ?? false])).toEqual([
      ['containerdPatch', 1, 'completed', undefined, true],
      // Its command stopped at the step's own deadline (8 s after the step started), not at the run's.
      ['serviceRestart', 1, 'failed', 'CommandTimedOut', true],
      // Its own activity, counted as the step's attempt 2 (attemptsBefore 1): a lease above the first attempt's.
      ['serviceRestart', 2, 'completed', undefined, false],
      ['readinessGate', 1, 'completed', undefined, true],
      ['nodeLabel', 1, 'completed', undefined, true],
    ]);
    // The retry waited the step's initial interval (2 s) after the run reported the failure.
    const events = (await handle.fetchHistory()).events ?? [];
    const timer = events.find((event) => event.timerStartedEventAttributes);
    expect(Number(timer?.timerStartedEventAttributes?.startToFireTimeout?.seconds)).toBe(2);
    // Patched once, containerd runs the kata handler, the node Ready.
    const config = await onNode(nodes, 'runs-retried', 'cat /etc/containerd/config.toml');
    expect(config).not.toBe(original);
    expect(config.match(/runtimes\.kata\]/g)).toHaveLength(1);
    expect(await nodeSnapshot(nodes, 'runs-retried')).toMatchObject({ containerd: 'active', ready: 'True', handlers: expect.arrayContaining(['kata', 'runc']) });
    await keepHistory(handle, 'node-step-runs-retried');
  } finally {
    await nodes.fleet.setFault('runs-retried', 'command-hangs', false);
  }
}, 300_000);
