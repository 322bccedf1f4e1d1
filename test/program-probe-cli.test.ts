// README "Real nodes", the paragraph on where real nodes differ (sudo-proof commands, issue 12): through the public
// CLI, a rollout of a Kata release tarball (a .tar.zst) onto a simulated node that lacks zstd (hidden with a bind
// mount of /dev/null, as on a minimal Debian without the zstd package) fails at the install step before it changes
// anything: `katafleet rollout --follow` exits non-zero and names the step, the node and the missing program, and the
// node's /opt, /usr/local/bin and /var/lib/katafleet are as before; the prereq-check before it ran. With zstd back the
// same rollout succeeds.
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';
import { taskQueue } from '../worker/connection';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { oneAtATimePlaybook } from './helpers/playbook-toml';
import { fold, missingProofTests, unprovenSentences, type Proof } from './helpers/proof-table';
import { SshPool, type CommandEvent } from '../activities/ssh';
import { PROBED_PROGRAMS } from '../activities/ssh/programs';
import { workerActivities } from '../worker/worker';
import { createTestWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';

const node = 'nozstd-1';
let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let work: string;
let inventory: string;
const events: CommandEvent[] = [];

const katafleet = (...args: string[]) => runKatafleet(env.address, args, 300_000);
const on = async (command: string) => {
  const result = await sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command);
  if (result.exitCode !== 0) throw new Error(`${command} exited with ${result.exitCode}: ${result.stderr}`);
  return result.stdout;
};
/** A prereq-check step `id` that needs kernel module `module` (no CPU flag, no /dev/kvm: the simulated node has neither). */
const prereqStep = (id: string, module: string) => `
[[steps]]
id = "${id}"
kind = "prereq-check"
cpu_flags = []
require_kvm = false
modules = ["${module}"]
`;
/** What release-tarball changes (the node lock's own files in /var/lib/katafleet aside). */
const nodeState = () => on('ls -A /opt /usr/local/bin; ls -A /var/lib/katafleet 2>/dev/null | grep release-; true');

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-program-probe-cli-'));
  [env, fleet] = await Promise.all([startTestTemporal(), startFleet({ nodes: [{ name: node }], dir: join(work, 'fleet') })]);
  // The worker as runKatafleetWorker makes it, with a pool that logs every command it sends (the bare-name scan).
  const pool = new SshPool({ onCommand: (event) => events.push(event) });
  const running = await createTestWorker(env, taskQueue, workerActivities(pool));
  const done = running.run();
  worker = { pool, async stop() { running.shutdown(); await done; await pool.closeAll(); } };
  const built = JSON.parse(await readFile(join(fleet.mirror.dir, 'kata-releases.json'), 'utf8')) as Record<string, { sha256: string }>;
  await writeFile(join(work, 'kata-tarball.toml'), oneAtATimePlaybook('kata-tarball', prereqStep('prereq', 'kvm'), `
[[steps]]
id = "install"
kind = "release-tarball"
version = "3.32.0"
url = "http://127.0.0.1:${fleet.mirror.port}/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}"
sha256 = { amd64 = "${built['3.32.0'].sha256}" }
`));
  await writeFile(join(work, 'kata-wire.toml'), oneAtATimePlaybook('kata-wire', prereqStep('prereq', 'kvm'), `
[[steps]]
id = "containerd"
kind = "containerd-patch"
runtimes = [{ name = "kata", runtime_type = "io.containerd.kata.v2" }]

[[steps]]
id = "restart"
kind = "service-restart"
service = "containerd"
wait_for_handlers = []
`, `${prereqStep('fails', 'katafleet_no_such_module')}persist_modules = false
`));
  await writeFile(join(work, 'kata-off.toml'), oneAtATimePlaybook('kata-off', `
[[steps]]
id = "remove"
kind = "release-tarball"
action = "remove"
`));
  inventory = await writeFleetInventory(fleet, work, 'one', [node]);
}, 240_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
  if (work) await rm(work, { recursive: true, force: true });
});

const refuses = 'a rollout onto a node without zstd fails at release-tarball with ProgramMissing naming node and program, exits non-zero, and changes nothing';
const succeeds = 'the same rollout succeeds once zstd is back (the connection probes again: a missing program is never taken from an old answer)';

describe('katafleet rollout onto a node that lacks a program the install step needs', () => {
  it(refuses, async () => {
    const before = await nodeState();
    await on('mount --bind /dev/null /usr/bin/zstd');
    try {
      const rollout = await katafleet('rollout', join(work, 'kata-tarball.toml'), '--inventory', inventory, '--follow', '--request-id', 'no-zstd');
      expect(rollout.code).not.toBe(0);
      const said = fold(rollout.stdout + rollout.stderr);
      expect(said).toMatch(new RegExp(`${node} .*release-tarball "install" failed`));
      expect(said).toContain(`Node ${node}: zstd is not on the node (searched /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin as root)`);
      expect(said).toContain('install zstd (apt-get install zstd / dnf install zstd)');
      expect(await nodeState()).toBe(before);
    } finally {
      await on('umount /usr/bin/zstd');
    }
  }, 300_000);

  it(succeeds, async () => {
    const rollout = await katafleet('rollout', join(work, 'kata-tarball.toml'), '--inventory', inventory, '--follow', '--request-id', 'with-zstd');
    expect(rollout.code).toBe(0);
    expect(await on('readlink /opt/kata')).toBe('/opt/kata-releases/3.32.0/opt/kata\n');
  }, 300_000);
});

const byPath = 'every command of a rollout (prereq-check, release-tarball, containerd-patch, service-restart, the node lock, journal and recovery), of its rollback (the undos of a failed run) and of a removal (release-tarball remove) calls every probed program by its absolute path';

/**
 * The probed programs a command's text calls by bare name: at a command position (the start, after ; & | ( { $( !,
 * then, else, do, sh -c), with the quoting removed. Arguments (`restart containerd`) and paths do not count.
 */
function bareCalls(text: string): string[] {
  const plain = text.replace(/['\\]/g, '');
  return PROBED_PROGRAMS.filter((program) => new RegExp(`(?:^|[;&|({!\\n]|\\$\\(|\\b(?:then|else|do|sh -c)\\s)\\s*${program.replace(/[-]/g, '\\-')}(?=[\\s;)]|$)`).test(plain));
}

describe('sudo-proof commands in a whole rollout and its rollback', () => {
  it(byPath, async () => {
    // A fresh connection, as a new worker meets the node: its first command carries the probe.
    await worker.pool.close(node);
    events.length = 0;
    const wire = await katafleet('rollout', join(work, 'kata-wire.toml'), '--inventory', inventory, '--follow', '--request-id', 'wire');
    // Its last step fails (no such kernel module): the run's undos put the config back and restart containerd.
    expect(wire.code).not.toBe(0);
    expect(`${wire.stdout}${wire.stderr}`).toContain('katafleet_no_such_module');
    expect(events.some((event) => event.stdin?.includes('io.containerd.kata.v2'))).toBe(true);
    expect(await on('grep -c io.containerd.kata.v2 /etc/containerd/config.toml || true')).toBe('0\n');
    const off = await katafleet('rollout', join(work, 'kata-off.toml'), '--inventory', inventory, '--follow', '--request-id', 'off');
    expect(off.code === 0 ? '' : `${off.stdout}${off.stderr}`).toBe('');
    expect(await on('test -e /opt/kata; echo $?')).toBe('1\n');
    const sent = events.filter((event) => event.node === node);
    expect(sent.length).toBeGreaterThan(10);
    // Only the command that carries a connection's probe is built before the answer (its names are looked up by the
    // same PATH in the same shell); every other command calls the probed programs by path.
    const probing = sent.filter((event) => event.text.includes('@@katafleet-probe-'));
    expect(probing.length).toBeGreaterThanOrEqual(1);
    expect(probing.length).toBeLessThan(sent.length / 5);
    const offenders = sent.filter((event) => !event.text.includes('@@katafleet-probe-')).map((event) => ({ calls: bareCalls(event.text), text: event.text.slice(0, 300) })).filter((o) => o.calls.length > 0);
    expect(offenders).toEqual([]);
    // And by path indeed: the patch's validator, the lock's flock, the restart.
    const all = sent.map((event) => event.text.replace(/['\\]/g, '')).join('\n');
    expect(all).toMatch(/\/usr\/\S*bin\/containerd --config /);
    expect(all).toMatch(/\/usr\/\S*bin\/flock -w 10 9/);
    expect(all).toMatch(/\/usr\/local\/sbin\/systemctl restart containerd/);
  }, 600_000);
});

/** README "Real nodes", the paragraph on where real nodes differ: each sentence and the tests that prove it. */
const proofs: Proof[] = [
  {
    sentence: 'Where real nodes differ from what the code once assumed, the simulated nodes now behave as the real ones',
    tests: { 'sim-node.test.ts': ['offers no Kata package in a fresh node\'s apt sources, as on real Debian and Ubuntu: apt-get install kata-containers fails with apt\'s own error'] },
  },
  {
    sentence: 'Root commands run with katafleet\'s own PATH, so sudo\'s `secure_path` on RHEL-family nodes',
    tests: { 'sudo-narrow.test.ts': ['find kata-runtime in /usr/local/bin on a node whose sudo secure_path lacks it (as on RHEL)'] },
  },
  {
    sentence: 'The programs the steps run are found once per SSH connection',
    tests: { 'program-probe.test.ts': ['probes once per connection, on its first root command, however many steps run on it; a new connection probes again'] },
  },
  {
    sentence: 'Every step kind, every undo, the node lock, the journal and the recovery call them by those absolute paths',
    tests: { 'program-probe-cli.test.ts': [byPath] },
  },
  {
    sentence: 'A program a step needs that the node lacks fails that step before it changes anything',
    tests: {
      'program-probe-cli.test.ts': [refuses, succeeds],
      'program-probe.test.ts': [
        'fails release-tarball with ProgramMissing when zstd is hidden, before changing anything; prereq-check still runs',
        'containerd-patch without containerd (its validator) fails ProgramMissing, naming node, program, the directories searched and the fix; the config keeps its bytes',
        'package-install without apt-get fails ProgramMissing before anything is installed; without any package manager, auto says so',
        'package-repo without apt-get fails ProgramMissing after the key check, before the key, the source or its journal reach the node',
        'prereq-check needs modprobe only for a module not loaded yet: without it, such a check fails ProgramMissing, a check of loaded modules still runs',
      ],
    },
  },
];

describe('README "Real nodes": the paragraph on where real nodes differ', () => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
  const paragraph = readme.split(/\n\s*\n/).find((p) => p.startsWith('Where real nodes differ')) ?? '';
  const sentences = fold(paragraph).split(/(?<=\.)\s+(?=[A-Z`*[])/).filter(Boolean);

  it('has a proving test named for every sentence', () => {
    expect(sentences.length).toBeGreaterThan(2);
    expect(unprovenSentences(sentences, proofs)).toEqual([]);
    expect(missingProofTests(proofs)).toEqual([]);
  });
});
