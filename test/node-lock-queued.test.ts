// An attempt's time on the node counts from its start, not from when it was scheduled (README "When things fail":
// timeouts that nest). Temporal's start-to-close timeout runs from the moment a worker takes the attempt; a wave wider
// than the worker's activity slots leaves attempts waiting in the task queue for longer than their whole timeout.
// Session 6's 10,000-node run halted on exactly that: 66 node-label steps of a wave of 1,000 failed three attempts each
// with NodeLockLost ("the attempt has ended before it took the node's lock"), because the lock counted the
// attempt's budget from its scheduling. Here one worker has one activity slot: the restart of node q-hang (after its
// containerd step) holds it for 20 s while node q-wait's containerd step, with a timeout of 12 s and one attempt, waits in the queue.
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createWorker } from '../worker/worker';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId, type nodeWorkflow } from '../workflows/node';
import { startTestTemporal } from './helpers/temporal';
import { activitiesInHistory, kataSteps, nodeInput, onNode, startNodeFleet, waitFor, type NodeFleet } from './helpers/node-workflow';

let env: TestWorkflowEnvironment;
let nodes: NodeFleet;

beforeAll(async () => {
  [env, nodes] = await Promise.all([startTestTemporal(), startNodeFleet('node-lock-queued', { nodes: [{ name: 'q-hang' }, { name: 'q-wait' }] })]);
}, 300_000);

afterAll(async () => {
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

const hangingRestarts = async () => (await onNode(nodes, 'q-hang', "pgrep -f '^(/bin/bash |bash )?/usr/local/sbin/systemctl restart containerd' || true")).trim().split('\n').filter(Boolean).length;

it('a step that waited in the task queue longer than its timeout still has its whole timeout once it starts', async () => {
  const created = await createWorker({ target: { address: env.address, namespace: 'default', external: true }, maxConcurrentActivityTaskExecutions: 1 });
  const running = created.worker.run();
  try {
    await nodes.fleet.setFault('q-hang', 'command-hangs', true);
    const hang = await env.client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', {
      taskQueue, workflowId: nodeWorkflowId('q-hang'), args: [nodeInput(nodes, 'q-hang', await kataSteps(['containerd', 'restart'], { restart: { timeout: '90s' } }), { rolloutId: 'queued-hang' })],
    });
    await waitFor('the restart hanging on q-hang (holding the only activity slot)', async () => ((await hangingRestarts()) > 0 ? true : undefined), 60_000);

    const once = { max_attempts: 1, initial_interval: '1s', backoff: 1, non_retryable: [] };
    const wait = await env.client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', {
      taskQueue, workflowId: nodeWorkflowId('q-wait'), args: [nodeInput(nodes, 'q-wait', await kataSteps(['containerd'], { containerd: { timeout: '12s', retry: once } }), { rolloutId: 'queued-wait' })],
    });
    // q-wait's step is scheduled, and waits: the slot is taken.
    await waitFor('q-wait scheduled', async () => (((await wait.describe()).raw.pendingActivities?.length ?? 0) > 0 ? true : undefined), 30_000);
    await new Promise((resolve) => setTimeout(resolve, 20_000));
    await nodes.fleet.setFault('q-hang', 'command-hangs', false);

    expect((await hang.result()).phase).toBe('succeeded');
    const result = await wait.result();
    expect(result.steps.map((step) => [step.id, step.status])).toEqual([['containerd', 'changed']]);
    expect(result.phase).toBe('succeeded');
    const history = await wait.fetchHistory();
    expect(activitiesInHistory(history).filter((activity) => activity.activityType === 'containerdPatch')).toEqual([expect.objectContaining({ attempt: 1, result: 'completed' })]);
    // It really waited in the queue for longer than its 12 s timeout.
    const events = history.events ?? [];
    const scheduled = events.find((event) => event.activityTaskScheduledEventAttributes?.activityType?.name === 'containerdPatch');
    const started = events.find((event) => String(event.activityTaskStartedEventAttributes?.scheduledEventId) === String(scheduled?.eventId));
    const ms = (event: typeof scheduled) => Number(event?.eventTime?.seconds ?? 0) * 1000 + Math.floor((event?.eventTime?.nanos ?? 0) / 1e6);
    expect(ms(started) - ms(scheduled)).toBeGreaterThan(12_000);
    expect(await onNode(nodes, 'q-wait', 'grep -c "runtimes.kata\\]" /etc/containerd/config.toml')).toBe('1\n');
  } finally {
    await nodes.fleet.setFault('q-hang', 'command-hangs', false);
    created.worker.shutdown();
    await running;
    await created.close();
  }
}, 300_000);
