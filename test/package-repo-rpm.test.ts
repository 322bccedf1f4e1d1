// package-repo with dnf (a Fedora-like node) and zypper (an openSUSE-like node), against real dnf 4.14, zypper 1.14
// and rpm 4.18 and the mirror's rpm-md repository (rpmbuild, rpmsign, createrepo_c, signed repomd.xml; sim/rpm-repo.ts):
// the key's fingerprint pinned and checked by the worker before anything is written; the key in
// /etc/pki/rpm-gpg and in the rpm database, the .repo file with gpgcheck=1 and repo_gpgcheck=1; an unsigned repository,
// one signed by another key and an unreachable one refused with everything taken back; packages installed from it;
// undo removes packages, repository, key file and rpm key; a re-run finds it in place; the drift check knows it.
// Covers playbooks/README.md "package-repo" (dnf, zypper) and sim/README.md "RPM-family nodes".
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createDriftActivities } from '../activities/drift-check';
import { createNodeActivities } from '../activities/node-activities';
import type { DriftCheck, NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { rpmRepoText } from '../activities/steps/package-repo';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory } from '../playbooks/load';
import { PackageRepoStep } from '../playbooks/schema';
import { freeLoopbackPort } from '../sim/addresses';
import { startFleet, type Fleet } from '../sim/fleet';
import { writeRogueRpmRepository, type RpmRepositories } from '../sim/rpm-repo';
import { sshRun } from '../sim/ssh-run';
import { failure } from './helpers/failure';

let fleet: Fleet;
let work: string;
let pool: SshPool;
let targets: Record<string, NodeTarget>;
let repos: RpmRepositories;
let mirror: string;
let rogueFingerprint: string;
const runA = '5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d';
const runB = '6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e';

const nodes = [
  { node: 'fedora-1', manager: 'dnf' as const, source: '/etc/yum.repos.d/katafleet-kata.repo' },
  { node: 'suse-1', manager: 'zypper' as const, source: '/etc/zypp/repos.d/katafleet-kata.repo' },
];
const key = '/etc/pki/rpm-gpg/RPM-GPG-KEY-katafleet-kata';

beforeAll(async () => {
  fleet = await startFleet({
    nodes: [{ name: 'fedora-1', packageManager: 'dnf' }, { name: 'suse-1', packageManager: 'zypper' }],
    dir: join((work = await mkdtemp(join(tmpdir(), 'kf-package-repo-rpm-'))), 'fleet'),
  });
  const inventory = await loadInventory(fleet.inventoryPath);
  targets = Object.fromEntries(inventory.nodes.map((node) => [node.name, toNodeTarget(inventory, node)]));
  repos = JSON.parse(await readFile(join(fleet.mirror.dir, 'rpm-repo.json'), 'utf8')) as RpmRepositories;
  mirror = `http://127.0.0.1:${fleet.mirror.port}/`;
  rogueFingerprint = (await writeRogueRpmRepository(fleet.mirror.dir, 'rogue/', true))!;
  await writeRogueRpmRepository(fleet.mirror.dir, 'unsigned/', false);
  pool = new SshPool();
}, 180_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const on = async (node: string, command: string) => (await sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command)).stdout.trim();
const env = () => new MockActivityEnvironment({ startToCloseTimeoutMs: 300_000 }, { logger: new DefaultLogger('ERROR') });
const activities = () => createNodeActivities({ pool });
const obsUrl = (manager: 'dnf' | 'zypper') => `${mirror}${manager === 'dnf' ? repos.obs.fedoraPath : repos.obs.opensusePath}`;

function repoStep(manager: 'dnf' | 'zypper', extra: Record<string, unknown> = {}): PackageRepoStep {
  return PackageRepoStep.parse({
    id: 'install', kind: 'package-repo', manager, name: 'kata', url: obsUrl(manager), key_url: `${obsUrl(manager)}repodata/repomd.xml.key`,
    key_fingerprint: repos.obs.fingerprint, packages: [{ name: 'kata-containers', version: '3.2.0' }], ...extra,
  });
}
async function runStep(node: string, step: PackageRepoStep, runId = runA): Promise<StepOutcome> {
  const request: StepRequest<PackageRepoStep> = { runId, rolloutId: 'test', node: targets[node], step, drain: false };
  return (await env().run(activities().packageRepo, request)) as StepOutcome;
}
const undo = async (node: string, record: Undo) => (await env().run(activities().undoStep, { node: targets[node], undo: record })) as UndoOutcome;
const drift = async (node: string, step: PackageRepoStep) => ((await env().run(createDriftActivities({ pool }).checkDrift, { node: targets[node], steps: [step] })) as DriftCheck).drifted;
/** What the node's package manager knows about: repository files, keys (files and rpm database), kata-containers, journals. */
const rpmState = (node: string) => on(node,
  'ls -A /etc/yum.repos.d /etc/zypp/repos.d /etc/pki/rpm-gpg 2>/dev/null; rpm -q gpg-pubkey | sort; rpm -q kata-containers 2>&1; ls /var/lib/katafleet 2>/dev/null | grep -c repo- || true');

describe('RPM-family simulated nodes, as Fedora 40 and openSUSE Leap 15.6 (sim/rpm-node.ts)', () => {
  it('a dnf node is Fedora-like: os-release, dnf without apt, dpkg or zypper, the rpm database in /var/lib/rpm', async () => {
    expect(await on('fedora-1', '. /etc/os-release; echo $ID $VERSION_ID; for c in dnf zypper apt-get dpkg; do command -v $c || echo no-$c; done; rpm --eval %_dbpath; test -s /var/lib/rpm/rpmdb.sqlite && echo sqlite'))
      .toBe('fedora 40\n/usr/bin/dnf\nno-zypper\nno-apt-get\nno-dpkg\n/var/lib/rpm\nsqlite');
  });

  it('a zypper node is openSUSE-like: os-release, zypper without apt, dpkg or dnf, its distribution key in the rpm database', async () => {
    expect(await on('suse-1', '. /etc/os-release; echo $ID $VERSION_ID; for c in zypper dnf apt-get dpkg; do command -v $c || echo no-$c; done; rpm -q gpg-pubkey | wc -l'))
      .toBe('opensuse-leap 15.6\n/usr/bin/zypper\nno-dnf\nno-apt-get\nno-dpkg\n1');
  });

  it('the mirror serves signed rpm-md repositories: repomd.xml with its detached signature and key, packages signed by rpmsign', async () => {
    const url = obsUrl('dnf');
    const files = await Promise.all(['repodata/repomd.xml', 'repodata/repomd.xml.asc', 'repodata/repomd.xml.key', 'kata-containers-3.2.0-1.1.x86_64.rpm'].map(async (f) => (await fetch(`${url}${f}`)).status));
    expect(files).toEqual([200, 200, 200, 200]);
    expect(await (await fetch(`${url}repodata/repomd.xml.asc`)).text()).toMatch(/^-----BEGIN PGP SIGNATURE-----/);
    // rpm -K on the node: the header signature is by the project key (NOKEY: not imported yet).
    expect(await on('fedora-1', `curl -fsS -o /tmp/k.rpm ${url}kata-containers-3.2.0-1.1.x86_64.rpm && rpm -Kv /tmp/k.rpm | grep -i 'signature'; rm -f /tmp/k.rpm`))
      .toContain(`key ID ${repos.obs.fingerprint.slice(-8).toLowerCase()}`);
  });

  it('the OBS-style repository is in no repository file of either node until a test adds it', async () => {
    expect(await on('fedora-1', 'grep -rl katacontainers: /etc/yum.repos.d | wc -l')).toBe('0');
    expect(await on('suse-1', 'grep -rl katacontainers: /etc/zypp/repos.d | wc -l')).toBe('0');
  });
});

describe.each(nodes)('package-repo with $manager ($node)', ({ node, manager, source }) => {
  it('refuses a key whose fingerprint is not the pinned one before anything is written (PackageRepoKeyMismatch)', async () => {
    const before = await rpmState(node);
    const wrong = `${repos.obs.fingerprint.slice(0, 39)}${repos.obs.fingerprint.endsWith('0') ? '1' : '0'}`;
    const refused = await failure(runStep(node, repoStep(manager, { key_fingerprint: wrong })));
    expect(refused.type).toBe('PackageRepoKeyMismatch');
    expect(refused.message).toContain(`is the key ${repos.obs.fingerprint}, but the playbook pins ${wrong}; nothing was written to the node`);
    expect(await rpmState(node)).toBe(before);
  }, 60_000);

  it.each([
    ['an unsigned repository (no repomd.xml.asc, unsigned packages)', 'unsigned/'],
    ['a repository signed by another key (which it serves as repomd.xml.key)', 'rogue/'],
  ])(`refuses %s with real ${manager}, taking back the repository, the key file and the rpm key (PackageRepoSignatureInvalid)`, async (_what, path) => {
    const before = await rpmState(node);
    const refused = await failure(runStep(node, repoStep(manager, { url: `${mirror}${path}` }), runB));
    expect(refused.type).toBe('PackageRepoSignatureInvalid');
    expect(refused.message).toMatch(/does not verify with the pinned key .*the repository and key were taken back/);
    expect(await rpmState(node)).toBe(before);
    // The other key never reaches the rpm database.
    expect(await on(node, `rpm -q gpg-pubkey-${rogueFingerprint.slice(-8).toLowerCase()} || true`)).toMatch(/not installed/);
  }, 180_000);

  it(`a repository nobody answers at is PackageRepoUnreachable (retried), taken back`, async () => {
    const before = await rpmState(node);
    const port = await freeLoopbackPort();
    const refused = await failure(runStep(node, repoStep(manager, { url: `http://127.0.0.1:${port}/kata/` }), runB));
    expect(refused.type).toBe('PackageRepoUnreachable');
    expect(refused.message).toMatch(/could not fetch http:\/\/127\.0\.0\.1:\d+\/kata\/ .*taken back; trying again/);
    expect(await rpmState(node)).toBe(before);
  }, 180_000);

  it('adds the repository and key, installs the pinned package from it with signatures checked, records one undo; drift-free', async () => {
    const step = repoStep(manager);
    const rpmKey = `gpg-pubkey-${repos.obs.fingerprint.slice(-8).toLowerCase()}`;
    expect(await drift(node, step)).toEqual([`${manager} repository ${source} is missing`, `repository key ${key} is missing`, 'package kata-containers is not installed (want 3.2.0)']);
    const outcome = await runStep(node, step);
    expect(outcome).toMatchObject({
      changed: true,
      undo: { kind: 'remove-package-repo', packages: ['kata-containers'], source, key, manager, rpmKey },
      facts: { packageManager: manager, keyFingerprint: repos.obs.fingerprint },
    });
    expect(await on(node, `cat ${source}`)).toBe(rpmRepoText(step, manager).trim());
    expect(await on(node, `grep -E '^(gpgcheck|repo_gpgcheck)=' ${source}`)).toBe('gpgcheck=1\nrepo_gpgcheck=1');
    expect(await on(node, `head -1 ${key}; stat -c %a ${key}; rpm -q ${rpmKey} --qf '%{SUMMARY}\\n'`)).toMatch(/^-----BEGIN PGP PUBLIC KEY BLOCK-----\n644\n.*home:katacontainers OBS Project/);
    // Installed from the OBS repository (not the distribution's), its signature checked by rpm.
    expect(await on(node, "rpm -q --qf '%{VERSION}-%{RELEASE} %{RSAHEADER:pgpsig}\\n' kata-containers; ls /opt/kata/bin")).toMatch(
      new RegExp(`^3\\.2\\.0-1\\.1 RSA/SHA\\d+, .*Key ID ${repos.obs.fingerprint.slice(-16).toLowerCase()}\\ncontainerd-shim-kata-v2\\nkata-runtime$`));
    expect(await drift(node, step)).toEqual([]);
    // Another run finds it all in place.
    expect(await runStep(node, step, runB)).toMatchObject({ changed: false });

    const back = await undo(node, outcome.undo!);
    expect(back).toMatchObject({ ok: true, summary: `removed kata-containers 3.2.0-1.1; removed ${source}; removed ${key}; removed ${rpmKey} from the rpm database` });
    expect(await on(node, `test -e ${source} || echo no-source; test -e ${key} || echo no-key; rpm -q kata-containers ${rpmKey}; ls /var/lib/katafleet | grep -c repo- || true`))
      .toBe(`no-source\nno-key\npackage kata-containers is not installed\npackage ${rpmKey} is not installed\n0`);
    expect(await drift(node, step)).toEqual([`${manager} repository ${source} is missing`, `repository key ${key} is missing`, 'package kata-containers is not installed (want 3.2.0)']);
  }, 300_000);
});

describe('package-repo fields per manager (schema)', () => {
  it('refuses apt-only fields for dnf and zypper, naming the field and the fix', () => {
    const parsed = PackageRepoStep.safeParse({
      id: 'r', kind: 'package-repo', manager: 'dnf', name: 'kata', url: 'https://example.com/repo/', suite: 'bookworm', components: ['main'],
      key_url: 'https://example.com/repo/repodata/repomd.xml.key', key_fingerprint: '0'.repeat(40), packages: [{ name: 'kata-containers', version: '3.2.0' }],
    });
    expect(parsed.success).toBe(false);
    expect(parsed.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual([
      'suite: apt only: a dnf repository is its url (the folder holding repodata/); remove suite',
      'components: apt only: a dnf repository has no components; remove them',
    ]);
  });
});
