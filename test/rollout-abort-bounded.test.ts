// Abort with rollback, bounded (issue 11, review R7): `katafleet abort --rollback` undoes the nodes in
// batches of at most max_parallel_rollback, newest wave first, and goes on across continue-as-new — both the
// continue-as-new of the rollout before the abort and that of the rollback itself (a lowered history limit
// makes a 7-node rollout behave like a fleet of thousands). Read from the rollout's own histories.
//
// Cost: kata.toml's containerd and restart steps (no Kubernetes), 7 nodes.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { buildRolloutInput, rolloutWorkflowId } from '../api/rollout-service';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { rolloutProgressQuery, type RolloutProgress } from '../workflows/rollout-messages';
import type { RolloutInput } from '../workflows/rollout';
import { runKatafleet } from './helpers/cli';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { childTimeline, configBackups, configHashes, historiesOfAllRuns, inventoryOf, kataSubset, nodeOf, onNode, waitFor } from './rollout-helpers';

const nodes = ['ab-1', 'ab-2', 'ab-3', 'ab-4', 'ab-5', 'ab-6', 'ab-7'];

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;

beforeAll(async () => {
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: nodes.map((name) => ({ name, containerd: '1.6' as const })), dir: join(await mkdtemp(join(tmpdir(), 'kf-rollout-abort-bounded-')), 'fleet') }),
  ]);
  worker = await runKatafleetWorker(env, taskQueue);
}, 180_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

/** Runs the katafleet command as a user does, against the test's Temporal server. */
const katafleet = (...args: string[]) => runKatafleet(env.address, args, 120_000);

describe('abort --rollback in bounded batches across continue-as-new', () => {
  it('restores every changed node byte for byte, newest wave first, never more than max_parallel_rollback undos at once', async () => {
    const before = await configHashes(fleet, nodes);
    const playbook = await kataSubset(['containerd', 'restart'], 'kata-node-steps');
    // Waves [ab-1] [ab-2 ab-3] [ab-4 ab-5] [ab-6 ab-7]; a 70-event history limit continues as new after about three nodes.
    const input: RolloutInput = {
      ...buildRolloutInput(playbook, await inventoryOf(fleet, nodes), 'abort-bounded', { canary: 1, wave_size: 2, failure_budget: 0, pause_between_waves: '20s', max_parallel_rollback: 2 }),
      limits: { historyEvents: 70 },
    };
    const handle = await env.client.workflow.start('rolloutWorkflow', { taskQueue, workflowId: rolloutWorkflowId('abort-bounded'), args: [input] });

    await waitFor('waves 1-3 done, waiting before wave 4', async () => {
      const progress = await handle.query(rolloutProgressQuery);
      return progress.counts.succeeded === 5 && progress.phase === 'waiting-between-waves' ? true : undefined;
    }, 300_000);
    const runsBeforeAbort = (await historiesOfAllRuns(env.client, handle.workflowId)).length;
    expect(runsBeforeAbort).toBeGreaterThanOrEqual(2);

    // Through the CLI, as an operator does; a second abort is refused with the reason.
    const abort = await katafleet('abort', 'abort-bounded', '--rollback', '--reason', 'test: bounded abort');
    expect(abort).toMatchObject({ code: 0, stdout: 'rollout abort-bounded: aborting\n' });
    const again = await katafleet('abort', 'abort-bounded', '--rollback');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('cannot abort: the rollout is already aborting with rollback');

    const result: RolloutProgress = await env.client.workflow.getHandle(handle.workflowId).result();
    expect(result).toMatchObject({ phase: 'aborted', reason: 'test: bounded abort' });
    expect(result.nodes.map((node) => [node.name, node.status])).toEqual([
      ['ab-1', 'rolled-back'], ['ab-2', 'rolled-back'], ['ab-3', 'rolled-back'], ['ab-4', 'rolled-back'], ['ab-5', 'rolled-back'], ['ab-6', 'skipped'], ['ab-7', 'skipped'],
    ]);
    // Byte for byte, the nodes of the first run included; each backup holds the original bytes.
    expect(await configHashes(fleet, nodes)).toEqual(before);
    for (const node of nodes.slice(0, 5)) {
      expect((await configBackups(fleet, node)).map((backup) => backup.sha256)).toEqual([before[node]]);
      expect(JSON.parse(await onNode(fleet, node, 'cat /var/lib/katafleet/desired.json'))).toMatchObject({ rolloutId: 'abort-bounded', state: 'rolled-back', playbook: { name: 'kata-node-steps' } });
    }

    const runs = await historiesOfAllRuns(env.client, handle.workflowId);
    const children = childTimeline(runs);
    const applies = children.slice(0, 5);
    const undos = children.slice(5);
    expect(applies.map((child) => nodeOf(child.workflowId))).toEqual(nodes.slice(0, 5));
    // Newest wave first: wave 3 (ab-4, ab-5), then wave 2, then the canary.
    expect(undos.map((child) => nodeOf(child.workflowId))).toEqual(['ab-5', 'ab-4', 'ab-3', 'ab-2', 'ab-1']);
    expect(undos.every((child) => child.outcome === 'completed')).toBe(true);
    // The rollback itself went on in a later run than the one that took the abort.
    expect(new Set(undos.map((child) => child.run)).size).toBeGreaterThanOrEqual(2);
    // Never more than 2 undo children open at once.
    const overlap = Math.max(...undos.map((child) => undos.filter((other) => other.initiatedOrder <= child.initiatedOrder && child.initiatedOrder < (other.closedOrder ?? Infinity)).length));
    expect(overlap).toBeLessThanOrEqual(2);
    expect(overlap).toBe(2);
  }, 600_000);
});
