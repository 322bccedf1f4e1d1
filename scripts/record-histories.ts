// Records the workflow histories test/replay.test.ts replays (success, rollback, retry, cancel): real nodeWorkflow runs on a dev server
// against a simulated fleet (no Kubernetes; kata.toml's `containerd` and `restart` steps keep them small).
//
//   npx tsx scripts/record-histories.ts        # rewrites test/histories/*.json
//
// Re-record after a deliberate change of nodeWorkflow's commands (and say so in the commit): the
// replay test exists to catch the accidental ones.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { SshPool } from '../activities/ssh';
import { workerActivities } from '../worker/worker';
import { nodeWorkflowId, type nodeWorkflow } from '../workflows/node';
import { historyToJsonText } from '../test/helpers/history-json';
import { backupAppears, kataSteps, nodeInput, onNode, startNodeFleet, waitFor, type NodeFleet } from '../test/helpers/node-workflow';
import { createTestWorker, startTestTemporal } from '../test/helpers/temporal';

export const historiesDir = join(__dirname, '..', 'test', 'histories');
const taskQueue = 'record-histories';
const quickRetry = { max_attempts: 3, initial_interval: '1s', backoff: 1, non_retryable: [] };

async function main(): Promise<void> {
  const [env, nodes] = await Promise.all([startTestTemporal(), startNodeFleet('record-histories', { nodes: [{ name: 'rec-1' }, { name: 'rec-2' }, { name: 'rec-3' }] })]);
  const pool = new SshPool();
  const worker = await createTestWorker(env, taskQueue, workerActivities(pool));
  try {
    await worker.runUntil(async () => {
      const start = async (node: string, steps: Awaited<ReturnType<typeof kataSteps>>, run: string): Promise<WorkflowHandle<typeof nodeWorkflow>> =>
        env.client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', { taskQueue, workflowId: nodeWorkflowId(node), args: [nodeInput(nodes, node, steps, { rolloutId: run })] });
      const save = async (name: string, handle: WorkflowHandle) => {
        await handle.result().catch(() => undefined);
        const file = join(historiesDir, `${name}.json`);
        await writeFile(file, `${historyToJsonText(await handle.fetchHistory())}\n`);
        process.stdout.write(`${file}\n`);
      };

      // success: patch and restart a fresh node.
      await save('node-success', await start('rec-1', await kataSteps(['containerd', 'restart']), 'success'));

      // rollback: containerd refuses to start with the new config; the config is restored.
      await nodes.fleet.setFault('rec-2', 'containerd-refuses-start', true);
      await save('node-rollback', await start('rec-2', await kataSteps(['containerd', 'restart'], { restart: { timeout: '20s', retry: { ...quickRetry, max_attempts: 1 } } }), 'rollback'));

      // retry: the restart hangs, is cut by its timeout, and its second attempt succeeds.
      await onNode(nodes, 'rec-1', 'touch /etc/containerd/config.toml');
      await nodes.fleet.setFault('rec-1', 'command-hangs', true);
      const retry = await start('rec-1', await kataSteps(['restart'], { restart: { timeout: '15s', retry: quickRetry } }), 'retry');
      await waitFor('the second attempt', async () => (((await retry.describe()).raw.pendingActivities?.[0]?.attempt ?? 0) >= 2 ? true : undefined), 60_000, 500);
      await nodes.fleet.setFault('rec-1', 'command-hangs', false);
      await save('node-retry', retry);

      // cancel: the rollout is aborted while containerd-patch runs; the patch is rolled back.
      const cancel = await start('rec-3', await kataSteps(['containerd', 'restart']), 'cancel');
      await backupAppears(nodes, 'rec-3');
      await cancel.cancel();
      await save('node-cancel', cancel);
    });
  } finally {
    await pool.closeAll();
    await stopAll(env, nodes);
  }
}

async function stopAll(env: Awaited<ReturnType<typeof startTestTemporal>>, nodes: NodeFleet): Promise<void> {
  await Promise.all([env.teardown(), nodes.fleet.stop()]);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
