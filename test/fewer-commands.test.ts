// Fewer SSH round trips per node, every safety check kept (issue 14, session 7): the modprobes of prereq-check in one
// command (NodeShell.runInOrder), `kata-runtime check` with the step's reads, the path check (realpath -m) riding on
// the step's first command (NodeShell.queueRead), and writeFileAtomic's temp file per writer. Against a real
// simulated node (sshd, the node's modprobe and its fault switches); the pool counts the commands.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import type { DesiredState } from '../activities/desired-state';
import { createNodeActivities } from '../activities/node-activities';
import type { NodeTarget, StepOutcome, StepRequest } from '../activities/node-types';
import { sh, SshPool, type CommandEvent } from '../activities/ssh';
import { oneLine, printText } from '../activities/steps/journal';
import { NodeShell } from '../activities/steps/node-shell';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import type { PrereqCheckStep } from '../playbooks/schema';
import { staticModules } from '../activities/steps/prereq-check';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';

let fleet: Fleet;
let pool: SshPool;
let target: NodeTarget;
let prereq: PrereqCheckStep;
let kataCheck: PrereqCheckStep;
const commands: CommandEvent[] = [];
const runId = '5e0c1a2b-3d4f-4a6b-8c9d-0e1f2a3b4c5d';
const on = async (command: string) => {
  const result = await sshRun(fleet, fleet.nodes[0], command);
  return result.stdout;
};
const counted = async <T>(work: () => Promise<T>): Promise<{ result: T; count: number; texts: string[] }> => {
  const before = commands.length;
  const result = await work();
  return { result, count: commands.length - before, texts: commands.slice(before).map((event) => event.text) };
};
const failureOf = (promise: Promise<unknown>) => promise.then(() => undefined, (err: { type?: string; message: string }) => err);

/** Runs prereq-check as a worker would (an activity context), without the journal (no lock: the step's own commands only). */
async function runPrereq(step: PrereqCheckStep): Promise<StepOutcome> {
  const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000 } as Partial<Info>, { logger: new DefaultLogger('ERROR') });
  const request: StepRequest<PrereqCheckStep> = { runId, rolloutId: 'fewer', node: target, step, drain: false };
  return (await env.run(createNodeActivities({ pool }).prereqCheck, request)) as StepOutcome;
}

const loadedModules = async () => (await on('cut -d" " -f1 /run/katafleet-sim/modules | sort')).split('\n').filter(Boolean);

beforeAll(async () => {
  fleet = await startFleet({ nodes: [{ name: 'fewer-1' }], dir: join(await mkdtemp(join(tmpdir(), 'kf-fewer-')), 'fleet') });
  const inventory = await loadInventory(fleet.inventoryPath);
  target = toNodeTarget(inventory, inventory.nodes[0]);
  const steps = (await loadPlaybook('kata')).steps.filter((s): s is PrereqCheckStep => s.kind === 'prereq-check');
  [prereq, kataCheck] = steps;
  pool = new SshPool({ onCommand: (event) => commands.push(event) });
}, 120_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});

describe('NodeShell.runInOrder: several commands in one, in order, each with its own status', () => {
  it('runs the parts in order in one command, merges each part\'s stderr into its output, and skips a part whose condition does not hold', async () => {
    const shell = new NodeShell(pool, target);
    const { result, count } = await counted(() => shell.runInOrder([
      { command: sh`echo one` },
      { command: sh`echo two-out; echo two-err >&2; exit 1`, when: { ok: [0] } },
      { command: sh`echo after-a-failure`, when: { ok: [0, 1] } },
      { command: sh`echo because-1-failed`, when: { failed: [1] } },
      { command: sh`echo any-of`, when: { anyOk: [[1, 3]] } },
      { command: sh`echo none-of`, when: { anyOk: [[1, 2]] } },
      { command: sh`exit 7` },
    ]));
    expect(count).toBe(1);
    expect(result).toEqual([
      { stdout: 'one\n', exitCode: 0 },
      { stdout: 'two-out\ntwo-err\n', exitCode: 1 },
      undefined,
      { stdout: 'because-1-failed\n', exitCode: 0 },
      { stdout: 'any-of\n', exitCode: 0 },
      undefined,
      { stdout: '', exitCode: 7 },
    ]);
  });

  it('refuses a condition that names a part that does not run before it (nothing is sent)', async () => {
    const shell = new NodeShell(pool, target);
    const { result, count } = await counted(() => failureOf(shell.runInOrder([{ command: sh`true`, when: { ok: [0] } }])));
    expect(result?.message).toContain('names part 0, which does not run before it');
    expect(count).toBe(0);
  });
});

describe('NodeShell.queueRead: a read that rides on the next command', () => {
  it('rides on the next readAll (one command) and is checked before readAll answers', async () => {
    const shell = new NodeShell(pool, target);
    const seen: string[] = [];
    shell.queueRead(sh`echo queued`, (answer) => seen.push(`${answer.exitCode}:${answer.stdout}`));
    const { result, count } = await counted(() => shell.readAll({ kernel: sh`uname -r` }));
    expect({ count, seen, kernel: result.kernel.stdout }).toEqual({ count: 1, seen: ['0:queued\n'], kernel: '6.1.0-katafleet-sim\n' });
    // Sent once: the next readAll carries it no more.
    expect((await counted(() => shell.readAll({ again: sh`true` }))).count).toBe(1);
    expect(seen).toHaveLength(1);
  });

  it('a check that throws fails the readAll, so the step never gets what that command read', async () => {
    const shell = new NodeShell(pool, target);
    shell.queueRead(sh`echo refused`, () => {
      throw new Error('refused by the check');
    });
    await expect(shell.readAll({ secret: sh`echo read` })).rejects.toThrow('refused by the check');
  });

  it('stays queued when the command that carried it got no answer: the next command still sends and checks it first', async () => {
    const shell = new NodeShell(pool, target);
    const seen: string[] = [];
    shell.queueRead(sh`echo queued`, (answer) => seen.push(answer.stdout));
    await expect(shell.readAll({ slow: sh`sleep 5` }, { timeoutMs: 1_000 })).rejects.toMatchObject({ type: 'CommandTimedOut' });
    expect(seen).toEqual([]);
    const { count } = await counted(() => shell.run(sh`true`));
    expect({ count, seen }).toEqual({ count: 2, seen: ['queued\n'] });
  });

  it('before any other command it is sent alone and checked first: a refusal stops that command from running', async () => {
    await on('rm -f /tmp/kf-fewer-ran');
    const shell = new NodeShell(pool, target);
    shell.queueRead(sh`echo refused`, () => {
      throw new Error('refused before the write');
    });
    const { result, count } = await counted(() => failureOf(shell.run(sh`touch /tmp/kf-fewer-ran`)));
    expect(result?.message).toBe('refused before the write');
    expect(count).toBe(1);
    expect(await on('test -e /tmp/kf-fewer-ran && echo ran || echo not-run')).toBe('not-run\n');
  });
});

describe('prereq-check in fewer commands, the same checks', () => {
  it('the path check rides on the reads: a modules-load file that is a symlink out of its directory is refused (StepRefused, the same message) in one command, before any module is loaded or anything written', async () => {
    await on('mkdir -p /etc/cron.d && rm -f /etc/cron.d/katafleet.conf && ln -sfn /etc/cron.d/katafleet.conf /etc/modules-load.d/katafleet.conf');
    const modulesBefore = await loadedModules();
    try {
      const { result, count } = await counted(() => failureOf(runPrereq(prereq)));
      expect(result?.type).toBe('StepRefused');
      expect(result?.message).toContain('modules_load_file: "/etc/modules-load.d/katafleet.conf" is a symlink on the node; its target "/etc/cron.d/katafleet.conf" is refused: it is not under "/etc/modules-load.d/"');
      expect(count).toBe(1);
      expect(await on('test -e /etc/cron.d/katafleet.conf && echo written || echo absent')).toBe('absent\n');
      expect(await loadedModules()).toEqual(modulesBefore);
    } finally {
      await on('rm -f /etc/modules-load.d/katafleet.conf');
    }
  });

  it('a module that will not load (vhost-vsock-busy): NodeNotCapable with modprobe\'s own message, the modules after it not tried, nothing written; the loads were one command', async () => {
    await fleet.setFault('fewer-1', 'vhost-vsock-busy', true);
    try {
      await on('/usr/local/sbin/modprobe -r vhost_net; /usr/local/sbin/modprobe -r vhost; true');
      const before = await loadedModules();
      expect(before).not.toContain('vhost_vsock');
      const { result, count, texts } = await counted(() => failureOf(runPrereq(prereq)));
      expect(result?.type).toBe('NodeNotCapable');
      expect(result?.message).toBe('Node fewer-1 cannot run Kata Containers: kernel module vhost_vsock cannot be loaded: modprobe: ERROR: could not insert \'vhost_vsock\': Device or resource busy');
      // The reads (with the path check), then the loads: vhost and vhost_net loaded, vhost_vsock refused, in one command.
      expect(count).toBe(2);
      expect(texts[1].match(/modprobe/g)?.length).toBeGreaterThanOrEqual(3);
      const after = await loadedModules();
      expect(after).toEqual(expect.arrayContaining(['vhost', 'vhost_net']));
      expect(after).not.toContain('vhost_vsock');
      expect(await on('test -e /etc/modules-load.d/katafleet.conf && echo written || echo absent')).toBe('absent\n');
    } finally {
      await fleet.setFault('fewer-1', 'vhost-vsock-busy', false);
    }
  });

  it('on a node that lacks modules and the modules-load file: the reads, then one command for every load, /dev/kvm and the file\'s write (after them); a second run reads only', async () => {
    await on('/usr/local/sbin/modprobe -r vhost_vsock; /usr/local/sbin/modprobe -r vhost_net; /usr/local/sbin/modprobe -r vhost; rm -f /etc/modules-load.d/katafleet.conf; true');
    const { result, count } = await counted(() => runPrereq(prereq));
    expect(result.summary).toContain('loaded vhost, vhost_net, vhost_vsock');
    expect(result.summary).toContain('wrote /etc/modules-load.d/katafleet.conf');
    expect(result.undo).toEqual({ kind: 'restore-file', stepId: 'prereq', path: '/etc/modules-load.d/katafleet.conf', backupPath: undefined, sha256: undefined });
    expect(await on('cat /etc/modules-load.d/katafleet.conf')).toBe('# Written by katafleet (prereq-check): kernel modules Kata Containers needs at boot.\nkvm\nvhost\nvhost_net\nvhost_vsock\nkvm_intel\n');
    expect(count).toBe(2);
    expect(await loadedModules()).toEqual(expect.arrayContaining(['vhost', 'vhost_net', 'vhost_vsock']));
    const again = await counted(() => runPrereq(prereq));
    expect({ changed: again.result.changed, count: again.count }).toEqual({ changed: false, count: 1 });
  });

  it('kata-runtime check rides on the reads when the step checks nothing before it: KataRuntimeMissing in one command on a node without Kata', async () => {
    const { result, count } = await counted(() => failureOf(runPrereq(kataCheck)));
    expect(result?.type).toBe('KataRuntimeMissing');
    expect(result?.message).toContain('a prereq-check with run_kata_check = true must come after the package-install step that installs Kata');
    expect(count).toBe(1);
  });
});

describe('staticModules (pure): the modules-load file\'s content is known before the loads only when no group needs a load tried', () => {
  it('takes each group\'s first member when it is loaded; otherwise (a member before it would be tried) gives no answer', () => {
    const step = { modules: ['kvm', 'vhost'], modules_any_of: [['kvm_intel', 'kvm_amd']] };
    expect(staticModules(step, new Set(['kvm_intel']))).toEqual(['kvm', 'vhost', 'kvm_intel']);
    expect(staticModules(step, new Set(['kvm_amd']))).toBeUndefined();
    expect(staticModules(step, new Set())).toBeUndefined();
    expect(staticModules({ modules: ['vhost'], modules_any_of: [] }, new Set())).toEqual(['vhost']);
  });
});

describe('NodeShell.writeFileAtomic: a temp file per writer', () => {
  it('eight writers of one file at once all succeed (one temp name per target collided), the file holds one of their contents whole, no temp file is left', async () => {
    const path = '/var/lib/katafleet/fewer-desired.json';
    const contents = Array.from({ length: 8 }, (_, i) => `${JSON.stringify({ writer: i, pad: 'x'.repeat(2000) })}\n`);
    const results = await Promise.allSettled(contents.map((content) => new NodeShell(pool, target).writeFileAtomic(path, content)));
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(contents).toContain(await on(`cat ${path}`));
    expect(await on(`ls -a /var/lib/katafleet | grep -c katafleet-tmp || true`)).toBe('0\n');
  });
});

describe('commitRun in one command', () => {
  const commitRun = (run: string, desired: DesiredState) => {
    const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000, currentAttemptScheduledTimestampMs: Date.now() } as Partial<Info>, { logger: new DefaultLogger('ERROR') });
    return env.run(createNodeActivities({ pool }).commitRun, {
      node: target, runId: run, rolloutId: 'fewer', desired,
      undos: [{ kind: 'remove-node-labels' as const, stepId: 'label', keys: ['katafleet.io/kata'] }],
    }) as Promise<{ desiredError?: string }>;
  };
  const desired = (rolloutId: string): DesiredState => ({ playbook: { name: 'kata', sha256: 'a'.repeat(64) }, rolloutId, state: 'applied', since: '2026-11-30T22:00:00.000Z' });

  it('the applied record, the journal deleted, desired.json and the lease given back: one command, each done', async () => {
    const run = '6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
    await on(`mkdir -p /var/lib/katafleet/journal/${run} && echo '{}' > /var/lib/katafleet/journal/${run}/00-x.json; rm -f /var/lib/katafleet/desired.json`);
    const { result, count } = await counted(() => commitRun(run, desired('commit-1')));
    expect({ result, count }).toEqual({ result: {}, count: 1 });
    const applied = JSON.parse(await on(`cat /var/lib/katafleet/applied/*-${run}.json`)) as { runId: string; undos: unknown[] };
    expect(applied).toMatchObject({ runId: run, rolloutId: 'fewer', undos: [{ kind: 'remove-node-labels', keys: ['katafleet.io/kata'] }] });
    expect(JSON.parse(await on('cat /var/lib/katafleet/desired.json'))).toEqual(desired('commit-1'));
    expect(await on(`test -e /var/lib/katafleet/journal/${run} && echo journal || echo no-journal; test -e /var/lib/katafleet/lock-fewer-1 && echo locked || echo released`)).toBe('no-journal\nreleased\n');
  });

  it('a directory where desired.json should be: the commit stands, desiredError names it (FileIsDirectory\'s message), the lease is given back, still one command', async () => {
    const run = '7b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e';
    await on('rm -f /var/lib/katafleet/desired.json && mkdir -p /var/lib/katafleet/desired.json');
    try {
      const { result, count } = await counted(() => commitRun(run, desired('commit-2')));
      expect(count).toBe(1);
      expect(result.desiredError).toBe('Node fewer-1: /var/lib/katafleet/desired.json is a directory, not a file: katafleet does not write into it (remove or rename it, then run again); nothing was written');
      expect(await on(`ls /var/lib/katafleet/applied/ | grep -c ${run}; ls -A /var/lib/katafleet/desired.json | wc -l; test -e /var/lib/katafleet/lock-fewer-1 && echo locked || echo released`)).toBe('1\n0\nreleased\n');
    } finally {
      await on('rmdir /var/lib/katafleet/desired.json');
    }
  });
});

describe('containerd-patch in fewer commands', () => {
  it('with the journal: the reads; the intent, the backup, the validated candidate and the swap in one command; the read after the swap (3): the intent and the backup are on the node, the config patched', async () => {
    const run = '8c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f';
    const step = (await loadPlaybook('kata')).steps.find((s) => s.id === 'containerd')!;
    const original = await on('cat /etc/containerd/config.toml');
    const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000, currentAttemptScheduledTimestampMs: Date.now() } as Partial<Info>, { logger: new DefaultLogger('ERROR') });
    try {
      const { result, count } = await counted(() => env.run(createNodeActivities({ pool }).containerdPatch, {
        runId: run, rolloutId: 'fewer', node: target, step: step as never, drain: false, journal: true, stepIndex: 3,
      }) as Promise<StepOutcome>);
      expect(result.changed).toBe(true);
      // Three (five before): the lease is handed over to the run's next activity, no command releases it.
      expect(count).toBe(3);
      const backup = `/etc/containerd/config.toml.katafleet-${run.slice(0, 12)}.bak`;
      expect(await on(`cat ${backup}`)).toBe(original);
      expect(await on('grep -c "runtimes.kata" /etc/containerd/config.toml')).not.toBe('0\n');
      const entry = JSON.parse(await on(`cat /var/lib/katafleet/journal/${run}/03-containerd.json`)) as { undo: { kind: string; backupPath: string } };
      expect(entry.undo).toMatchObject({ kind: 'restore-containerd-config', backupPath: backup });
      expect(await on(`ls /etc/containerd | grep -c 'katafleet-.*new' || true`)).toBe('0\n');
    } finally {
      await on(`cp /etc/containerd/config.toml.katafleet-${run.slice(0, 12)}.bak /etc/containerd/config.toml; rm -rf /etc/containerd/config.toml.katafleet-* /var/lib/katafleet/journal/${run} /var/lib/katafleet/lock-fewer-1`);
    }
  });
  it('a backup that does not hold the config as read (a test-side cp on the node copies other bytes): ContainerdConfigChanged, retried; no candidate written, the config keeps its bytes', async () => {
    const run = '9d4e5f6a-7b8c-4d9e-8f0a-1b2c3d4e5f6a';
    const step = (await loadPlaybook('kata')).steps.find((s) => s.id === 'containerd')!;
    const original = await on('sha256sum < /etc/containerd/config.toml');
    // Found before /usr/bin/cp on root's PATH (activities/ssh/quote.ts ROOT_PATH) by a fresh connection's probe.
    await on(`printf '#!/bin/sh\nfor last; do :; done\necho changed > "$last"\n' > /usr/local/bin/cp && chmod 0755 /usr/local/bin/cp`);
    const fresh = new SshPool({ onCommand: (event) => commands.push(event) });
    const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000, currentAttemptScheduledTimestampMs: Date.now() } as Partial<Info>, { logger: new DefaultLogger('ERROR') });
    try {
      const failure = await failureOf(env.run(createNodeActivities({ pool: fresh }).containerdPatch, {
        runId: run, rolloutId: 'fewer', node: target, step: step as never, drain: false, journal: true, stepIndex: 3,
      }) as Promise<StepOutcome>) as { type?: string; message: string; nonRetryable?: boolean } | undefined;
      expect(failure).toMatchObject({ type: 'ContainerdConfigChanged', nonRetryable: false });
      expect(failure?.message).toContain('changed while katafleet backed it up');
      expect(await on('sha256sum < /etc/containerd/config.toml')).toBe(original);
      expect(await on(`ls /etc/containerd | grep -c 'katafleet-.*new' || true`)).toBe('0\n');
    } finally {
      await fresh.closeAll();
      await on(`rm -f /usr/local/bin/cp /etc/containerd/config.toml.katafleet-* /var/lib/katafleet/lock-fewer-1; rm -rf /var/lib/katafleet/journal/${run}`);
    }
  });
  it('a config.toml that is a symlink out of /etc/containerd/: StepRefused (the same message) by the first command, which read only; nothing written anywhere', async () => {
    const run = '0e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b';
    const step = (await loadPlaybook('kata')).steps.find((s) => s.id === 'containerd')!;
    await on('cp -p /etc/containerd/config.toml /tmp/kf-real-config.toml && mv /etc/containerd/config.toml /etc/containerd/config.toml.kf-test-aside && ln -s /tmp/kf-real-config.toml /etc/containerd/config.toml');
    const before = await on('sha256sum < /tmp/kf-real-config.toml; ls -a /etc/containerd /tmp | grep -c katafleet || true');
    const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000, currentAttemptScheduledTimestampMs: Date.now() } as Partial<Info>, { logger: new DefaultLogger('ERROR') });
    try {
      const { result, count } = await counted(() => failureOf(env.run(createNodeActivities({ pool }).containerdPatch, {
        runId: run, rolloutId: 'fewer', node: target, step: step as never, drain: false, journal: true, stepIndex: 3,
      }) as Promise<StepOutcome>));
      expect(result?.type).toBe('StepRefused');
      expect(result?.message).toContain('config_path: "/etc/containerd/config.toml" is a symlink on the node; its target "/tmp/kf-real-config.toml" is refused');
      // The reads with the path check (taking the lease), then the lease's release on the failure path.
      expect(count).toBe(2);
      expect(await on('sha256sum < /tmp/kf-real-config.toml; ls -a /etc/containerd /tmp | grep -c katafleet || true')).toBe(before);
      expect(await on(`test -e /var/lib/katafleet/journal/${run} && echo journal || echo no-journal; test -e /var/lib/katafleet/lock-fewer-1 && echo locked || echo released`)).toBe('no-journal\nreleased\n');
    } finally {
      await on('rm -f /etc/containerd/config.toml && mv /etc/containerd/config.toml.kf-test-aside /etc/containerd/config.toml && rm -f /tmp/kf-real-config.toml');
    }
  });
});

describe('records in a script\'s text or ahead of other stdin (journal.ts printText, oneLine)', () => {
  it('printText prints hostile text byte for byte on the node (quotes, $(…), backticks, newlines, a backslash), and refuses text over 16 KiB or with a NUL', async () => {
    const hostile = `{"intent":"it's $(touch /tmp/kf-fewer-pwned) \`touch /tmp/kf-fewer-pwned\` '\\'' ; rm -rf /tmp/x\n\\n \\"quoted\\""}\nsecond line\n`;
    await on('rm -f /tmp/kf-fewer-pwned');
    const shell = new NodeShell(pool, target);
    expect((await shell.run(printText(hostile)!, { asRoot: false })).stdout).toBe(hostile);
    expect(await on('test -e /tmp/kf-fewer-pwned && echo ran || echo not-run')).toBe('not-run\n');
    expect(printText('x'.repeat(16 * 1024 + 1))).toBeUndefined();
    expect(printText('a\0b')).toBeUndefined();
  });

  it('oneLine takes only one line ending in a newline (a JSON record), so the shell\'s read hands back the whole record', () => {
    expect(oneLine(`${JSON.stringify({ text: 'a\nb' })}\n`)).toBe('{"text":"a\\nb"}\n');
    expect(() => oneLine('a\nb\n')).toThrow('one line');
    expect(() => oneLine('no newline')).toThrow('one line');
  });
});
