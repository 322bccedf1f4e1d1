// The package-repo step against the simulated fleet's OBS-style apt repository (signed InRelease/Release.gpg,
// key made at fleet start; sim/packages.ts): the key's fingerprint pinned, refused before anything is written
// when it differs; signed-by= keyring under /etc/apt/keyrings; packages installed from it; an unsigned
// repository refused with the files taken back; undo removes packages, source and key; the drift check knows it.
// Covers playbooks/README.md "package-repo" and playbooks/examples/kata-package-repo.toml.
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createDriftActivities } from '../activities/drift-check';
import { createNodeActivities } from '../activities/node-activities';
import type { DriftCheck, NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { aptSourceText, primaryFingerprints } from '../activities/steps/package-repo';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory } from '../playbooks/load';
import { PackageRepoStep } from '../playbooks/schema';
import type { ObsRepository } from '../sim/packages';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';
import { failure } from './helpers/failure';

const root = join(__dirname, '..');
let fleet: Fleet;
let pool: SshPool;
let targets: Record<string, NodeTarget>;
let obs: ObsRepository;
let repoUrl: string;
const runA = '3d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e6f';
const runB = '4e5f6071-8b9c-4dae-9f10-2b3c4d5e6f70';

beforeAll(async () => {
  fleet = await startFleet({ nodes: [{ name: 'repo-1' }], dir: join(await mkdtemp(join(tmpdir(), 'kf-package-repo-')), 'fleet') });
  const inventory = await loadInventory(fleet.inventoryPath);
  targets = Object.fromEntries(inventory.nodes.map((node) => [node.name, toNodeTarget(inventory, node)]));
  obs = JSON.parse(await readFile(join(fleet.mirror.dir, 'obs-repo.json'), 'utf8')) as ObsRepository;
  repoUrl = `http://127.0.0.1:${fleet.mirror.port}/${obs.path}`;
  pool = new SshPool();
}, 120_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});

const on = async (command: string) => (await sshRun(fleet, fleet.nodes[0], command)).stdout.trim();
const env = (info: Partial<Info> = {}) => new MockActivityEnvironment({ startToCloseTimeoutMs: 180_000, ...info }, { logger: new DefaultLogger('ERROR') });
const activities = () => createNodeActivities({ pool });

function repoStep(extra: Record<string, unknown> = {}): PackageRepoStep {
  return PackageRepoStep.parse({
    id: 'install', kind: 'package-repo', name: 'kata', url: repoUrl, suite: '/', key_url: `${repoUrl}Release.key`, key_fingerprint: obs.fingerprint,
    packages: [{ name: 'kata-containers', version: '3.2.0' }], ...extra,
  });
}
async function runStep(step: PackageRepoStep, runId = runA): Promise<StepOutcome> {
  const request: StepRequest<PackageRepoStep> = { runId, rolloutId: 'test', node: targets['repo-1'], step, drain: false };
  return (await env().run(activities().packageRepo, request)) as StepOutcome;
}
const undo = async (record: Undo) => (await env().run(activities().undoStep, { node: targets['repo-1'], undo: record })) as UndoOutcome;
const drift = async (step: PackageRepoStep) => ((await env().run(createDriftActivities({ pool }).checkDrift, { node: targets['repo-1'], steps: [step] })) as DriftCheck).drifted;
/** What apt on the node knows about: its source lists and keyrings, and kata-containers. */
const aptState = () => on("ls -A /etc/apt/sources.list.d /etc/apt/keyrings 2>&1; dpkg-query -W -f='${Status}' kata-containers 2>&1; ls /var/lib/katafleet 2>/dev/null | grep -c repo- || true");

describe('the simulated mirror, as on a real Debian or Ubuntu node', () => {
  it('serves an OBS-style repository signed with its own key (InRelease, Release.gpg, Release.key)', async () => {
    const files = await Promise.all(['InRelease', 'Release.gpg', 'Release.key', 'Packages'].map(async (name) => (await fetch(`${repoUrl}${name}`)).status));
    expect(files).toEqual([200, 200, 200, 200]);
    expect(await (await fetch(`${repoUrl}InRelease`)).text()).toMatch(/^-----BEGIN PGP SIGNED MESSAGE-----[\s\S]*SHA256:[\s\S]* Packages\n-----BEGIN PGP SIGNATURE-----/);
  });

  it('the OBS-style repository is in no apt source of the node until a test adds it', async () => {
    expect(await on(`grep -rl ${JSON.stringify(obs.path.split('/')[1])} /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | wc -l`)).toBe('0');
  });
});

describe('package-repo', () => {
  it('refuses a key whose fingerprint is not the pinned one before anything is written (PackageRepoKeyMismatch)', async () => {
    const before = await aptState();
    const wrong = `${obs.fingerprint.slice(0, 39)}${obs.fingerprint.endsWith('0') ? '1' : '0'}`;
    const refused = await failure(runStep(repoStep({ key_fingerprint: wrong })));
    expect(refused.type).toBe('PackageRepoKeyMismatch');
    expect(refused.message).toContain(`is the key ${obs.fingerprint}, but the playbook pins ${wrong}; nothing was written to the node`);
    expect(await aptState()).toBe(before);
  }, 60_000);

  it('refuses a repository the pinned key does not sign (the unsigned flat mirror), taking back the source and key (PackageRepoSignatureInvalid)', async () => {
    const before = await aptState();
    const refused = await failure(runStep(repoStep({ url: `http://127.0.0.1:${fleet.mirror.port}/`, suite: './' }), runB));
    expect(refused.type).toBe('PackageRepoSignatureInvalid');
    expect(refused.message).toMatch(/does not verify with the pinned key .*the source and key were taken back/);
    expect(await aptState()).toBe(before);
  }, 120_000);

  it('adds the repository with a signed-by= keyring, installs the pinned package from it, and records one undo; drift-free', async () => {
    const step = repoStep();
    expect((await drift(step)).slice(0, 2)).toEqual(['apt source /etc/apt/sources.list.d/katafleet-kata.list is missing', 'repository key /etc/apt/keyrings/katafleet-kata.asc is missing']);
    const outcome = await runStep(step);
    expect(outcome).toMatchObject({
      changed: true,
      undo: { kind: 'remove-package-repo', packages: ['kata-containers'], source: '/etc/apt/sources.list.d/katafleet-kata.list', key: '/etc/apt/keyrings/katafleet-kata.asc' },
      facts: { keyFingerprint: obs.fingerprint },
    });
    expect(await on('cat /etc/apt/sources.list.d/katafleet-kata.list')).toBe(aptSourceText(step).trim());
    expect(await on('head -1 /etc/apt/keyrings/katafleet-kata.asc; stat -c %a /etc/apt/keyrings/katafleet-kata.asc')).toBe('-----BEGIN PGP PUBLIC KEY BLOCK-----\n644');
    expect(await on("dpkg-query -W -f='${Version}\\n' kata-containers; apt-cache policy kata-containers | grep -c Debian_12")).toBe('3.2.0\n1');
    expect(await drift(step)).toEqual([]);
    // Another run finds it all in place.
    expect(await runStep(step, runB)).toMatchObject({ changed: false });

    const back = await undo(outcome.undo!);
    expect(back).toMatchObject({ ok: true, summary: 'removed kata-containers 3.2.0; removed /etc/apt/sources.list.d/katafleet-kata.list; removed /etc/apt/keyrings/katafleet-kata.asc' });
    expect(await on("test -e /etc/apt/sources.list.d/katafleet-kata.list || echo no-source; test -e /etc/apt/keyrings/katafleet-kata.asc || echo no-key; dpkg-query -W -f='${Status}' kata-containers 2>&1")).toMatch(/^no-source\nno-key\n(dpkg-query: no packages found|deinstall ok config-files|unknown ok not-installed)/);
    expect(await drift(step)).toEqual([
      'apt source /etc/apt/sources.list.d/katafleet-kata.list is missing',
      'repository key /etc/apt/keyrings/katafleet-kata.asc is missing',
      'package kata-containers is not installed (want 3.2.0)',
    ]);
  }, 240_000);

  it('the worker checks fingerprints with gpg: primaryFingerprints reads only primary keys', () => {
    const colons = ['pub:-:255:22:17DAF63339FCBB8E:1:::-:::scSC::::::23::0:', 'fpr:::::::::2508C4118BC0A605F2E45EA617DAF63339FCBB8E:', 'uid:-::::1::ABC::name::::::::::0:',
      'sub:-:255:18:AAAA:1::::::e::::::23:', 'fpr:::::::::1111111111111111111111111111111111111111:'].join('\n');
    expect(primaryFingerprints(colons)).toEqual(['2508C4118BC0A605F2E45EA617DAF63339FCBB8E']);
  });
});

describe('katafleet validate, package-repo', () => {
  const example = join(root, 'playbooks', 'examples', 'kata-package-repo.toml');
  const katafleet = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin', 'katafleet.js'), ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, TEMPORAL_ADDRESS: '' } });

  it('accepts playbooks/examples/kata-package-repo.toml (exit 0)', () => {
    expect(katafleet('validate', example).status).toBe(0);
  });

  it.each([
    ['a short key id instead of the fingerprint', /^key_fingerprint = .*$/m, 'key_fingerprint = "E1A694F2"', 'steps[1].key_fingerprint', 'the short key id is not enough'],
    ['plain http to a host on the network', /^url = .*$/m, 'url = "http://apt.example.com/kata/"', 'steps[1].url', 'plain http to a host other than loopback'],
    ['a shell character in the URL', /^url = .*$/m, 'url = "https://apt.example.com/kata/ bookworm main; reboot"', 'steps[1].url', 'refused'],
    ['an unpinned package', /^packages = .*$/m, 'packages = [{ name = "kata-containers" }]', 'steps[1].packages[0].version', 'required'],
    ['a suite with a ".." segment', /^suite = .*$/m, 'suite = "../../etc"', 'steps[1].suite', 'is not allowed'],
  ])('refuses %s (exit 2, the file, the field, why)', async (_what, from, to, field, why) => {
    const file = join(await mkdtemp(join(tmpdir(), 'kf-package-repo-validate-')), 'edited.toml');
    await writeFile(file, (await readFile(example, 'utf8')).replace(from, to));
    const result = katafleet('validate', file);
    expect(result.status).toBe(2);
    const line = result.stderr.split('\n').find((l) => l.includes(`${file}: ${field}`));
    expect(line).toBeDefined();
    expect(line).toContain(why);
  });
});
