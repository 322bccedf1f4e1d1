import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expandReleaseUrl } from '../activities/steps/release-tarball';
import { buildKataRelease } from '../sim/kata-release';
import { checkPlaybookAgainstInventory, loadInventory, loadPlaybook, resolvePlaybookPath, shippedPlaybookNames } from '../playbooks/load';
import { KATA_RELEASE_URL, stepKinds, type ContainerdPatchStep, type RuntimeClassStep, type Step } from '../playbooks/schema';

const stepOf = <Kind extends Step['kind']>(steps: Step[], kind: Kind) => steps.filter((step): step is Extract<Step, { kind: Kind }> => step.kind === kind);

describe('the shipped playbooks', () => {
  it('are kata, kata-uninstall and gvisor', () => {
    expect(shippedPlaybookNames()).toEqual(['gvisor', 'kata', 'kata-uninstall']);
  });

  it.each(['kata', 'kata-uninstall', 'gvisor'])('%s validates on its own and against the example inventory', async (name) => {
    const playbook = await loadPlaybook(name);
    const inventory = await loadInventory('playbooks/examples/inventory.toml');
    expect(() => checkPlaybookAgainstInventory(playbook, inventory)).not.toThrow();
    expect(playbook.playbook.name).toBe(name);
    expect(playbook.source.file).toBe(path.join('playbooks', `${name}.toml`));
  });

  it('kata follows the seed procedure, in order', async () => {
    const { steps } = await loadPlaybook('kata');
    expect(steps.map((step) => step.kind)).toEqual([
      'prereq-check',
      'release-tarball',
      'prereq-check',
      'containerd-patch',
      'service-restart',
      'readiness-gate',
      'node-label',
      'runtime-class',
      'verification-pod',
    ]);
    expect(stepOf(steps, 'prereq-check')[0]).toMatchObject({
      cpu_flags: ['vmx', 'svm'],
      require_kvm: true,
      modules: ['kvm', 'vhost', 'vhost_net', 'vhost_vsock'],
      modules_any_of: [['kvm_intel', 'kvm_amd']],
      persist_modules: true,
    });
    expect(stepOf(steps, 'prereq-check')[1]).toMatchObject({ run_kata_check: true });
    // Kata as upstream ships it (no distribution package): the static tarball of a current release, .tar.zst from 3.21.
    expect(stepOf(steps, 'release-tarball')[0]).toMatchObject({ version: '3.32.0', url: KATA_RELEASE_URL, fetch: 'worker', links: true });
    expect(expandReleaseUrl(KATA_RELEASE_URL, '3.32.0', 'amd64')).toBe('https://github.com/kata-containers/kata-containers/releases/download/3.32.0/kata-static-3.32.0-amd64.tar.zst');
    const patch: ContainerdPatchStep = stepOf(steps, 'containerd-patch')[0];
    // Wired as kata-deploy 3.8+ writes a handler: runtime_path to the tarball's shim, options.ConfigPath (KATA.md §3.2).
    expect(patch.runtimes[0]).toMatchObject({
      name: 'kata',
      runtime_type: 'io.containerd.kata.v2',
      runtime_path: '/opt/kata/bin/containerd-shim-kata-v2',
      options: { ConfigPath: '/opt/kata/share/defaults/kata-containers/configuration-qemu.toml' },
    });
    const runtimeClass: RuntimeClassStep = stepOf(steps, 'runtime-class')[0];
    expect(runtimeClass).toMatchObject({
      name: 'kata',
      handler: 'kata',
      api_version: 'node.k8s.io/v1',
      node_selector: { 'katacontainers.io/kata-runtime': 'true' },
      overhead: { cpu: '250m', memory: '160Mi' },
    });
    expect(stepOf(steps, 'node-label')[0].labels).toEqual(runtimeClass.node_selector);
    expect(stepOf(steps, 'verification-pod')[0]).toMatchObject({ runtime_class: 'kata', expect_kernel_differs: true });
  });

  it('kata pins the sha256 of the tarball the simulated mirror serves (built reproducibly: the same bytes on every build)', async () => {
    const { steps } = await loadPlaybook('kata');
    const step = stepOf(steps, 'release-tarball')[0];
    const dir = await mkdtemp(path.join(tmpdir(), 'katafleet-shipped-release-'));
    try {
      const first = await buildKataRelease(path.join(dir, 'a'), step.version!);
      const second = await buildKataRelease(path.join(dir, 'b'), step.version!);
      expect(second.sha256).toBe(first.sha256);
      expect(first.path).toBe(`kata-containers/kata-containers/releases/download/3.32.0/kata-static-3.32.0-amd64.tar.zst`);
      // If sim/kata-release.ts or a simulated binary changed, the tarball did too: put this sha256 into kata.toml.
      expect(step.sha256).toEqual({ amd64: first.sha256 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('kata-uninstall removes what kata adds, newest first', async () => {
    const { steps, rollout } = await loadPlaybook('kata-uninstall');
    expect(rollout.drain).toBe(true);
    expect(steps.map((step) => `${step.kind}${'action' in step ? ` ${step.action}` : ''}`)).toEqual([
      'node-label remove',
      'containerd-patch remove',
      'service-restart',
      'readiness-gate',
      'release-tarball remove',
      'runtime-class delete',
    ]);
    expect(stepOf(steps, 'containerd-patch')[0].runtimes).toEqual([{ name: 'kata', runtime_type: 'io.containerd.kata.v2' }]);
  });

  it('gvisor adds runsc with its own shim', async () => {
    const { steps } = await loadPlaybook('gvisor');
    expect(stepOf(steps, 'containerd-patch')[0].runtimes).toEqual([{ name: 'runsc', runtime_type: 'io.containerd.runsc.v1' }]);
    expect(stepOf(steps, 'package-install')[0].packages[0].name).toBe('runsc');
    expect(stepOf(steps, 'runtime-class')[0]).toMatchObject({ name: 'gvisor', handler: 'runsc' });
  });

  it('together (with the examples kata-release.toml, kata-package-repo.toml and kata-deploy-handlers.toml) use every step kind but rollback', async () => {
    const used = new Set<string>();
    const examples = ['playbooks/examples/kata-release.toml', 'playbooks/examples/kata-package-repo.toml', 'playbooks/examples/kata-deploy-handlers.toml'];
    for (const name of [...shippedPlaybookNames(), ...examples]) (await loadPlaybook(name)).steps.forEach((step) => used.add(step.kind));
    expect(stepKinds.filter((kind) => !used.has(kind))).toEqual(['rollback']);
  });
});

describe('finding a playbook', () => {
  it('reads a bare name as a shipped playbook and anything else as a path', () => {
    expect(resolvePlaybookPath('kata')).toBe(path.resolve(__dirname, '..', 'playbooks', 'kata.toml'));
    expect(resolvePlaybookPath('my/kata.toml')).toBe(path.resolve('my/kata.toml'));
    expect(resolvePlaybookPath('kata.toml')).toBe(path.resolve('kata.toml'));
  });

  it('loads by path as well', async () => {
    const playbook = await loadPlaybook('playbooks/gvisor.toml');
    expect(playbook.source.file).toBe('playbooks/gvisor.toml');
  });

  it('suggests the shipped playbook that was probably meant', async () => {
    await expect(loadPlaybook('kat')).rejects.toThrow(
      'playbooks/kat.toml: no such file — there is no shipped playbook named "kat" (did you mean "kata"?); shipped: gvisor, kata, kata-uninstall; or give the path of a .toml file',
    );
  });

  it('names a missing file as given', async () => {
    await expect(loadPlaybook('nowhere/x.toml')).rejects.toThrow(/^nowhere\/x\.toml: no such file$/);
  });
});
