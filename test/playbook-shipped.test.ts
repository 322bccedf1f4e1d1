import path from 'node:path';
import { checkPlaybookAgainstInventory, loadInventory, loadPlaybook, resolvePlaybookPath, shippedPlaybookNames } from '../playbooks/load';
import { stepKinds, type ContainerdPatchStep, type RuntimeClassStep, type Step } from '../playbooks/schema';

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
      'package-install',
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
    expect(stepOf(steps, 'package-install')[0].packages).toEqual([{ name: 'kata-containers', version: '3.2.0' }]);
    const patch: ContainerdPatchStep = stepOf(steps, 'containerd-patch')[0];
    expect(patch.runtimes[0]).toMatchObject({ name: 'kata', runtime_type: 'io.containerd.kata.v2' });
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

  it('kata-uninstall removes what kata adds, newest first', async () => {
    const { steps, rollout } = await loadPlaybook('kata-uninstall');
    expect(rollout.drain).toBe(true);
    expect(steps.map((step) => `${step.kind}${'action' in step ? ` ${step.action}` : ''}`)).toEqual([
      'node-label remove',
      'containerd-patch remove',
      'service-restart',
      'readiness-gate',
      'package-install remove',
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

  it('together (with playbooks/examples/kata-release.toml, the release-tarball install) use every step kind but rollback', async () => {
    const used = new Set<string>();
    for (const name of [...shippedPlaybookNames(), 'playbooks/examples/kata-release.toml']) (await loadPlaybook(name)).steps.forEach((step) => used.add(step.kind));
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
