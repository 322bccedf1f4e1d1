// The release-tarball step as a playbook states it: `katafleet validate` accepts the example playbook and refuses
// hostile or wrong values with exit 2, naming the file, the field and the fix; the activity refuses the same
// values when a workflow is started without the validator (StepRefused, nothing sent to the node).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkStep, checkUndo } from '../activities/step-policy';
import type { NodeTarget, Undo } from '../activities/node-types';
import { expandReleaseUrl, isReleaseTree, kataArchOf, releaseExtension, unsafeMembers } from '../activities/steps/release-tarball';
import type { Step } from '../playbooks/schema';

const root = join(__dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'katafleet-release-playbook-'));
const example = readFileSync(join(root, 'playbooks', 'examples', 'kata-release.toml'), 'utf8');

function katafleet(...args: string[]) {
  const result = spawnSync(process.execPath, [join(root, 'bin', 'katafleet.js'), ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, TEMPORAL_ADDRESS: '' } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** The example with one line of its release-tarball step replaced, validated by the CLI. */
function validateWith(from: RegExp, to: string) {
  if (!from.test(example)) throw new Error(`the example has no line ${from}`);
  const file = join(work, 'edited.toml');
  writeFileSync(file, example.replace(from, to));
  return { file, ...katafleet('validate', file) };
}

describe('katafleet validate, release-tarball', () => {
  it('accepts playbooks/examples/kata-release.toml (exit 0)', () => {
    expect(katafleet('validate', 'playbooks/examples/kata-release.toml', '--inventory', 'playbooks/examples/inventory.toml'))
      .toMatchObject({ code: 0, stderr: '', stdout: expect.stringContaining('valid playbook "kata-release", 9 steps') });
  });

  it.each([
    ['plain http to a host on the network', /^# url = .*$/m, 'url = "http://mirror.example.com/kata/kata-static-{version}-{arch}.{ext}"', 'steps[1].url', 'plain http to a host other than loopback'],
    ['a file: URL', /^# url = .*$/m, 'url = "file:///tmp/kata-static-{version}-{arch}.{ext}"', 'steps[1].url', 'is not allowed'],
    ['credentials in the URL', /^# url = .*$/m, 'url = "https://user:secret@mirror.example.com/kata-static-{version}-{arch}.{ext}"', 'steps[1].url', 'refused'],
    ['an unknown placeholder', /^# url = .*$/m, 'url = "https://mirror.example.com/{release}/kata-static-{version}-{arch}.{ext}"', 'steps[1].url', 'the placeholder {release}'],
    ['a URL that is not a tarball', /^# url = .*$/m, 'url = "https://mirror.example.com/kata-static-{version}-{arch}.deb"', 'steps[1].url', 'does not end ".tar.xz" or ".tar.zst"'],
    ['a command substitution in the URL', /^# url = .*$/m, 'url = "https://mirror.example.com/$(reboot)/kata-static-{version}-{arch}.{ext}"', 'steps[1].url', 'command substitution'],
    ['a version with a path in it', /^version = "3.29.0"$/m, 'version = "3.29.0/../../etc"', 'steps[1].version', 'refused'],
    ['a version with a shell character', /^version = "3.29.0"$/m, 'version = "3.29.0;reboot"', 'steps[1].version', 'which a shell would interpret'],
    ['a version with an epoch (not a path segment)', /^version = "3.29.0"$/m, 'version = "1:3.29.0"', 'steps[1].version', 'refused'],
    ['no sha256', /^sha256 = .*$/m, '', 'steps[1].sha256', 'required'],
    ['an empty sha256 table', /^sha256 = .*$/m, 'sha256 = {}', 'steps[1].sha256', 'must pin the sha256 of at least one architecture'],
    ['a short sha256', /^sha256 = .*$/m, 'sha256 = { amd64 = "abc" }', 'steps[1].sha256.amd64', 'must be a sha256 in hex'],
    ['an architecture Kata does not publish', /^sha256 = .*$/m, `sha256 = { riscv64 = "${'a'.repeat(64)}" }`, 'steps[1].sha256', 'riscv64'],
    ['an unknown fetch mode', /^fetch = .*$/m, 'fetch = "ftp"', 'steps[1].fetch', '"worker"'],
    ['a runtime_path outside the install prefixes', /^runtime_path = .*$/m, 'runtime_path = "/tmp/containerd-shim-kata-v2"', 'steps[3].runtimes[0].runtime_path', 'is not under "/opt/kata/"'],
  ])('refuses %s (exit 2, the file, the field, why)', (_what, from, to, field, why) => {
    const run = validateWith(from, to);
    expect(run.code).toBe(2);
    const line = run.stderr.split('\n').find((l) => l.includes(`${run.file}: ${field}`));
    expect(line).toBeDefined();
    expect(line).toContain(why);
  });
});

describe('the activity refuses the same values (StepRefused), and the step\'s pure parts', () => {
  const node: NodeTarget = { name: 'worker-1', address: '10.0.0.1', port: 22, maxSessions: 4, connectTimeoutMs: 1000, credentials: { profile: 'sim', file: '/etc/katafleet/credentials.toml' } };
  const valid = { id: 'install', kind: 'release-tarball', version: '3.29.0', sha256: { amd64: 'a'.repeat(64) } };

  it.each([
    [{ ...valid, url: 'http://10.0.0.5/kata-static-{version}-{arch}.{ext}' }, 'url'],
    [{ ...valid, version: '3.29.0\nreboot' }, 'version'],
    [{ ...valid, sha256: { amd64: 'A'.repeat(64) } }, 'sha256.amd64'],
  ].map(([step, field]) => [field, step] as const))('a step refused on its field %s', (field, step) => {
    expect(() => checkStep(step as unknown as Step, node)).toThrow(expect.objectContaining({ type: 'StepRefused', message: expect.stringContaining(`${field}:`) }));
  });

  it.each([
    [{ kind: 'remove-release', stepId: 'install', version: '3.29.0', previous: '/etc', createdVersionDir: true, createdLinks: [] }, 'undo.previous'],
    [{ kind: 'remove-release', stepId: 'install', version: '../x', createdVersionDir: true, createdLinks: [] }, 'undo.version'],
    [{ kind: 'remove-release', stepId: 'install', version: '3.29.0', createdVersionDir: true, createdLinks: ['/usr/bin/sudo'] }, 'undo.createdLinks[0]'],
  ].map(([undo, field]) => [field, undo] as const))('an undo record refused on its field %s', (field, undo) => {
    expect(() => checkUndo(undo as Undo, node)).toThrow(expect.objectContaining({ type: 'StepRefused', message: expect.stringContaining(`${field}:`) }));
  });

  it('names the asset as upstream does: .tar.xz below 3.21, .tar.zst from 3.21, arch from uname -m', () => {
    const url = 'https://github.com/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}';
    expect(expandReleaseUrl(url, '3.20.0', 'amd64')).toBe('https://github.com/kata-containers/kata-containers/releases/download/3.20.0/kata-static-3.20.0-amd64.tar.xz');
    expect(expandReleaseUrl(url, '3.21.0', 'arm64')).toBe('https://github.com/kata-containers/kata-containers/releases/download/3.21.0/kata-static-3.21.0-arm64.tar.zst');
    expect(releaseExtension('4.1.0')).toBe('tar.zst');
    expect(['x86_64', 'aarch64', 's390x', 'ppc64le', 'riscv64', 'armv7l'].map(kataArchOf)).toEqual(['amd64', 'arm64', 's390x', 'ppc64le', undefined, undefined]);
  });

  it('finds members outside ./opt/kata/ as kata-manager does, and ".." anywhere', () => {
    expect(unsafeMembers('./\n./opt/\n./opt/kata/\n./opt/kata/bin/kata-runtime\n')).toEqual([]);
    expect(unsafeMembers('./opt/kata/bin/x\n./etc/passwd\n./opt/kata/../../root/.ssh/authorized_keys\nopt/katax/y\n'))
      .toEqual(['./etc/passwd', './opt/kata/../../root/.ssh/authorized_keys', 'opt/katax/y']);
    expect(isReleaseTree('/opt/kata-releases/3.29.0/opt/kata')).toBe(true);
    expect(isReleaseTree('/opt/kata-releases/../opt/kata')).toBe(false);
  });
});
