// containerd wiring as kata-deploy writes it (reality/KATA.md §3.2, §4): several handlers kata-<shim>, each with
// runtime_type io.containerd.kata-<shim>.v2, runtime_path to the Go or the Rust shim and options.ConfigPath to its
// configuration; in place into the 20 real configs of the corpus (v2 and v3 paths), read back by a real containerd
// 1.6, and in drop-in mode on a containerd 2.x node of the simulated fleet (with the Kata release installed), where
// the real containerd loads them (`containerd config dump`, `crictl info`).
// Covers playbooks/README.md "containerd-patch" ("Handlers as kata-deploy writes them") and
// playbooks/examples/kata-deploy-handlers.toml.
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from '@iarna/toml';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { ContainerdConfigConflict, patchContainerdConfig } from '../activities/containerd-config';
import { KATA_DEPLOY_SHIMS, kataDeployRuntime } from '../activities/containerd-config/kata-deploy';
import { runtimeData } from '../activities/containerd-config/render';
import { createDriftActivities } from '../activities/drift-check';
import { createNodeActivities } from '../activities/node-activities';
import type { DriftCheck, NodeTarget, StepOutcome, StepRequest } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import { ContainerdPatchStep, ReleaseTarballStep, ServiceRestartStep, type Step } from '../playbooks/schema';
import type { BuiltKataRelease } from '../sim/kata-release';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';

const handlers = KATA_DEPLOY_SHIMS.map((shim) => kataDeployRuntime(shim));
const names = handlers.map((h) => h.name);
const example = 'playbooks/examples/kata-deploy-handlers.toml';

describe("kata-deploy's handler entries (KATA.md §3.2)", () => {
  it('kata-qemu and kata-clh as KATA.md §3.2 quotes them (3.8+ runtime_path; 3.30+ container_annotations)', () => {
    expect(runtimeData(kataDeployRuntime('qemu', '3.20.0'))).toEqual({
      runtime_type: 'io.containerd.kata-qemu.v2',
      runtime_path: '/opt/kata/bin/containerd-shim-kata-v2',
      privileged_without_host_devices: true,
      pod_annotations: ['io.katacontainers.*'],
      options: { ConfigPath: '/opt/kata/share/defaults/kata-containers/configuration-qemu.toml' },
    });
    expect(runtimeData(kataDeployRuntime('clh', '3.32.0'))).toEqual({
      runtime_type: 'io.containerd.kata-clh.v2',
      runtime_path: '/opt/kata/bin/containerd-shim-kata-v2',
      privileged_without_host_devices: true,
      pod_annotations: ['io.katacontainers.*'],
      container_annotations: ['io.kubernetes.container.terminationMessage*'],
      options: { ConfigPath: '/opt/kata/share/defaults/kata-containers/configuration-clh.toml' },
    });
    // Before 3.8 kata-deploy wrote no runtime_path (it linked /usr/local/bin/containerd-shim-kata-<shim>-v2 instead).
    expect(kataDeployRuntime('qemu', '3.7.0').runtime_path).toBeUndefined();
  });

  it('runtime-rs shims run the Rust shim (same file name, runtime-rs/bin) with their runtime-rs configuration', () => {
    expect(handlers.map((h) => [h.name, h.runtime_type, h.runtime_path, h.options?.ConfigPath])).toEqual([
      ['kata-qemu', 'io.containerd.kata-qemu.v2', '/opt/kata/bin/containerd-shim-kata-v2', '/opt/kata/share/defaults/kata-containers/configuration-qemu.toml'],
      ['kata-clh', 'io.containerd.kata-clh.v2', '/opt/kata/bin/containerd-shim-kata-v2', '/opt/kata/share/defaults/kata-containers/configuration-clh.toml'],
      ['kata-fc', 'io.containerd.kata-fc.v2', '/opt/kata/bin/containerd-shim-kata-v2', '/opt/kata/share/defaults/kata-containers/configuration-fc.toml'],
      ['kata-dragonball', 'io.containerd.kata-dragonball.v2', '/opt/kata/runtime-rs/bin/containerd-shim-kata-v2', '/opt/kata/share/defaults/kata-containers/runtime-rs/configuration-dragonball.toml'],
      ['kata-qemu-runtime-rs', 'io.containerd.kata-qemu-runtime-rs.v2', '/opt/kata/runtime-rs/bin/containerd-shim-kata-v2', '/opt/kata/share/defaults/kata-containers/runtime-rs/configuration-qemu-runtime-rs.toml'],
      ['kata-clh-runtime-rs', 'io.containerd.kata-clh-runtime-rs.v2', '/opt/kata/runtime-rs/bin/containerd-shim-kata-v2', '/opt/kata/share/defaults/kata-containers/runtime-rs/configuration-clh-runtime-rs.toml'],
    ]);
  });

  it(`${example} states exactly these handlers, and validates`, async () => {
    const playbook = await loadPlaybook(example);
    const patch = playbook.steps.find((step) => step.kind === 'containerd-patch') as ContainerdPatchStep;
    expect(patch.runtimes).toEqual(handlers);
    expect(patch.mode).toBe('drop-in');
    expect((playbook.steps.find((step) => step.kind === 'service-restart') as ServiceRestartStep).wait_for_handlers).toEqual(names);
  });
});

const corpusDir = join(__dirname, 'fixtures', 'containerd-corpus');
const corpusFiles = readdirSync(corpusDir).filter((name) => name.endsWith('.toml')).sort();

/** Why a corpus file takes no kata-deploy handlers, by file (the rest are patched). */
const refusedFiles: Record<string, string> = {
  '13-docker-containerd-io-default.toml': 'ContainerdCriDisabled',
  '14-talos-cri-containerd.toml': 'ContainerdConfigUnsupported',
  // Kata CI's config already has a kata-qemu-runtime-rs table of its own (no runtime_path, no ConfigPath).
  '18-kata-nydus-v3-dropin-noversion.toml': ContainerdConfigConflict,
};

describe('the handlers patched into the 20 real configs (in place)', () => {
  it.each(corpusFiles)('%s', (file) => {
    const original = readFileSync(join(corpusDir, file), 'utf8');
    let outcome;
    try {
      outcome = patchContainerdConfig(original, handlers, { file });
    } catch (err) {
      expect((err as { type: string }).type).toBe(refusedFiles[file]);
      if (file.startsWith('18-')) {
        expect((err as Error).message).toContain('runtime "kata-qemu-runtime-rs" already exists with other settings (runtime_path is unset, the playbook wants "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2"');
        // replace = true overwrites kata-deploy's older entry with the whole of the playbook's.
        const replaced = patchContainerdConfig(original, handlers, { file, replace: true });
        expect(replaced).toMatchObject({ status: 'patched', replaced: ['kata-qemu-runtime-rs'] });
      }
      return;
    }
    expect(refusedFiles[file]).toBeUndefined();
    expect(outcome.status).toBe('patched');
    // Each handler sits at the path of the file's version (v2 "io.containerd.grpc.v1.cri", v3 "io.containerd.cri.v1.runtime"), exactly as specified.
    const expectedPlugin = file.match(/^(03|06|12|15|16)-/) ? 'io.containerd.cri.v1.runtime' : file.startsWith('10-') ? 'cri' : 'io.containerd.grpc.v1.cri';
    expect(outcome.pluginPath[1]).toBe(expectedPlugin);
    let runtimes = parse(outcome.content) as Record<string, unknown>;
    for (const key of outcome.pluginPath) runtimes = runtimes[key] as Record<string, unknown>;
    for (const handler of handlers) expect(runtimes[handler.name]).toEqual(runtimeData(handler));
    // The original's own tables are still there.
    expect(outcome.content.startsWith(original.slice(0, Math.min(original.length, 40)))).toBe(true);
    // Patching again changes nothing.
    expect(patchContainerdConfig(outcome.content, handlers, { file }).status).toBe('unchanged');
  });
});

const hostContainerd = (process.env.PATH ?? '').split(':').map((dir) => join(dir, 'containerd')).find((candidate) => {
  try {
    execFileSync(candidate, ['--version'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
});

(hostContainerd ? describe : describe.skip)('a real containerd 1.6 reads the v2 configs with the handlers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kf-kata-deploy-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const v2 = corpusFiles.filter((file) => !(file in refusedFiles) && !/^(03|06|10|12|15|16)-/.test(file));

  it.each(v2)('%s: config dump has runtime_path and options.ConfigPath of every handler', (file) => {
    const patched = patchContainerdConfig(readFileSync(join(corpusDir, file), 'utf8'), handlers, { file }).content;
    writeFileSync(join(dir, file), patched);
    const dump = parse(execFileSync(hostContainerd!, ['--config', join(dir, file), 'config', 'dump'], { encoding: 'utf8', timeout: 30_000 })) as {
      plugins: Record<string, { containerd: { runtimes: Record<string, { runtime_type: string; runtime_path: string; options: { ConfigPath: string }; container_annotations: string[] }> } }>;
    };
    const runtimes = dump.plugins['io.containerd.grpc.v1.cri'].containerd.runtimes;
    for (const handler of handlers) {
      expect(runtimes[handler.name]).toMatchObject({
        runtime_type: handler.runtime_type,
        runtime_path: handler.runtime_path,
        options: { ConfigPath: handler.options!.ConfigPath },
        container_annotations: handler.container_annotations,
      });
    }
  });
});

describe('drop-in mode on a containerd 2.x node with Kata 3.32.0 installed', () => {
  let fleet: Fleet;
  let pool: SshPool;
  let target: NodeTarget;
  let built: Record<string, BuiltKataRelease>;
  const runId = '8c3d1e44-5f6a-4b7c-8d9e-0f1a2b3c4d5e';
  const env = (info: Partial<Info> = {}) => new MockActivityEnvironment({ startToCloseTimeoutMs: 180_000, ...info }, { logger: new DefaultLogger('ERROR') });
  const on = async (command: string) => (await sshRun(fleet, fleet.nodes[0], command)).stdout.trim();
  async function runStep<S extends Step>(fn: (request: StepRequest<S>) => Promise<StepOutcome>, step: S): Promise<StepOutcome> {
    return (await env().run(fn, { runId, rolloutId: 'test', node: target, step, drain: false })) as StepOutcome;
  }

  beforeAll(async () => {
    process.env.KATAFLEET_RELEASE_CACHE = await mkdtemp(join(tmpdir(), 'kf-release-cache-'));
    fleet = await startFleet({ nodes: [{ name: 'deploy-1', containerd: '2' }], dir: join(await mkdtemp(join(tmpdir(), 'kf-kata-deploy-')), 'fleet') });
    const inventory = await loadInventory(fleet.inventoryPath);
    target = toNodeTarget(inventory, inventory.nodes.find((node) => node.name === 'deploy-1')!);
    built = JSON.parse(await readFile(join(fleet.mirror.dir, 'kata-releases.json'), 'utf8')) as Record<string, BuiltKataRelease>;
    pool = new SshPool();
  }, 120_000);
  afterAll(async () => {
    await pool?.closeAll();
    await fleet?.stop();
  });

  it(`${example}'s install, containerd and restart steps: the real containerd 2.x offers every handler, each with its shim and configuration`, async () => {
    const activities = createNodeActivities({ pool });
    const steps = (await loadPlaybook(example)).steps;
    const install = steps.find((step) => step.kind === 'release-tarball') as ReleaseTarballStep;
    expect(install.sha256).toEqual({ amd64: built['3.32.0'].sha256 });
    expect(await runStep(activities.releaseTarball, install)).toMatchObject({ changed: true });
    // Every runtime_path and ConfigPath the handlers name exists in the installed tree.
    const paths = [...new Set(handlers.flatMap((h) => [h.runtime_path!, String(h.options!.ConfigPath)]))];
    expect(await on(paths.map((p) => `test -e ${p} && echo ok`).join('; '))).toBe(paths.map(() => 'ok').join('\n'));

    const patch = steps.find((step) => step.kind === 'containerd-patch') as ContainerdPatchStep;
    const patched = await runStep(activities.containerdPatch, patch);
    expect(patched.changed).toBe(true);
    // containerd 2.2+'s default config imports /etc/containerd/conf.d/*.toml already (KATA.md §6): the drop-in is covered.
    expect(await on('grep "^imports" /etc/containerd/config.toml')).toMatch(/^imports = \[.*["'](\/etc\/containerd\/conf\.d\/\*\.toml|\/etc\/containerd\/conf\.d\/katafleet\.toml)["']/);
    expect((await on(`cat ${patch.drop_in_path}`)).split('\n').filter((line) => line.trim().startsWith('[') && line.includes('runtimes.kata-qemu-runtime-rs]'))).toHaveLength(1);
    const restart = steps.find((step) => step.kind === 'service-restart') as ServiceRestartStep;
    const restarted = await runStep(activities.serviceRestart, restart);
    for (const name of names) expect(restarted.summary).toContain(name);

    // containerd's own merged view of main config + drop-in.
    const dump = parse(await on('containerd config dump')) as { plugins: Record<string, { containerd: { runtimes: Record<string, Record<string, unknown>> } }> };
    const dumped = dump.plugins['io.containerd.cri.v1.runtime'].containerd.runtimes;
    for (const handler of handlers) {
      expect(dumped[handler.name]).toMatchObject({ runtime_type: handler.runtime_type, runtime_path: handler.runtime_path, options: { ConfigPath: handler.options!.ConfigPath } });
    }
    // And the CRI the kubelet talks to.
    const info = JSON.parse(await on('crictl info')) as { config: { containerd: { runtimes: Record<string, { runtimeType: string; runtimePath: string; options: { ConfigPath: string } }> } } };
    for (const handler of handlers) {
      expect(info.config.containerd.runtimes[handler.name]).toMatchObject({ runtimeType: handler.runtime_type, runtimePath: handler.runtime_path, options: { ConfigPath: handler.options!.ConfigPath } });
    }

    // The drift check knows the handlers: none drifted, then one edited in the drop-in is found.
    const drift = async () => ((await env().run(createDriftActivities({ pool }).checkDrift, { node: target, steps: [install, patch] })) as DriftCheck).drifted;
    expect(await drift()).toEqual([]);
    await on(`sed -i 's#configuration-fc.toml#configuration-qemu.toml#' ${patch.drop_in_path}`);
    expect(await drift()).toEqual([`containerd drop-in ${patch.drop_in_path} differs from the playbook's runtimes`]);
  }, 300_000);
});
