// package-install with dnf and zypper for real (dnf 4.14, zypper 1.14, rpm 4.18 on a Fedora-like and an openSUSE-like
// simulated node, sim/rpm-node.ts), from the distribution's own signed repository, as Fedora ships kata-containers and
// openSUSE katacontainers: `manager = "auto"` finds the node's package manager; the pinned version is installed with
// its marker; the undo removes exactly what the run installed, never what was there before; a re-run after a lost
// result still knows what its run installed; a version no repository offers is PackageNotAvailable; `action = "remove"`
// and its undo (reinstall). Covers playbooks/README.md "package-install" (dnf, zypper).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { packageMarkerPath } from '../activities/steps/package-install';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory } from '../playbooks/load';
import { PackageInstallStep } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';
import { failure } from './helpers/failure';

let fleet: Fleet;
let work: string;
let pool: SshPool;
let targets: Record<string, NodeTarget>;

const nodes = [
  { node: 'fedora-1', manager: 'dnf' as const, pkg: 'kata-containers', installed: '3.2.0-1.fc40' },
  { node: 'suse-1', manager: 'zypper' as const, pkg: 'katacontainers', installed: '3.2.0-lp156.1.1' },
];

beforeAll(async () => {
  fleet = await startFleet({
    nodes: [{ name: 'fedora-1', packageManager: 'dnf' }, { name: 'suse-1', packageManager: 'zypper' }],
    dir: join((work = await mkdtemp(join(tmpdir(), 'kf-package-install-rpm-'))), 'fleet'),
  });
  const inventory = await loadInventory(fleet.inventoryPath);
  targets = Object.fromEntries(inventory.nodes.map((node) => [node.name, toNodeTarget(inventory, node)]));
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
const installStep = (pkg: string, version: string, extra: Record<string, unknown> = {}) =>
  PackageInstallStep.parse({ id: 'kata', kind: 'package-install', packages: [{ name: pkg, version }], ...extra });
async function runStep(node: string, step: PackageInstallStep, runId: string): Promise<StepOutcome> {
  const request: StepRequest<PackageInstallStep> = { runId, rolloutId: 'test', node: targets[node], step, drain: false };
  return (await env().run(activities().packageInstall, request)) as StepOutcome;
}
const undo = async (node: string, record: Undo) => (await env().run(activities().undoStep, { node: targets[node], undo: record })) as UndoOutcome;

describe.each(nodes)('package-install with $manager ($node)', ({ node, manager, pkg, installed }) => {
  const runA = `7c8d9e0f-1a2b-4c3d-8e4f-${manager === 'dnf' ? '5a6b7c8d9e0f' : '6b7c8d9e0f1a'}`;
  const runB = `8d9e0f1a-2b3c-4d4e-9f5a-${manager === 'dnf' ? '6b7c8d9e0f1a' : '7c8d9e0f1a2b'}`;

  it('a version no repository offers is PackageNotAvailable (never retried), and nothing is installed', async () => {
    const refused = await failure(runStep(node, installStep(pkg, '9.9.9'), runA));
    expect(refused.type).toBe('PackageNotAvailable');
    expect(refused.message).toContain(`Node ${node}: package install failed`);
    expect(await on(node, `rpm -q ${pkg} || true`)).toBe(`package ${pkg} is not installed`);
  }, 180_000);

  it(`installs the pinned version from the distribution's signed repository with ${manager} (manager "auto"), marker first; the undo removes it`, async () => {
    const outcome = await runStep(node, installStep(pkg, '3.2.0'), runA);
    expect(outcome).toMatchObject({
      changed: true,
      summary: `installed ${pkg} 3.2.0 with ${manager}`,
      facts: { packageManager: manager },
      undo: { kind: 'remove-packages', packages: [pkg], manager },
    });
    expect(await on(node, `rpm -q --qf '%{VERSION}-%{RELEASE}\\n' ${pkg}; cat ${packageMarkerPath(runA, 'kata')}; readlink /usr/local/bin/kata-runtime; /opt/kata/bin/kata-runtime --version | head -1`))
      .toMatch(new RegExp(`^${installed.replace(/\./g, '\\.')}\\n${pkg}\\n\\.\\./\\.\\./\\.\\./opt/kata/bin/kata-runtime\\n.*3\\.2\\.0`));
    // The package's signature was checked by rpm against the distribution key the node trusts.
    expect(await on(node, `rpm -q --qf '%{RSAHEADER:pgpsig}\\n' ${pkg}`)).toMatch(/^RSA\/SHA\d+, .*Key ID [0-9a-f]{16}$/);

    // Another attempt of the same run that lost its result: already there, but the marker says this run installed it.
    expect(await runStep(node, installStep(pkg, '3.2.0'), runA)).toMatchObject({ changed: true, summary: expect.stringContaining('(by an earlier attempt of this run)'), undo: { packages: [pkg] } });
    // Another run finds it in place and takes no undo: a rollback of that run leaves it alone.
    const again = await runStep(node, installStep(pkg, '3.2.0'), runB);
    expect(again).toMatchObject({ changed: false, summary: `already installed: ${pkg} ${installed}` });
    expect(again.undo).toBeUndefined();

    const back = await undo(node, outcome.undo!);
    expect(back).toMatchObject({ ok: true });
    expect(await on(node, `rpm -q ${pkg} || true; test -e /opt/kata/bin/kata-runtime || echo no-kata; ls /var/lib/katafleet | grep -c installed- || true`))
      .toBe(`package ${pkg} is not installed\nno-kata\n0`);
  }, 300_000);

  it('a mirror that cannot be reached is PackageRepositoryUnreachable (retried), naming the package manager\'s error; nothing installed', async () => {
    await fleet.setFault(node, 'package-repo-unreachable', true);
    try {
      const refused = await failure(runStep(node, installStep(pkg, '3.2.0'), runB));
      expect(refused.type).toBe('PackageRepositoryUnreachable');
      expect(refused.message).toMatch(new RegExp(`^Node ${node}: package install failed with exit code \\d+ \\((?:/\\S+/)?${manager} .*the package sources cannot be reached$`));
    } finally {
      await fleet.setFault(node, 'package-repo-unreachable', false);
    }
    expect(await on(node, `rpm -q ${pkg} || true`)).toBe(`package ${pkg} is not installed`);
  }, 300_000);

  it('removes what was installed before katafleet (action "remove"), and its undo installs the same version again', async () => {
    await on(node, manager === 'dnf' ? `dnf -y -q install ${pkg}-3.2.0 >/dev/null 2>&1` : `zypper -q --non-interactive install ${pkg}=3.2.0 >/dev/null 2>&1`);
    expect(await on(node, `rpm -q --qf '%{VERSION}-%{RELEASE}' ${pkg}`)).toBe(installed);
    const removed = await runStep(node, installStep(pkg, '3.2.0', { action: 'remove' }), runB);
    expect(removed).toMatchObject({ changed: true, summary: `removed ${pkg} ${installed}`, undo: { kind: 'reinstall-packages', manager, packages: [{ name: pkg, version: installed }] } });
    expect(await on(node, `rpm -q ${pkg} || true`)).toBe(`package ${pkg} is not installed`);
    expect(await undo(node, removed.undo!)).toMatchObject({ ok: true });
    expect(await on(node, `rpm -q --qf '%{VERSION}-%{RELEASE}' ${pkg}`)).toBe(installed);
  }, 300_000);
});
