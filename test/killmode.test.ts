// Pods survive the restart (issue 12): the simulated node's containerd unit is upstream's, with KillMode=process,
// and its running containers are shims that a restart leaves alone; with the fault switch containerd-killmode-default
// the unit falls back to systemd's default (control-group) and a restart kills them, as on a real host.
// service-restart reads the unit's KillMode first and refuses, changing nothing, when a restart would kill
// running containers; after a restart it checks that the containers running before still run. The undo that puts
// containerd's config back restarts containerd too, with the same two checks (refused before it changes anything).
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { killModeRefusal, shimPids } from '../activities/steps/service-restart';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory } from '../playbooks/load';
import { Step, type ContainerdPatchStep, type ServiceRestartStep } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { onNode } from './rollout-helpers';

let fleet: Fleet;
let pool: SshPool;
let target: NodeTarget;
const node = 'restart-1';
const restartStep: ServiceRestartStep = { id: 'restart', kind: 'service-restart', timeout: '2m', service: 'containerd', wait_for_handlers: [] };

beforeAll(async () => {
  fleet = await startFleet({ nodes: [{ name: node, containerd: '1.6' }], dir: join(await mkdtemp(join(tmpdir(), 'kf-killmode-')), 'fleet') });
  const inventory = await loadInventory(fleet.inventoryPath);
  target = toNodeTarget(inventory, inventory.nodes.find((candidate) => candidate.name === node)!);
  pool = new SshPool();
}, 240_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});

const on = (command: string) => onNode(fleet, node, command);
const containers = async () => (await on('/usr/local/sbin/katafleet-sim-container list')).trim().split('\n').filter(Boolean).sort();
const mainPid = async () => (await on('systemctl show -p MainPID --value containerd')).trim();

/** service-restart as the worker runs it, after a config change (so it does restart). */
async function restart(): Promise<StepOutcome> {
  await on('touch /etc/containerd/config.toml');
  const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000 }, { logger: new DefaultLogger('ERROR') });
  const request: StepRequest = { runId: 'a1b2c3d4-killmode', rolloutId: 'test', node: target, step: restartStep, drain: false };
  return (await env.run(createNodeActivities({ pool }).serviceRestart, request as StepRequest<ServiceRestartStep>)) as StepOutcome;
}

describe('the simulated containerd unit and its running containers (upstream behaviour)', () => {
  it('has upstream\'s KillMode=process: a plain systemctl restart leaves the running containers\' shims alone', async () => {
    expect((await on('systemctl show -p KillMode --value containerd')).trim()).toBe('process');
    expect(await on('grep -x KillMode=process /lib/systemd/system/containerd.service')).toBe('KillMode=process\n');
    await on('/usr/local/sbin/katafleet-sim-container run web-1 && /usr/local/sbin/katafleet-sim-container run web-2');
    const before = await containers();
    expect(before.map((line) => line.split(' ')[1])).toEqual(['web-1', 'web-2']);
    await on('systemctl restart containerd');
    expect(await containers()).toEqual(before);
  }, 60_000);

  it('with the fault switch, falls back to systemd\'s default control-group, and a restart kills them', async () => {
    await fleet.setFault(node, 'containerd-killmode-default', true);
    try {
      expect((await on('systemctl show -p KillMode --value containerd')).trim()).toBe('control-group');
      await on('systemctl restart containerd');
      expect(await containers()).toEqual([]);
    } finally {
      await fleet.setFault(node, 'containerd-killmode-default', false);
    }
  }, 60_000);
});

describe('service-restart keeps running containers', () => {
  it('restarts containerd with KillMode=process and checks that every container running before still runs', async () => {
    await on('/usr/local/sbin/katafleet-sim-container run db-1');
    const before = await containers();
    expect(before).toHaveLength(1);
    const outcome = await restart();
    expect(outcome).toMatchObject({ changed: true, summary: expect.stringContaining('1 running container shim(s) kept (KillMode=process)') });
    expect(await containers()).toEqual(before);
  }, 120_000);

  it('refuses to restart when the unit lacks KillMode=process and containers run, naming the reason and the fix; changes nothing', async () => {
    await fleet.setFault(node, 'containerd-killmode-default', true);
    try {
      const before = await containers();
      const pid = await mainPid();
      await expect(restart()).rejects.toMatchObject({
        type: 'RestartWouldKillContainers',
        nonRetryable: true,
        message: killModeRefusal(node, 'control-group', 1),
      });
      expect(await mainPid()).toBe(pid);
      expect(await containers()).toEqual(before);

      // The fix the message names works: a drop-in with KillMode=process, daemon-reload, run again.
      await on('mkdir -p /etc/systemd/system/containerd.service.d && printf "[Service]\\nKillMode=process\\n" > /etc/systemd/system/containerd.service.d/10-killmode.conf && systemctl daemon-reload');
      const outcome = await restart();
      expect(outcome.summary).toContain('1 running container shim(s) kept (KillMode=process)');
      expect(await mainPid()).not.toBe(pid);
      expect(await containers()).toEqual(before);
    } finally {
      await on('rm -f /etc/systemd/system/containerd.service.d/10-killmode.conf');
      await fleet.setFault(node, 'containerd-killmode-default', false);
    }
  }, 180_000);

  it('restarts a node without running containers whatever its KillMode (nothing to kill)', async () => {
    await fleet.setFault(node, 'containerd-killmode-default', true);
    try {
      await on('systemctl restart containerd');
      expect(await containers()).toEqual([]);
      expect((await restart()).changed).toBe(true);
    } finally {
      await fleet.setFault(node, 'containerd-killmode-default', false);
    }
  }, 120_000);
});

/** containerd-patch of a kata runtime (no restart), as the worker runs it: returns its undo (restore the config). */
async function patchConfig(runId: string): Promise<Undo> {
  const step = Step.parse({ id: 'containerd', kind: 'containerd-patch', runtimes: [{ name: 'kata', runtime_type: 'io.containerd.kata.v2' }] }) as ContainerdPatchStep;
  const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000 }, { logger: new DefaultLogger('ERROR') });
  const request: StepRequest<ContainerdPatchStep> = { runId, rolloutId: 'test', node: target, step, drain: false };
  const outcome = (await env.run(createNodeActivities({ pool }).containerdPatch, request)) as StepOutcome;
  expect(outcome.undo?.kind).toBe('restore-containerd-config');
  return outcome.undo!;
}

/** The undo as a rollback runs it. */
async function undo(record: Undo): Promise<UndoOutcome> {
  const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 180_000 }, { logger: new DefaultLogger('ERROR') });
  return (await env.run(createNodeActivities({ pool }).undoStep, { node: target, undo: record })) as UndoOutcome;
}

describe('the rollback\'s restart of containerd keeps running containers too', () => {
  it('restores the config, restarts containerd with KillMode=process and checks that every container running before still runs', async () => {
    const original = await on('sha256sum < /etc/containerd/config.toml');
    const record = await patchConfig('b2c3d4e5-killmode-undo-1');
    await on('/usr/local/sbin/katafleet-sim-container run keep-1');
    const before = await containers();
    expect(before.length).toBeGreaterThan(0);
    const outcome = await undo(record);
    expect(outcome).toMatchObject({ ok: true, summary: expect.stringContaining(`restarted containerd: active; ${before.length} running container shim(s) kept (KillMode=process)`) });
    expect(await on('sha256sum < /etc/containerd/config.toml')).toBe(original);
    expect(await containers()).toEqual(before);
  }, 180_000);

  it('refuses the restore when the restart would kill running containers, before it changes anything; with the fix it finishes', async () => {
    const original = await on('sha256sum < /etc/containerd/config.toml');
    const record = await patchConfig('c3d4e5f6-killmode-undo-2');
    const patched = await on('sha256sum < /etc/containerd/config.toml');
    expect(patched).not.toBe(original);
    await on('/usr/local/sbin/katafleet-sim-container run keep-2');
    await fleet.setFault(node, 'containerd-killmode-default', true);
    try {
      const before = await containers();
      const pid = await mainPid();
      await expect(undo(record)).rejects.toMatchObject({
        type: 'RestartWouldKillContainers',
        message: killModeRefusal(node, 'control-group', before.length, 'rollback'),
      });
      // Nothing changed: the patched config is still there, containerd was not restarted, the containers run.
      expect(await on('sha256sum < /etc/containerd/config.toml')).toBe(patched);
      expect(await mainPid()).toBe(pid);
      expect(await containers()).toEqual(before);

      // The fix the message names, then the rollback's next try: config back byte for byte, containers kept.
      await on('mkdir -p /etc/systemd/system/containerd.service.d && printf "[Service]\\nKillMode=process\\n" > /etc/systemd/system/containerd.service.d/10-killmode.conf && systemctl daemon-reload');
      const outcome = await undo(record);
      expect(outcome.summary).toContain(`${before.length} running container shim(s) kept (KillMode=process)`);
      expect(await on('sha256sum < /etc/containerd/config.toml')).toBe(original);
      expect(await mainPid()).not.toBe(pid);
      expect(await containers()).toEqual(before);
    } finally {
      await on('rm -f /etc/systemd/system/containerd.service.d/10-killmode.conf');
      await fleet.setFault(node, 'containerd-killmode-default', false);
    }
  }, 240_000);

  it('fails the undo with ContainersLostOnRestart when a container running before is gone after the restart', async () => {
    const record = await patchConfig('d4e5f6a7-killmode-undo-3');
    await on('/usr/local/sbin/katafleet-sim-container run lost-1');
    // A shim that dies while containerd restarts (KillMode=process leaves it alone: it is killed from outside, as an OOM
    // kill would): a watcher on the node kills it as soon as containerd's main PID changes.
    await on('old=$(systemctl show -p MainPID --value containerd); nohup sh -c "while [ \\"\\$(systemctl show -p MainPID --value containerd)\\" = $old ]; do sleep 0.05; done; pkill -f \'[-]id lost-1 \'" </dev/null >/dev/null 2>&1 &');
    await expect(undo(record)).rejects.toMatchObject({ type: 'ContainersLostOnRestart', message: expect.stringMatching(/^Node restart-1: 1 of \d+ container shim\(s\) running before the restart of containerd are gone/) });
  }, 180_000);
});

describe('reading shims and KillMode (pure)', () => {
  it('finds containerd shims in ps output, by their command, not by other processes that mention them', () => {
    const ps = [
      '    1 /sbin/init',
      '  812 /usr/bin/containerd',
      ' 4021 /usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id 3f9a -address /run/containerd/containerd.sock',
      ' 4100 containerd-shim-kata-v2 -namespace k8s.io -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id 77ab',
      ' 5000 grep containerd-shim',
      ' 5001 /opt/kata/bin/containerd-shim-kata-v2',
    ].join('\n');
    expect(shimPids(ps)).toEqual([4021, 4100, 5001]);
    expect(shimPids('')).toEqual([]);
  });

  it('says why it refuses and both fixes, for the step and for the rollback\'s restart', () => {
    expect(killModeRefusal('w-1', 'mixed', 3)).toBe(
      'Node w-1: not restarting containerd: its unit has KillMode=mixed, so systemd would kill the 3 running container shim(s) with it ' +
      "(upstream's containerd.service sets KillMode=process, which leaves them running) — add a drop-in /etc/systemd/system/containerd.service.d/10-killmode.conf " +
      'with "[Service]" and "KillMode=process", run systemctl daemon-reload, and run again; or empty the node first (drain = true for this step, and no DaemonSet pods left on it)');
    expect(killModeRefusal('w-1', 'control-group', 2, 'rollback')).toBe(
      'Node w-1: not restarting containerd to roll back: its unit has KillMode=control-group, so systemd would kill the 2 running container shim(s) with it ' +
      "(upstream's containerd.service sets KillMode=process, which leaves them running) — add a drop-in /etc/systemd/system/containerd.service.d/10-killmode.conf " +
      'with "[Service]" and "KillMode=process", run systemctl daemon-reload; the rollback tries again until [rollout] rollback_for runs out ' +
      '(the old config is not back yet, nothing was changed by this attempt); or empty the node (kubectl drain w-1 --ignore-daemonsets)');
  });
});
