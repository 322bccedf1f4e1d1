// The inventory reaches the rollout in bounded pieces (issue 13, docs/scale.md "The inventory in pieces"): at
// 10,000 nodes, where the old start input alone (every node in it) was over Temporal's 2 MiB and refused, no payload
// of any of the rollout's histories passes 256 KiB: start input, signals, activity inputs and results, child inputs
// and results, continue-as-new inputs, the result; nor does a progress page.
//
// What runs: a real dev server, katafleet's worker (in process), rolloutWorkflow started by `startRollout` (the
// function behind `POST /v1/rollouts` and `katafleet rollout`: split, signalWithStart, one signal a piece) with an
// inventory of 10,000 cloud-named nodes. The first 11 are real: alias addresses of one simulated host, registered
// as kwok Nodes, rolled out with the shared-host playbook (prereq-check, node-label) as the canary wave; the other
// 9,989 have addresses nothing listens on (127.251.x.y) and are never contacted, because the rollout waits for
// approval after the canary and is then aborted with rollback. `limits.historyEvents` is lowered (the API and CLI
// never set it) so the canary wave crosses several continue-as-new runs: later runs read the pieces back from the
// run before, and the abort reads the undos of nodes done in earlier runs back from their nodeWorkflows.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { buildRolloutInput, controlRollout, getRollout, rolloutWorkflowId, startRollout } from '../api/rollout-service';
import { cloudNodeName, inventoryToml, largestPayloadList, sharedHostPlaybook } from '../bench/scale-run';
import { attachCredentials, parseInventory, parsePlaybook } from '../playbooks/load';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { registerKwokNodes } from '../sim/kube-kwok-config';
import { taskQueue } from '../worker/connection';
import { assembleInventory, inventoryDigest, inventoryPieceNodes, sha256Hex, splitInventory } from '../workflows/inventory-pieces';
import { nodeWorkflowId } from '../workflows/node';
import { countNodes, countsOfCarried, decodeStatuses, encodeStatuses, undosOnNodeWorkflow, type RolloutInput } from '../workflows/rollout';
import { maxProgressPageSize, type RolloutNodeResult, type RolloutProgress } from '../workflows/rollout-messages';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { historiesOfAllRuns } from './rollout-helpers';

const run = promisify(execFile);
const fleetSize = 10_000;
const realNodes = 11;
const payloadBound = 256 * 1024;
const names = Array.from({ length: fleetSize }, (_, i) => cloudNodeName(i, fleetSize));
const size = (value: unknown) => Buffer.byteLength(JSON.stringify(value));
const unreachable = (index: number) => `127.251.${Math.floor(index / 250)}.${1 + (index % 250)}`;

/** The inventory of 10,000 nodes as the API builds it (the fleet's first `realNodes` names on its alias addresses). */
function bigInventory(fleet: Fleet) {
  const host = fleet.nodes.find((node) => node.role === 'worker')!;
  const text = inventoryToml(fleet, names, (index) => (index < realNodes ? host.aliases[index] : unreachable(index)));
  return attachCredentials(parseInventory(text, 'inventory_toml', { profilesOnly: true }), join(fleet.dir, 'credentials.toml'));
}

describe('the inventory in pieces: pure parts', () => {
  it('digests with a SHA-256 that matches node:crypto (it runs inside workflows, without Node built-ins)', () => {
    const samples = ['', 'abc', 'a'.repeat(55), 'b'.repeat(56), 'c'.repeat(64), 'ümlaut ✓ 𝄞 node', 'x'.repeat(200_001)];
    for (const text of samples) expect(sha256Hex(new TextEncoder().encode(text))).toBe(createHash('sha256').update(text, 'utf8').digest('hex'));
  });

  it('assembles pieces only when all arrived with the manifest\'s count and digest, and says what is wrong otherwise', () => {
    const nodes = names.slice(0, 1_200).map((name, i) => ({ name, address: unreachable(i), port: 22, maxSessions: 4, connectTimeoutMs: 10_000, credentials: { profile: 'p', file: '/etc/katafleet/credentials.toml' } }));
    const { manifest, pieces } = splitInventory(nodes);
    expect(pieces.map((piece) => piece.nodes.length)).toEqual([inventoryPieceNodes, inventoryPieceNodes, 200]);
    const byIndex = new Map(pieces.map((piece) => [piece.index, piece.nodes]));
    expect(assembleInventory(manifest, byIndex)).toEqual({ nodes });
    expect(assembleInventory(manifest, new Map([...byIndex].filter(([index]) => index !== 1)))).toEqual({ problem: '1 of 3 inventory pieces did not arrive (first missing: piece 1)' });
    expect(assembleInventory({ ...manifest, nodes: 1_201 }, byIndex)).toEqual({ problem: 'the inventory pieces hold 1200 nodes, the rollout was started for 1201' });
    const changed = new Map(byIndex).set(2, [{ ...pieces[2].nodes[0], address: '203.0.113.9' }, ...pieces[2].nodes.slice(1)]);
    expect(assembleInventory(manifest, changed)).toEqual({ problem: expect.stringMatching(/^the inventory pieces' sha256 is [0-9a-f]{12}…, the rollout was started for [0-9a-f]{12}… \(a piece was changed or sent twice with other content\)$/) });
    expect(manifest).toEqual({ nodes: 1_200, pieces: 3, sha256: inventoryDigest(nodes) });
  });

  it('carries one status character per node across continue-as-new, the reasons capped, the undos left on the nodes', () => {
    const planned: RolloutNodeResult[] = names.map((name, i) => ({ name, wave: 1 + Math.floor(i / 1000), status: 'pending' }));
    const statuses: RolloutNodeResult['status'][] = ['succeeded', 'failed', 'busy', 'skipped', 'rolled-back', 'rollback-failed', 'needs-attention', 'pending'];
    // The worst case: every node has ended, each with a long reason, and every succeeded node changed something.
    const ended = planned.map((node, i): RolloutNodeResult => {
      const status = statuses[i % statuses.length];
      return { ...node, status, reason: `${status} because ${'y'.repeat(3000)}`, busy: status === 'skipped' ? true : undefined, facts: status === 'succeeded' ? { undos: JSON.stringify([{ kind: 'remove-node-label', stepId: 'label', labels: ['a'] }]) } : undefined };
    });
    const carried = encodeStatuses(ended);
    process.stdout.write(`compact carried state at ${fleetSize} nodes, worst case: ${size(carried)} B (the node results themselves: ${size(ended)} B)\n`);
    expect(size(carried)).toBeLessThan(payloadBound);
    const back = decodeStatuses(planned, carried);
    expect(back.map((node) => node.status)).toEqual(ended.map((node) => node.status));
    // What the next run answers while it reads its inventory back: the carried counts, not every node pending.
    expect(countsOfCarried(carried)).toEqual(countNodes(ended));
    expect(countsOfCarried(carried).pending).toBeLessThan(fleetSize);
    expect(back.filter((node) => node.busy).length).toBe(ended.filter((node) => node.busy).length);
    expect(back[0].facts).toEqual({ undos: undosOnNodeWorkflow });
    expect(back.every((node) => ['pending', 'succeeded'].includes(node.status) || (node.reason ?? '').length > 0)).toBe(true);
    expect(back[1].reason!.length).toBeLessThanOrEqual(500);
  });
});

describe(`a rollout of ${fleetSize} nodes: every payload of its histories under 256 KiB`, () => {
  let env: TestWorkflowEnvironment;
  let fleet: Fleet;
  let worker: RunningTestWorker;

  beforeAll(async () => {
    [env, fleet] = await Promise.all([
      startTestTemporal(),
      startFleet({ nodes: [{ name: 'host-1', aliases: realNodes }], kubernetes: true, dir: join(await mkdtemp(join(tmpdir(), 'kf-scale-payloads-')), 'fleet') }),
    ]);
    worker = await runKatafleetWorker(env, taskQueue);
    const host = fleet.nodes.find((node) => node.role === 'worker')!;
    await registerKwokNodes(join(kubernetesBinaries().binDir, 'kubectl'), fleet.controlPlane!.kubeconfig, names.slice(0, realNodes).map((name, index) => ({ name, address: host.aliases[index] })));
  }, 300_000);

  afterAll(async () => {
    await worker?.stop();
    await Promise.all([fleet?.stop(), env?.teardown()]);
  });

  it('starts, crosses continue-as-new, waits for approval and rolls back on abort with no payload over 256 KiB (the old start input alone was over 2 MiB)', async () => {
    const inventory = bigInventory(fleet);
    const playbook = parsePlaybook(sharedHostPlaybook(500).replace('canary = 1', `canary = ${realNodes}\nmax_parallel = 2\napproval_after_canary = true`), 'playbook_toml');
    const old = buildRolloutInput(playbook, inventory, 'payloads-10k');
    process.stdout.write(`start input at ${fleetSize} nodes before the pieces: ${size(old)} B\n`);
    expect(size(old)).toBeGreaterThan(2 * 1024 * 1024);

    const started = await startRollout(env.client, playbook, inventory, { requestId: 'payloads-10k', limits: { historyEvents: 200 } });
    expect(started.started).toBe(true);
    const handle = env.client.workflow.getHandle(rolloutWorkflowId('payloads-10k'));
    let progress: RolloutProgress & { status: string };
    for (;;) {
      progress = await getRollout(env.client, 'payloads-10k', { pageSize: 20 });
      if (progress.phase === 'awaiting-approval' || progress.status !== 'RUNNING') break;
      await new Promise((resolve) => setTimeout(resolve, 2_000));
    }
    expect(progress).toMatchObject({ phase: 'awaiting-approval', counts: { total: fleetSize, succeeded: realNodes, failed: 0 } });
    expect(progress.nodes.slice(0, realNodes).every((node) => node.status === 'succeeded')).toBe(true);
    // The API's answers: pages of the largest size are bounded too.
    const widest = await getRollout(env.client, 'payloads-10k', { pageSize: maxProgressPageSize });
    expect(size(widest)).toBeLessThan(payloadBound);

    expect(await controlRollout(env.client, 'payloads-10k', 'abort', { rollback: true, reason: 'payload test' })).toBe('aborting');
    await handle.result();
    const ended = await getRollout(env.client, 'payloads-10k', { pageSize: 20 });
    expect(ended.phase).toBe('aborted');
    expect(ended.nodes.slice(0, realNodes).map((node) => node.status)).toEqual(Array(realNodes).fill('rolled-back'));
    expect(ended.counts).toMatchObject({ total: fleetSize, succeeded: 0, skipped: fleetSize - realNodes });
    const { stdout } = await run(join(kubernetesBinaries().binDir, 'kubectl'), [`--kubeconfig=${fleet.controlPlane!.kubeconfig}`, 'get', 'nodes', '-l', 'katacontainers.io/kata-runtime=true', '-o', 'name']);
    expect(stdout.trim()).toBe('');

    const runs = await historiesOfAllRuns(env.client, handle.workflowId);
    const largest = runs.map((events, index) => ({ run: index + 1, events: events.length, ...largestPayloadList(events) }));
    for (const name of names.slice(0, realNodes)) {
      const events = (await env.client.workflow.getHandle(nodeWorkflowId(name)).fetchHistory()).events ?? [];
      largest.push({ run: 0, events: events.length, ...largestPayloadList(events), where: `${nodeWorkflowId(name)}` });
    }
    process.stdout.write(`payloads at ${fleetSize} nodes (largest per history): ${JSON.stringify(largest)}\n`);
    // Several runs: the later ones read their pieces back, the abort read undos of nodes done in earlier runs.
    expect(runs.length).toBeGreaterThanOrEqual(3);
    const kinds = new Set(runs.flat().flatMap((event) => event.activityTaskScheduledEventAttributes?.activityType?.name ?? []));
    expect([...kinds]).toEqual(expect.arrayContaining(['readInventoryPiece', 'readNodeUndos']));
    const signals = runs[0].filter((event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'inventoryPiece');
    expect(signals).toHaveLength(fleetSize / inventoryPieceNodes);
    expect(largest.filter((entry) => !(entry.bytes < payloadBound))).toEqual([]);
    const startInput = JSON.parse(Buffer.from(runs[0][0].workflowExecutionStartedEventAttributes!.input!.payloads![0].data!).toString('utf8')) as RolloutInput;
    expect(startInput.nodes).toBeUndefined();
    expect(startInput.inventory).toMatchObject({ nodes: fleetSize, pieces: fleetSize / inventoryPieceNodes });
  }, 1_200_000);
});
