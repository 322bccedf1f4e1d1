// A rollout of 300 nodes stays within Temporal's limits: children in flight are bounded whatever the
// wave size, and the rollout continues as new before a run's history passes its limit.
//
// The light node profile, and why it is still real: 300 real hosts do not fit on a shared 2-core machine,
// so 300 node names point at 5 real simulated hosts (60 names each). The inventory check refuses one host
// listed twice (a host must never be patched by two nodeWorkflows at once), so this test builds the
// rollout input with the real builder from the 5-host inventory and then lists the 300 names itself.
// That is safe only because the playbook is read-only: kata.toml's prereq step without module loading or
// persisting (CPU flags, /dev/kvm, kernel release, each over a real SSH session). Everything else is the
// production path: a real dev server, rolloutWorkflow, one child nodeWorkflow per name, the SSH activities.
// Temporal's limits are lowered through `limits` (1,000 history events per run; 5 children in flight,
// where about 9 would be without a cap) so that 300 nodes cross them as 10,000 nodes would cross the defaults.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { buildRolloutInput, rolloutWorkflowId } from '../api/rollout-service';
import type { Step } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId, type nodeWorkflow } from '../workflows/node';
import { resultPageSize, type RolloutInput } from '../workflows/rollout';
import { rolloutProgressQuery, type RolloutProgress } from '../workflows/rollout-messages';
import { searchAttributes } from '../workflows/search-attributes';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { childTimeline, historiesOfAllRuns, inventoryOf, kataSubset, nodeOf } from './rollout-helpers';

const hosts = ['h-1', 'h-2', 'h-3', 'h-4', 'h-5'];
const nodeCount = 300;
const limits = { historyEvents: 1_000, childrenInFlight: 5 };

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let katafleetWorker: RunningTestWorker;

beforeAll(async () => {
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: hosts.map((name) => ({ name })), dir: join(await mkdtemp(join(tmpdir(), 'kf-rollout-scale-')), 'fleet') }),
  ]);
  katafleetWorker = await runKatafleetWorker(env, taskQueue);
}, 180_000);

afterAll(async () => {
  await katafleetWorker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('a rollout of 300 nodes', () => {
  it('keeps children in flight bounded and continues as new before a run history passes its limit', async () => {
    const kata = await kataSubset(['prereq'], 'kata-prereq-readonly');
    const readOnly = kata.steps.map((step) => ({ ...step, modules: [], modules_any_of: [], persist_modules: false }) as Step);
    const base = buildRolloutInput({ ...kata, steps: readOnly }, await inventoryOf(fleet, hosts), 'scale-300', { canary: 1, wave_size: 100, failure_budget: 0, pause_between_waves: '0s' });
    const names = Array.from({ length: nodeCount }, (_, i) => `big-${String(i + 1).padStart(3, '0')}`);
    const input: RolloutInput = { ...base, nodes: names.map((name, i) => ({ ...base.nodes[i % hosts.length], name })), limits };

    const started = Date.now();
    const handle = await env.client.workflow.start('rolloutWorkflow', { taskQueue, workflowId: rolloutWorkflowId('scale-300'), args: [input] });
    const result: RolloutProgress = await handle.result();
    const seconds = (Date.now() - started) / 1000;

    expect(result.phase).toBe('succeeded');
    expect(result.counts).toMatchObject({ total: nodeCount, succeeded: nodeCount, failed: 0 });
    expect(result.waveSizes).toEqual([1, 100, 100, 99]);
    // The result holds the first page of nodes (bounded whatever the fleet size); the query pages through the rest.
    expect(result.nodes).toHaveLength(resultPageSize);
    const pages = [await handle.query(rolloutProgressQuery, { pageSize: 200 })];
    while (pages.at(-1)!.nodesPage?.nextPageToken) pages.push(await handle.query(rolloutProgressQuery, { pageSize: 200, pageToken: pages.at(-1)!.nodesPage!.nextPageToken }));
    const everyNode = pages.flatMap((page) => page.nodes);
    expect(everyNode.map((node) => node.name)).toEqual(names);
    expect(everyNode.every((node) => node.status === 'succeeded')).toBe(true);
    // Per-node facts live on each node's own nodeWorkflow (the rollout carries no facts across continue-as-new).
    const kernels = new Set<string | undefined>();
    for (const name of names) kernels.add((await env.client.workflow.getHandle<typeof nodeWorkflow>(nodeWorkflowId(name)).result()).facts.hostKernel);
    expect([...kernels]).toEqual(['6.1.0-katafleet-sim']);
    const waves = pages.reduce<string[][]>((all, page) => page.waves.map((wave, index) => [...(all[index] ?? []), ...wave]), []);

    const runs = await historiesOfAllRuns(env.client, handle.workflowId);
    const children = childTimeline(runs);
    const lengths = runs.map((events) => events.length);
    // One run could not have held it: the runs together are past the limit, each run alone below it.
    expect(lengths.reduce((sum, length) => sum + length, 0)).toBeGreaterThan(limits.historyEvents);
    for (const length of lengths) expect(length).toBeLessThan(limits.historyEvents);
    expect(Math.max(...lengths)).toBeLessThan(10_240);
    runs.slice(0, -1).forEach((events) => expect(events.at(-1)?.workflowExecutionContinuedAsNewEventAttributes).toBeTruthy());

    // Every node exactly once, in plan order, and every child closed in the run that started it.
    expect(children.map((child) => nodeOf(child.workflowId))).toEqual(names);
    expect(children.every((child) => child.outcome === 'completed' && Math.floor(child.closedOrder! / 1_000_000) === child.run)).toBe(true);

    // Children in flight, replayed from each run's history: never more than the limit (a wave has 100).
    let inFlight = 0;
    let maxInFlight = 0;
    const marks = children.flatMap((child) => [
      { order: child.initiatedOrder, delta: 1 },
      { order: child.closedOrder!, delta: -1 },
    ]);
    for (const mark of marks.sort((a, b) => a.order - b.order)) {
      inFlight += mark.delta;
      maxInFlight = Math.max(maxInFlight, inFlight);
    }
    // The cap was reached, and never passed.
    expect(maxInFlight).toBe(limits.childrenInFlight);

    // Waves still in order across runs.
    const waveOf = (name: string) => waves.findIndex((wave) => wave.includes(name));
    for (let wave = 0; wave < waves.length - 1; wave++) {
      const lastClose = Math.max(...children.filter((child) => waveOf(nodeOf(child.workflowId)) === wave).map((child) => child.closedOrder!));
      const firstStart = Math.min(...children.filter((child) => waveOf(nodeOf(child.workflowId)) === wave + 1).map((child) => child.initiatedOrder));
      expect(lastClose).toBeLessThan(firstStart);
    }
    expect((await handle.describe()).typedSearchAttributes.get(searchAttributes.nodesDone)).toBe(nodeCount);

    const total = lengths.reduce((sum, length) => sum + length, 0);
    process.stdout.write(`rollout-scale: ${nodeCount} nodes in ${seconds.toFixed(1)} s, ${runs.length} runs of ${lengths.join(', ')} events (${(total / nodeCount).toFixed(1)} per node), at most ${maxInFlight} children in flight\n`);
  }, 900_000);
});
