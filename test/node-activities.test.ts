// The step activities against the simulated fleet's real nodes (sshd, containerd, apt/dpkg), called
// through the SDK's activity context harness (heartbeats, attempt numbers, timeouts as in a worker).
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import { PackageInstallStep, type Step } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { addObsSourceCommand } from '../sim/packages';
import { sshRun } from '../sim/ssh-run';

let fleet: Fleet;
let pool: SshPool;
let targets: Record<string, NodeTarget>;
let kataSteps: Step[];
const activities = () => createNodeActivities({ pool });
const runId = '0f3c2a9e-5b1d-4c7e-9a42-6d8e1f0b7c35';

beforeAll(async () => {
  fleet = await startFleet({
    nodes: [{ name: 'fresh-1' }, { name: 'novirt-2' }, { name: 'refuses-3' }, { name: 'crash-4' }],
    faults: { 'novirt-2': ['no-virtualization'] },
    dir: join(await mkdtemp(join(tmpdir(), 'kf-node-activities-')), 'fleet'),
  });
  const inventory = await loadInventory(fleet.inventoryPath);
  targets = Object.fromEntries(inventory.nodes.map((node) => [node.name, toNodeTarget(inventory, node)]));
  kataSteps = (await loadPlaybook('kata')).steps;
  pool = new SshPool();
  // The package tests need a source that offers Kata: the OBS-style repository, added as an admin would (no
  // Debian or Ubuntu archive has a Kata package, and neither has the nodes' own mirror).
  for (const name of ['fresh-1', 'novirt-2']) {
    const added = await on(name, addObsSourceCommand(fleet.mirror.port));
    if (added.exitCode !== 0) throw new Error(`adding the OBS-style repository on ${name} failed: ${added.stderr}`);
  }
}, 120_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});

/**
 * package-install of the kata-containers .deb of the mirror's OBS-style repository (kata.toml installs the release
 * tarball; these tests are about apt and dpkg), with the retry and rollback settings kata.toml's install step had.
 */
const packageStep = PackageInstallStep.parse({
  id: 'install', kind: 'package-install', packages: [{ name: 'kata-containers', version: '3.2.0' }], manager: 'auto', remove_on_rollback: true, timeout: '10m',
  retry: { max_attempts: 3, initial_interval: '10s', backoff: 2 },
});

function step<K extends Step['kind']>(id: string): Extract<Step, { kind: K }> {
  const found = kataSteps.find((s) => s.id === id);
  if (!found) throw new Error(`kata.toml has no step ${id}`);
  return found as Extract<Step, { kind: K }>;
}

/** An activity context as a worker gives one (attempt, timeout, heartbeats); the SDK's failure logs kept quiet. */
function activityEnv(info: Partial<Info> = {}) {
  return new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000, ...info }, { logger: new DefaultLogger('ERROR') });
}

/** Runs a step activity as a worker would: in an activity context, attempt `attempt`, for run `run`. */
async function runStep<S extends Step>(fn: (request: StepRequest<S>) => Promise<StepOutcome>, node: string, s: S, attempt = 1, run = runId) {
  const env = activityEnv({ attempt });
  const heartbeats: unknown[] = [];
  env.on('heartbeat', (d: unknown) => heartbeats.push(d));
  const request: StepRequest<S> = { runId: run, rolloutId: 'test', node: targets[node], step: s, drain: false };
  return { outcome: (await env.run(fn, request)) as StepOutcome, heartbeats };
}

async function undo(node: string, record: Undo): Promise<UndoOutcome> {
  return (await activityEnv().run(activities().undoStep, { node: targets[node], undo: record })) as UndoOutcome;
}

const on = (node: string, command: string) => sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command);

describe('step activities on a fresh node', () => {
  it('prereq-check passes, loads the modules and persists them; a second run changes nothing', async () => {
    const first = await runStep(activities().prereqCheck, 'fresh-1', step('prereq'));
    expect(first.outcome.changed).toBe(true);
    expect(first.outcome.facts?.hostKernel).toBe('6.1.0-katafleet-sim');
    expect(first.heartbeats.length).toBeGreaterThan(0);
    expect((await on('fresh-1', 'cat /etc/modules-load.d/katafleet.conf')).stdout).toContain('vhost_vsock\nkvm_intel\n');
    // The file did not exist before: its undo deletes it.
    expect(first.outcome.undo).toEqual({ kind: 'restore-file', stepId: 'prereq', path: '/etc/modules-load.d/katafleet.conf', previous: undefined });
    const second = await runStep(activities().prereqCheck, 'fresh-1', step('prereq'));
    expect(second.outcome.changed).toBe(false);
  }, 60_000);

  it('package-install installs the pinned version with apt and records an undo; a second run changes nothing', async () => {
    const first = await runStep(activities().packageInstall, 'fresh-1', packageStep);
    expect(first.outcome).toMatchObject({ changed: true, undo: { kind: 'remove-packages', packages: ['kata-containers'], manager: 'apt' } });
    expect((await on('fresh-1', "dpkg-query -W -f='${Version}' kata-containers")).stdout).toBe('3.2.0');
    const second = await runStep(activities().packageInstall, 'fresh-1', packageStep, 1);
    // Same run: the marker says this run installed it, so the undo is kept (a worker crash must not lose it).
    expect(second.outcome).toMatchObject({ changed: true, undo: { kind: 'remove-packages' } });
    const otherRun = await runStep(activities().packageInstall, 'fresh-1', packageStep, 1, 'aaaaaaaa-other-run');
    expect(otherRun.outcome).toMatchObject({ changed: false, summary: 'already installed: kata-containers 3.2.0' });
  }, 180_000);

  it('kata-check passes after the install', async () => {
    const { outcome } = await runStep(activities().prereqCheck, 'fresh-1', step('kata-check'));
    expect(outcome.facts?.kataCheck).toBe('System is capable of running Kata Containers');
  }, 60_000);

  it('containerd-patch backs up, validates and swaps in the config; a second run changes nothing', async () => {
    const original = await on('fresh-1', 'sha256sum /etc/containerd/config.toml');
    const first = await runStep(activities().containerdPatch, 'fresh-1', step('containerd'));
    const backup = `/etc/containerd/config.toml.katafleet-${runId.slice(0, 12)}.bak`;
    expect(first.outcome).toMatchObject({ changed: true, undo: { kind: 'restore-containerd-config', backupPath: backup, sha256: original.stdout.split(' ')[0] } });
    expect((await on('fresh-1', `sha256sum < ${backup}`)).stdout.split(' ')[0]).toBe(original.stdout.split(' ')[0]);
    expect((await on('fresh-1', 'grep -c "runtimes.kata\\]" /etc/containerd/config.toml')).stdout.trim()).toBe('1');
    // The same run again (a retry after a crash): the change is reported with its undo, nothing is written twice.
    const retried = await runStep(activities().containerdPatch, 'fresh-1', step('containerd'), 2);
    expect(retried.outcome).toMatchObject({ changed: true, undo: first.outcome.undo });
    expect((await on('fresh-1', 'ls /etc/containerd/ | grep -c katafleet')).stdout.trim()).toBe('1');
  }, 60_000);

  it('service-restart restarts containerd and waits until its CRI offers kata; a second run changes nothing', async () => {
    const first = await runStep(activities().serviceRestart, 'fresh-1', step('restart'));
    expect(first.outcome.changed).toBe(true);
    expect(first.outcome.summary).toMatch(/handlers kata, runc \(crictl info\)/);
    const second = await runStep(activities().serviceRestart, 'fresh-1', step('restart'));
    expect(second.outcome).toMatchObject({ changed: false });
  }, 60_000);

  it('the rollback step restores the config byte for byte, restarts containerd without kata and removes the packages; a second run changes nothing', async () => {
    const backup = `/etc/containerd/config.toml.katafleet-${runId.slice(0, 12)}.bak`;
    const original = (await on('fresh-1', `sha256sum < ${backup}`)).stdout.split(' ')[0];
    const rollbackStep = { id: 'rollback', kind: 'rollback', timeout: '2m', config_path: '/etc/containerd/config.toml', remove_packages: true } as const;
    const first = await runStep(activities().rollback, 'fresh-1', rollbackStep);
    expect(first.outcome.summary).toContain('equal to the original');
    expect(first.outcome.changed).toBe(true);
    expect(first.outcome.summary).toContain('removed kata-containers 3.2.0');
    expect((await on('fresh-1', 'sha256sum < /etc/containerd/config.toml')).stdout.split(' ')[0]).toBe(original);
    expect(JSON.parse((await on('fresh-1', 'crictl info')).stdout).config.containerd.runtimes).not.toHaveProperty('kata');
    expect((await on('fresh-1', 'command -v kata-runtime || echo none')).stdout.trim()).toBe('none');
    const second = await runStep(activities().rollback, 'fresh-1', rollbackStep);
    expect(second.outcome.changed).toBe(false);
  }, 90_000);
});

describe('failures leave the node as it was', () => {
  it('no virtualization: prereq-check fails with NodeNotCapable and the real reason, nothing written', async () => {
    await expect(runStep(activities().prereqCheck, 'novirt-2', step('prereq'))).rejects.toMatchObject({
      type: 'NodeNotCapable',
      nonRetryable: true,
      message: expect.stringContaining('CPU has no vmx or svm flag: no hardware virtualization'),
    });
    expect((await on('novirt-2', 'test -e /etc/modules-load.d/katafleet.conf; echo $?')).stdout.trim()).toBe('1');
  }, 60_000);

  it('containerd refusing to start: the restart fails with ServiceNotActive, the undo restores the exact bytes and containerd is active again', async () => {
    const before = (await on('refuses-3', 'sha256sum < /etc/containerd/config.toml')).stdout.split(' ')[0];
    const patched = await runStep(activities().containerdPatch, 'refuses-3', step('containerd'));
    await fleet.setFault('refuses-3', 'containerd-refuses-start', true);
    const restart = { ...step<'service-restart'>('restart'), timeout: '8s' };
    await expect(activityEnv({ startToCloseTimeoutMs: 8_000 }).run(activities().serviceRestart, { runId, rolloutId: 'test', node: targets['refuses-3'], step: restart, drain: false })).rejects.toMatchObject({
      type: 'ServiceNotActive',
      message: expect.stringContaining('containerd is not active'),
    });
    const undone = await undo('refuses-3', patched.outcome.undo!);
    expect(undone).toMatchObject({ ok: true, kind: 'restore-containerd-config' });
    expect(undone.summary).toMatch(/restored \/etc\/containerd\/config.toml .*equal to the original.*restarted containerd: active/);
    expect((await on('refuses-3', 'sha256sum < /etc/containerd/config.toml')).stdout.split(' ')[0]).toBe(before);
    expect((await on('refuses-3', 'systemctl is-active containerd')).stdout.trim()).toBe('active');
  }, 90_000);

  it('a changed host key: HostKeyMismatch, not retryable, and nothing runs', async () => {
    await fleet.setFault('novirt-2', 'host-key-changed', true);
    try {
      const fresh = new SshPool();
      await expect(activityEnv().run(createNodeActivities({ pool: fresh }).prereqCheck,
        { runId, rolloutId: 'test', node: targets['novirt-2'], step: step<'prereq-check'>('prereq'), drain: false })).rejects.toMatchObject({
        type: 'HostKeyMismatch',
        nonRetryable: true,
        message: expect.stringContaining('Nothing was run on the node'),
      });
      await fresh.closeAll();
    } finally {
      await fleet.setFault('novirt-2', 'host-key-changed', false);
    }
  }, 60_000);

  it('a pinned package whose mirror is down: PackageRepositoryUnreachable (retryable), nothing installed', async () => {
    await fleet.setFault('novirt-2', 'package-repo-unreachable', true);
    try {
      await expect(runStep(activities().packageInstall, 'novirt-2', packageStep)).rejects.toMatchObject({
        type: 'PackageRepositoryUnreachable',
        nonRetryable: false,
        message: expect.stringContaining('the package sources cannot be reached'),
      });
      expect((await on('novirt-2', 'dpkg-query -W kata-containers 2>&1')).stdout).toContain('no packages found matching kata-containers');
    } finally {
      await fleet.setFault('novirt-2', 'package-repo-unreachable', false);
    }
  }, 120_000);

  it('another process holding the dpkg lock: apt waits a bounded time, then DpkgLockBusy names the holder, nothing installed', async () => {
    // dpkg's lock is an fcntl lock on lock-frontend; a stand-in for an unattended-upgrades run holds it.
    await on('novirt-2', `nohup python3 -c 'import fcntl,time; f=open("/var/lib/dpkg/lock-frontend","w"); fcntl.lockf(f, fcntl.LOCK_EX); time.sleep(90)' >/dev/null 2>&1 &`);
    try {
      const env = activityEnv({ startToCloseTimeoutMs: 30_000 });
      const request: StepRequest<Extract<Step, { kind: 'package-install' }>> = { runId, rolloutId: 'test', node: targets['novirt-2'], step: packageStep, drain: false };
      const started = Date.now();
      await expect(env.run(activities().packageInstall, request)).rejects.toMatchObject({
        type: 'DpkgLockBusy',
        nonRetryable: false,
        message: expect.stringMatching(/gave up waiting for the dpkg lock: it is held by process \d+ \(python3\)/),
      });
      process.stdout.write(`dpkg lock: DpkgLockBusy after ${Date.now() - started} ms of a 30 s attempt\n`);
      expect((await on('novirt-2', 'dpkg-query -W kata-containers 2>&1')).stdout).toContain('no packages found matching kata-containers');
    } finally {
      await on('novirt-2', "pkill -f 'fcntl.lockf' || true");
    }
  }, 120_000);

  it('containerd refusing the candidate config: ContainerdConfigInvalid with its reason, config bytes unchanged, no file of the attempt left', async () => {
    const refused = 'version = 2\n[grpc]\n  max_recv_message_size = "big"\n';
    await on('crash-4', 'cp -p /etc/containerd/config.toml /root/config.good');
    await sshRun(fleet, fleet.nodes.find((n) => n.name === 'crash-4')!, 'cat > /etc/containerd/config.toml', { input: refused });
    try {
      const before = (await on('crash-4', 'sha256sum < /etc/containerd/config.toml')).stdout;
      await expect(runStep(activities().containerdPatch, 'crash-4', step('containerd'), 1, 'bbbbbbbb-refused')).rejects.toMatchObject({
        type: 'ContainerdConfigInvalid',
        nonRetryable: true,
        message: expect.stringContaining("Can't convert big(string) to int"),
      });
      expect((await on('crash-4', 'sha256sum < /etc/containerd/config.toml')).stdout).toBe(before);
      expect((await on('crash-4', 'ls -a /etc/containerd | grep -c bbbbbbbb || true')).stdout.trim()).toBe('0');
    } finally {
      await on('crash-4', 'cp -p /root/config.good /etc/containerd/config.toml');
    }
  }, 60_000);

  it('a worker killed after the backup but before the swap: the retry keeps that one backup and patches once', async () => {
    const run = 'cccccccc-crash-before-swap';
    const backup = `/etc/containerd/config.toml.katafleet-${run.slice(0, 12)}.bak`;
    const original = (await on('crash-4', 'sha256sum < /etc/containerd/config.toml')).stdout.split(' ')[0];
    // What the killed attempt left: its backup and a half-written candidate.
    await on('crash-4', `cp -p /etc/containerd/config.toml ${backup} && echo half > /etc/containerd/config.toml.katafleet-${run.slice(0, 12)}.new`);
    const retried = await runStep(activities().containerdPatch, 'crash-4', step('containerd'), 2, run);
    expect(retried.outcome).toMatchObject({ changed: true, undo: { backupPath: backup, sha256: original } });
    expect((await on('crash-4', 'ls -a /etc/containerd | grep katafleet')).stdout).toBe(`config.toml.katafleet-${run.slice(0, 12)}.bak\n`);
    expect((await on('crash-4', 'grep -c "runtimes.kata\\]" /etc/containerd/config.toml')).stdout.trim()).toBe('1');
    expect((await on('crash-4', `sha256sum < ${backup}`)).stdout.split(' ')[0]).toBe(original);
  }, 60_000);

  it('a hanging restart is cut at the step timeout (CommandTimedOut, retryable) while the activity heartbeats; the next attempt succeeds', async () => {
    await fleet.setFault('refuses-3', 'command-hangs', true);
    const restart = { ...step<'service-restart'>('restart'), timeout: '20s', wait_for_handlers: [] };
    await on('refuses-3', 'touch /etc/containerd/config.toml');
    const env = activityEnv({ startToCloseTimeoutMs: 20_000 });
    const heartbeats: number[] = [];
    env.on('heartbeat', () => heartbeats.push(Date.now()));
    const started = Date.now();
    try {
      await expect(env.run(activities().serviceRestart, { runId, rolloutId: 'test', node: targets['refuses-3'], step: restart, drain: false })).rejects.toMatchObject({
        type: 'CommandTimedOut',
        nonRetryable: false,
      });
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(heartbeats.length).toBeGreaterThanOrEqual(3);
    } finally {
      // The cut restart is killed on the node a moment after the deadline (timeout -k): wait until it is gone, or
      // releasing the hang would let it finish the restart itself and the retry would find nothing to do.
      await on('refuses-3', 'for i in $(seq 100); do pgrep -f "systemctl restart" >/dev/null || exit 0; sleep 0.2; done; exit 1');
      await fleet.setFault('refuses-3', 'command-hangs', false);
    }
    const retried = await runStep(activities().serviceRestart, 'refuses-3', restart, 2);
    expect(retried.outcome.changed).toBe(true);
  }, 90_000);
});
