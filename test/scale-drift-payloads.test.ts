// Drift in pieces (issue 13, docs/scale.md "Drift in pieces"): at 10,000 nodes, where the old drift input alone
// (every node in it, in the schedule and in every run) was over Temporal's 2 MiB, no payload of a drift run's
// histories passes 256 KiB: start input, signals, activity inputs and results, child inputs and results,
// continue-as-new inputs, the result; nor does the schedule's start action or its inventory workflow; each run's
// history stays under its (lowered) event limit; KatafleetDrift stays a few short values.
//
// What runs: a real dev server, katafleet's worker (in process, made by `createWorker` as `katafleet worker` makes it), driftWorkflow started by `startDriftRun` (what
// `katafleet drift check` runs: split, signalWithStart, one signal a piece) and by a Temporal Schedule made by
// `createDriftSchedule` (what `katafleet drift schedule` and `POST /v1/schedules` run), over an inventory of 10,000
// cloud-named nodes. The first 3 are real: alias addresses of one simulated host, registered as kwok Nodes, found
// drifted (no node label) and repaired with the shared-host playbook (prereq-check, node-label); the other 9,997 have
// addresses nothing listens on (127.251.x.y) and are reported unreachable. `limits.historyEvents` is lowered (the
// API and CLI never set it) so the run crosses several continue-as-new runs, each reading the pieces back.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { driftInventoryWorkflowId, startDriftRun } from '../api/drift-service';
import { buildDriftInput, createDriftSchedule, deleteDriftSchedule, maxDriftNodes } from '../api/schedule-service';
import { cloudNodeName, inventoryToml, largestPayloadList, sharedHostPlaybook } from '../bench/scale-run';
import { attachCredentials, parseInventory, parsePlaybook } from '../playbooks/load';
import { startFleet, type Fleet } from '../sim/fleet';
import { kubernetesBinaries } from '../sim/control-plane';
import { registerKwokNodes } from '../sim/kube-kwok-config';
import { boundedDriftReport, outcomeCodes, reportNodesCap, type DriftInput, type DriftReport } from '../workflows/drift';
import { inventoryPieceNodes } from '../workflows/inventory-pieces';
import { nodeWorkflowId } from '../workflows/node';
import { createWorker } from '../worker/worker';
import { startTestTemporal } from './helpers/temporal';
import { historiesOfAllRuns } from './rollout-helpers';

const fleetSize = 10_000;
const realNodes = 3;
const payloadBound = 256 * 1024;
const historyEventsLimit = 3_000;
const names = Array.from({ length: fleetSize }, (_, i) => cloudNodeName(i, fleetSize));
const size = (value: unknown) => Buffer.byteLength(JSON.stringify(value));
const unreachable = (index: number) => `127.251.${Math.floor(index / 250)}.${1 + (index % 250)}`;

describe('the drift report of a large run: pure parts', () => {
  it(`lists every node up to ${reportNodesCap}, else the nodes not in sync first, within 192 KiB, and counts all`, () => {
    const input = { playbook: { name: 'kata', file: 'kata.toml', sha256: 'a'.repeat(64) }, reportOnly: false };
    const result = (index: number, code: string) => ({ node: names[index], outcome: (Object.entries(outcomeCodes).find(([, c]) => c === code)![0]) as DriftReport['nodes'][number]['outcome'], drifted: code === 'd' ? [`drift ${'z'.repeat(2_000)}`] : [], ...(code === 'u' ? { detail: `unreachable: ${'q'.repeat(3_000)}` } : {}) });
    const small = ['s', 'd', 'u', '.'];
    const few = boundedDriftReport(input, 'checking', small.length, small, (i) => result(i, small[i]));
    expect(few.nodes.map((node) => node.outcome)).toEqual(['in-sync', 'drifted', 'unreachable']);
    expect(few).toMatchObject({ nodesTotal: 4, counts: { 'in-sync': 1, drifted: 1, unreachable: 1 }, nodesOmitted: 0 });
    // The worst case at 10,000 nodes: every node ended with long texts.
    const codes = names.map((_, i) => (i % 3 === 0 ? 's' : i % 3 === 1 ? 'd' : 'u'));
    const big = boundedDriftReport(input, 'done', fleetSize, codes, (i) => result(i, codes[i]));
    process.stdout.write(`drift report at ${fleetSize} nodes, worst case: ${size(big)} B, ${big.nodes.length} nodes listed\n`);
    expect(size(big)).toBeLessThan(payloadBound);
    expect(big.nodes.every((node) => node.outcome !== 'in-sync')).toBe(true);
    expect(big.nodes.length).toBeLessThanOrEqual(reportNodesCap);
    expect(big.nodesOmitted).toBe(fleetSize - big.nodes.length);
    expect(big.counts).toEqual({ 'in-sync': 3_334, drifted: 3_333, unreachable: 3_333 });
  });
});

describe(`drift of ${fleetSize} nodes: every payload of its histories and of its schedule under 256 KiB`, () => {
  let env: TestWorkflowEnvironment;
  let fleet: Fleet;
  let worker: { stop(): Promise<void> };

  beforeAll(async () => {
    [env, fleet] = await Promise.all([
      startTestTemporal(),
      startFleet({ nodes: [{ name: 'host-1', aliases: realNodes }], kubernetes: true, dir: join(await mkdtemp(join(tmpdir(), 'kf-scale-drift-')), 'fleet') }),
    ]);
    // The worker as `katafleet worker` creates it (its options included: the workflow isolate's 60 s bound).
    const created = await createWorker({ target: { address: env.address, namespace: 'default', external: true } });
    const running = created.worker.run();
    worker = { stop: async () => { created.worker.shutdown(); await running; await created.close(); } };
    const host = fleet.nodes.find((node) => node.role === 'worker')!;
    await registerKwokNodes(join(kubernetesBinaries().binDir, 'kubectl'), fleet.controlPlane!.kubeconfig, names.slice(0, realNodes).map((name, index) => ({ name, address: host.aliases[index] })));
  }, 300_000);

  afterAll(async () => {
    await worker?.stop();
    await Promise.all([fleet?.stop(), env?.teardown()]);
  });

  const inventory = () => {
    const host = fleet.nodes.find((node) => node.role === 'worker')!;
    const text = inventoryToml(fleet, names, (index) => (index < realNodes ? host.aliases[index] : unreachable(index)));
    return attachCredentials(parseInventory(text, 'inventory_toml', { profilesOnly: true }), join(fleet.dir, 'credentials.toml'));
  };
  const playbook = () => parsePlaybook(sharedHostPlaybook('25%'), 'playbook_toml');

  it('checks, repairs and reports across continue-as-new runs with no payload over 256 KiB (the old input alone was over 2 MiB)', async () => {
    const input = buildDriftInput(playbook(), inventory(), false);
    expect(maxDriftNodes).toBe(fleetSize);
    process.stdout.write(`drift input at ${fleetSize} nodes inline (before the pieces): ${size(input)} B\n`);
    expect(size(input)).toBeGreaterThan(2 * 1024 * 1024);
    input.parallelism = 100;
    const handle = await startDriftRun(env.client, input, { workflowId: 'drift-payloads-10k', limits: { historyEvents: historyEventsLimit } });
    const report = await handle.result();

    expect(report).toMatchObject({ phase: 'done', nodesTotal: fleetSize, counts: { repaired: realNodes, unreachable: fleetSize - realNodes } });
    expect(report.nodes.slice(0, realNodes).map((node) => `${node.node}:${node.outcome}`)).toEqual(names.slice(0, realNodes).map((name) => `${name}:repaired`));
    expect(report.nodes.length).toBeLessThanOrEqual(reportNodesCap);
    expect(report.nodesOmitted).toBe(fleetSize - report.nodes.length);
    const description = await handle.describe();
    expect(description.searchAttributes.KatafleetDrift).toEqual(['repaired', `repaired=${realNodes}`, 'unreachable', `unreachable=${fleetSize - realNodes}`]);
    for (const value of Object.values(description.searchAttributes)) expect(size(value)).toBeLessThan(1024);

    const runs = await historiesOfAllRuns(env.client, 'drift-payloads-10k');
    const largest = runs.map((events, index) => ({ run: index + 1, events: events.length, ...largestPayloadList(events) }));
    for (const name of names.slice(0, realNodes)) {
      const events = (await env.client.workflow.getHandle(nodeWorkflowId(name)).fetchHistory()).events ?? [];
      largest.push({ run: 0, events: events.length, ...largestPayloadList(events), where: nodeWorkflowId(name) });
    }
    process.stdout.write(`drift payloads at ${fleetSize} nodes (largest per history): ${JSON.stringify(largest)}\n`);
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(largest.filter((entry) => !(entry.bytes < payloadBound))).toEqual([]);
    expect(largest.filter((entry) => entry.events > historyEventsLimit)).toEqual([]);
    const signals = runs[0].filter((event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'inventoryPiece');
    expect(signals).toHaveLength(fleetSize / inventoryPieceNodes);
    const kinds = new Set(runs.slice(1).flat().flatMap((event) => event.activityTaskScheduledEventAttributes?.activityType?.name ?? []));
    expect([...kinds]).toEqual(expect.arrayContaining(['readInventoryPiece', 'checkDrift']));
    const startInput = JSON.parse(Buffer.from(runs[0][0].workflowExecutionStartedEventAttributes!.input!.payloads![0].data!).toString('utf8')) as DriftInput;
    expect(startInput.nodes).toBeUndefined();
    expect(startInput.inventory).toMatchObject({ nodes: fleetSize, pieces: fleetSize / inventoryPieceNodes });
  }, 1_800_000);

  it('keeps a schedule\'s start action small: the nodes are held by the schedule\'s inventory workflow, which its deletion ends', async () => {
    const scheduleId = await createDriftSchedule(env.client, playbook(), inventory(), { every: '24h', reportOnly: true, scheduleId: 'payloads-10k' });
    const schedule = await env.client.schedule.getHandle(scheduleId).describe();
    const action = schedule.action as { args?: unknown[] };
    process.stdout.write(`drift schedule's start action at ${fleetSize} nodes: ${size(action.args)} B\n`);
    expect(size(action.args)).toBeLessThan(16 * 1024);
    expect((action.args![0] as DriftInput)).toMatchObject({ inventory: { nodes: fleetSize }, inventoryFrom: { workflowId: driftInventoryWorkflowId(scheduleId) } });
    const holder = env.client.workflow.getHandle(driftInventoryWorkflowId(scheduleId));
    const events = (await holder.fetchHistory()).events ?? [];
    expect(largestPayloadList(events).bytes).toBeLessThan(payloadBound);
    expect(events.filter((event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'inventoryPiece')).toHaveLength(fleetSize / inventoryPieceNodes);
    expect((await holder.describe()).status.name).toBe('RUNNING');
    await deleteDriftSchedule(env.client, scheduleId);
    expect((await holder.describe()).status.name).toBe('TERMINATED');
  }, 300_000);
});
