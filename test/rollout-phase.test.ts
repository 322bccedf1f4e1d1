// Pause, approval, cancel and racing rollouts through the public CLI and HTTP API (issue 11, review R17,
// R18, §5): a pause while waiting between waves shows `paused` (and a second pause is refused as such),
// resume approves after the canary, a Temporal-level cancel ends with KatafleetPhase `cancelled`, and two
// rollouts started at the same moment never work on one node at once.
//
// Cost: kata.toml's containerd and restart steps (no Kubernetes), 8 nodes.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { buildApi } from '../api/server';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId } from '../workflows/node';
import { abortSignal, rolloutProgressQuery, type RolloutProgress } from '../workflows/rollout-messages';
import { searchAttributes } from '../workflows/search-attributes';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { configBackups, configHashes, waitFor } from './rollout-helpers';
import { containerdRestartSteps } from './helpers/playbook-toml';
import { runningStep } from './helpers/node-workflow';

const token = 'phase-test-token-0123456789abcdef0123456789';
const nodes = ['p-1', 'p-2', 'p-3', 'p-4', 'p-5', 'p-6', 'race-1', 'race-2', 'up-1', 'up-2', 'cr-1', 'cr-2'];

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let api: FastifyInstance;
let apiUrl: string;
let work: string;

const playbookToml = `
[playbook]
name = "kata-node-steps"
${containerdRestartSteps()}`;

/** Runs the katafleet command as a user does, against the test's Temporal server. */
const katafleet = (...args: string[]) => runKatafleet(env.address, args, 300_000);

const inventoryFile = (name: string, names: string[]) => writeFleetInventory(fleet, work, name, names);

const progressOf = (id: string) => env.client.workflow.getHandle(`katafleet-rollout-${id}`).query(rolloutProgressQuery);
// A rollout started by a CLI still starting up is not there yet: keep asking.
const phaseIs = (id: string, phase: string) => waitFor(`rollout ${id} ${phase}`, async () => ((await progressOf(id).catch(() => undefined))?.phase === phase ? true : undefined), 120_000);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-rollout-phase-'));
  [env, fleet] = await Promise.all([startTestTemporal(), startFleet({ nodes: nodes.map((name) => ({ name, containerd: '1.6' as const })), dir: join(work, 'fleet') })]);
  worker = await runKatafleetWorker(env, taskQueue);
  api = await buildApi({ client: env.client, token, credentialsFile: join(fleet.dir, 'credentials.toml') });
  apiUrl = await api.listen({ host: '127.0.0.1', port: 0 });
  await writeFile(join(work, 'playbook.toml'), playbookToml);
}, 180_000);

afterAll(async () => {
  await api?.close();
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('pause between waves, approval, cancel', () => {
  it('shows paused when paused while waiting between waves, refuses a second pause as paused, and goes on after resume', async () => {
    const started = await katafleet('rollout', join(work, 'playbook.toml'), '--inventory', await inventoryFile('pause', ['p-1', 'p-2']), '--canary', '1', '--wave-size', '1', '--pause', '30s', '--request-id', 'pause-between');
    expect(started.code).toBe(0);
    await phaseIs('pause-between', 'waiting-between-waves');
    expect(await katafleet('pause', 'pause-between')).toMatchObject({ code: 0, stdout: 'rollout pause-between: paused\n', stderr: '' });
    // Past the 30 s wait: still paused, and p-2 not started. (30 s, not less: under a load of 40 on 2 cores, starting
    // the CLI for `pause` took longer than a 10 s wait, which then ended before the pause arrived.)
    await new Promise((resolve) => setTimeout(resolve, 32_000));
    const status = await katafleet('status', 'pause-between');
    expect(status.stdout).toMatch(/^rollout pause-between \(kata-node-steps\): paused/);
    expect((await progressOf('pause-between')).nodes.map((node) => node.status)).toEqual(['succeeded', 'pending']);
    const again = await katafleet('pause', 'pause-between');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('cannot pause: the rollout is paused');

    expect(await katafleet('resume', 'pause-between')).toMatchObject({ code: 0, stdout: 'rollout pause-between: running\n' });
    const result: RolloutProgress = await env.client.workflow.getHandle('katafleet-rollout-pause-between').result();
    expect(result.phase).toBe('succeeded');
  }, 300_000);

  it('waits for approval after the canary; resume approves the next waves', async () => {
    await writeFile(join(work, 'approval-playbook.toml'), playbookToml.replace('[[steps]]', '[rollout]\napproval_after_canary = true\n\n[[steps]]'));
    const run = katafleet('rollout', join(work, 'approval-playbook.toml'), '--inventory', await inventoryFile('approval', ['p-3', 'p-4']), '--canary', '1', '--wave-size', '1', '--pause', '0s', '--request-id', 'approval', '--follow');
    let waiting = true;
    const endedEarly = run.then((result) => (waiting ? new Error(`katafleet rollout ended before the approval: exit ${result.code} ${result.stderr}`) : undefined));
    const early = await Promise.race([phaseIs('approval', 'awaiting-approval').then(() => undefined), endedEarly]);
    waiting = false;
    if (early) throw early;
    expect((await progressOf('approval')).nodes.map((node) => node.status)).toEqual(['succeeded', 'pending']);
    expect(await katafleet('resume', 'approval')).toMatchObject({ code: 0, stdout: 'rollout approval: running\n' });
    const followed = await run;
    expect(followed.code).toBe(0);
    expect(followed.stdout).toContain('succeeded: 2 of 2 nodes done');
  }, 300_000);

  it('ends with KatafleetPhase cancelled, not running, when the rollout is cancelled through Temporal', async () => {
    const before = await configHashes(fleet, ['p-5', 'p-6']);
    expect((await katafleet('rollout', join(work, 'playbook.toml'), '--inventory', await inventoryFile('cancel', ['p-5', 'p-6']), '--canary', '1', '--wave-size', '1', '--pause', '5m', '--request-id', 'cancelled')).code).toBe(0);
    await phaseIs('cancelled', 'waiting-between-waves');
    const handle = env.client.workflow.getHandle('katafleet-rollout-cancelled');
    await handle.cancel();
    await expect(handle.result()).rejects.toThrow();
    const description = await handle.describe();
    expect(description.status.name).toBe('CANCELLED');
    expect(description.typedSearchAttributes.get(searchAttributes.phase)).toBe('cancelled');
    const progress = await handle.query(rolloutProgressQuery);
    expect(progress.phase).toBe('cancelled');
    expect(progress.nodes.map((node) => [node.name, node.status])).toEqual([['p-5', 'succeeded'], ['p-6', 'skipped']]);
    expect(await configHashes(fleet, ['p-6'])).toEqual({ 'p-6': before['p-6'] });
  }, 300_000);
});

describe('abort', () => {
  /** The latest nodeWorkflow of a node is running an activity (a step or an undo). */
  const nodeActivityPending = (node: string) => waitFor(`an activity of ${nodeWorkflowId(node)}`, async () =>
    ((await env.client.workflow.getHandle(nodeWorkflowId(node)).describe().catch(() => undefined))?.raw.pendingActivities?.length ? true : undefined), 120_000);

  it('upgrades an abort without rollback to one with rollback (by the abort signal) while a node still runs', async () => {
    const before = await configHashes(fleet, ['up-1', 'up-2']);
    await fleet.setFault('up-1', 'command-hangs', true);
    try {
      expect((await katafleet('rollout', join(work, 'playbook.toml'), '--inventory', await inventoryFile('upgrade', ['up-1', 'up-2']), '--canary', '1', '--wave-size', '1', '--pause', '0s', '--request-id', 'upgrade')).code).toBe(0);
      await waitFor('up-1 restarting', async () => ((await runningStep(env.client.workflow.getHandle(nodeWorkflowId('up-1'))))?.activityType === 'serviceRestart' ? true : undefined), 120_000);
      expect(await katafleet('abort', 'upgrade')).toMatchObject({ code: 0, stdout: 'rollout upgrade: aborting\n' });
      const plain = await katafleet('abort', 'upgrade');
      expect(plain.stderr).toContain('cannot abort: the rollout is already aborting (only abort --rollback can still be added)');
      // The upgrade through the abort signal: the fallback for clients that cannot wait for an update's answer.
      await env.client.workflow.getHandle('katafleet-rollout-upgrade').signal(abortSignal, { rollback: true });
    } finally {
      await fleet.setFault('up-1', 'command-hangs', false);
    }
    const result: RolloutProgress = await env.client.workflow.getHandle('katafleet-rollout-upgrade').result();
    expect(result.phase).toBe('aborted');
    expect(result.nodes.map((node) => [node.name, node.status])).toEqual([['up-1', 'rolled-back'], ['up-2', 'skipped']]);
    expect(await configHashes(fleet, ['up-1', 'up-2'])).toEqual(before);
  }, 300_000);

  it('lets an undo finish when the aborting rollout is cancelled through Temporal', async () => {
    const before = await configHashes(fleet, ['cr-1']);
    expect((await katafleet('rollout', join(work, 'playbook.toml'), '--inventory', await inventoryFile('cancel-rollback', ['cr-1', 'cr-2']), '--canary', '1', '--wave-size', '1', '--pause', '5m', '--request-id', 'cancel-rollback')).code).toBe(0);
    await phaseIs('cancel-rollback', 'waiting-between-waves');
    // The undo's containerd restart hangs until the fault is off: the cancel arrives in the middle of it.
    await fleet.setFault('cr-1', 'command-hangs', true);
    const applyRun = (await env.client.workflow.getHandle(nodeWorkflowId('cr-1')).describe()).runId;
    try {
      expect((await katafleet('abort', 'cancel-rollback', '--rollback')).code).toBe(0);
      await waitFor('the undo run of cr-1', async () => ((await env.client.workflow.getHandle(nodeWorkflowId('cr-1')).describe()).runId !== applyRun ? true : undefined), 60_000);
      await nodeActivityPending('cr-1');
      await env.client.workflow.getHandle('katafleet-rollout-cancel-rollback').cancel();
      await new Promise((resolve) => setTimeout(resolve, 2_000));
    } finally {
      await fleet.setFault('cr-1', 'command-hangs', false);
    }
    const undo = env.client.workflow.getHandle(nodeWorkflowId('cr-1'));
    expect((await undo.result()).phase).toBe('rolled-back');
    expect(await configHashes(fleet, ['cr-1'])).toEqual(before);
    const rollout = env.client.workflow.getHandle('katafleet-rollout-cancel-rollback');
    await rollout.result().catch(() => undefined);
    expect((await rollout.query(rolloutProgressQuery)).nodes[0]).toMatchObject({ name: 'cr-1', status: 'rolled-back' });
  }, 300_000);
});

describe('two rollouts racing for the same nodes', () => {
  it('never works on one node from both at once: each node changed once, its nodeWorkflow runs one after another', async () => {
    const inventory = await readFile(await inventoryFile('race', ['race-1', 'race-2']), 'utf8');
    const post = (requestId: string) =>
      fetch(`${apiUrl}/v1/rollouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ playbook_toml: playbookToml, inventory_toml: inventory, request_id: requestId, options: { canary: 0, wave_size: 2, failure_budget: 1, pause_between_waves: '0s' } }),
      });
    const responses = await Promise.all([post('race-a'), post('race-b')]);
    const statuses = responses.map((response) => response.status).sort();
    // Either the busy check saw the other rollout (409), or both started and the node locks decided.
    expect([[202, 202], [202, 409]]).toContainEqual(statuses);
    const startedIds = (['race-a', 'race-b'] as const).filter((_, index) => responses[index].status === 202);
    for (const id of startedIds) await env.client.workflow.getHandle(`katafleet-rollout-${id}`).result().catch(() => undefined);

    for (const node of ['race-1', 'race-2']) {
      // Each node changed exactly once: one backup, one kata runtime.
      expect(await configBackups(fleet, node)).toHaveLength(1);
      // The node's nodeWorkflow runs, from their histories: none started before the previous one closed.
      const runs: { start: number; close: number }[] = [];
      for await (const execution of env.client.workflow.list({ query: `WorkflowId = '${nodeWorkflowId(node)}'` })) {
        runs.push({ start: execution.startTime.getTime(), close: execution.closeTime?.getTime() ?? Infinity });
      }
      runs.sort((a, b) => a.start - b.start);
      expect(runs.length).toBeGreaterThanOrEqual(1);
      for (let index = 1; index < runs.length; index++) expect(runs[index].start).toBeGreaterThanOrEqual(runs[index - 1].close);
    }
    // Every started rollout reports each node as worked on (succeeded) or, when it lost the race, busy and tried again.
    for (const id of startedIds) {
      const progress = await progressOf(id);
      for (const node of progress.nodes) expect(['succeeded', 'skipped']).toContain(node.status);
    }
  }, 300_000);
});
