import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = join(__dirname, '..');
const corpus = join(root, 'test', 'fixtures', 'containerd-corpus');
const work = mkdtempSync(join(tmpdir(), 'katafleet-cli-'));

/** Runs the katafleet command as a user does (bin/katafleet.js through node). */
function katafleet(...args: string[]) {
  const result = spawnSync(process.execPath, [join(root, 'bin', 'katafleet.js'), ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, TEMPORAL_ADDRESS: '' } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('katafleet validate', () => {
  it('accepts the shipped kata playbook with exit 0', () => {
    const run = katafleet('validate', 'playbooks/kata.toml');
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toContain('playbooks/kata.toml: valid playbook "kata"');
  });

  it('reports a step-kind typo, a missing field and a bad TOML line together, with file, place and fix, exit 2', () => {
    const file = join(work, 'broken.toml');
    writeFileSync(
      file,
      [
        '[playbook]',
        'name = "broken"',
        '',
        '[[steps]]',
        'id = "install"',
        'kind = "pakage-install"',
        'packages = [{ name = "kata-containers", version = "3.2.0" }]',
        '',
        '[[steps]]',
        'id = "containerd"',
        'kind = "containerd-patch"',
        'config_path = /etc/containerd/config.toml',
        '',
      ].join('\n'),
    );
    const run = katafleet('validate', file);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    const lines = run.stderr.trim().split('\n');
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`^${file}:12:15: .*text needs quotes`)),
        expect.stringContaining(`${file}: steps[0].kind: expected one of prereq-check | package-install |`),
        expect.stringContaining('did you mean "package-install"?'),
        expect.stringContaining(`${file}: steps[1].runtimes: required`),
      ]),
    );
  });

  it('checks an inventory against the playbook', () => {
    const run = katafleet('validate', 'kata', '--inventory', 'playbooks/examples/inventory.toml');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('valid inventory, 4 nodes');
  });
});

describe('katafleet plan', () => {
  it('prints waves (canary first), nodes and steps in order, without contacting anything', () => {
    const run = katafleet('plan', 'kata', '--inventory', 'playbooks/examples/inventory.toml');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/1 canary\s+worker-1 \(10\.0\.0\.11\)/);
    expect(run.stdout).not.toContain('cp-1');
    const steps = run.stdout.split('\n').filter((line) => /^\s+\d+\. /.test(line)).map((line) => line.trim().split(/\s+/)[2]);
    expect(steps).toEqual(['prereq-check', 'release-tarball', 'prereq-check', 'containerd-patch', 'service-restart', 'readiness-gate', 'node-label', 'runtime-class', 'verification-pod']);
  });

  it('needs --inventory, and says so with exit 2', () => {
    const run = katafleet('plan', 'kata');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('katafleet plan: --inventory FILE is required');
  });
});

describe('katafleet patch-config', () => {
  it('prints the patched config, and with the result as input changes nothing (exit 0)', () => {
    const first = katafleet('patch-config', join(corpus, '02-containerd-1.6-config-default.toml'), '--playbook', 'kata');
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]');
    const patched = join(work, 'patched.toml');
    writeFileSync(patched, first.stdout);
    const second = katafleet('patch-config', patched, '--playbook', 'kata');
    expect(second.code).toBe(0);
    expect(second.stdout).toBe(readFileSync(patched, 'utf8'));
    expect(second.stderr).toContain('nothing to change');
    expect(katafleet('patch-config', patched, '--playbook', 'kata', '--diff').stdout).toBe('');
  });

  it('prints a unified diff with --diff', () => {
    const run = katafleet('patch-config', join(corpus, '07-kind-base.toml'), '--playbook', 'kata', '--diff');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^--- .*07-kind-base\.toml\n\+\+\+ /);
    expect(run.stdout).toContain('+  runtime_type = "io.containerd.kata.v2"');
  });

  it('refuses a config with the CRI plugin disabled, with the reason and exit 2', () => {
    const run = katafleet('patch-config', join(corpus, '13-docker-containerd-io-default.toml'), '--playbook', 'kata');
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('disabled_plugins contains "cri"');
  });
});

describe('katafleet itself', () => {
  it('lists its commands with --help', () => {
    const run = katafleet('--help');
    expect(run.code).toBe(0);
    for (const command of ['validate', 'plan', 'patch-config', 'rollout', 'server', 'worker', 'api', 'up', 'demo']) expect(run.stdout).toContain(`  ${command} `);
  });

  it('names an unknown command and exits 2', () => {
    const run = katafleet('deploy');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('katafleet: unknown command "deploy"');
  });
});
