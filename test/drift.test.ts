// Drift repair against the simulated fleet: a real control plane, three workers (kube-3 runs
// containerd 2.x), a real Temporal dev server and a worker with katafleet's real activities.
// The tests build on each other: kube-1 and kube-2 get Kata first, then the fleet drifts.
import { spawnSync } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { SshPool } from '../activities/ssh';
import { startDriftRun } from '../api/drift-service';
import { buildDriftInput } from '../api/schedule-service';
import { buildApi } from '../api/server';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import type { Inventory, Playbook } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';
import { temporalCliPath } from '../worker/temporal-cli';
import { taskQueue } from '../worker/connection';
import { workerActivities } from '../worker/worker';
import type { DriftNodeResult, DriftReport } from '../workflows/drift';
import { nodeWorkflow, nodeWorkflowId } from '../workflows/node';
import { runningStep } from './helpers/node-workflow';
import { runKatafleet } from './helpers/cli';
import { createTestWorker, startTestTemporal } from './helpers/temporal';
import { eventually } from './kube-helpers';

let fleet: Fleet;
let env: TestWorkflowEnvironment;
let pool: SshPool;
let worker: Worker;
let workerRunning: Promise<void>;
let playbook: Playbook;
let inventory: Inventory;
/** Each node's containerd config as the machine image had it, before katafleet touched it. */
const originalConfigs: Record<string, string> = {};
const timings: Record<string, number> = {};

const node = (name: string) => fleet.nodes.find((n) => n.name === name)!;
const onNode = async (name: string, command: string, input?: string) => {
  const result = await sshRun(fleet, node(name), command, { input });
  if (result.exitCode !== 0) throw new Error(`${command} on ${name} exited with ${result.exitCode}: ${result.stderr}${result.stdout}`);
  return result.stdout;
};
const kubectlCommand = () => {
  const { kubectl: binary, kubeconfig } = buildDriftInput(playbook, inventory, true).kubernetes!;
  return `${binary} --kubeconfig ${kubeconfig}`;
};
const kubectl = (args: string) => onNode('control-plane', `${kubectlCommand()} ${args}`);

let runs = 0;
/** One driftWorkflow over `nodes`, as `katafleet drift check` starts it (the inventory in pieces); returns the report and its duration. */
async function drift(nodes: string[], reportOnly = false): Promise<{ report: DriftReport; byNode: Record<string, DriftNodeResult>; ms: number }> {
  const input = buildDriftInput(playbook, inventory, reportOnly);
  input.nodes = input.nodes.filter((target) => nodes.includes(target.name));
  const started = Date.now();
  const report = await (await startDriftRun(env.client, input, { workflowId: `drift-test-${++runs}` })).result();
  return { report, byNode: Object.fromEntries(report.nodes.map((result) => [result.node, result])), ms: Date.now() - started };
}

/** What a write on the node would change: config bytes' mtime, containerd's PID, the package database, /etc/containerd's files. */
async function nodeSnapshot(name: string): Promise<string> {
  return onNode(name, 'stat -c %y /etc/containerd/config.toml; systemctl show -p MainPID --value containerd; stat -c %y /var/lib/dpkg/status; ls -A /etc/containerd');
}
async function clusterSnapshot(): Promise<string> {
  return kubectl("get runtimeclass -o jsonpath='{range .items[*]}{.metadata.name}/{.metadata.resourceVersion} {end}'; " +
    `${kubectlCommand()} get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.labels.katacontainers\\.io/kata-runtime} {end}'`);
}

/** True when no nodeWorkflow ever ran for the node (the per-node lock was never taken). */
async function neverRolledOut(name: string): Promise<boolean> {
  return env.client.workflow.getHandle(nodeWorkflowId(name)).describe().then(() => false, (err: Error) => err.name === 'WorkflowNotFoundError');
}

beforeAll(async () => {
  let started = Date.now();
  [fleet, env] = await Promise.all([
    startFleet({
      nodes: [{ name: 'kube-1' }, { name: 'kube-2' }, { name: 'kube-3' }],
      kubernetes: true,
      dir: join(await mkdtemp(join(tmpdir(), 'kf-drift-')), 'fleet'),
    }),
    startTestTemporal(),
  ]);
  timings.fleetAndTemporalStartMs = Date.now() - started;
  started = Date.now();
  [playbook, inventory] = await Promise.all([loadPlaybook('kata'), loadInventory(fleet.inventoryPath)]);
  pool = new SshPool();
  worker = await createTestWorker(env, taskQueue, workerActivities(pool));
  workerRunning = worker.run();
  for (const name of ['kube-1', 'kube-2', 'kube-3']) originalConfigs[name] = await onNode(name, 'cat /etc/containerd/config.toml');
  timings.workerStartMs = Date.now() - started;
}, 300_000);

afterAll(async () => {
  if (worker) {
    worker.shutdown();
    await workerRunning;
  }
  await pool?.closeAll();
  await env?.teardown();
  await fleet?.stop();
  console.log(`drift test timings (ms): ${JSON.stringify(timings)}`);
}, 120_000);

const freshNodeDrift = [
  // kata.toml's install step: Kata's release tarball (release-tarball).
  'Kata 3.32.0 is not installed at /opt/kata-releases/3.32.0/opt/kata',
  '/opt/kata is missing, not a link to /opt/kata-releases/3.32.0/opt/kata',
  '/usr/local/bin/kata-runtime is missing, not a link to /opt/kata/bin/kata-runtime',
  '/usr/local/bin/containerd-shim-kata-v2 is missing, not a link to /opt/kata/bin/containerd-shim-kata-v2',
  'containerd config lacks runtime "kata"',
  'running containerd does not list handler "kata"',
  'node label katacontainers.io/kata-runtime=true is missing',
];

describe('drift repair of the kata playbook', () => {
  it('finds nodes without Kata, names everything they lack, and repairs them through nodeWorkflow', async () => {
    const { report, byNode, ms } = await drift(['kube-1', 'kube-2']);
    timings.firstRepairOfTwoFreshNodesMs = ms;
    expect(report.phase).toBe('done');
    for (const name of ['kube-1', 'kube-2']) {
      expect(byNode[name].outcome).toBe('repaired');
      expect(byNode[name].drifted).toEqual(expect.arrayContaining([...freshNodeDrift, 'RuntimeClass kata is missing']));
    }
    expect(await onNode('kube-1', 'readlink /opt/kata')).toBe('/opt/kata-releases/3.32.0/opt/kata\n');
    expect(await kubectl('get runtimeclass kata -o jsonpath={.handler}')).toBe('kata');
  }, 300_000);

  it('finds an in-sync fleet in sync and writes nothing: no config rewrite, no restart, no package or cluster change', async () => {
    const before = await Promise.all([nodeSnapshot('kube-1'), nodeSnapshot('kube-2'), clusterSnapshot()]);
    const { report, ms } = await drift(['kube-1', 'kube-2']);
    timings.inSyncCheckOfTwoNodesMs = ms;
    expect(report.nodes).toEqual([
      { node: 'kube-1', outcome: 'in-sync', drifted: [] },
      { node: 'kube-2', outcome: 'in-sync', drifted: [] },
    ]);
    expect(await Promise.all([nodeSnapshot('kube-1'), nodeSnapshot('kube-2'), clusterSnapshot()])).toEqual(before);
  }, 120_000);

  it('holds the inverse state for remove/delete steps: the kata-uninstall playbook finds everything Kata left (report only)', async () => {
    const uninstall = await loadPlaybook('kata-uninstall');
    const input = buildDriftInput(uninstall, inventory, true);
    input.nodes = input.nodes.filter((target) => target.name === 'kube-1');
    const report = await (await startDriftRun(env.client, input, { workflowId: `drift-test-${++runs}` })).result();
    expect(report.nodes).toEqual([{
      node: 'kube-1',
      outcome: 'drifted',
      drifted: [
        'node label katacontainers.io/kata-runtime is set; the playbook removes it',
        'containerd config /etc/containerd/config.toml still has runtime "kata"',
        'running containerd still lists handler "kata"',
        '/opt/kata is still a link to /opt/kata-releases/3.32.0/opt/kata; the playbook removes Kata',
        '/opt/kata-releases/ still exists; the playbook removes Kata',
        '/usr/local/bin/kata-runtime is still a link to /opt/kata/bin/kata-runtime; the playbook removes Kata',
        '/usr/local/bin/containerd-shim-kata-v2 is still a link to /opt/kata/bin/containerd-shim-kata-v2; the playbook removes Kata',
        'RuntimeClass kata exists; the playbook deletes it',
      ],
    }]);
  }, 60_000);

  describe('after the fleet drifted', () => {
    beforeAll(async () => {
      // Config management writes its template back (the config without kata) and leaves containerd running.
      await onNode('kube-1', 'cat > /etc/containerd/config.toml', originalConfigs['kube-1']);
      // Someone removes the /opt/kata link by hand (the versioned tree stays).
      await onNode('kube-2', 'rm /opt/kata');
      // Someone deletes the RuntimeClass. kube-3 joined the cluster without Kata.
      await kubectl('delete runtimeclass kata');
    }, 120_000);

    it('--report-only names each drift and changes nothing', async () => {
      const before = await Promise.all([nodeSnapshot('kube-1'), nodeSnapshot('kube-2'), nodeSnapshot('kube-3'), clusterSnapshot()]);
      const { report, byNode, ms } = await drift(['kube-1', 'kube-2', 'kube-3'], true);
      timings.reportOnlyOfThreeDriftedNodesMs = ms;
      expect(report.reportOnly).toBe(true);
      expect(byNode['kube-1']).toEqual({
        node: 'kube-1',
        outcome: 'drifted',
        drifted: ['containerd config lacks runtime "kata"', 'running containerd is older than its config (not restarted since /etc/containerd changed)', 'RuntimeClass kata is missing'],
      });
      expect(byNode['kube-2']).toEqual({ node: 'kube-2', outcome: 'drifted', drifted: ['/opt/kata is missing, not a link to /opt/kata-releases/3.32.0/opt/kata', 'RuntimeClass kata is missing'] });
      expect(byNode['kube-3']).toEqual({ node: 'kube-3', outcome: 'drifted', drifted: [...freshNodeDrift, 'RuntimeClass kata is missing'] });
      expect(await Promise.all([nodeSnapshot('kube-1'), nodeSnapshot('kube-2'), nodeSnapshot('kube-3'), clusterSnapshot()])).toEqual(before);
      expect(await neverRolledOut('kube-3')).toBe(true);
    }, 120_000);

    it('shows the result in the workflow\'s search attributes as outcomes and counts, bounded whatever the fleet size', async () => {
      const description = await env.client.workflow.getHandle(`drift-test-${runs}`).describe();
      expect(description.searchAttributes.KatafleetDrift).toEqual(['drifted', 'drifted=3']);
      expect(description.searchAttributes).toMatchObject({ KatafleetNodesTotal: [3], KatafleetNodesDone: [0], KatafleetNodesFailed: [0] });
    });

    it('repairs every drift kind, and the next run finds the fleet in sync', async () => {
      const repair = await drift(['kube-1', 'kube-2', 'kube-3']);
      timings.repairOfThreeDriftedNodesMs = repair.ms;
      expect(repair.report.nodes.map((result) => `${result.outcome}:${result.node}`)).toEqual(['repaired:kube-1', 'repaired:kube-2', 'repaired:kube-3']);
      const description = await env.client.workflow.getHandle(`drift-test-${runs}`).describe();
      expect(description.searchAttributes.KatafleetDrift).toEqual(['repaired', 'repaired=3']);
      expect(description.searchAttributes).toMatchObject({ KatafleetNodesTotal: [3], KatafleetNodesDone: [3] });

      expect(await onNode('kube-1', 'grep -c runtimes.kata] /etc/containerd/config.toml')).toBe('1\n');
      expect(await onNode('kube-2', 'readlink /opt/kata')).toBe('/opt/kata-releases/3.32.0/opt/kata\n');
      expect(await kubectl("get node kube-3 -o jsonpath='{.metadata.labels.katacontainers\\.io/kata-runtime}'")).toBe('true');

      const again = await drift(['kube-1', 'kube-2', 'kube-3'], true);
      timings.inSyncCheckOfThreeNodesMs = again.ms;
      expect(again.report.nodes.map((result) => `${result.outcome}:${result.node}`)).toEqual(['in-sync:kube-1', 'in-sync:kube-2', 'in-sync:kube-3']);
    }, 300_000);
  });

  it('skips a node that a rollout is working on and says so, and the rollout finishes undisturbed', async () => {
    // A rollout of kube-1 that hangs in its containerd restart (the config changed, so it must restart).
    await onNode('kube-1', 'touch /etc/containerd/config.toml');
    await fleet.setFault('kube-1', 'command-hangs', true);
    const [target] = buildDriftInput(playbook, inventory, false).nodes.filter((n) => n.name === 'kube-1');
    const rollout = await env.client.workflow.start(nodeWorkflow, {
      taskQueue,
      workflowId: nodeWorkflowId('kube-1'),
      args: [{ rolloutId: 'rollout-during-drift', node: target, kubernetes: buildDriftInput(playbook, inventory, false).kubernetes, steps: playbook.steps, drain: false }],
    });
    try {
      await eventually('the rollout to reach the restart', async () => ((await runningStep(rollout))?.stepId === 'restart' ? true : undefined), 60_000);
      const { byNode, ms } = await drift(['kube-1', 'kube-2']);
      timings.driftDuringRolloutMs = ms;
      // The drift run tried to take the node's lock and was refused: it never ran a step on kube-1.
      const history = await env.client.workflow.getHandle(`drift-test-${runs}`).fetchHistory();
      expect(history.events?.filter((event) => event.startChildWorkflowExecutionFailedEventAttributes).map((event) => event.startChildWorkflowExecutionFailedEventAttributes!.workflowId))
        .toEqual([nodeWorkflowId('kube-1')]);
      expect(byNode['kube-1']).toMatchObject({
        outcome: 'busy',
        detail: 'skipped this round: katafleet-node-kube-1 is running (a rollout or another repair holds the node)',
      });
      expect(byNode['kube-1'].drifted.length).toBeGreaterThan(0);
      expect(byNode['kube-2']).toEqual({ node: 'kube-2', outcome: 'in-sync', drifted: [] });
    } finally {
      await fleet.setFault('kube-1', 'command-hangs', false);
    }
    const result = await rollout.result();
    expect(result.phase).toBe('succeeded');
    expect(result.rolloutId).toBe('rollout-during-drift');
    expect(result.steps.find((step) => step.id === 'restart')?.status).toBe('changed');
  }, 240_000);

  it('reports a node whose sshd is down as unreachable, with the reason, and still checks the others', async () => {
    await fleet.setFault('kube-3', 'sshd-down', true);
    // Stopping sshd leaves established connections alive; the worker's next connection is refused.
    await pool.close('kube-3');
    try {
      const { byNode, ms } = await drift(['kube-1', 'kube-2', 'kube-3'], true);
      timings.checkWithOneUnreachableNodeMs = ms;
      expect(byNode['kube-3']).toEqual({
        node: 'kube-3',
        outcome: 'unreachable',
        drifted: [],
        detail: `Cannot connect to node kube-3 (${node('kube-3').address}:22): connection refused — is sshd running?`,
      });
      expect([byNode['kube-1'].outcome, byNode['kube-2'].outcome]).toEqual(['in-sync', 'in-sync']);
    } finally {
      await fleet.setFault('kube-3', 'sshd-down', false);
    }
  }, 120_000);
});

describe('drift schedules', () => {
  const token = 'drift-test-token-0123456789abcdef012345';
  let api: FastifyInstance;
  let baseUrl: string;

  beforeAll(async () => {
    api = await buildApi({ client: env.client, token, inventoriesDir: dirname(fleet.inventoryPath), credentialsFile: join(dirname(fleet.inventoryPath), 'credentials.toml') });
    baseUrl = await api.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await api?.close();
  });

  /**
   * `katafleet ARGS` as a user runs it, against the test's Temporal server. Asynchronous: the worker
   * runs in this process and must go on polling while the command waits for a workflow.
   */
  const katafleet = (...args: string[]) => runKatafleet(env.address, args, 60_000);
  const temporalScheduleList = () => {
    const result = spawnSync(temporalCliPath(), ['schedule', 'list', '--address', env.address], { encoding: 'utf8', timeout: 30_000 });
    expect(result.status).toBe(0);
    return result.stdout;
  };
  const callApi = async (method: 'POST' | 'GET' | 'DELETE', url: string, body?: unknown) => {
    const response = await fetch(`${baseUrl}${url}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, json: text ? JSON.parse(text) : undefined };
  };

  /**
   * Waits for two runs of the schedule: each taken at or after its tick, on the
   * 2 s grid (a tick is skipped while the previous run still works: overlap policy skip), and
   * reported the fleet in sync.
   */
  async function expectRunsOnTime(scheduleId: string): Promise<void> {
    const handle = env.client.schedule.getHandle(scheduleId);
    const info = await eventually(`two runs of ${scheduleId}`, async () => {
      const description = await handle.describe();
      return description.info.recentActions.length >= 2 ? description.info : undefined;
    }, 20_000);
    const actions = info.recentActions;
    // On time means on the schedule's own 2 s grid, each run taken at or after its tick. How late after the tick
    // is machine load, not behaviour: it is printed with the timings, never asserted.
    const name = scheduleId.replace(/-[0-9a-f]{8}$/, '');
    const lateMs = actions.map((action) => action.takenAt.getTime() - action.scheduledAt.getTime());
    for (const late of lateMs) expect(late).toBeGreaterThanOrEqual(0);
    timings[`${name}TakenAfterTickMaxMs`] = Math.max(...lateMs);
    const gap = actions[1].scheduledAt.getTime() - actions[0].scheduledAt.getTime();
    expect(gap % 2_000).toBe(0);
    if (gap > 2_000) expect(info.numActionsSkippedOverlap).toBeGreaterThan(0);
    timings[`${name}GapBetweenRunsMs`] = gap;
    const report = (await env.client.workflow.getHandle(actions[0].action.workflow.workflowId).result()) as DriftReport;
    expect(report.nodes.map((result) => `${result.outcome}:${result.node}`)).toEqual(['in-sync:kube-1', 'in-sync:kube-2', 'in-sync:kube-3']);
  }

  it('runs a schedule created through the CLI and one created through the API on time; both show in `temporal schedule list` until deleted', async () => {
    const started = Date.now();
    const created = await katafleet('drift', 'schedule', 'kata', '--inventory', fleet.inventoryPath, '--every', '2s', '--report-only');
    expect(created.stderr).toBe('');
    const cliId = /^created schedule (\S+): drift report every 2s$/m.exec(created.stdout)?.[1];
    expect(cliId).toMatch(/^katafleet-drift-kata-/);

    const viaApi = await callApi('POST', '/v1/schedules', { playbook: 'kata', inventory: 'inventory', every: '2s', report_only: true, schedule_id: 'api-test' });
    expect(viaApi).toEqual({ status: 201, json: { schedule_id: 'katafleet-drift-api-test' } });

    await Promise.all([expectRunsOnTime(cliId!), expectRunsOnTime('katafleet-drift-api-test')]);
    timings.twoSchedulesTwoRunsEachMs = Date.now() - started;

    const check = await katafleet('drift', 'check', 'kata', '--inventory', fleet.inventoryPath, '--report-only');
    expect(check.code).toBe(0);
    expect(check.stdout.split('\n').slice(1)).toEqual(['node    outcome       what', 'kube-1  in-sync', 'kube-2  in-sync', 'kube-3  in-sync', '']);

    const listed = temporalScheduleList();
    expect(listed).toContain(cliId);
    expect(listed).toContain('katafleet-drift-api-test');
    expect((await katafleet('drift', 'schedules')).stdout).toMatch(new RegExp(`^${cliId} {2}every 2s {2}kata \\(report only\\) {2}next \\S+ {2}\\d+ recent runs$`, 'm'));
    const apiList = await callApi('GET', '/v1/schedules');
    expect(apiList.json.schedules.map((s: { scheduleId: string }) => s.scheduleId).sort()).toEqual([cliId, 'katafleet-drift-api-test'].sort());

    const removed = await katafleet('drift', 'unschedule', cliId!);
    expect(removed.stdout).toBe(`deleted schedule ${cliId}\n`);
    expect(await callApi('DELETE', '/v1/schedules/katafleet-drift-api-test')).toEqual({ status: 204, json: undefined });
    const after = temporalScheduleList();
    expect(after).not.toContain(cliId);
    expect(after).not.toContain('katafleet-drift-api-test');
  }, 120_000);
});
