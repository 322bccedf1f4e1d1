// Attempts never overlap on a node (README "When things fail": the lock on the node, timeouts that nest).
// Two workers poll the task queue. The worker running attempt 1 of the restart is killed (SIGKILL) while
// its `systemctl restart` hangs on the node, so Temporal gives attempt 2 to the other worker after the
// heartbeat timeout; attempt 1's command outlives its attempt and still runs on the node. Attempt 2 waits for it (the node's lock:
// the lease plus the running lock), never starts a second restart, and the run does not report
// rolled-back meanwhile; once the hang ends, attempt 2 finishes and the run succeeds.
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId, type nodeWorkflow } from '../workflows/node';
import { startTestTemporal } from './helpers/temporal';
import { kataSteps, nodeInput, onNode, startNodeFleet, waitFor, type NodeFleet } from './helpers/node-workflow';
import { startWorkerProcess, type WorkerProcess } from './helpers/worker-process';

let env: TestWorkflowEnvironment;
let nodes: NodeFleet;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  [env, nodes] = await Promise.all([startTestTemporal(), startNodeFleet('node-overlap', { nodes: [{ name: 'overlap' }] })]);
  const dir = join(nodes.fleet.dir, '..');
  workers.push(await startWorkerProcess(env.address, join(dir, 'worker-1.log'), 120_000));
  workers.push(await startWorkerProcess(env.address, join(dir, 'worker-2.log'), 120_000));
}, 300_000);

afterAll(async () => {
  for (const worker of workers) await worker.kill();
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

const restarts = async () => (await onNode(nodes, 'overlap', "pgrep -f '^(/bin/bash |bash )?/usr/local/sbin/systemctl restart containerd' || true")).trim().split('\n').filter(Boolean).length;

it('attempt 2 neither overlaps attempt 1 (still running on the node) nor reports rolled-back while it finishes', async () => {
  const steps = await kataSteps(['containerd', 'restart'], { restart: { timeout: '90s', retry: { max_attempts: 3, initial_interval: '1s', backoff: 1, non_retryable: [] } } });
  await nodes.fleet.setFault('overlap', 'command-hangs', true);
  let killed: WorkerProcess | undefined;
  try {
    const handle = await env.client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', {
      taskQueue, workflowId: nodeWorkflowId('overlap'), args: [nodeInput(nodes, 'overlap', steps, { rolloutId: 'overlap', heartbeatTimeout: '5s' })],
    });
    await waitFor('the restart hanging on the node', async () => ((await restarts()) > 0 ? true : undefined), 60_000, 200);
    const identity = (await handle.describe()).raw.pendingActivities?.[0]?.lastWorkerIdentity ?? '';
    killed = workers.find((worker) => identity.startsWith(`${worker.process.pid}@`));
    expect(killed).toBeDefined();
    await killed!.kill();
    // Once the run of steps missed its heartbeats, its steps go on alone on the other worker, each as its attempt 2
    // (StepRequest.attemptsBefore), and wait for the node's lock.
    await waitFor('the steps going on alone after the lost run', async () => {
      const pending = (await handle.describe()).raw.pendingActivities?.[0]?.activityType?.name;
      return pending && pending !== 'runSteps' ? true : undefined;
    }, 60_000, 200);
    // While attempt 1's restart still hangs on the node, attempt 2 waits for the lock: one restart, run still running.
    for (let i = 0; i < 5; i++) {
      expect(await restarts()).toBe(1);
      // (The search attribute, not a query: the killed worker held the workflow's sticky cache.)
      expect((await handle.describe()).searchAttributes.KatafleetPhase).toEqual(['running']);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
    await nodes.fleet.setFault('overlap', 'command-hangs', false);
    const result = await handle.result();
    expect(result.phase).toBe('succeeded');
    expect(result.steps.map((s) => [s.id, s.status])).toEqual([['containerd', 'changed'], ['restart', expect.stringMatching(/^(changed|unchanged)$/)]]);
  } finally {
    await nodes.fleet.setFault('overlap', 'command-hangs', false);
  }
}, 300_000);
