// The canary rule through the public CLI and API (issue 11, review R2): any canary outcome other than
// succeeded halts the rollout whatever the failure budget — a canary rolled back after it changed a file,
// and a canary whose lock another rollout holds (busy, tried again, still busy).
//
// The repro of the issue: `katafleet sim up --nodes 4`, the OBS-style repository added to node-1, then
// `katafleet sim fault node-1 package-repo-unreachable on` (here the test helper startFleet, same fleet), then `katafleet rollout PLAYBOOK --canary 1 --wave-size 3
// --failure-budget 1 --pause 0s --follow` with kata.toml's prereq (writes modules-load.d) and install steps.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { buildApi } from '../api/server';
import { startFleet, type Fleet } from '../sim/fleet';
import { addObsSourceCommand } from '../sim/packages';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId } from '../workflows/node';
import { searchAttributes } from '../workflows/search-attributes';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { childTimeline, configHashes, historiesOfAllRuns, nodeOf, nodeWorkflowExists, onNode, waitFor } from './rollout-helpers';

const token = 'canary-test-token-0123456789abcdef0123456789';
const reproNodes = ['node-1', 'node-2', 'node-3', 'node-4'];
const busyNodes = ['busy-1', 'busy-2'];
const laterNodes = ['late-1', 'late-2'];

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let api: FastifyInstance;
let apiUrl: string;
let work: string;

/** kata.toml's prereq (it persists modules: a file changes before anything is installed) and install steps, as a file. */
const prereqInstallToml = `
[playbook]
name = "kata-prereq-install"

[rollout]
rollback_for = "90s"

[[steps]]
id = "prereq"
kind = "prereq-check"
cpu_flags = ["vmx", "svm"]
require_kvm = true
modules = ["kvm", "vhost", "vhost_net", "vhost_vsock"]
modules_any_of = [["kvm_intel", "kvm_amd"]]
persist_modules = true

[[steps]]
id = "install"
kind = "package-install"
packages = [{ name = "kata-containers", version = "3.2.0" }]
manager = "auto"
remove_on_rollback = true
timeout = "2m"
retry = { max_attempts = 1 }
`;

/** A playbook whose restart hangs on a node with the command-hangs fault: it holds that node's lock. */
const restartToml = `
[playbook]
name = "kata-restart"

[[steps]]
id = "restart"
kind = "service-restart"
service = "containerd"
timeout = "10m"
`;

/** Runs the katafleet command as a user does, against the test's Temporal server. */
const katafleet = (...args: string[]) => runKatafleet(env.address, args, 600_000);

const inventoryFile = (name: string, nodes: string[]) => writeFleetInventory(fleet, work, name, nodes);

/** What a rollout may change on a node: containerd config, the modules-load file, the kata package. */
async function nodeState(names: string[]): Promise<Record<string, string>> {
  const hashes = await configHashes(fleet, names);
  const entries = await Promise.all(names.map(async (name) => [
    name,
    `${hashes[name]} ${await onNode(fleet, name, "cat /etc/modules-load.d/*katafleet* 2>/dev/null | sha256sum; dpkg-query -W -f='${Status}' kata-containers 2>/dev/null; true")}`,
  ] as const));
  return Object.fromEntries(entries);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-rollout-canary-'));
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: [...reproNodes, ...busyNodes, ...laterNodes].map((name) => ({ name, containerd: '1.6' as const })), dir: join(work, 'fleet') }),
  ]);
  // The install step's package comes from the OBS-style repository, added as an admin would (no node's own sources
  // offer Kata); then node-1's mirror goes down.
  await Promise.all(['node-1', 'late-2'].map((name) => onNode(fleet, name, addObsSourceCommand(fleet.mirror.port))));
  await fleet.setFault('node-1', 'package-repo-unreachable', true);
  worker = await runKatafleetWorker(env, taskQueue);
  api = await buildApi({ client: env.client, token, credentialsFile: join(fleet.dir, 'credentials.toml') });
  apiUrl = await api.listen({ host: '127.0.0.1', port: 0 });
  await writeFile(join(work, 'prereq-install.toml'), prereqInstallToml);
  await writeFile(join(work, 'restart.toml'), restartToml);
}, 240_000);

afterAll(async () => {
  await api?.close();
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('the canary halts the rollout whatever the failure budget', () => {
  it('halts when the canary is rolled back, with --failure-budget 1: exit 1, phase halted, nodes 2-4 untouched, the reason in status, API and UI', async () => {
    const before = await nodeState(reproNodes);
    const run = await katafleet('rollout', join(work, 'prereq-install.toml'), '--inventory', await inventoryFile('repro', reproNodes),
      '--canary', '1', '--wave-size', '3', '--failure-budget', '1', '--pause', '0s', '--follow', '--request-id', 'canary-repro');
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('halted');
    expect(run.stdout).toMatch(/canary did not succeed: node-1 rolled-back/);

    // node-1 changed modules-load.d, then its install failed: it was rolled back to exactly what it was.
    expect(await nodeState(reproNodes)).toEqual(before);
    for (const node of ['node-2', 'node-3', 'node-4']) expect(await nodeWorkflowExists(env.client, node)).toBe(false);
    const children = childTimeline(await historiesOfAllRuns(env.client, 'katafleet-rollout-canary-repro'));
    expect(children.map((child) => nodeOf(child.workflowId))).toEqual(['node-1']);
    // [rollout] rollback_for reaches the node's workflow: how long its rollback would keep retrying.
    const nodeHistory = await env.client.workflow.getHandle(nodeWorkflowId('node-1')).fetchHistory();
    const nodeInput = JSON.parse(Buffer.from(nodeHistory.events![0].workflowExecutionStartedEventAttributes!.input!.payloads![0].data!).toString()) as { rollbackFor?: string };
    expect(nodeInput.rollbackFor).toBe('90s');

    const status = await katafleet('status', 'canary-repro');
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/halted: 0 of 4 nodes done, 1 failed, 3 skipped — canary did not succeed: node-1 rolled-back .*a canary must succeed whatever the failure budget \(1\)/);

    const response = await fetch(`${apiUrl}/v1/rollouts/canary-repro`, { headers: { authorization: `Bearer ${token}` } });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { phase: string; reason: string; nodes: { name: string; status: string }[] };
    expect(body.phase).toBe('halted');
    expect(body.reason).toContain('canary did not succeed: node-1 rolled-back');
    expect(body.nodes.map((node) => [node.name, node.status])).toEqual([['node-1', 'rolled-back'], ['node-2', 'skipped'], ['node-3', 'skipped'], ['node-4', 'skipped']]);

    // The Temporal UI: the list shows the phase, the rollout's current details the reason.
    const handle = env.client.workflow.getHandle('katafleet-rollout-canary-repro');
    expect((await handle.describe()).typedSearchAttributes.get(searchAttributes.phase)).toBe('halted');
    const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    expect(metadata.currentDetails).toContain('canary did not succeed: node-1 rolled-back');
  }, 600_000);

  it('halts when the canary stays busy (a drift repair holds its lock): tried again, then halted, busy-2 never started', async () => {
    // A config newer than the running containerd is drift the restart step repairs; with the fault, that restart hangs.
    await onNode(fleet, 'busy-1', 'touch /etc/containerd/config.toml');
    await fleet.setFault('busy-1', 'command-hangs', true);
    const holder = katafleet('drift', 'check', join(work, 'restart.toml'), '--inventory', await inventoryFile('holder', ['busy-1']));
    try {
      await waitFor('the drift repair restarting containerd on busy-1', async () => ((await env.client.workflow.getHandle(nodeWorkflowId('busy-1')).describe().catch(() => undefined))?.raw.pendingActivities?.length ? true : undefined), 60_000);
      const before = await nodeState(['busy-2']);

      const run = await katafleet('rollout', join(work, 'prereq-install.toml'), '--inventory', await inventoryFile('busy', busyNodes),
        '--canary', '1', '--wave-size', '1', '--failure-budget', '1', '--pause', '0s', '--follow', '--request-id', 'canary-busy');
      expect(run.stderr).toBe('');
      expect(run.code).toBe(1);
      expect(run.stdout).toMatch(/canary did not succeed: busy-1 busy \(node is busy: workflow katafleet-node-busy-1 .* still after its retries\)/);
      expect(await nodeState(['busy-2'])).toEqual(before);
      expect(await nodeWorkflowExists(env.client, 'busy-2')).toBe(false);
      // busy-1 was asked for twice (its wave, then the retry at the end of the canary wave); both starts found it locked.
      const history = await env.client.workflow.getHandle('katafleet-rollout-canary-busy').fetchHistory();
      const refusedStarts = (history.events ?? []).filter((event) => event.startChildWorkflowExecutionFailedEventAttributes?.workflowId === nodeWorkflowId('busy-1'));
      expect(refusedStarts).toHaveLength(2);
    } finally {
      await fleet.setFault('busy-1', 'command-hangs', false);
      await env.client.workflow.getHandle(nodeWorkflowId('busy-1')).terminate('test over').catch(() => undefined);
      await holder;
    }
  }, 600_000);
});

describe('a busy node after the canary', () => {
  it('is tried again at the end of its wave and once more after the last wave, then counts against the budget', async () => {
    await onNode(fleet, 'late-1', 'touch /etc/containerd/config.toml');
    await fleet.setFault('late-1', 'command-hangs', true);
    const holder = katafleet('drift', 'check', join(work, 'restart.toml'), '--inventory', await inventoryFile('late-holder', ['late-1']));
    try {
      await waitFor('the drift repair restarting containerd on late-1', async () => ((await env.client.workflow.getHandle(nodeWorkflowId('late-1')).describe().catch(() => undefined))?.raw.pendingActivities?.length ? true : undefined), 60_000);
      // No canary; waves [late-1] [late-2]; budget 1: a node still busy at the end uses it up, the rollout completes.
      const run = await katafleet('rollout', join(work, 'prereq-install.toml'), '--inventory', await inventoryFile('late', laterNodes),
        '--canary', '0', '--wave-size', '1', '--failure-budget', '1', '--pause', '0s', '--follow', '--request-id', 'busy-later');
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/completed: 1 of 2 nodes done, 1 failed, 0 skipped/);
      const history = await env.client.workflow.getHandle('katafleet-rollout-busy-later').fetchHistory();
      const events = history.events ?? [];
      const refused = events.filter((event) => event.startChildWorkflowExecutionFailedEventAttributes?.workflowId === nodeWorkflowId('late-1')).map((event) => Number(event.eventId));
      // Three tries: in its wave, at the end of its wave, and after the last wave (after late-2 had run).
      expect(refused).toHaveLength(3);
      const late2Closed = Number(events.find((event) => event.childWorkflowExecutionCompletedEventAttributes?.workflowExecution?.workflowId === nodeWorkflowId('late-2'))!.eventId);
      expect(refused[1]).toBeLessThan(late2Closed);
      expect(refused[2]).toBeGreaterThan(late2Closed);
    } finally {
      await fleet.setFault('late-1', 'command-hangs', false);
      await env.client.workflow.getHandle(nodeWorkflowId('late-1')).terminate('test over').catch(() => undefined);
      await holder;
    }
  }, 600_000);
});
