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
import { fold, missingProofTests, unprovenSentences, type Proof } from './helpers/proof-table';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';

const node = 'nozstd-1';
let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let work: string;
let inventory: string;

const katafleet = (...args: string[]) => runKatafleet(env.address, args, 300_000);
const on = async (command: string) => {
  const result = await sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command);
  if (result.exitCode !== 0) throw new Error(`${command} exited with ${result.exitCode}: ${result.stderr}`);
  return result.stdout;
};
/** What release-tarball changes (the node lock's own files in /var/lib/katafleet aside). */
const nodeState = () => on('ls -A /opt /usr/local/bin; ls -A /var/lib/katafleet 2>/dev/null | grep release-; true');

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-program-probe-cli-'));
  [env, fleet] = await Promise.all([startTestTemporal(), startFleet({ nodes: [{ name: node }], dir: join(work, 'fleet') })]);
  worker = await runKatafleetWorker(env, taskQueue);
  const built = JSON.parse(await readFile(join(fleet.mirror.dir, 'kata-releases.json'), 'utf8')) as Record<string, { sha256: string }>;
  await writeFile(join(work, 'kata-tarball.toml'), `
[playbook]
name = "kata-tarball"

[rollout]
canary = 1
wave_size = 1
pause_between_waves = "0s"

[[steps]]
id = "prereq"
kind = "prereq-check"
cpu_flags = []
require_kvm = false
modules = ["kvm"]

[[steps]]
id = "install"
kind = "release-tarball"
version = "3.32.0"
url = "http://127.0.0.1:${fleet.mirror.port}/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}"
sha256 = { amd64 = "${built['3.32.0'].sha256}" }
`);
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
    sentence: 'A program a step needs that the node lacks fails that step before it changes anything',
    tests: {
      'program-probe-cli.test.ts': [refuses, succeeds],
      'program-probe.test.ts': ['fails release-tarball with ProgramMissing when zstd is hidden, before changing anything; prereq-check still runs'],
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
