// Fewer SSH round trips per step, every safety check kept (issue 14): a step's reads go to the node as one remote
// command (NodeShell.readAll), the node's lease is taken by the step's first command, and a step that succeeds
// hands the lease to the run's next activity instead of releasing it with a command of its own. Against a real
// simulated node (sshd, flock, the lock files); the pool counts the commands.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NodeTarget } from '../activities/node-types';
import { sh, SshPool, type CommandEvent } from '../activities/ssh';
import { lockNode, lockPath, lockRank, NodeBusy, NodeLockLost, withNodeLock, type LockedShell } from '../activities/steps/node-lock';
import { NodeShell, parseParts } from '../activities/steps/node-shell';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory } from '../playbooks/load';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';

describe('parseParts (pure)', () => {
  const m = '@@katafleet-0123456789ab';
  it('gives each part its stdout exactly, with or without a final newline, and its status', () => {
    const stdout = `${m}-0\nline 1\nline 2\n\n${m}-0 0\n${m}-1\nno newline\n${m}-1 3\n${m}-2\n\n${m}-2 0\n`;
    expect(parseParts(stdout, ['a', 'b', 'c'], m)).toEqual({ a: { stdout: 'line 1\nline 2\n', exitCode: 0 }, b: { stdout: 'no newline', exitCode: 3 }, c: { stdout: '', exitCode: 0 } });
  });

  it('is not fooled by output that looks like a marker of another nonce', () => {
    const stdout = `${m}-0\n@@katafleet-ffffffffffff-0 0\n@@katafleet-ffffffffffff-1\n\n${m}-0 0\n`;
    expect(parseParts(stdout, ['a'], m).a).toEqual({ stdout: '@@katafleet-ffffffffffff-0 0\n@@katafleet-ffffffffffff-1\n', exitCode: 0 });
  });

  it('refuses an answer cut short instead of reading a part as empty', () => {
    expect(() => parseParts(`${m}-0\nhalf`, ['a'], m)).toThrow('lacks its part 0 (a): the remote script was cut short');
    expect(() => parseParts(`${m}-0\nx\n${m}-0 0\n`, ['a', 'b'], m)).toThrow('lacks its part 1 (b)');
  });
});

describe('on a real node', () => {
  let fleet: Fleet;
  let pool: SshPool;
  let target: NodeTarget;
  const commands: CommandEvent[] = [];
  const on = (command: string) => sshRun(fleet, fleet.nodes[0], command);
  const runA = '0f3c2a9e-5b1d-4c7e-9a42-6d8e1f0b7c35';
  const runB = '7d1e0c4b-2a9f-4e3d-8b6c-5f4a3e2d1c0b';

  beforeAll(async () => {
    fleet = await startFleet({ nodes: [{ name: 'batch-1' }], dir: join(await mkdtemp(join(tmpdir(), 'kf-ssh-batch-')), 'fleet') });
    const inventory = await loadInventory(fleet.inventoryPath);
    target = toNodeTarget(inventory, inventory.nodes[0]);
    pool = new SshPool({ onCommand: (event) => commands.push(event) });
  }, 120_000);
  afterAll(async () => {
    await pool?.closeAll();
    await fleet?.stop();
  });
  const counted = async <T>(work: () => Promise<T>): Promise<{ result: T; count: number }> => {
    const before = commands.length;
    const result = await work();
    return { result, count: commands.length - before };
  };

  it('readAll: several reads in one SSH command, each part whole, a part that exits early stops no other part', async () => {
    const shell = new NodeShell(pool, target);
    const { result, count } = await counted(() => shell.readAll({
      kernel: sh`uname -r`,
      missing: sh`if test -f /nonexistent; then cat /nonexistent; else exit 3; fi`,
      early: sh`echo half; exit 5; echo never`,
      noisy: sh`printf 'a\n\nb'; echo oops >&2`,
      cpu: sh`cat /proc/cpuinfo`,
    }));
    expect(count).toBe(1);
    expect(result.kernel).toEqual({ stdout: '6.1.0-katafleet-sim\n', exitCode: 0 });
    expect(result.missing).toEqual({ stdout: '', exitCode: 3 });
    expect(result.early).toEqual({ stdout: 'half\n', exitCode: 5 });
    expect(result.noisy).toEqual({ stdout: 'a\n\nb', exitCode: 0 });
    expect(result.cpu.stdout).toBe((await on('cat /proc/cpuinfo')).stdout);
  });

  it('the lease is taken by the first command itself: one SSH command, the lease file names the owner and its rank', async () => {
    const shell = lockNode(pool, target, `${runA}/step-one/1`, { waitMs: 10_000, rank: lockRank(1, 1) });
    const { result, count } = await counted(() => shell.output(sh`echo first`));
    expect(result).toBe('first');
    expect(count).toBe(1);
    expect((await on(`cat ${lockPath('batch-1')}`)).stdout).toMatch(new RegExp(`^${runA}/step-one/1 [0-9]+ 1001\\n$`));
  });

  let stepThree: LockedShell;
  it('a step that succeeds hands its lease over: no release command, and the run\'s next step takes it at once', async () => {
    const { count } = await counted(() => withNodeLock(pool, target, `${runA}/step-two/1`, 10_000, (shell) => shell.output(sh`true`), { handOver: true, rank: lockRank(2, 1) }));
    expect(count).toBe(1);
    expect((await on(`cat ${lockPath('batch-1')}`)).stdout).toContain(`${runA}/step-two/1 `);
    stepThree = lockNode(pool, target, `${runA}/step-three/1`, { waitMs: 10_000, rank: lockRank(3, 1) });
    expect(await counted(() => stepThree.output(sh`echo three`))).toEqual({ result: 'three', count: 1 });
  });

  it('no other run, and no late attempt of an earlier step, takes a lease that was handed over; they run nothing (NodeBusy)', async () => {
    await on('rm -f /tmp/kf-batch-ran');
    const other = lockNode(pool, target, `${runB}/step-one/1`, { waitMs: 2_500, rank: lockRank(1, 1) });
    await expect(other.run(sh`touch /tmp/kf-batch-ran`)).rejects.toMatchObject({ type: NodeBusy, message: expect.stringContaining(`step-three (attempt 1) of run ${runA}`) });
    const lateStepTwo = lockNode(pool, target, `${runA}/step-two/1`, { waitMs: 2_500, rank: lockRank(2, 1) });
    await expect(lateStepTwo.run(sh`touch /tmp/kf-batch-ran`)).rejects.toMatchObject({ type: NodeBusy });
    expect((await on('test -e /tmp/kf-batch-ran; echo $?')).stdout.trim()).toBe('1');
  });

  it('the next attempt of a step takes over at once; the earlier attempt\'s next command is refused (NodeLockLost)', async () => {
    const retry = lockNode(pool, target, `${runA}/step-three/2`, { waitMs: 10_000, rank: lockRank(3, 2) });
    expect(await retry.output(sh`echo retry`)).toBe('retry');
    await expect(stepThree.run(sh`touch /tmp/kf-batch-ran`)).rejects.toMatchObject({ type: NodeLockLost });
    expect((await on('test -e /tmp/kf-batch-ran; echo $?')).stdout.trim()).toBe('1');
    // The run's closing activity releases the lease: the node is free for other runs at once.
    await withNodeLock(pool, target, `${runA}/commit/1`, 10_000, (shell) => shell.output(sh`true`), { rank: lockRank(1000, 1) });
    expect((await on(`test -e ${lockPath('batch-1')}; echo $?`)).stdout.trim()).toBe('1');
  });

  it('even the same run does not take over while a command of the previous owner still runs on the node', async () => {
    const first = lockNode(pool, target, `${runA}/step-slow/1`, { waitMs: 10_000, rank: lockRank(4, 1) });
    const slow = first.run(sh`sleep 4; echo slept`);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const second = lockNode(pool, target, `${runA}/step-next/1`, { waitMs: 1_000, rank: lockRank(5, 1) });
    await expect(second.run(sh`echo too-early`)).rejects.toMatchObject({ type: NodeBusy, message: expect.stringContaining('a command of it still running on the node') });
    expect((await slow).stdout).toBe('slept\n');
    const third = lockNode(pool, target, `${runA}/step-next/2`, { waitMs: 10_000, rank: lockRank(5, 2) });
    expect(await third.output(sh`echo after`)).toBe('after');
    await third.release();
  }, 60_000);
});
