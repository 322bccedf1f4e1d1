// Cordon ownership (README "When things fail"): katafleet marks the Node it cordons with an annotation
// naming the run (katafleet.dev/cordoned-by), so a retry or a rollback uncordons its own cordon and never
// someone else's. A worker SIGKILLed between cordon and uncordon (the restart hangs) still ends with the
// node uncordoned; a node an operator cordoned stays cordoned. Real Kubernetes control plane (kwok),
// real Temporal dev server, the worker as a separate OS process.
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Step } from '../playbooks/schema';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId, type nodeWorkflow } from '../workflows/node';
import { startTestTemporal } from './helpers/temporal';
import { kataSteps, kubectl, nodeInput, restartHanging, startNodeFleet, waitFor, type NodeFleet } from './helpers/node-workflow';
import { startWorkerProcess, type WorkerProcess } from './helpers/worker-process';

let env: TestWorkflowEnvironment;
let nodes: NodeFleet;
let worker: WorkerProcess | undefined;
let workerLog: string;

beforeAll(async () => {
  [env, nodes] = await Promise.all([startTestTemporal(), startNodeFleet('node-cordon', { nodes: [{ name: 'c-kill' }, { name: 'c-theirs' }], kubernetes: true })]);
  workerLog = join(nodes.fleet.dir, '..', 'worker.log');
  worker = await startWorkerProcess(env.address, workerLog, 120_000);
}, 600_000);

afterAll(async () => {
  await worker?.kill();
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

/** containerd-patch, then the restart with a cordon (no drain: the simulated kubelet has nothing to evict). */
async function cordonedRestart(): Promise<Step[]> {
  return kataSteps(['containerd', 'restart'], { restart: { cordon: true, timeout: '60s', retry: { max_attempts: 5, initial_interval: '1s', backoff: 1, non_retryable: [] } } as Partial<Step> });
}

function start(name: string, steps: Step[], runName: string): Promise<WorkflowHandle<typeof nodeWorkflow>> {
  return env.client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', {
    taskQueue,
    workflowId: nodeWorkflowId(name),
    args: [nodeInput(nodes, name, steps, { rolloutId: runName, heartbeatTimeout: '10s' })],
  });
}

async function nodeState(name: string): Promise<{ unschedulable: boolean; owner?: string }> {
  const node = JSON.parse(await kubectl(nodes, `get node ${name} -o json`)) as { spec?: { unschedulable?: boolean }; metadata: { annotations?: Record<string, string> } };
  return { unschedulable: node.spec?.unschedulable === true, owner: node.metadata.annotations?.['katafleet.dev/cordoned-by'] };
}

describe('README "When things fail": cordon ownership', () => {
  it('a worker SIGKILLed between cordon and uncordon: the retry knows the cordon is its run\'s and the node ends uncordoned', async () => {
    const steps = await cordonedRestart();
    await nodes.fleet.setFault('c-kill', 'command-hangs', true);
    let handle: WorkflowHandle<typeof nodeWorkflow>;
    try {
      handle = await start('c-kill', steps, 'cordon-kill');
      await waitFor('systemctl restart hanging (the node is cordoned)', () => restartHanging(nodes, 'c-kill'), 120_000, 200);
      const runId = (await handle.describe()).runId;
      expect(await nodeState('c-kill')).toEqual({ unschedulable: true, owner: runId });
      await worker!.kill();
    } finally {
      await nodes.fleet.setFault('c-kill', 'command-hangs', false);
    }
    worker = await startWorkerProcess(env.address, workerLog, 120_000);
    const result = await handle.result();
    expect(result.phase).toBe('succeeded');
    expect(await nodeState('c-kill')).toEqual({ unschedulable: false, owner: undefined });
  }, 600_000);

  it('a node someone else cordoned stays cordoned: katafleet neither uncordons it nor claims it', async () => {
    await kubectl(nodes, 'cordon c-theirs');
    try {
      const result = await (await start('c-theirs', await cordonedRestart(), 'cordon-theirs')).result();
      expect(result.phase).toBe('succeeded');
      expect(await nodeState('c-theirs')).toEqual({ unschedulable: true, owner: undefined });
    } finally {
      await kubectl(nodes, 'uncordon c-theirs');
    }
  }, 300_000);
});
