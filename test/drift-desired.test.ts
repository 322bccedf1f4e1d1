// Drift follows the node's desired state (issue 11, review R4), through the public CLI: a rollout records
// on each node what it applied (/var/lib/katafleet/desired.json); `katafleet drift check` repairs a node only
// back to that playbook and version. A drift run of another playbook, a node an abort rolled back, and a
// quarantined node are reported and left alone.
//
// Cost: a containerd-patch + restart playbook (no Kubernetes), 6 nodes.
import type { temporal } from '@temporalio/proto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { compareVersions, packageDowngrades } from '../activities/drift-check';
import { parseDesiredState } from '../activities/desired-state';
import type { PackageInstallStep } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { toResultFollowingDesiredState } from '../workflows/drift';
import { nodeWorkflowId } from '../workflows/node';
import { rolloutProgressQuery } from '../workflows/rollout-messages';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { containerdRestartPlaybook } from './helpers/playbook-toml';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { configHashes, onNode, waitFor } from './rollout-helpers';

const nodes = ['d-1', 'd-2', 'd-3', 'd-4', 'd-5', 'd-6'];

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let work: string;


/** Runs the katafleet command as a user does, against the test's Temporal server. */
const katafleet = (...args: string[]) => runKatafleet(env.address, args, 300_000);

const inventoryFile = (name: string, names: string[]) => writeFleetInventory(fleet, work, name, names);

/** The table row of a node in `katafleet drift check`'s output. */
const rowOf = (stdout: string, node: string) => stdout.split('\n').find((line) => line.startsWith(`${node} `)) ?? '';

/** The run id of the node's latest nodeWorkflow: a repair would start a new one. */
async function nodeRuns(node: string): Promise<string> {
  return (await env.client.workflow.getHandle(nodeWorkflowId(node)).describe()).runId;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-drift-desired-'));
  [env, fleet] = await Promise.all([startTestTemporal(), startFleet({ nodes: nodes.map((name) => ({ name, containerd: '1.6' as const })), dir: join(work, 'fleet') })]);
  worker = await runKatafleetWorker(env, taskQueue);
  await writeFile(join(work, 'kata-a.toml'), containerdRestartPlaybook('kata-a', '"io.katacontainers.*"'));
  await writeFile(join(work, 'kata-b.toml'), containerdRestartPlaybook('kata-b', ''));
}, 180_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('drift repair follows the desired state the node recorded', () => {
  it('records the playbook on each node a rollout succeeded on, and repairs a drifted node back to it', async () => {
    const rollout = await katafleet('rollout', join(work, 'kata-a.toml'), '--inventory', await inventoryFile('a', ['d-1', 'd-2', 'd-4']), '--follow', '--request-id', 'desired-a');
    expect(rollout.code).toBe(0);
    for (const node of ['d-1', 'd-2', 'd-4']) {
      const desired = parseDesiredState(await onNode(fleet, node, 'cat /var/lib/katafleet/desired.json'), node);
      expect(desired).toMatchObject({ playbook: { name: 'kata-a', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) }, rolloutId: 'desired-a', state: 'applied' });
    }
    // Config management rewrites d-1's config: drift of the same playbook repairs it.
    await onNode(fleet, 'd-1', 'containerd config default > /etc/containerd/config.toml');
    const check = await katafleet('drift', 'check', join(work, 'kata-a.toml'), '--inventory', await inventoryFile('d1', ['d-1']));
    expect(check.code).toBe(0);
    expect(rowOf(check.stdout, 'd-1')).toMatch(/^d-1\s+repaired\s+containerd config lacks runtime "kata"/);
    expect(await onNode(fleet, 'd-1', 'grep -c "runtimes.kata\\]" /etc/containerd/config.toml')).toBe('1\n');
  }, 300_000);

  it('reports a conflict and repairs nothing when the drift run holds another playbook than the node recorded', async () => {
    await onNode(fleet, 'd-2', 'containerd config default > /etc/containerd/config.toml');
    const before = await configHashes(fleet, ['d-2']);
    const runs = await nodeRuns('d-2');
    const check = await katafleet('drift', 'check', join(work, 'kata-b.toml'), '--inventory', await inventoryFile('d2', ['d-2']));
    expect(check.code).toBe(1);
    expect(rowOf(check.stdout, 'd-2')).toMatch(/^d-2\s+conflict\s+.*not repaired: the node's last successful rollout desired-a applied playbook kata-a \(sha256 [0-9a-f]{12}\), this drift run holds kata-b/);
    expect(await configHashes(fleet, ['d-2'])).toEqual(before);
    expect(await nodeRuns('d-2')).toBe(runs);
  }, 300_000);

  it('does not re-apply a playbook to a node an abort rolled back', async () => {
    const inventory = await inventoryFile('abort', ['d-3', 'd-5']);
    const before = await configHashes(fleet, ['d-3']);
    const started = await katafleet('rollout', join(work, 'kata-a.toml'), '--inventory', inventory, '--pause', '5m', '--request-id', 'desired-abort');
    expect(started.code).toBe(0);
    const handle = env.client.workflow.getHandle('katafleet-rollout-desired-abort');
    await waitFor('the canary done', async () => ((await handle.query(rolloutProgressQuery)).phase === 'waiting-between-waves' ? true : undefined), 120_000);
    expect((await katafleet('abort', 'desired-abort', '--rollback')).code).toBe(0);
    await handle.result();
    expect(await configHashes(fleet, ['d-3'])).toEqual(before);
    expect(JSON.parse(await onNode(fleet, 'd-3', 'cat /var/lib/katafleet/desired.json'))).toMatchObject({ rolloutId: 'desired-abort', state: 'rolled-back' });

    const runs = await nodeRuns('d-3');
    const check = await katafleet('drift', 'check', join(work, 'kata-a.toml'), '--inventory', await inventoryFile('d3', ['d-3']));
    expect(check.code).toBe(1);
    expect(rowOf(check.stdout, 'd-3')).toMatch(/^d-3\s+conflict\s+.*not repaired: the abort of rollout desired-abort rolled this node back on purpose/);
    expect(await configHashes(fleet, ['d-3'])).toEqual(before);
    expect(await nodeRuns('d-3')).toBe(runs);
  }, 300_000);

  it('skips a quarantined node: needs-attention with the reason and the fix, nothing changed', async () => {
    await onNode(fleet, 'd-4', 'containerd config default > /etc/containerd/config.toml');
    const marker = { rolloutId: 'r-9', runId: 'x', reason: 'rollback of containerd failed', fix: 'katafleet node release d-4 --inventory FILE', since: '2026-11-30T00:00:00Z' };
    await onNode(fleet, 'd-4', `mkdir -p /var/lib/katafleet && echo '${JSON.stringify(marker)}' > /var/lib/katafleet/quarantine.json`);
    const before = await configHashes(fleet, ['d-4']);
    const runs = await nodeRuns('d-4');
    try {
      const check = await katafleet('drift', 'check', join(work, 'kata-a.toml'), '--inventory', await inventoryFile('d4', ['d-4']));
      expect(check.code).toBe(1);
      expect(rowOf(check.stdout, 'd-4')).toMatch(/^d-4\s+needs-attention\s+.*quarantined since 2026-11-30T00:00:00Z by rollout r-9: rollback of containerd failed; fix: katafleet node release d-4 --inventory FILE/);
      expect(await configHashes(fleet, ['d-4'])).toEqual(before);
      expect(await nodeRuns('d-4')).toBe(runs);
    } finally {
      await onNode(fleet, 'd-4', 'rm -f /var/lib/katafleet/quarantine.json');
    }
  }, 300_000);

  it('records the desired state in the node run\'s own commit (no activity of the rollout per node); a node whose record cannot be written still succeeds, and says so', async () => {
    // d-6's desired.json cannot be written: a directory stands where the file should be (mv -f would have moved the
    // file into it and called that a success).
    await onNode(fleet, 'd-6', 'mkdir -p /var/lib/katafleet/desired.json/x');
    try {
      const rollout = await katafleet('rollout', join(work, 'kata-a.toml'), '--inventory', await inventoryFile('commit', ['d-5', 'd-6']), '--follow', '--request-id', 'desired-commit');
      expect(rollout.code).toBe(0);
      expect(rowOf(rollout.stdout, 'd-5')).toMatch(/^d-5\s+1\s+succeeded\s/);
      expect(rowOf(rollout.stdout, 'd-5')).not.toContain('not recorded');
      expect(rowOf(rollout.stdout, 'd-6')).toMatch(/^d-6\s+2\s+succeeded\s.*succeeded, but its desired state was not recorded \(drift will not repair it\): .*\/var\/lib\/katafleet\/desired\.json is a directory, not a file/);
      expect(parseDesiredState(await onNode(fleet, 'd-5', 'cat /var/lib/katafleet/desired.json'), 'd-5')).toMatchObject({ playbook: { name: 'kata-a' }, rolloutId: 'desired-commit', state: 'applied' });
      expect(await onNode(fleet, 'd-6', 'ls -A /var/lib/katafleet/desired.json')).toBe('x\n');

      const activities = async (workflowId: string) => ((await env.client.workflow.getHandle(workflowId).fetchHistory()).events ?? [])
        .map((event: temporal.api.history.v1.IHistoryEvent) => event.activityTaskScheduledEventAttributes?.activityType?.name)
        .filter((name): name is string => name !== undefined && name !== null);
      expect(await activities('katafleet-rollout-desired-commit')).not.toContain('recordDesiredState');
      // The node run's last step commits it (patch node-commit-in-last-step): no commitRun activity either.
      expect(await activities(nodeWorkflowId('d-5'))).not.toContain('commitRun');
    } finally {
      await onNode(fleet, 'd-6', 'rm -rf /var/lib/katafleet/desired.json');
    }
  }, 300_000);
});

describe('no downgrade', () => {
  const step = { kind: 'package-install', id: 'install', action: 'install', packages: [{ name: 'kata-containers', version: '3.2.0' }] } as unknown as PackageInstallStep;

  it('orders versions the way dpkg does for the usual shapes', () => {
    expect(compareVersions('3.3.0', '3.2.0')).toBeGreaterThan(0);
    expect(compareVersions('3.10.0', '3.9.1')).toBeGreaterThan(0);
    expect(compareVersions('3.2.0', '3.2.0')).toBe(0);
    expect(compareVersions('3.2.0~rc1', '3.2.0')).toBeLessThan(0);
    expect(compareVersions('1:2.0', '3.0')).toBeGreaterThan(0);
    expect(compareVersions('3.2.0-1', '3.2.0')).toBeGreaterThan(0);
  });

  it('names a package installed newer than the playbook pins, and the drift result is a conflict, not a repair', () => {
    expect(packageDowngrades(step, new Map([['kata-containers', '3.3.0']]))).toEqual(['kata-containers 3.3.0 → 3.2.0']);
    expect(packageDowngrades(step, new Map([['kata-containers', '3.1.0']]))).toEqual([]);
    const result = toResultFollowingDesiredState(
      { node: 'n', state: 'drifted', drifted: ['package kata-containers is 3.3.0, not 3.2.0'], downgrades: ['kata-containers 3.3.0 → 3.2.0'] },
      { name: 'kata', file: 'kata.toml', sha256: 'a'.repeat(64) },
    );
    expect(result).toMatchObject({ outcome: 'conflict', detail: expect.stringContaining('not repaired: it would downgrade kata-containers 3.3.0 → 3.2.0') });
  });

  it('refuses a desired.json that is not its own with the file and the fix', () => {
    expect(() => parseDesiredState('{', 'n')).toThrow('node n: /var/lib/katafleet/desired.json is not JSON: fix or delete the file');
    expect(() => parseDesiredState('{"playbook":{}}', 'n')).toThrow('lacks playbook.name, playbook.sha256, rolloutId or state');
    expect(parseDesiredState(undefined, 'n')).toBeUndefined();
  });
});
