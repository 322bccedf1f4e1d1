// The release-tarball step against the simulated fleet's real nodes and mirror: a Kata static release with
// upstream's name and layout, fetched by the worker (pushed over SSH) or by the node, installed side by side
// under /opt/kata-releases, /opt/kata switched atomically, undone exactly, checked by the drift check.
// Covers playbooks/README.md "release-tarball — Kata's static release tarball, side by side" (steps 1–5, "Nothing
// happens when …", the upgrade and its undo, the drift check) and sim/README.md "Kata release tarballs".
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createDriftActivities } from '../activities/drift-check';
import { createNodeActivities } from '../activities/node-activities';
import type { DriftCheck, NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory } from '../playbooks/load';
import { ReleaseTarballStep, type Step } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';
import { failure } from './helpers/failure';

const run = promisify(execFile);
let fleet: Fleet;
let pool: SshPool;
let targets: Record<string, NodeTarget>;
let shas: Record<string, string>;
let mirrorUrl: string;
const runA = '7a1c9e20-0b3d-4f5e-8a61-2c4d6e8f0a1b';
const runB = '9b2d0f31-1c4e-4a6f-9b72-3d5e7f9a1b2c';

beforeAll(async () => {
  process.env.KATAFLEET_RELEASE_CACHE = await mkdtemp(join(tmpdir(), 'kf-release-cache-'));
  fleet = await startFleet({
    nodes: [{ name: 'up-1' }, { name: 'node-2' }, { name: 'conflict-3' }, { name: 'bad-4' }],
    dir: join(await mkdtemp(join(tmpdir(), 'kf-release-tarball-')), 'fleet'),
  });
  const inventory = await loadInventory(fleet.inventoryPath);
  targets = Object.fromEntries(inventory.nodes.map((node) => [node.name, toNodeTarget(inventory, node)]));
  const built = JSON.parse(await readFile(join(fleet.mirror.dir, 'kata-releases.json'), 'utf8')) as Record<string, { sha256: string }>;
  shas = Object.fromEntries(Object.entries(built).map(([version, b]) => [version, b.sha256]));
  mirrorUrl = `http://127.0.0.1:${fleet.mirror.port}/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}`;
  pool = new SshPool();
}, 120_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});

const activities = () => createNodeActivities({ pool });
const on = async (node: string, command: string) => (await sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command)).stdout.trim();

function release(version: string, extra: Record<string, unknown> = {}): ReleaseTarballStep {
  return ReleaseTarballStep.parse({ id: 'kata', kind: 'release-tarball', version, url: mirrorUrl, sha256: { amd64: shas[version] }, ...extra });
}

function env(info: Partial<Info> = {}) {
  return new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000, ...info }, { logger: new DefaultLogger('ERROR') });
}

async function install(node: string, step: ReleaseTarballStep, runId = runA): Promise<StepOutcome> {
  const request: StepRequest<ReleaseTarballStep> = { runId, rolloutId: 'test', node: targets[node], step, drain: false };
  return (await env().run(activities().releaseTarball, request)) as StepOutcome;
}

async function undo(node: string, record: Undo): Promise<UndoOutcome> {
  return (await env().run(activities().undoStep, { node: targets[node], undo: record })) as UndoOutcome;
}

async function drift(node: string, steps: Step[]): Promise<DriftCheck> {
  return (await env().run(createDriftActivities({ pool }).checkDrift, { node: targets[node], steps })) as DriftCheck;
}

/** What a node's Kata install looks like, in one line per fact. */
const layout = (node: string) => on(node, 'readlink /opt/kata; ls /opt/kata-releases; readlink /usr/local/bin/kata-runtime /usr/local/bin/containerd-shim-kata-v2; ls /var/lib/katafleet 2>/dev/null | grep release- || true');

describe('the mirror serves what upstream serves', () => {
  it('has kata-static tarballs with upstream names (.tar.xz below 3.21, .tar.zst from 3.21) and ./opt/kata members', async () => {
    const base = join(fleet.mirror.dir, 'kata-containers/kata-containers/releases/download');
    const { stdout: xz } = await run('tar', ['--xz', '-tf', join(base, '3.20.0/kata-static-3.20.0-amd64.tar.xz')]);
    const { stdout: zst } = await run('tar', ['--zstd', '-tvf', join(base, '3.32.0/kata-static-3.32.0-amd64.tar.zst')]);
    for (const member of ['./opt/kata/bin/kata-runtime', './opt/kata/bin/containerd-shim-kata-v2', './opt/kata/runtime-rs/bin/containerd-shim-kata-v2',
      './opt/kata/share/defaults/kata-containers/configuration-qemu.toml', './opt/kata/share/kata-containers/vmlinux.container']) {
      expect(xz.split('\n')).toContain(member);
      expect(zst).toContain(member);
    }
    expect(zst).toMatch(/configuration\.toml -> configuration-qemu\.toml/);
    expect(xz.split('\n').filter(Boolean).every((m) => m === './' || m.startsWith('./opt/'))).toBe(true);
  });
});

describe('release-tarball on a node', () => {
  it('installs 3.31.0 side by side (fetched by the worker, pushed over SSH), links like kata-manager, and a second run changes nothing', async () => {
    const first = await install('up-1', release('3.31.0'));
    expect(first.changed).toBe(true);
    expect(first.facts).toMatchObject({ version: '3.31.0', arch: 'amd64', fetch: 'worker' });
    expect(first.summary).toContain('kata-runtime : 3.31.0');
    expect(first.undo).toEqual({ kind: 'remove-release', stepId: 'kata', version: '3.31.0', createdVersionDir: true,
      createdLinks: ['/usr/local/bin/kata-runtime', '/usr/local/bin/containerd-shim-kata-v2'], createdReleasesDir: true });
    expect(await layout('up-1')).toBe(['/opt/kata-releases/3.31.0/opt/kata', '3.31.0', '/opt/kata/bin/kata-runtime', '/opt/kata/bin/containerd-shim-kata-v2',
      `release-${runA.slice(0, 12)}-kata.state`].join('\n'));
    expect(await on('up-1', 'kata-runtime --version | head -1; containerd-shim-kata-v2 --version; readlink /opt/kata/share/defaults/kata-containers/configuration.toml'))
      .toBe('kata-runtime  : 3.31.0\nKata Containers containerd shim (Golang): id: "io.containerd.kata.v2", version: 3.31.0, commit: simulated\nconfiguration-qemu.toml');
    // The worker's cache holds the tarball under its sha256.
    expect((await readFile(join(process.env.KATAFLEET_RELEASE_CACHE!, shas['3.31.0']))).length).toBeGreaterThan(0);

    const again = await install('up-1', release('3.31.0'), runB);
    expect(again).toMatchObject({ changed: false });
    expect(again.summary).toContain('already active');
    expect(await drift('up-1', [release('3.31.0')])).toMatchObject({ node: 'up-1', state: 'in-sync', drifted: [] });
  }, 120_000);

  it('upgrades 3.31.0 → 3.32.0 (fetched on the node) in one switch, and the undo switches back', async () => {
    const upgrade = await install('up-1', release('3.32.0', { fetch: 'node' }), runB);
    expect(upgrade.changed).toBe(true);
    expect(upgrade.undo).toEqual({ kind: 'remove-release', stepId: 'kata', version: '3.32.0', previous: '/opt/kata-releases/3.31.0/opt/kata', createdVersionDir: true, createdLinks: [] });
    expect(await on('up-1', 'readlink /opt/kata; ls /opt/kata-releases; kata-runtime --version | head -1')).toBe('/opt/kata-releases/3.32.0/opt/kata\n3.31.0\n3.32.0\nkata-runtime  : 3.32.0');
    expect((await drift('up-1', [release('3.31.0')])).drifted).toEqual(['/opt/kata points to /opt/kata-releases/3.32.0/opt/kata, not a link to /opt/kata-releases/3.31.0/opt/kata']);

    const back = await undo('up-1', upgrade.undo!);
    expect(back.ok).toBe(true);
    expect(back.summary).toContain('/opt/kata → /opt/kata-releases/3.31.0/opt/kata again');
    expect(await on('up-1', 'readlink /opt/kata; ls /opt/kata-releases; kata-runtime --version | head -1')).toBe('/opt/kata-releases/3.31.0/opt/kata\n3.31.0\nkata-runtime  : 3.31.0');
    // Twice is harmless.
    expect((await undo('up-1', upgrade.undo!)).ok).toBe(true);
  }, 120_000);

  it('the first install\'s undo removes exactly what it created: /opt/kata, the links, the version directory, /opt/kata-releases, the journal', async () => {
    const before = await on('node-2', 'ls -A /opt /usr/local/bin');
    expect(before).not.toContain('kata-releases');
    const outcome = await install('node-2', release('3.20.0', { fetch: 'node' }));
    expect(outcome.summary).toContain('kata-runtime : 3.20.0');
    expect(outcome.undo).toMatchObject({ createdVersionDir: true, createdReleasesDir: true });
    const undone = await undo('node-2', outcome.undo!);
    expect(undone.summary).toContain('removed /opt/kata-releases (this run created it, and it is empty now)');
    expect(await on('node-2', 'ls -A /opt /usr/local/bin')).toBe(before);
    expect(await on('node-2', 'ls /var/lib/katafleet 2>/dev/null | grep -c release- || true')).toBe('0');
    expect((await drift('node-2', [release('3.20.0')])).drifted).toEqual([
      'Kata 3.20.0 is not installed at /opt/kata-releases/3.20.0/opt/kata',
      '/opt/kata is missing, not a link to /opt/kata-releases/3.20.0/opt/kata',
      '/usr/local/bin/kata-runtime is missing, not a link to /opt/kata/bin/kata-runtime',
      '/usr/local/bin/containerd-shim-kata-v2 is missing, not a link to /opt/kata/bin/containerd-shim-kata-v2',
    ]);
  }, 120_000);

  it('a re-run after a crash between extracting and switching finishes the job and still owns the version directory', async () => {
    const first = await install('node-2', release('3.32.0'), runB);
    // As if the worker died after extracting: the switch and the links are gone, the journal and tree remain.
    await on('node-2', 'rm /opt/kata /usr/local/bin/kata-runtime /usr/local/bin/containerd-shim-kata-v2');
    const rerun = await install('node-2', release('3.32.0'), runB);
    expect(rerun.changed).toBe(true);
    expect(rerun.undo).toEqual(first.undo);
    await undo('node-2', rerun.undo!);
    expect(await on('node-2', 'test -e /opt/kata-releases || echo no-releases; test -e /opt/kata || echo no-kata')).toBe('no-releases\nno-kata');
  }, 120_000);

  it('the undo never removes a /opt/kata-releases that existed before the install, even when it ends up empty', async () => {
    await on('node-2', 'mkdir -p /opt/kata-releases');
    const outcome = await install('node-2', release('3.20.0', { fetch: 'node' }));
    expect(outcome.undo).toMatchObject({ createdVersionDir: true });
    expect(outcome.undo).not.toHaveProperty('createdReleasesDir');
    const undone = await undo('node-2', outcome.undo!);
    expect(undone.summary).toContain('removed /opt/kata-releases/3.20.0');
    expect(undone.summary).not.toContain('removed /opt/kata-releases (');
    expect(await on('node-2', 'ls -A /opt/kata-releases; test -d /opt/kata-releases && echo kept')).toBe('kept');
    await on('node-2', 'rmdir /opt/kata-releases');
  }, 120_000);

  it('the undo of a first install leaves /opt/kata-releases when another version was put there meanwhile (rmdir of an empty directory only)', async () => {
    const outcome = await install('node-2', release('3.20.0', { fetch: 'node' }), runA);
    expect(outcome.undo).toMatchObject({ createdReleasesDir: true });
    await on('node-2', 'mkdir -p /opt/kata-releases/someone-elses');
    await undo('node-2', outcome.undo!);
    expect(await on('node-2', 'ls -A /opt/kata-releases')).toBe('someone-elses');
    await on('node-2', 'rm -rf /opt/kata-releases');
  }, 120_000);
});

describe('release-tarball refuses, and changes nothing', () => {
  it('a /opt/kata it did not install (KataInstallConflict, the fix in the message)', async () => {
    await on('conflict-3', 'mkdir -p /opt/kata/bin && echo x > /opt/kata/bin/kata-runtime');
    const refused = await failure(install('conflict-3', release('3.32.0')));
    expect(refused.type).toBe('KataInstallConflict');
    expect(refused.message).toContain('/opt/kata is a directory that katafleet did not install');
    expect(refused.message).toContain('apt-get purge kata-containers');
    expect(await on('conflict-3', 'test -e /opt/kata-releases || echo no-releases; ls -A /opt/kata /opt/kata/bin; cat /opt/kata/bin/kata-runtime'))
      .toBe('no-releases\n/opt/kata:\nbin\n\n/opt/kata/bin:\nkata-runtime\nx');
    await on('conflict-3', 'rm -rf /opt/kata');
  }, 60_000);

  it('a link in /usr/local/bin that points elsewhere', async () => {
    await on('conflict-3', 'ln -s /usr/bin/true /usr/local/bin/containerd-shim-kata-v2');
    const refused = await failure(install('conflict-3', release('3.32.0')));
    expect(refused.type).toBe('KataInstallConflict');
    expect(refused.message).toContain('/usr/local/bin/containerd-shim-kata-v2 exists and points to /usr/bin/true');
    expect(refused.message).toContain('links = false');
    expect(await on('conflict-3', 'test -e /opt/kata-releases || echo no-releases; readlink /usr/local/bin/containerd-shim-kata-v2')).toBe('no-releases\n/usr/bin/true');
    await on('conflict-3', 'rm /usr/local/bin/containerd-shim-kata-v2');
  }, 60_000);

  it.each(['worker', 'node'] as const)('a tarball whose sha256 is not the pinned one (fetch = %s)', async (fetch) => {
    const wrong = 'f'.repeat(64);
    const refused = await failure(install('bad-4', release('3.32.0', { fetch, sha256: { amd64: wrong } })));
    expect(refused.type).toBe('ReleaseChecksumMismatch');
    expect(refused.message).toContain(`has sha256 ${shas['3.32.0']}`);
    expect(refused.message).toContain(`the playbook pins ${wrong}`);
    expect(await on('bad-4', 'readlink /opt/kata || echo no-kata; ls -A /opt/kata-releases 2>/dev/null')).toBe('no-kata');
  }, 60_000);

  it('a tarball with members outside ./opt/kata/ (as kata-manager refuses), even with its sha256 pinned', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kf-evil-'));
    await mkdir(join(root, 'etc'), { recursive: true });
    await writeFile(join(root, 'etc', 'cron.d-katafleet-evil'), '* * * * * root touch /tmp/pwned\n');
    const evilDir = join(fleet.mirror.dir, 'evil', '3.32.0');
    await mkdir(evilDir, { recursive: true });
    const file = join(evilDir, 'kata-static-3.32.0-amd64.tar.zst');
    await run('tar', ['--zstd', '-C', root, '-cf', file, './etc']);
    const { stdout } = await run('sha256sum', [file]);
    const step = release('3.32.0', { url: `http://127.0.0.1:${fleet.mirror.port}/evil/{version}/kata-static-{version}-{arch}.{ext}`, sha256: { amd64: stdout.split(' ')[0] } });
    const refused = await failure(install('bad-4', step));
    expect(refused.type).toBe('ReleaseTarballUnsafe');
    expect(refused.message).toContain('./etc/cron.d-katafleet-evil');
    expect(await on('bad-4', 'ls /etc/cron.d-katafleet-evil 2>/dev/null; ls -A /opt/kata-releases')).toBe('');
  }, 60_000);

  it('a node architecture the playbook pins no sha256 for', async () => {
    const refused = await failure(install('bad-4', release('3.32.0', { sha256: { arm64: 'a'.repeat(64) } })));
    expect(refused.type).toBe('ReleaseArchUnsupported');
    expect(refused.message).toContain('add amd64 = "<sha256 of kata-static-3.32.0-amd64.tar.zst>" to its sha256 table');
  }, 60_000);

  it('a mirror that does not have the file: retried (ReleaseDownloadFailed)', async () => {
    // (A tarball the worker already holds under the pinned sha256 would be used from its cache, whatever the url.)
    const refused = await failure(install('bad-4', release('3.32.0', { version: '3.99.0', sha256: { amd64: 'e'.repeat(64) } })));
    expect(refused.type).toBe('ReleaseDownloadFailed');
    expect(refused.message).toContain('HTTP 404');
  }, 60_000);
});
