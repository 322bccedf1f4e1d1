// The containerd runtime for a release-tarball install, as kata-deploy 3.8+ writes it (reality/KATA.md §3.2):
// runtime_type io.containerd.kata.v2, runtime_path to the tarball's shim, options.ConfigPath to its config.
// Patched into every file of the corpus, read back with a TOML parser and, where containerd is installed,
// by a real `containerd config dump`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from '@iarna/toml';
import { patchContainerdConfig } from '../activities/containerd-config';
import { getPath, parseToml } from '../activities/containerd-config/data';
import { RuntimeSpec } from '../playbooks/runtime-spec';

const corpusDir = join(__dirname, 'fixtures', 'containerd-corpus');
const tarballKata = RuntimeSpec.parse({
  name: 'kata',
  runtime_type: 'io.containerd.kata.v2',
  runtime_path: '/opt/kata/bin/containerd-shim-kata-v2',
  privileged_without_host_devices: true,
  pod_annotations: ['io.katacontainers.*'],
  options: { ConfigPath: '/opt/kata/share/defaults/kata-containers/configuration.toml' },
});

const patched = readdirSync(corpusDir).filter((name) => name.endsWith('.toml')).flatMap((file) => {
  try {
    const outcome = patchContainerdConfig(readFileSync(join(corpusDir, file), 'utf8'), [tarballKata]);
    return outcome.status === 'patched' ? [[file, outcome] as const] : [];
  } catch {
    return []; // refusals (a conflicting kata, CRI disabled) are covered by containerd-config.test.ts
  }
});

describe('runtime_path in the runtime spec', () => {
  it('is written into every corpus config the patcher accepts, next to runtime_type', () => {
    expect(patched.length).toBeGreaterThan(10);
    for (const [file, outcome] of patched) {
      const table = getPath(parseToml(outcome.content, file), [...outcome.pluginPath, 'kata']) as Record<string, unknown>;
      expect([file, table.runtime_type, table.runtime_path, (table.options as Record<string, unknown>).ConfigPath])
        .toEqual([file, 'io.containerd.kata.v2', '/opt/kata/bin/containerd-shim-kata-v2', '/opt/kata/share/defaults/kata-containers/configuration.toml']);
    }
  });

  it('a second patch finds nothing to change; a kata runtime without runtime_path is "other settings"', () => {
    const [, outcome] = patched[0];
    expect(patchContainerdConfig(outcome.content, [tarballKata]).status).toBe('unchanged');
    const withoutPath = { ...tarballKata, runtime_path: undefined };
    expect(() => patchContainerdConfig(outcome.content, [withoutPath])).toThrow(/runtime_path is "\/opt\/kata\/bin\/containerd-shim-kata-v2", the playbook wants unset/);
  });

  it.each([
    ['/tmp/containerd-shim-kata-v2', 'is not under "/opt/kata/"'],
    ['containerd-shim-kata-v2', 'is not allowed'],
    ['/opt/kata/../../tmp/x', 'it contains a ".." segment'],
    ['/opt/kata/bin/shim;reboot', 'which a shell would interpret'],
  ])('refuses runtime_path %s', (value, reason) => {
    const parsed = RuntimeSpec.safeParse({ name: 'kata', runtime_type: 'io.containerd.kata.v2', runtime_path: value });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues[0]).toMatchObject({ path: ['runtime_path'], message: expect.stringContaining(reason) });
  });
});

const containerd = (process.env.PATH ?? '').split(':').map((dir) => join(dir, 'containerd')).find((candidate) => {
  try {
    execFileSync(candidate, ['--version'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
});

(containerd ? describe : describe.skip)(`containerd ${containerd ?? '(not installed)'} reads runtime_path`, () => {
  it.each(patched.filter(([, o]) => o.pluginPath[1] === 'io.containerd.grpc.v1.cri').map(([file, o]) => [file, o] as const))('%s', (file, outcome) => {
    const dir = mkdtempSync(join(tmpdir(), 'katafleet-runtime-path-'));
    try {
      writeFileSync(join(dir, file), outcome.content);
      const dump = execFileSync(containerd as string, ['--config', join(dir, file), 'config', 'dump'], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
      const runtimes = (parse(dump) as { plugins: Record<string, { containerd: { runtimes: Record<string, { runtime_path?: string }> } }> })
        .plugins['io.containerd.grpc.v1.cri'].containerd.runtimes;
      expect(runtimes.kata.runtime_path).toBe('/opt/kata/bin/containerd-shim-kata-v2');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
