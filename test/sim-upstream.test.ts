// The simulation follows upstream: a Kata install from the release tarball (release-tarball), wired into
// containerd the way kata-deploy 3.8+ writes it (runtime_path to the tarball's shim, ConfigPath to its
// config; reality/KATA.md §3.2), runs a pod in "a VM" only while the shim is really at runtime_path.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { KubernetesTarget, NodeTarget, StepOutcome, StepRequest } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { toKubernetesTarget, toNodeTarget } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import { ReleaseTarballStep, type Step } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { createSandbox, type NodeRuntimeState } from '../sim/kube-sandbox';
import { sshRun } from '../sim/ssh-run';
import { activityByKind } from '../workflows/step-activities';

describe('the simulated containerd resolves runtime_path as containerd does (pure)', () => {
  const state: NodeRuntimeState = {
    containerdActive: true,
    handlers: ['kata', 'runc'],
    runtimeTypes: { kata: 'io.containerd.kata.v2' },
    shims: [],
    guestKernels: { 'containerd-shim-kata-v2': '6.12.47-kata' },
    hostKernel: '6.1.0-katafleet-sim',
  };
  it('runs the shim at runtime_path, whatever is on PATH', () => {
    const outcome = createSandbox('kata', { ...state, runtimePaths: { kata: { path: '/opt/kata/bin/containerd-shim-kata-v2', exists: true } } }, '/run/containerd/containerd.sock', 'sb1');
    expect(outcome).toEqual({ ok: true, handler: 'kata', shim: 'containerd-shim-kata-v2', kernelRelease: '6.12.47-kata', vm: true });
  });
  it('fails the sandbox when no file is at runtime_path (containerd uses the absolute path as is and the exec fails)', () => {
    const outcome = createSandbox('kata', { ...state, shims: ['containerd-shim-kata-v2'], runtimePaths: { kata: { path: '/opt/kata/bin/containerd-shim-kata-v2', exists: false } } }, '/run/containerd/containerd.sock', 'sb1');
    expect(outcome).toMatchObject({ ok: false, message: expect.stringContaining('fork/exec /opt/kata/bin/containerd-shim-kata-v2: no such file or directory') });
  });
});

let fleet: Fleet;
let pool: SshPool;
let targets: Record<string, NodeTarget>;
let kubernetes: KubernetesTarget;
let steps: Step[];
const runId = '3e5a7c9b-2d4f-4a6b-8c0d-1e3f5a7b9c2d';

beforeAll(async () => {
  fleet = await startFleet({ nodes: [{ name: 'up-1', containerd: '1.6' }, { name: 'up-2', containerd: '2' }], kubernetes: true, dir: join(await mkdtemp(join(tmpdir(), 'kf-sim-upstream-')), 'fleet') });
  const inventory = await loadInventory(fleet.inventoryPath);
  targets = Object.fromEntries(inventory.nodes.map((n) => [n.name, toNodeTarget(inventory, n)]));
  kubernetes = toKubernetesTarget(inventory)!;
  const shas = JSON.parse(await readFile(join(fleet.mirror.dir, 'kata-releases.json'), 'utf8')) as Record<string, { sha256: string }>;
  // playbooks/examples/kata-release.toml as written, but its tarball from the mirror: version, url and sha256 of the simulated 3.32.0.
  steps = (await loadPlaybook('playbooks/examples/kata-release.toml')).steps.map((step): Step => (step.kind !== 'release-tarball' ? step : ReleaseTarballStep.parse({
    ...step, version: '3.32.0', sha256: { amd64: shas['3.32.0'].sha256 },
    url: `http://127.0.0.1:${fleet.mirror.port}/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}`,
  })));
  pool = new SshPool();
}, 240_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});

async function runStep(step: Step, run = runId, timeoutMs = 300_000, node = 'up-1'): Promise<StepOutcome> {
  const fn = createNodeActivities({ pool })[activityByKind[step.kind]] as (request: StepRequest) => Promise<StepOutcome>;
  const env = new MockActivityEnvironment({ startToCloseTimeoutMs: timeoutMs } as Partial<Info>, { logger: new DefaultLogger('ERROR') });
  return (await env.run(fn, { runId: run, rolloutId: 'test', node: targets[node], kubernetes, step, drain: false })) as StepOutcome;
}
const on = async (command: string) => (await sshRun(fleet, fleet.nodes[0], command)).stdout.trim();

describe("a node's /var", () => {
  it('is the machine\'s /var as it was at fleet start: a file the machine adds later does not show through', async () => {
    const probe = `/var/lib/katafleet-var-snapshot-probe-${process.pid}`;
    await writeFile(probe, 'added after the fleet started\n');
    try {
      expect(await on(`test -e ${probe} && echo visible || echo absent; test -d /var/lib/dpkg && echo dpkg`)).toBe('absent\ndpkg');
    } finally {
      await rm(probe, { force: true });
    }
  });
});

describe('playbooks/examples/kata-release.toml (Kata from the release tarball) on a node', () => {
  it('installs from the tarball, wires containerd to its shim by runtime_path, and the verification pod runs in the guest kernel', async () => {
    const outcomes: Record<string, StepOutcome> = {};
    for (const step of steps) outcomes[step.id] = await runStep(step);
    expect(outcomes.install.summary).toContain('installed Kata 3.32.0');
    expect(outcomes['kata-check'].summary).toContain('capable (kata-runtime check');
    expect(await on('grep -A1 "runtimes.kata\\]" /etc/containerd/config.toml; grep -E "runtime_path|ConfigPath" /etc/containerd/config.toml'))
      .toContain('runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"');
    expect(outcomes.verify.facts).toMatchObject({ guestKernel: '6.12.47-kata' });
    // containerd 1.6 never reports runtime handlers, so the readiness gate checks Ready only, and says so.
    expect(outcomes.ready.summary).toContain('status.runtimeHandlers not reported (it needs containerd >= 2.0 and Kubernetes >= 1.31)');
  }, 300_000);

  it('on a containerd 2 node the kubelet reports the handlers and the readiness gate requires kata among them', async () => {
    const outcomes: Record<string, StepOutcome> = {};
    for (const step of steps) outcomes[step.id] = await runStep(step, runId, 300_000, 'up-2');
    expect(outcomes.ready.summary).toBe('Ready; runtimeHandlers kata, runc');
    expect(outcomes.verify.facts).toMatchObject({ guestKernel: '6.12.47-kata' });
  }, 300_000);

  it('with no shim at runtime_path (the version tree lost it), the pod never runs, and the event says why', async () => {
    await on('rm /opt/kata-releases/3.32.0/opt/kata/bin/containerd-shim-kata-v2');
    const verify = steps.find((step) => step.kind === 'verification-pod')!;
    await expect(runStep(verify, '5f7b9d1e-4a6c-4e8a-9b1d-2f4a6c8e0b3d', 30_000)).rejects.toMatchObject({
      message: expect.stringContaining('fork/exec /opt/kata/bin/containerd-shim-kata-v2: no such file or directory'),
    });
  }, 300_000);
});
