// The drift check's comparisons, without a node: what each step kind counts as drift, and how it is named.
import { containerdConfigDrift, daemonDrift, expectedHandlers, labelDrift, packageDrift, runtimeClassDrift } from '../activities/drift-check';
import { patchContainerdConfig } from '../activities/containerd-config';
import { runtimeClassManifest } from '../activities/steps/runtime-class';
import { ContainerdPatchStep, NodeLabelStep, PackageInstallStep, RuntimeClassStep, ServiceRestartStep } from '../playbooks/schema';

const kata = { name: 'kata', runtime_type: 'io.containerd.kata.v2', privileged_without_host_devices: true };
const install = PackageInstallStep.parse({ id: 'install', kind: 'package-install', packages: [{ name: 'kata-containers', version: '3.2.0' }] });
const remove = PackageInstallStep.parse({ id: 'remove', kind: 'package-install', action: 'remove', packages: [{ name: 'kata-containers' }] });
const patch = ContainerdPatchStep.parse({ id: 'containerd', kind: 'containerd-patch', runtimes: [kata] });
const unpatch = ContainerdPatchStep.parse({ id: 'containerd', kind: 'containerd-patch', action: 'remove', runtimes: [kata] });
const restart = ServiceRestartStep.parse({ id: 'restart', kind: 'service-restart', wait_for_handlers: ['kata'] });
const label = NodeLabelStep.parse({ id: 'label', kind: 'node-label', labels: { 'katacontainers.io/kata-runtime': 'true' } });
const unlabel = NodeLabelStep.parse({ id: 'label', kind: 'node-label', action: 'remove', labels: { 'katacontainers.io/kata-runtime': 'true' } });
const runtimeClass = RuntimeClassStep.parse({
  id: 'rc', kind: 'runtime-class', name: 'kata', handler: 'kata', node_selector: { 'katacontainers.io/kata-runtime': 'true' }, overhead: { cpu: '250m', memory: '160Mi' },
});
const config = `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
`;
const patched = patchContainerdConfig(config, [kata]).content;

describe('package drift', () => {
  it('names a package that is missing, or at another version than pinned', () => {
    expect(packageDrift(install, new Map(), 'apt')).toEqual(['package kata-containers is not installed (want 3.2.0)']);
    expect(packageDrift(install, new Map([['kata-containers', '3.1.0']]), 'apt')).toEqual(['package kata-containers is 3.1.0, not 3.2.0']);
    expect(packageDrift(install, new Map([['kata-containers', '3.2.0']]), 'apt')).toEqual([]);
    expect(packageDrift(install, new Map([['kata-containers', '3.2.0-1.el9']]), 'dnf')).toEqual([]);
  });

  it('with action = "remove", names a package that is still installed', () => {
    expect(packageDrift(remove, new Map([['kata-containers', '3.2.0']]), 'apt')).toEqual(['package kata-containers is installed (3.2.0); the playbook removes it']);
    expect(packageDrift(remove, new Map(), 'apt')).toEqual([]);
  });
});

describe('containerd config drift', () => {
  it('is none when the patcher would leave the config unchanged', () => {
    expect(containerdConfigDrift(patch, patched, undefined)).toEqual([]);
  });

  it('names the runtime the config lacks, and a missing config', () => {
    expect(containerdConfigDrift(patch, config, undefined)).toEqual(['containerd config lacks runtime "kata"']);
    expect(containerdConfigDrift(patch, undefined, undefined)).toEqual(['containerd config /etc/containerd/config.toml is missing', 'containerd config lacks runtime "kata"']);
  });

  it('names a runtime changed by someone else with the patcher\'s reason (the repair refuses it unless replace = true)', () => {
    const changed = patched.replace('io.containerd.kata.v2', 'io.containerd.kata-qemu.v2');
    expect(containerdConfigDrift(patch, changed, undefined)).toEqual([
      '/etc/containerd/config.toml:6: runtime "kata" already exists with other settings (runtime_type is "io.containerd.kata-qemu.v2", the playbook wants "io.containerd.kata.v2")',
    ]);
    expect(containerdConfigDrift({ ...patch, replace: true }, changed, undefined)).toEqual(['containerd config has runtime "kata" with other settings']);
  });

  it('in drop-in mode, checks the drop-in file and the import', () => {
    const v3 = 'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n';
    const dropIn = { ...patch, mode: 'drop-in' as const };
    const outcome = patchContainerdConfig(v3, [kata], { mode: 'drop-in', dropInPath: dropIn.drop_in_path });
    expect(containerdConfigDrift(dropIn, v3, undefined)).toEqual([
      'containerd config /etc/containerd/config.toml does not import /etc/containerd/conf.d/katafleet.toml',
      'containerd drop-in /etc/containerd/conf.d/katafleet.toml is missing',
    ]);
    expect(containerdConfigDrift(dropIn, outcome.content, `${outcome.dropIn!.content}# edited\n`)).toEqual(['containerd drop-in /etc/containerd/conf.d/katafleet.toml differs from the playbook\'s runtimes']);
    expect(containerdConfigDrift(dropIn, outcome.content, outcome.dropIn!.content)).toEqual([]);
  });

  it('with action = "remove", names a runtime still configured, but not one of another runtime_type (not the playbook\'s to remove)', () => {
    expect(containerdConfigDrift(unpatch, patched, undefined)).toEqual(['containerd config /etc/containerd/config.toml still has runtime "kata"']);
    expect(containerdConfigDrift(unpatch, config, undefined)).toEqual([]);
    expect(containerdConfigDrift(unpatch, patched.replace('io.containerd.kata.v2', 'io.containerd.kata-qemu.v2'), undefined)).toEqual([]);
  });
});

describe('running containerd drift', () => {
  const handlers = expectedHandlers([patch, restart]);

  it('expects the handlers a playbook adds, and not the ones it removes', () => {
    expect(handlers).toEqual({ present: ['kata'], absent: [] });
    expect(expectedHandlers([unpatch, { ...restart, wait_for_handlers: [] }])).toEqual({ present: [], absent: ['kata'] });
  });

  it('names an inactive unit, a daemon older than its config, and a missing handler', () => {
    expect(daemonDrift(restart, { active: true, stale: false, handlers: ['kata', 'runc'] }, handlers)).toEqual([]);
    expect(daemonDrift(restart, { active: false, stale: true }, handlers)).toEqual(['containerd is not active']);
    expect(daemonDrift(restart, { active: true, stale: true, handlers: ['runc'] }, handlers)).toEqual([
      'running containerd is older than its config (not restarted since /etc/containerd changed)',
      'running containerd does not list handler "kata"',
    ]);
    expect(daemonDrift(restart, { active: true, stale: false }, handlers)).toEqual(["running containerd's CRI does not answer (handlers unknown)"]);
    expect(daemonDrift(restart, { active: true, stale: false, handlers: ['kata', 'runc'] }, { present: [], absent: ['kata'] })).toEqual(['running containerd still lists handler "kata"']);
  });
});

describe('node label drift', () => {
  it('names a missing label and one with another value; with action = "remove", one still set', () => {
    expect(labelDrift(label, {})).toEqual(['node label katacontainers.io/kata-runtime=true is missing']);
    expect(labelDrift(label, { 'katacontainers.io/kata-runtime': 'false' })).toEqual(['node label katacontainers.io/kata-runtime is "false", not "true"']);
    expect(labelDrift(label, { 'katacontainers.io/kata-runtime': 'true' })).toEqual([]);
    expect(labelDrift(unlabel, { 'katacontainers.io/kata-runtime': 'true' })).toEqual(['node label katacontainers.io/kata-runtime is set; the playbook removes it']);
    expect(labelDrift(unlabel, {})).toEqual([]);
  });
});

describe('RuntimeClass drift', () => {
  const applied = runtimeClassManifest(runtimeClass);

  it('is none for the object the step applies', () => {
    expect(runtimeClassDrift(runtimeClass, applied)).toEqual([]);
  });

  it('names a missing RuntimeClass and each field that differs', () => {
    expect(runtimeClassDrift(runtimeClass, undefined)).toEqual(['RuntimeClass kata is missing']);
    expect(runtimeClassDrift(runtimeClass, { ...applied, handler: 'kata-qemu', scheduling: undefined, overhead: { podFixed: { cpu: '250m' } }, metadata: { name: 'kata' } })).toEqual([
      'RuntimeClass kata has handler "kata-qemu", not "kata"',
      'RuntimeClass kata has nodeSelector none, not katacontainers.io/kata-runtime=true',
      'RuntimeClass kata has overhead cpu=250m, not cpu=250m,memory=160Mi',
      'RuntimeClass kata lacks label app.kubernetes.io/managed-by=katafleet',
    ]);
  });

  it('with action = "delete", names one that still exists with the step\'s handler only', () => {
    const deleteStep = { ...runtimeClass, action: 'delete' as const };
    expect(runtimeClassDrift(deleteStep, applied)).toEqual(['RuntimeClass kata exists; the playbook deletes it']);
    expect(runtimeClassDrift(deleteStep, { ...applied, handler: 'other' })).toEqual([]);
    expect(runtimeClassDrift(deleteStep, undefined)).toEqual([]);
  });
});
