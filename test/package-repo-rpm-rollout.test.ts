// One rollout through the public CLI on a Fedora-like node (dnf, sim/rpm-node.ts): a playbook whose install step is
// package-repo with manager "dnf" (the mirror's signed OBS-style rpm-md repository, key fingerprint pinned), then
// kata-deploy's containerd wiring and the restart. `katafleet rollout --follow` exits 0 and the node runs Kata from the
// rpm; a rollout that fails after the install (no virtualization) rolls the node back: package, repository and key gone.
// Covers README "Real nodes" (RPM-family nodes) and playbooks/README.md "package-repo" (dnf).
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { startFleet, type Fleet } from '../sim/fleet';
import type { RpmRepositories } from '../sim/rpm-repo';
import { sshRun } from '../sim/ssh-run';
import { taskQueue } from '../worker/connection';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { oneAtATimePlaybook } from './helpers/playbook-toml';
import { fold, missingProofTests, unprovenSentences, type Proof } from './helpers/proof-table';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let work: string;
let repos: RpmRepositories;

/** The playbook: package-repo (dnf) from the mirror, prereq-check after it, containerd wiring, restart. */
const playbookToml = (name: string) => {
  const url = `http://127.0.0.1:${fleet.mirror.port}/${repos.obs.fedoraPath}`;
  return oneAtATimePlaybook(name, `
[[steps]]
id = "install"
kind = "package-repo"
manager = "dnf"
name = "kata"
url = "${url}"
key_url = "${url}repodata/repomd.xml.key"
key_fingerprint = "${repos.obs.fingerprint}"
packages = [{ name = "kata-containers", version = "3.2.0" }]

[[steps]]
id = "prereq"
kind = "prereq-check"
cpu_flags = ["vmx", "svm"]
require_kvm = true

[[steps]]
id = "containerd"
kind = "containerd-patch"
config_path = "/etc/containerd/config.toml"

[[steps.runtimes]]
name = "kata"
runtime_type = "io.containerd.kata.v2"
runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"

[[steps]]
id = "restart"
kind = "service-restart"
service = "containerd"
wait_for_handlers = ["kata"]
`);
};

const katafleet = (...args: string[]) => runKatafleet(env.address, args, 300_000);
const on = async (node: string, command: string) => (await sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command)).stdout.trim();

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-package-repo-rpm-rollout-'));
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: [{ name: 'fedora-1', packageManager: 'dnf', containerd: '1.6' }, { name: 'fedora-2', packageManager: 'dnf', containerd: '1.6' }], dir: join(work, 'fleet') }),
  ]);
  repos = JSON.parse(await readFile(join(fleet.mirror.dir, 'rpm-repo.json'), 'utf8')) as RpmRepositories;
  worker = await runKatafleetWorker(env, taskQueue);
  await writeFile(join(work, 'kata-dnf.toml'), playbookToml('kata-dnf'));
}, 180_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('katafleet rollout on a Fedora-like node, Kata from a signed dnf repository (package-repo)', () => {
  it('katafleet validate accepts the playbook (exit 0)', async () => {
    const result = await katafleet('validate', join(work, 'kata-dnf.toml'));
    expect(result).toMatchObject({ code: 0, stdout: expect.stringContaining('valid playbook "kata-dnf", 4 steps') });
  });

  it('installs kata-containers from the repository with dnf, wires containerd, and exits 0', async () => {
    const rollout = await katafleet('rollout', join(work, 'kata-dnf.toml'), '--inventory', await writeFleetInventory(fleet, work, 'one', ['fedora-1']), '--follow', '--request-id', 'rpm-ok');
    expect(rollout.code).toBe(0);
    expect(await on('fedora-1', "rpm -q --qf '%{VERSION}-%{RELEASE}\\n' kata-containers; grep -c '^gpgcheck=1$' /etc/yum.repos.d/katafleet-kata.repo; grep -c 'containerd-shim-kata-v2' /etc/containerd/config.toml"))
      .toBe('3.2.0-1.1\n1\n1');
  }, 300_000);

  it('a rollout that fails after the install rolls the node back: package, repository, key file and rpm key removed', async () => {
    await fleet.setFault('fedora-2', 'no-virtualization', true);
    const rollout = await katafleet('rollout', join(work, 'kata-dnf.toml'), '--inventory', await writeFleetInventory(fleet, work, 'two', ['fedora-2']), '--follow', '--request-id', 'rpm-fail');
    expect(rollout.code).not.toBe(0);
    expect(rollout.stdout).toMatch(/fedora-2 +1 +rolled-back .*prereq-check "prereq" failed/);
    const rpmKey = `gpg-pubkey-${repos.obs.fingerprint.slice(-8).toLowerCase()}`;
    expect(await on('fedora-2', `rpm -q kata-containers ${rpmKey}; ls /etc/yum.repos.d /etc/pki/rpm-gpg`))
      .toBe(`package kata-containers is not installed\npackage ${rpmKey} is not installed\n/etc/pki/rpm-gpg:\nRPM-GPG-KEY-fedora-40-x86_64\n\n/etc/yum.repos.d:\nfedora.repo`);
  }, 300_000);
});

const installs = 'installs kata-containers from the repository with dnf, wires containerd, and exits 0';
const rollsBack = 'a rollout that fails after the install rolls the node back: package, repository, key file and rpm key removed';
/** README "Real nodes", its paragraph on RPM-family nodes: each sentence and the tests that prove it. */
const proofs: Proof[] = [
  {
    sentence: 'RPM-family nodes (Fedora, RHEL and rebuilds with dnf; openSUSE and SLES with zypper) are handled by `package-install`',
    tests: {
      'package-repo-rpm-rollout.test.ts': [installs, rollsBack],
      'package-install-rpm.test.ts': ['a version no repository offers is PackageNotAvailable (never retried), and nothing is installed'],
      'package-repo-rpm.test.ts': ['refuses a key whose fingerprint is not the pinned one before anything is written (PackageRepoKeyMismatch)'],
    },
  },
];

describe('README "Real nodes": the paragraph on RPM-family nodes', () => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
  const paragraph = readme.split(/\n\s*\n/).find((p) => p.startsWith('RPM-family nodes')) ?? '';
  const sentences = fold(paragraph).split(/(?<=\.)\s+(?=[A-Z`*[])/).filter(Boolean);

  it('has a proving test named for every sentence', () => {
    expect(sentences.length).toBeGreaterThan(0);
    expect(unprovenSentences(sentences, proofs)).toEqual([]);
    expect(missingProofTests(proofs)).toEqual([]);
  });
});

