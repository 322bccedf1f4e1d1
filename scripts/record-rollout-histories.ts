// Records the rolloutWorkflow and driftWorkflow histories test/replay.test.ts replays: real runs on a dev
// server against a simulated fleet (no Kubernetes; kata.toml's `containerd` and `restart` steps keep them
// small). The node-level histories are scripts/record-histories.ts's.
//
//   npx tsx scripts/record-rollout-histories.ts            # rewrites test/histories/{rollout,drift}-*.json
//   npx tsx scripts/record-rollout-histories.ts NAME...    # only these scenarios (the new ones: rollout-canary-rolled-back-halts
//                                                          # rollout-bounded-abort drift-desired-state; issue 13:
//                                                          # rollout-bounded-payloads drift-bounded-attributes
//                                                          # rollout-inventory-pieces drift-inventory-pieces; issue 14:
//                                                          # rollout-desired-at-commit)
//
// The histories recorded before a change of the workflows are the "previous version" that the new code
// must still replay (every change goes behind patched()): add new histories for new behaviour, and
// never re-record an old one to make a failing replay pass.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { startDriftRun } from '../api/drift-service';
import { buildDriftInput } from '../api/schedule-service';
import { buildRolloutInput, controlRollout, rolloutWorkflowId, startRollout } from '../api/rollout-service';
import type { Playbook, RolloutOverrides, Step } from '../playbooks/schema';
import { startFleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import type { RolloutLimits } from '../workflows/rollout';
import { rolloutProgressQuery } from '../workflows/rollout-messages';
import { historyToJsonText } from '../test/helpers/history-json';
import { historiesOfAllRuns, inventoryOf, kataSubset, onNode, waitFor } from '../test/rollout-helpers';
import { runKatafleetWorker, startTestTemporal } from '../test/helpers/temporal';

export const historiesDir = join(__dirname, '..', 'test', 'histories');
const nodeNames = Array.from({ length: 14 }, (_, i) => `rr-${i + 1}`);

async function main(only: string[]): Promise<void> {
  const [env, fleet] = await Promise.all([startTestTemporal(), startFleet({ nodes: nodeNames.map((name) => ({ name, containerd: '1.6' as const })), dir: join(await mkdtemp(join(tmpdir(), 'kf-record-rollout-')), 'fleet') })]);
  const worker = await runKatafleetWorker(env, taskQueue);
  const quick = (playbook: Playbook): Playbook => ({
    ...playbook,
    steps: playbook.steps.map((step): Step => (step.kind === 'service-restart' ? { ...step, timeout: '20s', retry: { max_attempts: 1, initial_interval: '1s', backoff: 1, non_retryable: [] } } : step)),
  });
  const playbook = quick(await kataSubset(['containerd', 'restart'], 'kata-node-steps'));
  const start = async (id: string, nodes: string[], overrides: RolloutOverrides, limits?: RolloutLimits): Promise<WorkflowHandle> => {
    const inventory = await inventoryOf(fleet, nodes);
    if (limits) {
      // startRollout has no limits option (they exist for tests): start the same input directly.
      const input = { ...buildRolloutInput(playbook, inventory, id, { pause_between_waves: '0s', ...overrides }), limits };
      return env.client.workflow.start('rolloutWorkflow', { taskQueue, workflowId: rolloutWorkflowId(id), args: [input] });
    }
    const started = await startRollout(env.client, playbook, inventory, { requestId: id, overrides: { pause_between_waves: '0s', ...overrides } });
    return env.client.workflow.getHandle(started.workflowId);
  };
  const save = async (name: string, handle: WorkflowHandle) => {
    await handle.result().catch(() => undefined);
    const runs = await historiesOfAllRuns(env.client, handle.workflowId);
    for (const [index, events] of runs.entries()) {
      const file = join(historiesDir, `${name}${runs.length > 1 ? `-run${index + 1}` : ''}.json`);
      await writeFile(file, `${historyToJsonText({ events })}\n`);
      process.stdout.write(`${file}\n`);
    }
  };
  const phaseIs = (handle: WorkflowHandle, phase: string) => waitFor(`phase ${phase}`, async () => ((await handle.query(rolloutProgressQuery)).phase === phase ? true : undefined), 120_000);
  const scenarios: Record<string, () => Promise<void>> = {
    // The canary fails after changing its config (containerd refuses the restart) and is rolled back; budget 0: halted.
    'rollout-canary-halt': async () => {
      await fleet.setFault('rr-1', 'containerd-refuses-start', true);
      await save('rollout-canary-halt', await start('canary-halt', ['rr-1', 'rr-2'], { canary: 1, wave_size: 1, failure_budget: 0 }));
    },
    // The same with budget 1: the code before issue 11 went on to the next wave.
    'rollout-canary-budget': async () => {
      await fleet.setFault('rr-3', 'containerd-refuses-start', true);
      await save('rollout-canary-budget', await start('canary-budget', ['rr-3', 'rr-4'], { canary: 1, wave_size: 1, failure_budget: 1 }));
    },
    // Paused while waiting between waves, then resumed.
    'rollout-pause-resume': async () => {
      const handle = await start('pause-resume', ['rr-5', 'rr-6'], { canary: 1, wave_size: 1, failure_budget: 0, pause_between_waves: '4s' });
      await phaseIs(handle, 'waiting-between-waves');
      await controlRollout(env.client, 'pause-resume', 'pause');
      await new Promise((resolve) => setTimeout(resolve, 6_000));
      await controlRollout(env.client, 'pause-resume', 'resume');
      await save('rollout-pause-resume', handle);
    },
    // approval_after_canary: the canary, then a resume approves the rest.
    'rollout-approval': async () => {
      const handle = await start('approval', ['rr-7', 'rr-8'], { canary: 1, wave_size: 1, failure_budget: 0, approval_after_canary: true });
      await phaseIs(handle, 'awaiting-approval');
      await controlRollout(env.client, 'approval', 'resume');
      await save('rollout-approval', handle);
    },
    // Two nodes done, abort with rollback while waiting between waves: both undone.
    'rollout-abort-rollback': async () => {
      const handle = await start('abort-rollback', ['rr-9', 'rr-10', 'rr-11'], { canary: 1, wave_size: 1, failure_budget: 0, pause_between_waves: '60s' });
      await waitFor('two nodes done', async () => ((await handle.query(rolloutProgressQuery)).counts.succeeded === 2 ? true : undefined), 120_000);
      await controlRollout(env.client, 'abort-rollback', 'abort', { rollback: true, reason: 'recorded abort' });
      await save('rollout-abort-rollback', handle);
    },
    // A run's history limit reached: continue-as-new between waves.
    'rollout-continue-as-new': async () => {
      await save('rollout-continue-as-new', await start('continue-as-new', ['rr-12', 'rr-13', 'rr-14'], { canary: 1, wave_size: 1, failure_budget: 0 }, { historyEvents: 20 }));
    },
    // Drift: rr-12 in sync, rr-13's config rewritten by "config management": repaired.
    drift: async () => {
      await onNode(fleet, 'rr-13', 'containerd config default > /etc/containerd/config.toml');
      const input = buildDriftInput(playbook, await inventoryOf(fleet, ['rr-12', 'rr-13']), false);
      const handle = await env.client.workflow.start('driftWorkflow', { taskQueue, workflowId: 'drift-repair', args: [input] });
      await save('drift-repair', handle);
    },
    // Recorded on the code of issue 11 (the new behaviour, behind patched()):
    // the canary rolled back with budget 1 halts the rollout.
    'rollout-canary-rolled-back-halts': async () => {
      await fleet.setFault('rr-1', 'containerd-refuses-start', true);
      await save('rollout-canary-rolled-back-halts', await start('canary-rolled-back-halts', ['rr-1', 'rr-2'], { canary: 1, wave_size: 1, failure_budget: 1 }));
    },
    // Abort with rollback in batches of 2, newest wave first, across continue-as-new (before and during the rollback).
    'rollout-bounded-abort': async () => {
      const handle = await start('bounded-abort', ['rr-3', 'rr-4', 'rr-5', 'rr-6', 'rr-7', 'rr-8'], { canary: 1, wave_size: 2, failure_budget: 0, pause_between_waves: '20s', max_parallel_rollback: 2 }, { historyEvents: 70 });
      await waitFor('five nodes done', async () => {
        const progress = await env.client.workflow.getHandle(handle.workflowId).query(rolloutProgressQuery);
        return progress.counts.succeeded === 5 && progress.phase === 'waiting-between-waves' ? true : undefined;
      }, 300_000);
      await controlRollout(env.client, 'bounded-abort', 'abort', { rollback: true, reason: 'recorded bounded abort' });
      await save('rollout-bounded-abort', handle);
    },
    // Drift after the bounded abort: rr-3 was rolled back by it (conflict), rr-8 never rolled out (repaired).
    'drift-desired-state': async () => {
      const input = buildDriftInput(playbook, await inventoryOf(fleet, ['rr-3', 'rr-8']), false);
      await save('drift-desired-state', await env.client.workflow.start('driftWorkflow', { taskQueue, workflowId: 'drift-desired-state', args: [input] }));
    },
    // Recorded on the code of issue 14 (patch rollout-desired-at-commit): each node's desired state is written by its
    // own run's commit; the rollout schedules no recordDesiredState.
    'rollout-desired-at-commit': async () => {
      await save('rollout-desired-at-commit', await start('desired-at-commit', ['rr-9', 'rr-10'], { canary: 1, wave_size: 1, failure_budget: 0 }));
    },
    // Recorded on the code of issue 13 (bounded payloads, behind patched()): continue-as-new carries the compact
    // node results, the result holds one page; a drift run's KatafleetDrift holds outcomes and counts.
    'rollout-bounded-payloads': async () => {
      await save('rollout-bounded-payloads', await start('bounded-payloads', ['rr-12', 'rr-13', 'rr-14'], { canary: 1, wave_size: 1, failure_budget: 0 }, { historyEvents: 20 }));
    },
    // Recorded on the code of issue 13 (the inventory in pieces, behind patched()): started by startRollout with one
    // node a piece (three signals), continue-as-new after each wave reads the pieces back (readInventoryPiece) and
    // carries the compact state; abort with rollback in the second run reads the first run's node undos back
    // (readNodeUndos).
    'rollout-inventory-pieces': async () => {
      const started = await startRollout(env.client, playbook, await inventoryOf(fleet, ['rr-9', 'rr-10', 'rr-11']), {
        requestId: 'inventory-pieces',
        overrides: { canary: 1, wave_size: 1, failure_budget: 0, pause_between_waves: '20s' },
        limits: { historyEvents: 40 },
        pieceNodes: 1,
      });
      const handle = env.client.workflow.getHandle(started.workflowId);
      await waitFor('two nodes done', async () => {
        const progress = await handle.query(rolloutProgressQuery);
        return progress.counts.succeeded === 2 && progress.phase === 'waiting-between-waves' ? true : undefined;
      }, 300_000);
      await controlRollout(env.client, 'inventory-pieces', 'abort', { rollback: true, reason: 'recorded abort with pieces' });
      await save('rollout-inventory-pieces', handle);
    },
    'drift-bounded-attributes': async () => {
      await onNode(fleet, 'rr-14', 'containerd config default > /etc/containerd/config.toml');
      const input = buildDriftInput(playbook, await inventoryOf(fleet, ['rr-13', 'rr-14']), false);
      await save('drift-bounded-attributes', await env.client.workflow.start('driftWorkflow', { taskQueue, workflowId: 'drift-bounded-attributes', args: [input] }));
    },
    'drift-inventory-pieces': async () => {
      // Issue 13's drift in pieces: the manifest in the start input, one signal a piece, one node a batch and a low
      // history limit, so the run continues as new (the later runs read the pieces back) during checks and repairs.
      await onNode(fleet, 'rr-12', 'containerd config default > /etc/containerd/config.toml');
      const input = { ...buildDriftInput(playbook, await inventoryOf(fleet, ['rr-11', 'rr-12', 'rr-13']), false), parallelism: 1 };
      await save('drift-inventory-pieces', await startDriftRun(env.client, input, { workflowId: 'drift-inventory-pieces', pieceNodes: 1, limits: { historyEvents: 30 } }));
    },
  };
  try {
    for (const [name, run] of Object.entries(scenarios)) {
      if (only.length === 0 || only.includes(name)) await run();
    }
  } finally {
    await worker.stop();
    await Promise.all([env.teardown(), fleet.stop()]);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
