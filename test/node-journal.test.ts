// The journal on the node, recovery and quarantine (no Kubernetes needed: kata.toml's `containerd` and
// `restart` steps on a simulated fleet, a real Temporal dev server, a worker in this process):
// - a rollout cancelled, or terminated, through Temporal while containerd-patch hangs *after* its swap:
//   the node ends byte-exact as before (cancel: the run's own recovery; terminate: the next run finds
//   the journal and recovers it before anything else), never changed and unrecorded;
// - an undo refused because the config changed since katafleet wrote it: the node is quarantined
//   (marker on the node, KatafleetPhase = "needs-attention", the exact fix), later runs are refused
//   with nothing changed, until `katafleet node release NODE` (CLI) or POST /v1/nodes/{name}/release;
// - a rollback against an unreachable node is retried visibly ("rollback attempt N, next in …") for
//   `rollbackFor`, then the node is quarantined.
// The "hang after the swap" is a test-side hanging command: a `sha256sum` in the node's /usr/local/bin
// that waits while /run/kf-test-hang exists and config.toml already has the kata runtime (so only the
// step's check after the swap hangs).
import { copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../api/server';
import type { Undo } from '../activities/node-types';
import { backupPathFor } from '../activities/steps/containerd-patch';
import type { Step } from '../playbooks/schema';
import { nodeExec, readFleetRecord } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId, type nodeWorkflow, type NodeRolloutInput } from '../workflows/node';
import type { NodeProgress } from '../workflows/node-messages';
import { nodeProgressQuery } from '../workflows/node-messages';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { containerdRestartPlaybook } from './helpers/playbook-toml';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { activitiesInHistory, kataSteps, keepHistory, nodeInput, onNode, startNodeFleet, waitFor, type NodeFleet } from './helpers/node-workflow';

// With KATAFLEET_RECORD_HISTORIES set (keepHistory), the histories of the new paths are saved for test/replay.test.ts
// (node-journal-recovery: cancelled after the swap and recovered; node-journal-quarantine: an undo refused,
// the node quarantined; node-journal-recovered-first: a run that first recovers a terminated run's journal;
// node-prepare-in-first-step-*: the first step checks the node, and when it finds a journal the run recovers it).

let env: TestWorkflowEnvironment;
let nodes: NodeFleet;
let worker: RunningTestWorker;
let patchAndRestart: Step[];
let api: FastifyInstance;
const token = 'node-journal-test-token-0123456789abcdef';

beforeAll(async () => {
  [env, nodes] = await Promise.all([startTestTemporal(), startNodeFleet('node-journal', { nodes: [{ name: 'j-cancel' }, { name: 'j-term' }, { name: 'j-quar' }, { name: 'j-down' }, { name: 'j-clean' }, { name: 'j-commit' }, { name: 'j-cli' }] })]);
  worker = await runKatafleetWorker(env, taskQueue);
  patchAndRestart = await kataSteps(['containerd', 'restart']);
  // The API reads inventories by name from its folder, with the fleet's credentials profile.
  const inventories = join(nodes.fleet.dir, 'api-inventories');
  await mkdir(inventories, { recursive: true });
  await copyFile(nodes.fleet.inventoryPath, join(inventories, 'fleet.toml'));
  api = await buildApi({ client: env.client, token, inventoriesDir: inventories, credentialsFile: join(nodes.fleet.dir, 'credentials.toml') });
  await api.listen({ host: '127.0.0.1', port: 0 });
  // j-commit: the first write of a run's applied record (commitJournal's sync of its temp file) fails once while
  // /run/kf-fail-commit-once exists (the probe finds /usr/local/bin/sync first on PATH).
  await onNode(nodes, 'j-commit', `cat > /usr/local/bin/sync <<'EOF'
#!/bin/sh
case "$1" in .tmp-*) if [ -e /run/kf-fail-commit-once ]; then rm -f /run/kf-fail-commit-once; exit 1; fi;; esac
exec /usr/bin/sync "$@"
EOF
chmod 0755 /usr/local/bin/sync`);
  for (const name of ['j-cancel', 'j-term', 'j-quar', 'j-down', 'j-cli']) {
    await onNode(nodes, name, `cat > /usr/local/bin/sha256sum <<'EOF'
#!/bin/sh
while [ -e /run/kf-test-hang ] && grep -q 'runtimes.kata' /etc/containerd/config.toml 2>/dev/null; do sleep 0.2; done
exec /usr/bin/sha256sum "$@"
EOF
chmod 0755 /usr/local/bin/sha256sum`);
  }
}, 300_000);

afterAll(async () => {
  await api?.close();
  await worker?.stop();
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

function start(name: string, steps: Step[], runName: string, extra: Partial<NodeRolloutInput> = {}): Promise<WorkflowHandle<typeof nodeWorkflow>> {
  return env.client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', {
    taskQueue,
    workflowId: nodeWorkflowId(name),
    args: [nodeInput(nodes, name, steps, { rolloutId: runName, heartbeatTimeout: '10s', ...extra })],
  });
}

async function failure(handle: WorkflowHandle<typeof nodeWorkflow>): Promise<{ type?: string; message: string; progress: NodeProgress }> {
  const err = await handle.result().then(() => { throw new Error(`${handle.workflowId} succeeded, but it should have failed`); }, (e: unknown) => e);
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause as { type?: string; message: string; details?: unknown[] };
  return { type: cause.type, message: cause.message, progress: cause.details?.[0] as NodeProgress };
}

const configSha = async (name: string) => (await onNode(nodes, name, '/usr/bin/sha256sum /etc/containerd/config.toml')).split(/\s+/)[0];
const journalListing = async (name: string) => (await onNode(nodes, name, 'ls -1 /var/lib/katafleet/journal 2>/dev/null; true')).trim();
const hangAfterSwap = (name: string, on: boolean) => onNode(nodes, name, on ? 'touch /run/kf-test-hang' : 'rm -f /run/kf-test-hang');
/**
 * The step's sha256sum after the swap is hanging on the node: the wrapper script itself (its shell's command line),
 * not a step's script that names /usr/local/bin/sha256sum (the program probe's path) in its text.
 */
const checkHanging = (name: string) => waitFor('sha256sum hanging after the swap', async () => ((await onNode(nodes, name, "pgrep -f '^/bin/sh /usr/local/bin/sha256sum' || true")).trim() ? true : undefined), 60_000, 100);

/** A run on `name` terminated through Temporal while containerd-patch's swap is done (no workflow code runs after it); its run id. */
async function terminateAfterSwap(name: string, runName: string): Promise<string> {
  await hangAfterSwap(name, true);
  try {
    const handle = await start(name, patchAndRestart, runName);
    await checkHanging(name);
    const runId = (await handle.describe()).runId;
    await handle.terminate('test: terminated mid containerd-patch');
    return runId;
  } finally {
    await hangAfterSwap(name, false);
  }
}

const katafleet = (...args: string[]) => runKatafleet(env.address, args, 120_000);

describe('README "When things fail": a rollout cancelled or terminated through Temporal mid containerd-patch', () => {
  it('cancelled after the swap: the run recovers from its journal, the config is byte-exact as before, no journal left', async () => {
    const before = await configSha('j-cancel');
    await hangAfterSwap('j-cancel', true);
    try {
      const handle = await start('j-cancel', patchAndRestart, 'cancel-after-swap');
      await checkHanging('j-cancel');
      expect(await configSha('j-cancel')).not.toBe(before);
      await handle.cancel();
      // Let the cancellation reach the step (next heartbeat) before the hang ends.
      await waitFor('the step to be cancelled', async () => ((await handle.query(nodeProgressQuery)).phase === 'rolling-back' ? true : undefined), 60_000, 200);
      await hangAfterSwap('j-cancel', false);
      const { type, progress } = await failure(handle);
      expect(type).toBe('NodeRolloutCancelled');
      expect(progress.phase).toBe('rolled-back');
      expect(progress.rollback).toEqual([expect.objectContaining({ stepId: 'containerd', ok: true, summary: expect.stringContaining('restored /etc/containerd/config.toml') })]);
      expect(await configSha('j-cancel')).toBe(before);
      expect(await journalListing('j-cancel')).toBe('');
      await keepHistory(handle, 'node-journal-recovery');
    } finally {
      await hangAfterSwap('j-cancel', false);
    }
  }, 240_000);

  it('terminated after the swap: the next run finds the journal and restores the config byte-exact before doing anything', async () => {
    const before = await configSha('j-term');
    const terminatedRun = await terminateAfterSwap('j-term', 'terminate-after-swap');
    // No workflow code ran: the node is changed, and its journal says so.
    expect(await configSha('j-term')).not.toBe(before);
    expect(await journalListing('j-term')).toBe(terminatedRun);

    // The next run (no steps of its own) recovers the journal first.
    const next = await start('j-term', [], 'after-termination');
    const result = await next.result();
    expect(result.phase).toBe('succeeded');
    expect(result.recovered).toEqual([expect.stringMatching(new RegExp(`^recovered the journal of run ${terminatedRun} \\(terminate-after-swap\\): containerd: restored /etc/containerd/config.toml`))]);
    expect(await configSha('j-term')).toBe(before);
    expect(await journalListing('j-term')).toBe('');
    await keepHistory(next, 'node-journal-recovered-first');
  }, 240_000);

  // The check before the first step is made by the first step's own activity (patch node-prepare-in-first-step);
  // the prepareNode activity runs only when that check finds something.
  it('terminated after the swap, then a run with steps: its first step finds the journal, the run recovers it, then runs its steps', async () => {
    const before = await configSha('j-term');
    const terminatedRun = await terminateAfterSwap('j-term', 'terminate-again');
    expect(await configSha('j-term')).not.toBe(before);
    const next = await start('j-term', patchAndRestart, 'after-termination-with-steps');
    const result = await next.result();
    expect(result.phase).toBe('succeeded');
    expect(result.recovered).toEqual([expect.stringMatching(new RegExp(`^recovered the journal of run ${terminatedRun} \\(terminate-again\\): containerd: restored /etc/containerd/config.toml`))]);
    const activities = activitiesInHistory(await next.fetchHistory());
    expect(activities.map((a) => `${a.activityType}:${a.result}`)).toEqual(['containerdPatch:failed', 'prepareNode:completed', 'containerdPatch:completed', 'serviceRestart:completed']);
    expect(activities[0].failureType).toBe('NodeNeedsPrepare');
    // The recovered (original) config was patched again by this run.
    expect(result.steps.map((step) => step.status)).toEqual(['changed', 'changed']);
    expect(await journalListing('j-term')).toBe('');
    await keepHistory(next, 'node-prepare-in-first-step-recovered');
  }, 240_000);

  it('through the CLI: a rollout onto a node carrying a terminated run\'s journal takes that run back first, then patches the node', async () => {
    const before = await configSha('j-cli');
    const terminatedRun = await terminateAfterSwap('j-cli', 'terminate-before-cli');
    expect(await journalListing('j-cli')).toBe(terminatedRun);
    const work = await mkdtemp(join(tmpdir(), 'kf-node-journal-cli-'));
    await writeFile(join(work, 'kata-node.toml'), containerdRestartPlaybook('kata-node'));
    const rollout = await katafleet('rollout', join(work, 'kata-node.toml'), '--inventory', await writeFleetInventory(nodes.fleet, work, 'j-cli', ['j-cli']), '--follow', '--request-id', 'cli-after-termination');
    expect(rollout).toMatchObject({ code: 0 });
    expect(rollout.stdout).toMatch(/j-cli\s+succeeded/);

    const node = env.client.workflow.getHandle<typeof nodeWorkflow>(nodeWorkflowId('j-cli'));
    const result = await node.result();
    expect(result.recovered).toEqual([expect.stringMatching(new RegExp(`^recovered the journal of run ${terminatedRun} \\(terminate-before-cli\\): containerd: restored /etc/containerd/config.toml`))]);
    const activities = activitiesInHistory(await node.fetchHistory());
    expect(activities.map((a) => `${a.activityType}:${a.result}`)).toEqual(['containerdPatch:failed', 'prepareNode:completed', 'containerdPatch:completed', 'serviceRestart:completed']);
    expect(activities[0].failureType).toBe('NodeNeedsPrepare');
    // The original bytes came back first: this run's backup holds them, and the config has one kata table.
    const runId = (await node.describe()).runId;
    expect(await onNode(nodes, 'j-cli', `/usr/bin/sha256sum ${backupPathFor('/etc/containerd/config.toml', runId)}`)).toMatch(new RegExp(`^${before} `));
    expect(await onNode(nodes, 'j-cli', 'grep -c "runtimes.kata\\]" /etc/containerd/config.toml')).toBe('1\n');
    expect(await journalListing('j-cli')).toBe('');
  }, 300_000);

  it('a run whose node is clean schedules no prepareNode and no commitRun activity: its first step checks the node, its last one commits', async () => {
    const handle = await start('j-clean', patchAndRestart, 'clean-first-step');
    expect((await handle.result()).phase).toBe('succeeded');
    const activities = activitiesInHistory(await handle.fetchHistory()).map((a) => `${a.activityType}:${a.result}`);
    expect(activities).toEqual(['containerdPatch:completed', 'serviceRestart:completed']);
    // Committed: no journal left, the run's applied record (with the containerd undo) written, the lease released.
    expect(await journalListing('j-clean')).toBe('');
    const runId = (await handle.describe()).runId;
    const applied = await onNode(nodes, 'j-clean', `cat /var/lib/katafleet/applied/*-${runId}.json`);
    expect(JSON.parse(applied)).toMatchObject({ runId, rolloutId: 'clean-first-step', undos: [expect.objectContaining({ kind: 'restore-containerd-config', stepId: 'containerd' })] });
    expect(await onNode(nodes, 'j-clean', 'test -s /var/lib/katafleet/lock-j-clean && echo held || echo free')).toBe('free\n');
    await keepHistory(handle, 'node-prepare-in-first-step-clean');
  }, 240_000);

  it('a last step whose commit fails leaves the commit to the run\'s commitRun activity: the run succeeds, committed once', async () => {
    await onNode(nodes, 'j-commit', 'touch /run/kf-fail-commit-once');
    const handle = await start('j-commit', patchAndRestart, 'commit-falls-back');
    const result = await handle.result();
    expect(result.phase).toBe('succeeded');
    expect(await onNode(nodes, 'j-commit', 'test -e /run/kf-fail-commit-once && echo armed || echo used')).toBe('used\n');
    const activities = activitiesInHistory(await handle.fetchHistory()).map((a) => `${a.activityType}:${a.result}`);
    expect(activities).toEqual(['containerdPatch:completed', 'serviceRestart:completed', 'commitRun:completed']);
    expect(await journalListing('j-commit')).toBe('');
    const runId = (await handle.describe()).runId;
    expect((await onNode(nodes, 'j-commit', 'ls -1 /var/lib/katafleet/applied')).trim().split('\n')).toEqual([`000001-${runId}.json`]);
  }, 240_000);
});

describe('README "When things fail": undo mode (abort --rollback) is not cancellable', () => {
  it('cancelled while an undo\'s containerd restart hangs: every undo still runs, the config is byte-exact as before', async () => {
    const before = await configSha('j-cancel');
    const applied = await (await start('j-cancel', patchAndRestart, 'undo-apply')).result();
    expect(applied.phase).toBe('succeeded');
    await nodes.fleet.setFault('j-cancel', 'command-hangs', true);
    try {
      const handle = await start('j-cancel', patchAndRestart, 'undo-cancelled', { mode: 'undo', undos: applied.undos });
      await waitFor('the undo restart hanging', async () => ((await onNode(nodes, 'j-cancel', "pgrep -f '^(/bin/bash |bash )?/usr/local/sbin/systemctl restart containerd' || true")).trim() ? true : undefined), 60_000, 200);
      await handle.cancel();
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      await nodes.fleet.setFault('j-cancel', 'command-hangs', false);
      const result = await handle.result();
      expect(result.phase).toBe('rolled-back');
      expect(result.rollback).toEqual([expect.objectContaining({ stepId: 'containerd', ok: true })]);
      expect(await configSha('j-cancel')).toBe(before);
      expect((await onNode(nodes, 'j-cancel', 'systemctl is-active containerd')).trim()).toBe('active');
    } finally {
      await nodes.fleet.setFault('j-cancel', 'command-hangs', false);
    }
  }, 240_000);
});

describe('README "When things fail": quarantine', () => {
  let undos: Undo[];
  let before: string;

  it('an undo refused because the config changed since katafleet wrote it quarantines the node, with the exact fix', async () => {
    before = await configSha('j-quar');
    const applied = await (await start('j-quar', patchAndRestart, 'quar-apply')).result();
    expect(applied.phase).toBe('succeeded');
    undos = applied.undos;
    // Config management rewrites the file after katafleet.
    await onNode(nodes, 'j-quar', "printf '# changed by config management\\n' >> /etc/containerd/config.toml");
    const changed = await configSha('j-quar');

    const handle = await start('j-quar', patchAndRestart, 'quar-abort', { mode: 'undo', undos });
    const { type, message, progress } = await failure(handle);
    expect(type).toBe('NodeQuarantined');
    expect(progress.phase).toBe('needs-attention');
    expect(message).toContain('changed since katafleet wrote it');
    expect(message).toContain('katafleet node release j-quar --inventory FILE');
    expect(await configSha('j-quar')).toBe(changed);
    const marker = JSON.parse(await onNode(nodes, 'j-quar', 'cat /var/lib/katafleet/quarantine.json')) as Record<string, string>;
    expect(marker).toEqual({ rolloutId: 'quar-abort', runId: (await handle.describe()).runId, reason: expect.stringContaining('changed since katafleet wrote it'), fix: expect.stringContaining('katafleet node release j-quar'), since: expect.any(String) });
    expect((await handle.describe()).searchAttributes.KatafleetPhase).toEqual(['needs-attention']);
    await keepHistory(handle, 'node-journal-quarantine');
  }, 240_000);

  it('a later run is refused with nothing changed: NodeQuarantined with the reason and the fix', async () => {
    const changed = await configSha('j-quar');
    const { type, message, progress } = await failure(await start('j-quar', patchAndRestart, 'quar-later'));
    expect(type).toBe('NodeQuarantined');
    expect(progress.phase).toBe('needs-attention');
    expect(progress.steps.map((s) => s.status)).toEqual(['skipped', 'skipped']);
    expect(message).toMatch(/Fix: .*katafleet node release j-quar --inventory FILE/);
    expect(await configSha('j-quar')).toBe(changed);
  }, 120_000);

  it('katafleet node release: bad input is refused with exit 2, an unknown node names the inventory', async () => {
    expect((await katafleet('node', 'release', 'j-quar')).code).toBe(2);
    const unknown = await katafleet('node', 'release', 'no-such-node', '--inventory', nodes.fleet.inventoryPath);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('no node "no-such-node" in the inventory');
    expect((await katafleet('node', 'frobnicate')).code).toBe(2);
    // The marker is still there.
    expect(await onNode(nodes, 'j-quar', 'test -f /var/lib/katafleet/quarantine.json && echo yes')).toBe('yes\n');
  }, 120_000);

  it('katafleet node release lifts it; the next run works on the node again', async () => {
    // The operator's fix: put the original back.
    const backup = undos.find((u) => u.kind === 'restore-containerd-config');
    if (backup?.kind !== 'restore-containerd-config' || !backup.backupPath) throw new Error('no config undo');
    await onNode(nodes, 'j-quar', `cp -p ${backup.backupPath} /etc/containerd/config.toml`);
    const released = await katafleet('node', 'release', 'j-quar', '--inventory', nodes.fleet.inventoryPath);
    expect(released.stderr).toBe('');
    expect(released.code).toBe(0);
    expect(released.stdout).toContain('released node j-quar (quarantined since');
    expect(await onNode(nodes, 'j-quar', 'test -e /var/lib/katafleet/quarantine.json && echo yes || echo no')).toBe('no\n');
    expect(await configSha('j-quar')).toBe(before);
    expect((await (await start('j-quar', patchAndRestart, 'quar-after-release')).result()).phase).toBe('succeeded');
  }, 240_000);

  it('the rollback step takes back the newest applied run (its backup, sha-checked), and leaves other runs\' package markers', async () => {
    const marker = '/var/lib/katafleet/installed-zzzzzzzzzzzz-install.packages';
    await onNode(nodes, 'j-quar', `mkdir -p /var/lib/katafleet && echo runsc > ${marker}`);
    const applied = (await onNode(nodes, 'j-quar', 'ls -1 /var/lib/katafleet/applied')).trim().split('\n');
    // quar-apply and quar-after-release succeeded: one record each, numbered in the order they finished.
    expect(applied).toEqual([expect.stringMatching(/^000001-.*\.json$/), expect.stringMatching(/^000002-.*\.json$/)]);
    const steps: Step[] = [{ id: 'rollback', kind: 'rollback', timeout: '2m', config_path: '/etc/containerd/config.toml', remove_packages: true } as Step];
    const result = await (await start('j-quar', steps, 'quar-rollback-step')).result();
    expect(result.phase).toBe('succeeded');
    expect(result.steps[0].summary).toMatch(/^rolling back run .* of quar-after-release .*restored \/etc\/containerd\/config.toml from .*equal to the original/);
    expect(await configSha('j-quar')).toBe(before);
    expect((await onNode(nodes, 'j-quar', 'ls -1 /var/lib/katafleet/applied')).trim()).toBe(applied[0]);
    expect((await onNode(nodes, 'j-quar', `cat ${marker}`)).trim()).toBe('runsc');
  }, 240_000);

  it('POST /v1/nodes/{name}/release: 400 for bad input, 200 for a node that is not quarantined', async () => {
    const address = api.server.address() as { port: number };
    const post = async (name: string, body: unknown) => {
      const response = await fetch(`http://127.0.0.1:${address.port}/v1/nodes/${name}/release`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    expect((await post('j-quar', {})).status).toBe(400);
    expect((await post('j-quar', { inventory: 'fleet', extra: 1 })).status).toBe(400);
    expect((await post('Bad_Name', { inventory: 'fleet' })).status).toBe(400);
    // The caller names an inventory of the API's folder; a path of the API host is never read.
    for (const hostile of [nodes.fleet.inventoryPath, '../fleet', '/proc/self/environ', 'fleet/../../credentials']) {
      const refused = await post('j-quar', { inventory: hostile });
      expect(refused.status).toBe(400);
      expect(JSON.stringify(refused.body)).not.toContain('profile');
    }
    const unknown = await post('nobody', { inventory: 'fleet' });
    expect(unknown).toEqual({ status: 400, body: { error: 'NodeUnknown', message: expect.stringContaining('no node "nobody" in the inventory') } });
    const ok = await post('j-quar', { inventory: 'fleet' });
    expect(ok).toEqual({ status: 200, body: { node: 'j-quar', released: false, journals_set_aside: [], message: 'node j-quar was not quarantined; nothing to release' } });
  }, 120_000);
});

describe('README "When things fail": a rollback that cannot reach the node', () => {
  it('is retried visibly ("rollback attempt N, next in …") for rollbackFor, then the node needs attention', async () => {
    const applied = await (await start('j-down', patchAndRestart, 'down-apply')).result();
    expect(applied.phase).toBe('succeeded');
    const initPid = (await readFleetRecord(nodes.fleet.dir))!.nodes.find((n) => n.name === 'j-down')!.initPid;
    // The undo's containerd restart hangs; then the node becomes unreachable (sshd stopped, the worker's connection cut).
    await nodes.fleet.setFault('j-down', 'command-hangs', true);
    let handle: WorkflowHandle<typeof nodeWorkflow> | undefined;
    try {
      handle = await start('j-down', patchAndRestart, 'down-undo', { mode: 'undo', undos: applied.undos, rollbackFor: '25s' });
      await waitFor('the undo restart hanging', async () => ((await onNode(nodes, 'j-down', "pgrep -f '^(/bin/bash |bash )?/usr/local/sbin/systemctl restart containerd' || true")).trim() ? true : undefined), 60_000, 200);
      // sshd frozen (SIGSTOP: no handshake for new connections); the worker's connection cut.
      await nodes.fleet.setFault('j-down', 'sshd-frozen', true);
      await nodeExec(initPid, ['sh', '-c', "pids=$(pgrep -f '^sshd: [^/]'); kill -9 $pids; echo $pids"]);
      const retry = await waitFor('a visible rollback retry', async () => (await handle!.query(nodeProgressQuery)).rollbackRetry, 120_000, 200);
      expect(retry).toEqual({ attempt: expect.any(Number), lastError: expect.any(String), nextAt: expect.any(String), until: expect.any(String) });
      const { type, progress } = await failure(handle);
      expect(type).toBe('NodeQuarantined');
      expect(progress.phase).toBe('needs-attention');
      expect(progress.quarantine).toEqual({ reason: expect.stringContaining('the rollback kept failing for 25s'), fix: expect.stringContaining('katafleet node release j-down'), since: expect.any(String), markedOnNode: false });
    } finally {
      await nodes.fleet.setFault('j-down', 'sshd-frozen', false);
      await nodes.fleet.setFault('j-down', 'command-hangs', false);
    }
    // The marker could not be written (the node is unreachable), but Temporal shows needs-attention.
    expect((await handle!.describe()).searchAttributes.KatafleetPhase).toEqual(['needs-attention']);
  }, 300_000);
});
