// The release-tarball step as the shipped playbooks use it, on the simulated fleet's real nodes: kata.toml's
// install step unchanged (its github.com URL taken from the fleet's mirror through KATAFLEET_RELEASE_MIRROR, its
// sha256 pin the mirror's tarball), Kata 4.1's pair of tarballs (kata-static + kata-go-static) extracted into
// one tree, and kata-uninstall's removal with its undo.
// Covers playbooks/README.md "release-tarball" (`tarballs`, `action = "remove"`, KATAFLEET_RELEASE_MIRROR) and
// sim/README.md "Kata release tarballs" (the 4.1.0 pair).
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createDriftActivities } from '../activities/drift-check';
import { createNodeActivities } from '../activities/node-activities';
import type { DriftCheck, NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { RELEASE_MIRROR_ENV } from '../activities/steps/release-tarball';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import { KATA_GO_RELEASE_URL, KATA_RELEASE_URL, ReleaseTarballStep, type Step } from '../playbooks/schema';
import type { BuiltKataRelease } from '../sim/kata-release';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';
import { failure } from './helpers/failure';

let fleet: Fleet;
let pool: SshPool;
let targets: Record<string, NodeTarget>;
let built: Record<string, BuiltKataRelease>;
const runA = '5e0a7c11-2b3d-4e5f-8a61-2c4d6e8f0a1b';
const runB = '6f1b8d22-3c4e-4f6a-9b72-3d5e7f9a1b2c';

beforeAll(async () => {
  process.env.KATAFLEET_RELEASE_CACHE = await mkdtemp(join(tmpdir(), 'kf-release-cache-'));
  fleet = await startFleet({ nodes: [{ name: 'ship-1' }, { name: 'pair-2' }], dir: join(await mkdtemp(join(tmpdir(), 'kf-release-shipped-')), 'fleet') });
  const inventory = await loadInventory(fleet.inventoryPath);
  targets = Object.fromEntries(inventory.nodes.map((node) => [node.name, toNodeTarget(inventory, node)]));
  built = JSON.parse(await readFile(join(fleet.mirror.dir, 'kata-releases.json'), 'utf8')) as Record<string, BuiltKataRelease>;
  pool = new SshPool();
}, 120_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});

const activities = () => createNodeActivities({ pool });
const on = async (node: string, command: string) => (await sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command)).stdout.trim();
const env = (info: Partial<Info> = {}) => new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000, ...info }, { logger: new DefaultLogger('ERROR') });

async function runStep(node: string, step: ReleaseTarballStep, runId = runA): Promise<StepOutcome> {
  const request: StepRequest<ReleaseTarballStep> = { runId, rolloutId: 'test', node: targets[node], step, drain: false };
  return (await env().run(activities().releaseTarball, request)) as StepOutcome;
}
const undo = async (node: string, record: Undo) => (await env().run(activities().undoStep, { node: targets[node], undo: record })) as UndoOutcome;
const drift = async (node: string, steps: Step[]) => (await env().run(createDriftActivities({ pool }).checkDrift, { node: targets[node], steps })) as DriftCheck;
const shippedStep = async (playbook: string, id: string) => (await loadPlaybook(playbook)).steps.find((step) => step.id === id) as ReleaseTarballStep;

describe("kata.toml's install step, as shipped", () => {
  it('the fleet points the worker at its mirror while it runs', () => {
    expect(process.env[RELEASE_MIRROR_ENV]).toBe(`http://127.0.0.1:${fleet.mirror.port}/`);
  });

  it('installs Kata 3.32.0 from the github.com URL through the mirror, checked against the pinned sha256', async () => {
    const step = await shippedStep('kata', 'install');
    expect(step.url).toBe(KATA_RELEASE_URL);
    expect(step.sha256).toEqual({ amd64: built['3.32.0'].sha256 });
    const outcome = await runStep('ship-1', step);
    expect(outcome).toMatchObject({ changed: true, undo: { kind: 'remove-release', version: '3.32.0', createdVersionDir: true } });
    expect(outcome.facts?.url).toBe(`http://127.0.0.1:${fleet.mirror.port}/kata-containers/kata-containers/releases/download/3.32.0/kata-static-3.32.0-amd64.tar.zst`);
    expect(await on('ship-1', 'readlink /opt/kata; kata-runtime --version | head -1; /opt/kata/bin/containerd-shim-kata-v2 --version | head -1'))
      .toMatch(/^\/opt\/kata-releases\/3\.32\.0\/opt\/kata\nkata-runtime {2}: 3\.32\.0\n.*3\.32\.0/);
    // The handler kata.toml wires points at files the tarball holds.
    expect(await on('ship-1', 'test -x /opt/kata/bin/containerd-shim-kata-v2 && readlink -f /opt/kata/share/defaults/kata-containers/configuration-qemu.toml'))
      .toBe('/opt/kata-releases/3.32.0/opt/kata/share/defaults/kata-containers/configuration-qemu.toml');
    expect((await drift('ship-1', [step])).drifted).toEqual([]);
  }, 180_000);

  it("kata-uninstall's removal takes /opt/kata, the trees and the links away; its undo puts them back; a later removal deletes what the earlier set aside", async () => {
    const install = await shippedStep('kata', 'install');
    const remove = await shippedStep('kata-uninstall', 'remove-kata');
    expect(remove).toMatchObject({ kind: 'release-tarball', action: 'remove' });
    expect((await drift('ship-1', [remove])).drifted).toEqual([
      '/opt/kata is still a link to /opt/kata-releases/3.32.0/opt/kata; the playbook removes Kata',
      '/opt/kata-releases/ still exists; the playbook removes Kata',
      '/usr/local/bin/kata-runtime is still a link to /opt/kata/bin/kata-runtime; the playbook removes Kata',
      '/usr/local/bin/containerd-shim-kata-v2 is still a link to /opt/kata/bin/containerd-shim-kata-v2; the playbook removes Kata',
    ]);
    const removed = await runStep('ship-1', remove, runB);
    const aside = `/opt/kata-releases.katafleet-removed-${runB.slice(0, 12)}`;
    expect(removed).toMatchObject({
      changed: true,
      undo: { kind: 'restore-release', aside, previous: '/opt/kata-releases/3.32.0/opt/kata', links: ['/usr/local/bin/kata-runtime', '/usr/local/bin/containerd-shim-kata-v2'] },
    });
    expect(await on('ship-1', 'ls -d /opt/kata /opt/kata-releases /usr/local/bin/kata-runtime 2>&1 | grep -c "No such file"; ls /opt | grep katafleet-removed')).toBe(`3\n${aside.slice(5)}`);
    expect((await drift('ship-1', [remove])).drifted).toEqual([]);
    // The same run again (a retry after a crash): reported with the same undo, nothing else moved.
    expect(await runStep('ship-1', remove, runB)).toMatchObject({ changed: true, undo: removed.undo });

    const back = await undo('ship-1', removed.undo!);
    expect(back).toMatchObject({ ok: true });
    expect((await drift('ship-1', [install])).drifted).toEqual([]);
    expect(await on('ship-1', 'kata-runtime --version | head -1; ls /opt | grep -c katafleet-removed || true')).toBe('kata-runtime  : 3.32.0\n0');

    // Removed by another run: the earlier trees set aside are gone, this one's are kept for its undo.
    await on('ship-1', `mkdir -p /opt/kata-releases.katafleet-removed-000000000000/x`);
    const again = await runStep('ship-1', remove, runA);
    expect(again.changed).toBe(true);
    expect(await on('ship-1', 'ls /opt | grep katafleet-removed')).toBe(`kata-releases.katafleet-removed-${runA.slice(0, 12)}`);
    // Nothing installed by katafleet: nothing to do.
    expect(await runStep('ship-1', remove, runB)).toMatchObject({ changed: false, summary: expect.stringContaining('no Kata release installed by katafleet') });
  }, 180_000);

  it('removal refuses a /opt/kata that katafleet did not install (kata-deploy, a package), nothing changed', async () => {
    await on('ship-1', 'mkdir -p /opt/kata/bin && echo foreign > /opt/kata/bin/kata-runtime');
    try {
      const refused = await failure(runStep('ship-1', await shippedStep('kata-uninstall', 'remove-kata'), runB));
      expect(refused.type).toBe('KataInstallConflict');
      expect(refused.message).toContain('/opt/kata is a directory that katafleet did not install');
      expect(await on('ship-1', 'cat /opt/kata/bin/kata-runtime')).toBe('foreign');
    } finally {
      await on('ship-1', 'rm -rf /opt/kata');
    }
  }, 60_000);
});

describe("Kata 4.1's two tarballs (kata-static: runtime-rs and assets; kata-go-static: the Go shim and kata-runtime)", () => {
  const pair = () => ReleaseTarballStep.parse({
    id: 'kata', kind: 'release-tarball', version: '4.1.0',
    tarballs: [
      { url: KATA_RELEASE_URL, sha256: { amd64: built['4.1.0'].assets[0].sha256 } },
      { url: KATA_GO_RELEASE_URL, sha256: { amd64: built['4.1.0'].assets[1].sha256 } },
    ],
  });

  it('the mirror serves them as upstream names them: .tar.zst, the Rust shim in one, the Go shim in the other', () => {
    expect(built['4.1.0'].assets.map((a) => [a.asset, a.path])).toEqual([
      ['kata-static', 'kata-containers/kata-containers/releases/download/4.1.0/kata-static-4.1.0-amd64.tar.zst'],
      ['kata-go-static', 'kata-containers/kata-containers/releases/download/4.1.0/kata-go-static-4.1.0-amd64.tar.zst'],
    ]);
  });

  it('extracts both into one versioned tree; both shims and both configuration sets are there; drift-free; undone exactly', async () => {
    const before = await on('pair-2', 'ls -A /opt /usr/local/bin');
    const outcome = await runStep('pair-2', pair());
    expect(outcome).toMatchObject({ changed: true, facts: { sha256: `${built['4.1.0'].assets[0].sha256},${built['4.1.0'].assets[1].sha256}` } });
    expect(await on('pair-2', [
      'cd /opt/kata',
      'ls bin runtime-rs/bin share/defaults/kata-containers/runtime-rs',
      'kata-runtime --version | head -1',
      'cat .katafleet-release',
    ].join(' && '))).toBe([
      'bin:', 'containerd-shim-kata-v2', 'kata-collect-data.sh', 'kata-runtime', '',
      'runtime-rs/bin:', 'containerd-shim-kata-v2', '',
      'share/defaults/kata-containers/runtime-rs:', 'configuration-clh-runtime-rs.toml', 'configuration-dragonball.toml', 'configuration-qemu-runtime-rs.toml',
      'kata-runtime  : 4.1.0',
      'version=4.1.0', `sha256=${built['4.1.0'].assets[0].sha256},${built['4.1.0'].assets[1].sha256}`,
    ].join('\n'));
    expect((await drift('pair-2', [pair()])).drifted).toEqual([]);
    expect(await runStep('pair-2', pair(), runB)).toMatchObject({ changed: false });
    expect(await undo('pair-2', outcome.undo!)).toMatchObject({ ok: true });
    // Exactly as before: /opt/kata-releases too, which this first install created.
    expect(await on('pair-2', 'ls -A /opt /usr/local/bin')).toBe(before);
  }, 180_000);

  it('refused when one of the tarballs has no sha256 for the node\'s architecture, naming which (nothing downloaded)', async () => {
    const step = ReleaseTarballStep.parse({ ...pair(), tarballs: [pair().tarballs![0], { url: KATA_GO_RELEASE_URL, sha256: { arm64: 'a'.repeat(64) } }] });
    const refused = await failure(runStep('pair-2', step));
    expect(refused.type).toBe('ReleaseArchUnsupported');
    expect(refused.message).toContain('add amd64 = "<sha256 of tarballs[1] (kata-go-static-{version}-{arch}.{ext})>"');
    expect(await on('pair-2', 'test -e /opt/kata || echo none')).toBe('none');
  }, 60_000);

  it('a wrong sha256 pinned for the second tarball: ReleaseChecksumMismatch, nothing extracted', async () => {
    const step = ReleaseTarballStep.parse({ ...pair(), tarballs: [pair().tarballs![0], { url: KATA_GO_RELEASE_URL, sha256: { amd64: 'b'.repeat(64) } }] });
    const refused = await failure(runStep('pair-2', step));
    expect(refused.type).toBe('ReleaseChecksumMismatch');
    expect(refused.message).toContain(`has sha256 ${built['4.1.0'].assets[1].sha256}`);
    expect(await on('pair-2', 'test -e /opt/kata || echo none; ls -A /opt/kata-releases 2>/dev/null')).toBe('none');
  }, 60_000);
});
