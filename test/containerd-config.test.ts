import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from '@iarna/toml';
import {
  ContainerdConfigConflict,
  ContainerdConfigUnsupported,
  ContainerdCriDisabled,
  ContainerdConfigInvalid,
  patchContainerdConfig,
  removeRuntimes,
  renderDropIn,
  runtimeHandlers,
  unifiedDiff,
  type PatchOutcome,
} from '../activities/containerd-config';
import type { RuntimeSpec } from '../playbooks/runtime-spec';

/** The 20 real configs of ../shared/corpus/containerd (copied here with their SOURCES.md so a fresh clone has them). */
const corpusDir = join(__dirname, 'fixtures', 'containerd-corpus');
const corpusFiles = readdirSync(corpusDir).filter((name) => name.endsWith('.toml')).sort();
const corpus = (name: string) => readFileSync(join(corpusDir, name), 'utf8');

const kata: RuntimeSpec = {
  name: 'kata',
  runtime_type: 'io.containerd.kata.v2',
  privileged_without_host_devices: true,
  pod_annotations: ['io.katacontainers.*'],
  options: { ConfigPath: '/opt/kata/share/defaults/kata-containers/configuration.toml' },
};
const runsc: RuntimeSpec = { name: 'runsc', runtime_type: 'io.containerd.runsc.v1' };

const v1Path = ['plugins', 'cri', 'containerd', 'runtimes'];
const v2Path = ['plugins', 'io.containerd.grpc.v1.cri', 'containerd', 'runtimes'];
const v3Path = ['plugins', 'io.containerd.cri.v1.runtime', 'containerd', 'runtimes'];

type Expectation =
  | { patched: { version: number | undefined; pluginPath: string[]; alsoAdds?: 'runc' } }
  | { refused: { type: string; message: string } };

const patched = (version: number | undefined, pluginPath: string[], alsoAdds?: 'runc'): Expectation => ({ patched: { version, pluginPath, alsoAdds } });
const refused = (type: string, message: string): Expectation => ({ refused: { type, message } });

const criDisabled = refused(
  ContainerdCriDisabled,
  '13-docker-containerd-io-default.toml:15: disabled_plugins contains "cri": the CRI plugin is off, so Kubernetes cannot use any runtime handler; remove "cri" from disabled_plugins first',
);
const criOnlyInImports = refused(
  ContainerdConfigUnsupported,
  '14-talos-cri-containerd.toml:12: this file configures no CRI plugin itself; its CRI settings come from imports "/etc/cri/conf.d/cri.toml", so runtimes appended here would live apart from them; use mode "drop-in" to add the runtimes as a separate file in imports, or patch "/etc/cri/conf.d/cri.toml" itself',
);

/** What patching each corpus file with `kata` must do. */
const withKata: Record<string, Expectation> = {
  '01-empty.toml': patched(2, v2Path, 'runc'),
  '02-containerd-1.6-config-default.toml': patched(2, v2Path),
  '03-containerd-2x-docs-full-v3.toml': patched(3, v3Path),
  '04-eks-al2-containerd-config.toml': patched(2, v2Path),
  '05-eks-nodeadm-v2-nvidia.toml': patched(2, v2Path),
  '06-eks-nodeadm-v3-nvidia.toml': patched(3, v3Path),
  '07-kind-base.toml': patched(2, v2Path),
  '08-microk8s-rendered.toml': refused(
    ContainerdConfigConflict,
    '08-microk8s-rendered.toml:62: runtime "kata" already exists with other settings (privileged_without_host_devices is unset, the playbook wants true; pod_annotations is unset, the playbook wants ["io.katacontainers.*"]; options.ConfigPath is unset, the playbook wants "/opt/kata/share/defaults/kata-containers/configuration.toml"; options.BinaryName is "kata-runtime", the playbook wants unset); set replace = true on the containerd-patch step to overwrite it, or give the playbook runtime another name',
  ),
  '09-minikube-kicbase.toml': patched(2, v2Path),
  '10-minikube-iso-v1-format.toml': patched(undefined, v1Path, 'runc'),
  '11-k3s-rendered-v2.toml': patched(2, v2Path),
  '12-kubespray-rendered-v4.toml': patched(4, v3Path),
  '13-docker-containerd-io-default.toml': criDisabled,
  '14-talos-cri-containerd.toml': criOnlyInImports,
  '15-talos-cri-base-part.toml': patched(3, v3Path),
  '16-nvidia-ctk-v3-dropin.toml': patched(3, v3Path),
  '17-kata-ci-v2-kata-default.toml': refused(
    ContainerdConfigConflict,
    '17-kata-ci-v2-kata-default.toml:6: runtime "kata" already exists with other settings (runtime_type is "io.containerd.kata-qemu-runtime-rs.v2", the playbook wants "io.containerd.kata.v2"; privileged_without_host_devices is unset, the playbook wants true; pod_annotations is unset, the playbook wants ["io.katacontainers.*"]; options.ConfigPath is "/opt/kata/share/defaults/kata-containers/configuration-qemu-runtime-rs.toml", the playbook wants "/opt/kata/share/defaults/kata-containers/configuration.toml"; options.BinaryName is "/usr/local/bin/containerd-shim-kata-qemu-runtime-rs-v2", the playbook wants unset); set replace = true on the containerd-patch step to overwrite it, or give the playbook runtime another name',
  ),
  '18-kata-nydus-v3-dropin-noversion.toml': patched(undefined, v3Path),
  '19-bottlerocket-k8s-nvidia-rendered.toml': patched(2, v2Path),
  '20-containerd-gce-cos-rendered.toml': patched(2, v2Path),
};

/** gVisor's runsc is new everywhere: only the files that must be refused are refused. */
const withRunsc: Record<string, Expectation> = {
  ...withKata,
  '08-microk8s-rendered.toml': patched(2, v2Path),
  '17-kata-ci-v2-kata-default.toml': patched(2, v2Path),
};

/** The parsed runtime table a spec must produce. */
function runtimeTable(runtime: RuntimeSpec): Record<string, unknown> {
  const table: Record<string, unknown> = { ...runtime };
  delete table.name;
  return table;
}

function setIn(data: Record<string, unknown>, path: string[], value: unknown): void {
  let node = data;
  for (const key of path.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
  node[path[path.length - 1]] = value;
}

function attempt(run: () => PatchOutcome): PatchOutcome | { type: string; message: string } {
  try {
    return run();
  } catch (error) {
    const { type, message, name } = error as { type: string; message: string; name: string };
    expect(name).toBe('ContainerdConfigError');
    return { type, message };
  }
}

describe.each([
  ['kata', kata, withKata],
  ['runsc (gVisor)', runsc, withRunsc],
] as const)('patching every corpus file with %s', (_label, runtime, expectations) => {
  it('has an expectation for every corpus file', () => {
    expect(Object.keys(expectations).sort()).toEqual(corpusFiles);
  });

  it.each(corpusFiles)('%s', (file) => {
    const original = corpus(file);
    const expectation = expectations[file];
    const result = attempt(() => patchContainerdConfig(original, [runtime], { file }));

    if ('refused' in expectation) {
      expect(result).toEqual(expectation.refused);
      return;
    }
    if (!('status' in result)) throw new Error(`${file} was refused: ${result.type}: ${result.message}`);
    if (result.status !== 'patched') throw new Error(`${file}: expected patched, got ${result.status}`);
    const { version, pluginPath, alsoAdds } = expectation.patched;
    expect(result.version).toBe(version);
    expect(result.pluginPath).toEqual(pluginPath);
    expect(result.added).toEqual(alsoAdds ? [alsoAdds, runtime.name] : [runtime.name]);
    expect(result.replaced).toEqual([]);

    // Re-parses to the original data plus exactly the new runtime table(s).
    const expected = (original.trim() === '' ? { version: 2 } : parse(original)) as Record<string, unknown>;
    if (alsoAdds) setIn(expected, [...pluginPath, 'runc'], { runtime_type: 'io.containerd.runc.v2' });
    setIn(expected, [...pluginPath, runtime.name], runtimeTable(runtime));
    expect(JSON.parse(JSON.stringify(parse(result.content)))).toEqual(JSON.parse(JSON.stringify(expected)));

    // Every original line is kept, in order: the diff only adds lines.
    const removedLines = unifiedDiff(original, result.content, 'a', 'b')
      .split('\n')
      .filter((line) => line.startsWith('-') && !line.startsWith('---'));
    expect(removedLines).toEqual([]);

    // A second run changes nothing.
    const again = patchContainerdConfig(result.content, [runtime], { file });
    expect(again.status).toBe('unchanged');
    expect(again.content).toBe(result.content);

    // Removing what was added gives back the original bytes (the empty config keeps its explicit, generated runc).
    if (original !== '') expect(removeRuntimes(result.content, result.added).content).toBe(original);

    expect(runtimeHandlers(result.content)).toContain(runtime.name);
  });
});

describe('config versions and plugin paths', () => {
  it.each([
    ['no version key (v1)', '[plugins.cri.containerd]\n  snapshotter = "overlayfs"\n', '[plugins.cri.containerd.runtimes.runsc]'],
    ['version = 1', 'version = 1\n[plugins.cri]\n  sandbox_image = "x"\n', '[plugins.cri.containerd.runtimes.runsc]'],
    ['version = 2', 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n', '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]'],
    ['version = 3', 'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd]\n  default_runtime_name = "runc"\n', '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc]'],
    ['version = 4', "version = 4\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_cdi = true\n", "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc]"],
    ['no version key but v3 plugin ids (a drop-in)', "[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'nydus'\n", "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc]"],
  ])('%s → %s', (_label, config, header) => {
    const outcome = patchContainerdConfig(config, [runsc]);
    expect(outcome.content.startsWith(config)).toBe(true);
    expect(outcome.content).toContain(`${header}\n`);
  });

  it('writes runc next to the new runtime in a v1/v2 file without a runtimes table, because containerd 1.x would drop its built-in one', () => {
    const outcome = patchContainerdConfig('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "pause"\n', [runsc]);
    expect(outcome.status === 'patched' && outcome.added).toEqual(['runc', 'runsc']);
    expect(runtimeHandlers(outcome.content)).toEqual(['runc', 'runsc']);
  });

  it('does not write runc into a v3 file: containerd 2.x merges the file into its built-in runtimes', () => {
    const outcome = patchContainerdConfig('version = 3\n[plugins."io.containerd.cri.v1.runtime"]\n  enable_cdi = true\n', [runsc]);
    expect(outcome.status === 'patched' && outcome.added).toEqual(['runsc']);
    expect(runtimeHandlers(outcome.content)).toEqual(['runc', 'runsc']);
  });

  it('refuses a version it does not know, and a version that is not an integer', () => {
    expect(attempt(() => patchContainerdConfig('version = 5\n', [runsc], { file: 'c.toml' }))).toEqual({
      type: ContainerdConfigUnsupported,
      message: 'c.toml:1: config version 5 is not one katafleet knows (1 and 2: containerd 1.x, 3: containerd 2.0-2.2, 4: containerd 2.3+); patch this file by hand or update katafleet',
    });
    expect(attempt(() => patchContainerdConfig('root = "/x"\nversion = "2"\n', [runsc], { file: 'c.toml' }))).toEqual({
      type: ContainerdConfigUnsupported,
      message: 'c.toml:2: version must be an integer from 1 to 4, got "2"; containerd would refuse this file',
    });
  });

  it('reports invalid TOML as FILE:LINE:COL', () => {
    expect(attempt(() => patchContainerdConfig('version = 2\n[plugins\n', [runsc], { file: '/etc/containerd/config.toml' }))).toEqual({
      type: ContainerdConfigInvalid,
      message: expect.stringMatching(/^\/etc\/containerd\/config\.toml:2:\d+: .+; fix the file before patching it$/),
    });
  });

  it.each(['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.runtime', 'io.containerd.cri.v1.images'])('refuses when disabled_plugins contains %s', (id) => {
    const result = attempt(() => patchContainerdConfig(`version = 3\ndisabled_plugins = ["io.containerd.internal.v1.tracing", "${id}"]\n`, [runsc]));
    expect(result).toMatchObject({ type: ContainerdCriDisabled, message: expect.stringContaining(`config.toml:2: disabled_plugins contains "${id}"`) });
  });
});

describe('an empty or missing config', () => {
  it('becomes a version 2 config that keeps runc explicitly, never a kata-only config', () => {
    const outcome = patchContainerdConfig('', [kata]);
    expect(outcome.status).toBe('patched');
    expect(outcome.version).toBe(2);
    expect(parse(outcome.content)).toEqual({
      version: 2,
      plugins: { 'io.containerd.grpc.v1.cri': { containerd: { runtimes: { runc: { runtime_type: 'io.containerd.runc.v2' }, kata: runtimeTable(kata) } } } },
    });
    expect(outcome.content).toMatch(/^# Written by katafleet: this config was empty/);
    expect(runtimeHandlers(outcome.content)).toEqual(['kata', 'runc']);
  });

  it('stays empty when the playbook adds no runtime', () => {
    expect(patchContainerdConfig('', [])).toMatchObject({ status: 'unchanged', content: '' });
  });

  it('keeps the comments of a comments-only file', () => {
    const original = '# managed by hand\n#root = "/var/lib/containerd"\n';
    const outcome = patchContainerdConfig(original, [runsc]);
    expect(outcome.content.startsWith(`${original}\n# Written by katafleet`)).toBe(true);
    expect(patchContainerdConfig(outcome.content, [runsc]).status).toBe('unchanged');
  });
});

describe('an existing runtime of the same name', () => {
  it('is left alone when it already has exactly the playbook settings', () => {
    const config = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v1"  # gVisor\n';
    expect(patchContainerdConfig(config, [runsc])).toEqual({ status: 'unchanged', content: config, version: 2, pluginPath: v2Path });
  });

  it('counts an empty options table as no options', () => {
    const config = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v1"\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]\n';
    expect(patchContainerdConfig(config, [runsc]).status).toBe('unchanged');
  });

  it('is replaced in place, keeping its odd indentation, with replace: true (corpus 08: microk8s kata table with BinaryName)', () => {
    const original = corpus('08-microk8s-rendered.toml');
    const outcome = patchContainerdConfig(original, [kata], { replace: true });
    expect(outcome.status === 'patched' && [outcome.added, outcome.replaced]).toEqual([[], ['kata']]);
    expect(unifiedDiff(original, outcome.content, 'a/config.toml', 'b/config.toml')).toBe(
      [
        '--- a/config.toml',
        '+++ b/config.toml',
        '@@ -61,8 +61,10 @@',
        ' ',
        '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]',
        '       runtime_type = "io.containerd.kata.v2"',
        '+      privileged_without_host_devices = true',
        '+      pod_annotations = ["io.katacontainers.*"]',
        '       [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]',
        '-        BinaryName = "kata-runtime"',
        '+        ConfigPath = "/opt/kata/share/defaults/kata-containers/configuration.toml"',
        ' ',
        '   # \'plugins."io.containerd.grpc.v1.cri".cni\' contains config related to cni',
        '   [plugins."io.containerd.grpc.v1.cri".cni]',
        '',
      ].join('\n'),
    );
    expect(patchContainerdConfig(outcome.content, [kata], { replace: true }).status).toBe('unchanged');
  });

  it('is replaced in place with replace: true (corpus 17: kata CI config where kata is the default runtime)', () => {
    const original = corpus('17-kata-ci-v2-kata-default.toml');
    const outcome = patchContainerdConfig(original, [{ name: 'kata', runtime_type: 'io.containerd.kata.v2' }], { replace: true });
    const data = parse(outcome.content) as { plugins: Record<string, { containerd: { default_runtime_name: string; runtimes: Record<string, unknown> } }> };
    const containerd = data.plugins['io.containerd.grpc.v1.cri'].containerd;
    expect(containerd.runtimes.kata).toEqual({ runtime_type: 'io.containerd.kata.v2' });
    expect(containerd.runtimes.runc).toEqual((parse(original) as typeof data).plugins['io.containerd.grpc.v1.cri'].containerd.runtimes.runc);
    expect(containerd.default_runtime_name).toBe('kata');
    expect(outcome.content.startsWith('version = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  default_runtime_name = "kata"\n\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n    runtime_type = "io.containerd.kata.v2"\n\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n')).toBe(true);
  });

  it('refuses to replace a runtime written with dotted keys, naming the line', () => {
    const config = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  runtimes.runsc.runtime_type = "io.containerd.runsc.v2"\n';
    expect(attempt(() => patchContainerdConfig(config, [runsc], { replace: true }))).toEqual({
      type: ContainerdConfigUnsupported,
      message:
        'config.toml:3: plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc is written with a dotted key or an inline table (runtimes.runsc.runtime_type = ...); katafleet only edits [table] sections: rewrite it as [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc] to let katafleet replace it',
    });
  });

  it('refuses to add under a runtimes map written as an inline table', () => {
    const config = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n';
    expect(attempt(() => patchContainerdConfig(config, [runsc]))).toMatchObject({
      type: ContainerdConfigUnsupported,
      message: expect.stringContaining('config.toml:3: plugins."io.containerd.grpc.v1.cri".containerd.runtimes is an inline table, so no [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc] section can be added to it'),
    });
  });

  it('refuses to add under plugins written as an array of tables', () => {
    expect(attempt(() => patchContainerdConfig('version = 2\n[[plugins]]\n  x = 1\n', [runsc]))).toEqual({
      type: ContainerdConfigUnsupported,
      message: 'config.toml:2: plugins is an array, so no [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc] section can be added to it; rewrite plugins as [table] sections first',
    });
  });

  it('adds under tables created by dotted keys (TOML allows sub-tables there; containerd 1.6 reads it)', () => {
    const config = 'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  containerd.runtimes.runc.runtime_type = "io.containerd.runc.v2"\n';
    const outcome = patchContainerdConfig(config, [runsc]);
    expect(outcome.status === 'patched' && outcome.added).toEqual(['runsc']);
    expect(runtimeHandlers(outcome.content)).toEqual(['runc', 'runsc']);
  });

  it('refuses a playbook that names one runtime twice', () => {
    expect(attempt(() => patchContainerdConfig('', [runsc, runsc]))).toEqual({ type: ContainerdConfigConflict, message: 'config.toml: the playbook adds runtime "runsc" twice; keep one' });
  });
});

describe('layout of the edit', () => {
  it('follows single-quoted keys and values (corpus 05, EKS nodeadm)', () => {
    const outcome = patchContainerdConfig(corpus('05-eks-nodeadm-v2-nvidia.toml'), [runsc]);
    expect(outcome.content).toContain("\n# Added by katafleet: runtime handler \"runsc\".\n[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runsc]\nruntime_type = 'io.containerd.runsc.v1'\n\n[plugins.'io.containerd.grpc.v1.cri'.registry]");
  });

  it('puts the table after its sibling runtimes, indented like them (corpus 02, containerd config default)', () => {
    const outcome = patchContainerdConfig(corpus('02-containerd-1.6-config-default.toml'), [kata]);
    expect(outcome.content).toContain(
      [
        '            SystemdCgroup = false',
        '',
        '        # Added by katafleet: runtime handler "kata".',
        '        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]',
        '          runtime_type = "io.containerd.kata.v2"',
        '          privileged_without_host_devices = true',
        '          pod_annotations = ["io.katacontainers.*"]',
        '',
        '          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]',
        '            ConfigPath = "/opt/kata/share/defaults/kata-containers/configuration.toml"',
        '',
        '      [plugins."io.containerd.grpc.v1.cri".containerd.untrusted_workload_runtime]',
      ].join('\n'),
    );
  });

  it('keeps a run of trailing blank lines at the end of the file (corpus 11, k3s)', () => {
    const original = corpus('11-k3s-rendered-v2.toml');
    const trailing = /\n*$/.exec(original)?.[0] ?? '';
    const outcome = patchContainerdConfig(original, [runsc]);
    expect(outcome.content.endsWith(`runtime_type = "io.containerd.runsc.v1"${trailing}`)).toBe(true);
  });

  it('adds a newline to a file without a final one', () => {
    const outcome = patchContainerdConfig('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"', [runsc]);
    expect(outcome.content).toBe(
      'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n\n# Added by katafleet: runtime handler "runsc".\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v1"\n',
    );
  });

  it('writes CRLF lines into a CRLF file, and removal gives back its bytes', () => {
    const original = 'version = 2\r\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\r\n  runtime_type = "io.containerd.runc.v2"\r\n';
    const outcome = patchContainerdConfig(original, [runsc]);
    expect(outcome.content).toBe(`${original}\r\n# Added by katafleet: runtime handler "runsc".\r\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\r\n  runtime_type = "io.containerd.runsc.v1"\r\n`);
    expect(patchContainerdConfig(outcome.content, [runsc]).status).toBe('unchanged');
    expect(removeRuntimes(outcome.content, ['runsc']).content).toBe(original);
  });

  it('is not confused by brackets inside strings and multi-line arrays', () => {
    const config = [
      'version = 2',
      'imports = [',
      '  "/etc/containerd/[x].toml", # [plugins.fake]',
      ']',
      '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '  runtime_type = "io.containerd.runc.v2"',
      '  pod_annotations = """',
      '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]"""',
      '',
    ].join('\n');
    const outcome = patchContainerdConfig(config, [runsc]);
    expect(outcome.status).toBe('patched');
    expect(patchContainerdConfig(outcome.content, [runsc]).status).toBe('unchanged');
  });
});

describe('drop-in mode (containerd >= 2.0)', () => {
  it('adds the drop-in to a multi-line imports array and returns the drop-in file (corpus 14, Talos)', () => {
    const original = corpus('14-talos-cri-containerd.toml');
    const outcome = patchContainerdConfig(original, [kata], { mode: 'drop-in', dropInPath: '/etc/cri/conf.d/20-katafleet.toml' });
    expect(outcome.status).toBe('patched');
    expect(unifiedDiff(original, outcome.content, 'a', 'b')).toContain(' imports = [\n     "/etc/cri/conf.d/cri.toml",\n+    "/etc/cri/conf.d/20-katafleet.toml",\n ]\n');
    expect(outcome.dropIn).toEqual({ path: '/etc/cri/conf.d/20-katafleet.toml', content: renderDropIn([kata], 3) });
    expect(parse(outcome.dropIn?.content ?? '')).toEqual({ version: 3, plugins: { 'io.containerd.cri.v1.runtime': { containerd: { runtimes: { kata: runtimeTable(kata) } } } } });
    const again = patchContainerdConfig(outcome.content, [kata], { mode: 'drop-in', dropInPath: '/etc/cri/conf.d/20-katafleet.toml' });
    expect(again.status).toBe('unchanged');
    expect(again.content).toBe(outcome.content);
  });

  it('adds an imports line after version when there is none (corpus 03, v3)', () => {
    const original = corpus('03-containerd-2x-docs-full-v3.toml');
    const outcome = patchContainerdConfig(original, [runsc], { mode: 'drop-in' });
    expect(outcome.content).toBe(original.replace('version = 3\n', "version = 3\nimports = ['/etc/containerd/conf.d/katafleet.toml']\n"));
  });

  it('extends a one-line imports array', () => {
    const outcome = patchContainerdConfig('version = 3\nimports = ["/etc/containerd/extra.toml"]\n', [runsc], { mode: 'drop-in' });
    expect(outcome.content).toBe('version = 3\nimports = ["/etc/containerd/extra.toml", "/etc/containerd/conf.d/katafleet.toml"]\n');
  });

  it('changes nothing when an imports glob already covers the drop-in', () => {
    const config = 'version = 3\nimports = ["/etc/containerd/conf.d/*.toml"]\n';
    const outcome = patchContainerdConfig(config, [runsc], { mode: 'drop-in' });
    expect(outcome).toMatchObject({ status: 'unchanged', content: config, dropIn: { path: '/etc/containerd/conf.d/katafleet.toml' } });
  });

  it('refuses a version 2 main config: containerd 1.x would replace its whole CRI table with the drop-in', () => {
    expect(attempt(() => patchContainerdConfig(corpus('04-eks-al2-containerd-config.toml'), [runsc], { mode: 'drop-in', file: 'config.toml' }))).toEqual({
      type: ContainerdConfigUnsupported,
      message:
        'config.toml: drop-in mode needs a main config of version 3 or 4 (containerd ≥ 2.0), but this one is version 2; containerd 1.x replaces a whole plugin table with an imported one, which would drop this file\'s CRI settings; use mode "in-place"',
    });
  });

  it('refuses when the main config has the runtime with other settings (the two would be merged key by key)', () => {
    const config = 'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v2"\n';
    expect(attempt(() => patchContainerdConfig(config, [runsc], { mode: 'drop-in' }))).toMatchObject({ type: ContainerdConfigConflict, message: expect.stringContaining('config.toml:2: runtime "runsc" already exists') });
  });

  it('renders a version 2 drop-in with v2 plugin ids', () => {
    expect(renderDropIn([runsc], 2)).toBe(
      '# Written by katafleet: container runtimes, merged into the main containerd config through its `imports`.\nversion = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n  runtime_type = "io.containerd.runsc.v1"\n',
    );
  });
});

describe('removeRuntimes', () => {
  it('gives back the original bytes after a patch with two runtimes', () => {
    for (const file of ['07-kind-base.toml', '09-minikube-kicbase.toml', '12-kubespray-rendered-v4.toml', '18-kata-nydus-v3-dropin-noversion.toml']) {
      const original = corpus(file);
      const outcome = patchContainerdConfig(original, [kata, runsc]);
      expect(removeRuntimes(outcome.content, ['kata', 'runsc']).content).toBe(original);
    }
  });

  it('removes a runtime with its comment paragraph and keeps the rest (corpus 07, test-handler)', () => {
    const original = corpus('07-kind-base.toml');
    const outcome = removeRuntimes(original, ['test-handler']);
    expect(outcome.status === 'patched' && outcome.removed).toEqual(['test-handler']);
    expect(outcome.content).not.toContain('test-handler');
    expect(outcome.content).toContain('    SystemdCgroup = true\n\n[plugins."io.containerd.grpc.v1.cri"]\n');
    expect(runtimeHandlers(outcome.content)).toEqual(['runc']);
  });

  it('is unchanged when none of the runtimes is configured', () => {
    const original = corpus('04-eks-al2-containerd-config.toml');
    expect(removeRuntimes(original, ['kata'])).toEqual({ status: 'unchanged', content: original, version: 2, pluginPath: v2Path });
  });
});

describe('runtimeHandlers', () => {
  it.each([
    ['01-empty.toml', ['runc']],
    ['05-eks-nodeadm-v2-nvidia.toml', ['nvidia']],
    ['06-eks-nodeadm-v3-nvidia.toml', ['nvidia', 'runc']],
    ['08-microk8s-rendered.toml', ['kata', 'nvidia-container-runtime', 'runc']],
    ['10-minikube-iso-v1-format.toml', ['default', 'runc']],
    ['13-docker-containerd-io-default.toml', []],
    ['14-talos-cri-containerd.toml', ['runc']],
    ['16-nvidia-ctk-v3-dropin.toml', ['nvidia', 'nvidia-cdi', 'nvidia-legacy', 'runc']],
  ])('%s offers %j', (file, handlers) => {
    expect(runtimeHandlers(corpus(file))).toEqual(handlers);
  });

  it('counts the built-in runc for a v2 file read by containerd 2.x', () => {
    expect(runtimeHandlers(corpus('05-eks-nodeadm-v2-nvidia.toml'), { containerdMajor: 2 })).toEqual(['nvidia', 'runc']);
  });
});

describe('unifiedDiff', () => {
  it('prints diff -u style hunks with 3 lines of context', () => {
    expect(unifiedDiff('a\nb\nc\nd\ne\nf\ng\nh\n', 'a\nb\nc\nd\nE\nf\ng\nh\n', 'config.toml', 'config.toml (patched)')).toBe(
      '--- config.toml\n+++ config.toml (patched)\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n',
    );
  });

  it('is empty for equal texts', () => {
    expect(unifiedDiff('x\n', 'x\n', 'a', 'b')).toBe('');
  });
});
