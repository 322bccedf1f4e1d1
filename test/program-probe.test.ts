// sudo-proof commands (issue 12, docs/sudo-proof-commands.md): the programs katafleet runs are found once per SSH
// connection with `command -v` under the PATH root commands run with, the probe riding on the connection's first
// root command, and the steps call them by those absolute paths. A program a step needs that the node lacks fails
// that step with a permanent ProgramMissing before it changes anything; a step that does not need it still runs.
// On a real simulated node: zstd is hidden with a bind mount of /dev/null over it (as on a minimal Debian without
// the zstd package), and release-tarball of Kata 3.32.0 (a .tar.zst) must refuse, naming node, program, the
// directories searched and the fix, while prereq-check still runs.
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { NodeTarget, StepOutcome, StepRequest } from '../activities/node-types';
import { SshPool, type CommandEvent } from '../activities/ssh';
import { probeScript, programMissingMessage, PROBED_PROGRAMS, splitProbe } from '../activities/ssh/programs';
import { ROOT_PATH } from '../activities/ssh/quote';
import { sshNodeOf } from '../activities/steps/node-shell';
import { toNodeTarget } from '../api/rollout-service';
import { loadInventory } from '../playbooks/load';
import { ContainerdPatchStep, PackageInstallStep, PackageRepoStep, PrereqCheckStep, ReleaseTarballStep, type ServiceRestartStep } from '../playbooks/schema';
import type { ObsRepository } from '../sim/packages';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';
import { failure } from './helpers/failure';

const node = 'probe-1';
const runId = '5c3e1a70-2b4d-4e6f-8a91-0c2e4f6a8b1d';
let fleet: Fleet;
let pool: SshPool;
let target: NodeTarget;
let mirrorUrl: string;
let sha332: string;
const events: CommandEvent[] = [];

beforeAll(async () => {
  process.env.KATAFLEET_RELEASE_CACHE = await mkdtemp(join(tmpdir(), 'kf-probe-cache-'));
  fleet = await startFleet({ nodes: [{ name: node }], dir: join(await mkdtemp(join(tmpdir(), 'kf-program-probe-')), 'fleet') });
  const inventory = await loadInventory(fleet.inventoryPath);
  target = toNodeTarget(inventory, inventory.nodes.find((candidate) => candidate.name === node)!);
  const built = JSON.parse(await readFile(join(fleet.mirror.dir, 'kata-releases.json'), 'utf8')) as Record<string, { sha256: string }>;
  sha332 = built['3.32.0'].sha256;
  mirrorUrl = `http://127.0.0.1:${fleet.mirror.port}/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}`;
  pool = new SshPool({ onCommand: (event) => events.push(event) });
}, 240_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});

const on = async (command: string) => {
  const result = await sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command);
  if (result.exitCode !== 0) throw new Error(`${command} exited with ${result.exitCode}: ${result.stderr}`);
  return result.stdout;
};
const env = () => new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000 }, { logger: new DefaultLogger('ERROR') });
/** A command as sent, without its quoting (the step's command is quoted inside sh -c '…'). */
const unquoted = (text: string) => text.replace(/['\\]/g, '');
const probes = () => events.filter((event) => event.text.includes('@@katafleet-probe-')).length;
/** Everything release-tarball could change. */
const kataState = () => on('ls -A /opt /usr/local/bin; ls -A /var/lib/katafleet 2>/dev/null; true');

const prereq = PrereqCheckStep.parse({ id: 'prereq', kind: 'prereq-check', cpu_flags: [], require_kvm: false, modules: ['kvm'], persist_modules: false, run_kata_check: false });
const restart: ServiceRestartStep = { id: 'restart', kind: 'service-restart', timeout: '2m', service: 'containerd', wait_for_handlers: [] };

function request<S>(step: S): StepRequest<S & never> {
  return { runId, rolloutId: 'test', node: target, step, drain: false } as unknown as StepRequest<S & never>;
}
const releaseStep = () => ReleaseTarballStep.parse({ id: 'install', kind: 'release-tarball', version: '3.32.0', url: mirrorUrl, sha256: { amd64: sha332 } });

describe('the probe (pure)', () => {
  it('keeps only absolute, allowlisted paths of the probed programs; the rest of the output is the command\'s own', () => {
    const marker = '@@katafleet-probe-0123456789ab';
    const answer = [
      'systemctl\t/usr/bin/systemctl', 'crictl\t/usr/local/sbin/crictl',
      'tar\ttar', // a builtin, alias or function: no path
      'zstd\t/usr/bin/zs td', // a path the allowlist refuses
      'evil\t/tmp/evil', // not a probed program
      'xz\t/usr/bin/xz; rm -rf /',
    ].join('\n');
    const { paths, rest } = splitProbe(`${answer}\n${marker}\nthe command's output\n${marker}\n`, marker, ROOT_PATH);
    expect(Object.fromEntries(paths!.paths)).toEqual({ systemctl: '/usr/bin/systemctl', crictl: '/usr/local/sbin/crictl' });
    expect(paths!.searched).toBe(ROOT_PATH);
    // Only the first marker ends the probe: the command printing it later changes nothing.
    expect(rest).toBe(`the command's output\n${marker}\n`);
  });

  it('has no answer when the marker never came (the command was cut short), and leaves the output as it was', () => {
    expect(splitProbe('systemctl\t/usr/bin/systemctl\n', '@@katafleet-probe-x', ROOT_PATH)).toEqual({ rest: 'systemctl\t/usr/bin/systemctl\n' });
  });

  it('searches the PATH it is given, in a subshell, for every probed program', () => {
    const script = probeScript('/usr/local/libexec/katafleet/bin:' + ROOT_PATH, '@@m');
    expect(script.startsWith(`(PATH='/usr/local/libexec/katafleet/bin:${ROOT_PATH}'; for p in ${PROBED_PROGRAMS.join(' ')}; do`)).toBe(true);
    expect(script).toContain("echo '@@m'");
  });

  it('names node, program, where it looked, the fix, and that nothing was changed', () => {
    expect(programMissingMessage('worker-2', ['zstd'], ROOT_PATH, 'release-tarball "install"')).toBe(
      `Node worker-2: zstd is not on the node (searched ${ROOT_PATH} as root), and release-tarball "install" needs it: ` +
      'install zstd (apt-get install zstd / dnf install zstd): Kata 3.21+ releases are .tar.zst, or put it in one of those directories, then run again; nothing was changed');
  });
});

describe('on a simulated node', () => {
  it('probes once per connection, on its first root command, however many steps run on it; a new connection probes again', async () => {
    events.length = 0;
    const activities = createNodeActivities({ pool });
    await env().run(activities.prereqCheck, request(prereq));
    await on('touch /etc/containerd/config.toml');
    await env().run(activities.serviceRestart, request(restart));
    await env().run(activities.prereqCheck, request(prereq));
    expect(events.length).toBeGreaterThan(3);
    expect(probes()).toBe(1);
    // The probe came with the step's first root command, not as a command of its own.
    const probing = events.find((event) => event.text.includes('@@katafleet-probe-'))!;
    expect(probing.text).not.toMatch(/@@katafleet-probe-[0-9a-f]+'\ntrue'/);
    expect(events.indexOf(probing)).toBeLessThanOrEqual(1);
    const paths = pool.programsOf(sshNodeOf(target))!.paths;
    expect(paths.get('systemctl')).toBe('/usr/local/sbin/systemctl');
    expect(paths.get('crictl')).toBe('/usr/local/sbin/crictl');
    // service-restart called them by those paths.
    const sent = events.map((event) => unquoted(event.text));
    expect(sent.some((text) => text.includes('/usr/local/sbin/systemctl restart containerd'))).toBe(true);
    expect(sent.filter((text) => /(^|[\s;(])systemctl restart/.test(text))).toEqual([]);

    await pool.close(node);
    await env().run(activities.prereqCheck, request(prereq));
    expect(probes()).toBe(2);
  }, 180_000);

  it('fails release-tarball with ProgramMissing when zstd is hidden, before changing anything; prereq-check still runs', async () => {
    const before = await kataState();
    await on('mount --bind /dev/null /usr/bin/zstd');
    // The node as a worker meets it: a new connection (an answer cached on an older one would still name zstd).
    await pool.close(node);
    try {
      const activities = createNodeActivities({ pool });
      events.length = 0;
      const refused = await failure(env().run(activities.releaseTarball, request(releaseStep())));
      expect(refused.type).toBe('ProgramMissing');
      expect(refused.message).toBe(programMissingMessage(node, ['zstd'], ROOT_PATH, 'release-tarball "install"'));
      expect(await kataState()).toBe(before);
      // Nothing was sent after the read and the probe: no tarball pushed, nothing written.
      expect(events.every((event) => event.stdin === undefined)).toBe(true);

      const checked = (await env().run(activities.prereqCheck, request(prereq))) as StepOutcome;
      expect(checked.summary).toContain('kvm');
    } finally {
      await on('umount /usr/bin/zstd');
    }
    // Installed meanwhile (here: visible again): the same connection finds it, and the step succeeds.
    const done = (await env().run(createNodeActivities({ pool }).releaseTarball, request(releaseStep()))) as StepOutcome;
    expect(done).toMatchObject({ changed: true });
    expect(pool.programsOf(sshNodeOf(target))!.paths.get('zstd')).toBe('/usr/bin/zstd');
    expect(events.some((event) => unquoted(event.text).includes('/usr/bin/tar --zstd -xf'))).toBe(true);
    await env().run(createNodeActivities({ pool }).undoStep, { node: target, undo: done.undo! });
    expect(await kataState()).toBe(before);
  }, 240_000);
});

describe('every step kind that runs a program asks the probe first', () => {
  /** Where root commands find `program` on the node (the path a bind mount must hide). */
  const where = async (program: string) => (await on(`PATH=${ROOT_PATH}; command -v ${program} || true`)).trim();
  /** Hides the programs (a bind mount of /dev/null over each, as if its package were not installed) for `work`, on a fresh connection. */
  const without = async <T>(programs: string[], work: () => Promise<T>): Promise<T> => {
    const paths: string[] = [];
    try {
      for (const program of programs) {
        const path = await where(program);
        if (path === '' && programs.length > 1) continue; // (not on this node anyway)
        expect(path).toMatch(/^\//);
        await on(`mount --bind /dev/null ${path}`);
        paths.push(path);
      }
      await pool.close(node);
      return await work();
    } finally {
      for (const path of paths) await on(`umount ${path}`);
      await pool.close(node);
    }
  };
  const patch = ContainerdPatchStep.parse({ id: 'patch', kind: 'containerd-patch', runtimes: [{ name: 'kata', runtime_type: 'io.containerd.kata.v2' }] });
  /** Everything containerd-patch could change: its files, byte for byte, and katafleet's own. */
  const patchState = () => on('ls -A /etc/containerd /var/lib/katafleet 2>/dev/null; sha256sum /etc/containerd/*.toml 2>/dev/null; true');

  it('containerd-patch without containerd (its validator) fails ProgramMissing, naming node, program, the directories searched and the fix; the config keeps its bytes', async () => {
    const before = await patchState();
    const refused = await without(['containerd'], async () => {
      events.length = 0;
      return failure(env().run(createNodeActivities({ pool }).containerdPatch, request(patch)));
    });
    expect(refused.type).toBe('ProgramMissing');
    expect(refused.message).toBe(programMissingMessage(node, ['containerd'], ROOT_PATH, 'containerd-patch "patch"'));
    expect(refused.message).toContain('install containerd');
    expect(await patchState()).toBe(before);
    // The step sent its read (with the probe) and nothing else: no backup, no candidate, no journal.
    expect(events.every((event) => event.stdin === undefined)).toBe(true);
  }, 180_000);

  it('package-install without apt-get fails ProgramMissing before anything is installed; without any package manager, auto says so', async () => {
    const install = PackageInstallStep.parse({ id: 'pkgs', kind: 'package-install', manager: 'apt', packages: [{ name: 'kata-containers', version: '3.2.0' }] });
    const packagesState = () => on('dpkg-query -W -f=\'${Package} ${Version}\\n\' | sort | sha256sum; ls -A /var/lib/katafleet 2>/dev/null; true');
    const before = await packagesState();
    const refused = await without(['apt-get'], () => failure(env().run(createNodeActivities({ pool }).packageInstall, request(install))));
    expect(refused.type).toBe('ProgramMissing');
    expect(refused.message).toBe(programMissingMessage(node, ['apt-get'], ROOT_PATH, 'package-install "pkgs"'));
    expect(refused.message).toContain('set manager to the package manager the node has');
    expect(await packagesState()).toBe(before);
    const auto = await without(['apt-get', 'dnf', 'zypper'], () => failure(env().run(createNodeActivities({ pool }).packageInstall, request({ ...install, manager: 'auto' }))));
    expect(auto.type).toBe('PackageManagerMissing');
    expect(auto.message).toBe(`Node ${node} has none of apt-get, dnf, zypper (searched ${ROOT_PATH} as root): set manager in the package-install step, or install the packages another way`);
    expect(await packagesState()).toBe(before);
  }, 180_000);

  it('package-repo without apt-get fails ProgramMissing after the key check, before the key, the source or its journal reach the node', async () => {
    const obs = JSON.parse(await readFile(join(fleet.mirror.dir, 'obs-repo.json'), 'utf8')) as ObsRepository;
    const repoUrl = `http://127.0.0.1:${fleet.mirror.port}/${obs.path}`;
    const repo = PackageRepoStep.parse({
      id: 'repo', kind: 'package-repo', name: 'kata', url: repoUrl, suite: '/', key_url: `${repoUrl}Release.key`, key_fingerprint: obs.fingerprint,
      packages: [{ name: 'kata-containers', version: '3.2.0' }],
    });
    const repoState = () => on('ls -A /etc/apt/keyrings /etc/apt/sources.list.d /var/lib/katafleet 2>/dev/null; true');
    const before = await repoState();
    const refused = await without(['apt-get'], () => failure(env().run(createNodeActivities({ pool }).packageRepo, request(repo))));
    expect(refused.type).toBe('ProgramMissing');
    expect(refused.message).toBe(programMissingMessage(node, ['apt-get'], ROOT_PATH, 'package-repo "repo"'));
    expect(await repoState()).toBe(before);
  }, 180_000);

  it('prereq-check needs modprobe only for a module not loaded yet: without it, such a check fails ProgramMissing, a check of loaded modules still runs', async () => {
    const modulesState = () => on('ls -A /etc/modules-load.d /var/lib/katafleet 2>/dev/null; true');
    const before = await modulesState();
    const unloaded = PrereqCheckStep.parse({ id: 'modules', kind: 'prereq-check', cpu_flags: [], require_kvm: false, modules: ['katafleet_not_loaded'] });
    const [refused, loaded] = await without(['modprobe'], async () => [
      await failure(env().run(createNodeActivities({ pool }).prereqCheck, request(unloaded))),
      (await env().run(createNodeActivities({ pool }).prereqCheck, request(prereq))) as StepOutcome,
    ] as const);
    expect(refused.type).toBe('ProgramMissing');
    expect(refused.message).toBe(programMissingMessage(node, ['modprobe'], ROOT_PATH, 'prereq-check "modules"'));
    expect(refused.message).toContain('install kmod (modprobe)');
    expect(loaded.summary).toContain('modules kvm');
    expect(await modulesState()).toBe(before);
  }, 180_000);
});
