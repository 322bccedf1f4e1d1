/**
 * The patcher's output read by a real containerd (`containerd --config FILE config dump`). Runs where containerd is
 * installed (the 'host-packages' setup part installs Debian's containerd 1.6 for CI); skipped elsewhere.
 * containerd 1.6 accepts version 3/4 files but silently drops their `io.containerd.cri.v1.*` tables, so for those
 * only "containerd can load it" is checked.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from '@iarna/toml';
import { patchContainerdConfig, runtimeHandlers } from '../activities/containerd-config';
import type { RuntimeSpec } from '../playbooks/runtime-spec';

const containerd = (process.env.PATH ?? '')
  .split(':')
  .map((dir) => join(dir, 'containerd'))
  .find((candidate) => {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore', timeout: 10_000 });
      return true;
    } catch {
      return false;
    }
  });

const corpusDir = join(__dirname, 'fixtures', 'containerd-corpus');
const kata: RuntimeSpec = { name: 'kata', runtime_type: 'io.containerd.kata.v2', privileged_without_host_devices: true, pod_annotations: ['io.katacontainers.*'] };
const runsc: RuntimeSpec = { name: 'runsc', runtime_type: 'io.containerd.runsc.v1' };

type CriRuntimes = Record<string, { runtime_type?: string; privileged_without_host_devices?: boolean; pod_annotations?: string[] }>;

(containerd ? describe : describe.skip)(`containerd ${containerd ?? '(not installed)'} reads the patched configs`, () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'katafleet-containerd-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** The CRI runtimes containerd decoded from `content` (its merged view: built-in defaults plus the file). */
  function dumpRuntimes(name: string, content: string): CriRuntimes {
    const file = join(dir, name);
    writeFileSync(file, content);
    const dump = execFileSync(containerd as string, ['--config', file, 'config', 'dump'], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
    const data = parse(dump) as { plugins: Record<string, { containerd: { runtimes: CriRuntimes } }> };
    return data.plugins['io.containerd.grpc.v1.cri'].containerd.runtimes;
  }

  const corpusFiles = readdirSync(corpusDir).filter((name) => name.endsWith('.toml'));
  const cases = corpusFiles.flatMap((file) => {
    const original = readFileSync(join(corpusDir, file), 'utf8');
    return [kata, runsc].flatMap((runtime) => {
      try {
        const outcome = patchContainerdConfig(original, [runtime]);
        return outcome.status === 'patched' ? [{ label: `${file} + ${runtime.name}`, file, runtime, content: outcome.content, pluginPath: outcome.pluginPath }] : [];
      } catch {
        return []; // refusals are covered by containerd-config.test.ts
      }
    });
  });
  const v1v2 = cases.filter((c) => c.pluginPath[1] !== 'io.containerd.cri.v1.runtime');
  const v3v4 = cases.filter((c) => c.pluginPath[1] === 'io.containerd.cri.v1.runtime');

  it.each(v1v2.map((c) => [c.label, c] as const))('%s: the CRI plugin has exactly the handlers runtimeHandlers() predicts', (_label, c) => {
    const runtimes = dumpRuntimes(c.file, c.content);
    expect(runtimes[c.runtime.name]).toMatchObject({ runtime_type: c.runtime.runtime_type, privileged_without_host_devices: c.runtime.privileged_without_host_devices ?? false });
    // The dump is taken before the CRI plugin validates its config, which adds the deprecated "default"/"untrusted" entries.
    const predicted = runtimeHandlers(c.content, { containerdMajor: 1 }).filter((handler) => handler !== 'default' && handler !== 'untrusted');
    expect(Object.keys(runtimes).sort()).toEqual(predicted);
  });

  it.each(v3v4.map((c) => [c.label, c] as const))('%s: containerd 1.6 loads the version 3/4 file', (_label, c) => {
    expect(() => dumpRuntimes(c.file, c.content)).not.toThrow();
  });

  it('keeps runc for an empty config (the reason runc is written out)', () => {
    const patched = patchContainerdConfig('', [kata]).content;
    expect(Object.keys(dumpRuntimes('empty-patched.toml', patched)).sort()).toEqual(['kata', 'runc']);
    // The control: a file with only the kata table loses containerd 1.x's built-in runc.
    const kataOnly = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n  runtime_type = "io.containerd.kata.v2"\n';
    expect(Object.keys(dumpRuntimes('kata-only.toml', kataOnly))).toEqual(['kata']);
    expect(Object.keys(dumpRuntimes('empty.toml', ''))).toEqual(['runc']);
  });
});
