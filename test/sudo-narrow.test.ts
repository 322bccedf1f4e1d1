// Narrow sudo mode (SECURITY.md "What katafleet needs on a node", docs/node-privileges.md "Narrow sudo mode"):
// the shipped deploy/ files installed on a simulated node whose login user is not root, the node's
// NOPASSWD:ALL rule removed, and then
// - the shipped sudoers file passes visudo -cf, and sudo lets the user run kf-root and nothing else;
// - every step kind of the kata playbook that runs commands on the node succeeds, and is undone, with a
//   credential profile that says sudo = "narrow";
// - commands off the list (sudo -n cat /etc/shadow, sudo -n sh -c id, kf-root with a path outside the areas,
//   ...) are refused by sudo or by kf-root, and nothing changed on the node.
// Also "sudo-proof commands": on a node whose sudo secure_path lacks /usr/local/bin (as on RHEL), a step that
// calls kata-runtime linked into /usr/local/bin still finds it (root commands run with katafleet's own PATH).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DefaultLogger } from '@temporalio/worker';
import { MockActivityEnvironment } from '@temporalio/testing';
import { sh, SshPool, type Command, type SshNode } from '../activities/ssh';
import { createNodeActivities } from '../activities/node-activities';
import type { NodeTarget, StepOutcome, StepRequest, Undo } from '../activities/node-types';
import { checkStep } from '../activities/step-policy';
import { sshNodeOf } from '../activities/steps/node-shell';
import { loginFor } from '../playbooks/login';
import { Step } from '../playbooks/schema';
import { addObsSourceCommand } from '../sim/packages';
import { startNodeFleet, type NodeFleet } from './helpers/node-workflow';

const run = promisify(execFile);
const user = 'deploy';
const deployDir = join(__dirname, '..', 'deploy');
const deployFiles = ['kf-root', 'kf-shim', 'install.sh', 'sudoers.d/katafleet'];
let nodes: NodeFleet;
let pool: SshPool;
let narrow: NodeTarget;
let asUser: SshNode;
let mirrorUrl: string;
let kataSha: string;

/** A trusted literal command (test code only). */
const raw = (text: string): Command => sh(Object.assign([text], { raw: [text] }) as unknown as TemplateStringsArray);

/** Copies deploy/ to the node and runs install.sh as root (through the node's NOPASSWD:ALL rule, removed afterwards). */
async function installNarrowSudo(full: SshNode): Promise<void> {
  for (const file of deployFiles) {
    await pool.run(full, sh`mkdir -p /tmp/kf-deploy/sudoers.d && cat > ${`/tmp/kf-deploy/${file}`}`, { stdin: await readFile(join(deployDir, file), 'utf8') });
  }
  // A link in katafleet's area pointing out of it (as someone with root could have left one): kf-root must not follow it.
  await pool.run(full, sh`ln -sfn /etc/shadow /etc/containerd/evil-link`);
  // package-install needs a source that offers Kata: the OBS-style repository, added by the admin (no node's own sources have one).
  await pool.run(full, raw(addObsSourceCommand(nodes.fleet.mirror.port)));
  await pool.run(full, sh`sh /tmp/kf-deploy/install.sh ${user} && rm -rf /tmp/kf-deploy && rm -f ${`/etc/sudoers.d/90-${user}`}`);
}

beforeAll(async () => {
  process.env.KATAFLEET_RELEASE_CACHE = await mkdtemp(join(tmpdir(), 'kf-sudo-cache-'));
  nodes = await startNodeFleet('sudo-narrow', { nodes: [{ name: 'narrow-1', containerd: '1.6' }, { name: 'rhel-2', containerd: '1.6' }], sshUser: user });
  pool = new SshPool({ connectTimeoutMs: 10_000 });
  const target = nodes.targets['narrow-1'];
  await installNarrowSudo(sshNodeOf(target));
  const login = loginFor(target.credentials, target);
  const dir = await mkdtemp(join(tmpdir(), 'kf-sudo-narrow-'));
  const credentials = join(dir, 'credentials.toml');
  await writeFile(credentials, [
    '[profiles.narrow]', `user = "${user}"`, `identity_file = "${login.identityFile}"`, `known_hosts = "${login.knownHosts}"`,
    'sudo = "narrow"', 'hosts = ["127.0.0.0/8"]', '',
  ].join('\n'), { mode: 0o600 });
  narrow = { ...target, credentials: { profile: 'narrow', file: credentials } };
  asUser = sshNodeOf(narrow);
  const built = JSON.parse(await readFile(join(nodes.fleet.mirror.dir, 'kata-releases.json'), 'utf8')) as Record<string, { sha256: string }>;
  kataSha = built['3.31.0'].sha256;
  mirrorUrl = `http://127.0.0.1:${nodes.fleet.mirror.port}/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}`;
}, 240_000);

afterAll(async () => {
  await pool?.closeAll();
  await nodes?.fleet.stop();
}, 60_000);

const activities = () => createNodeActivities({ pool });
const env = () => new MockActivityEnvironment({ startToCloseTimeoutMs: 300_000 }, { logger: new DefaultLogger('ERROR') });

/** Runs a step activity as Temporal would (heartbeats, cancellation), returning its outcome. */
async function runStep(activity: (request: never) => Promise<StepOutcome>, input: never): Promise<StepOutcome> {
  return (await env().run(activity, input)) as StepOutcome;
}

async function runUndo(target: NodeTarget, undo: Undo): Promise<boolean> {
  return ((await env().run(activities().undoStep, { node: target, undo })) as { ok: boolean }).ok;
}

/** A step activity's request; `never` so that it fits the activity it is given to (the step kind is in `step`). */
function request(target: NodeTarget, step: Record<string, unknown>, runId = 'narrow-sudo-0001'): never {
  return { runId, rolloutId: 'narrow', node: target, step: checkStep(Step.parse(step), target), drain: false } satisfies StepRequest as never;
}

/** What the refusals must not change, as the login user can see it. */
const nodeState = async () => (await pool.run(asUser,
  raw('sha256sum /etc/passwd /etc/containerd/config.toml; ls -la /etc/containerd /etc/cron.d 2>&1; ls /usr/local/libexec/katafleet/bin | wc -l; systemctl is-active containerd'),
  { asRoot: false, allowExitCodes: [0, 1, 2, 3] })).stdout;

describe('the shipped sudoers file', () => {
  it('passes visudo -cf, as shipped and with the login user put in by install.sh', async () => {
    const shipped = join(deployDir, 'sudoers.d', 'katafleet');
    expect((await run('visudo', ['-cf', shipped])).stdout).toContain('parsed OK');
    const text = await readFile(shipped, 'utf8');
    expect(text.split('\n').filter((line) => line && !line.startsWith('#'))).toEqual([
      'Defaults:katafleet !requiretty',
      'katafleet ALL=(root) NOPASSWD: /usr/local/libexec/katafleet/kf-root',
    ]);
    const installed = (await pool.run(asUser, raw('cat /etc/sudoers.d/katafleet; ls /etc/sudoers.d'), { asRoot: false, allowExitCodes: [0, 1] }));
    // The installed file is mode 0440 root-only: the user cannot read it, and the NOPASSWD:ALL rule is gone.
    expect(installed.stderr).toContain('Permission denied');
    expect(installed.stdout.split('\n')).not.toContain(`90-${user}`);
  });

  it('lets the login user run kf-root as root, and nothing else', async () => {
    const listed = await pool.run(asUser, raw('sudo -n -l'), { asRoot: false });
    expect(listed.stdout).toContain('(root) NOPASSWD: /usr/local/libexec/katafleet/kf-root');
    expect(listed.stdout).not.toMatch(/NOPASSWD: ALL|\/bin\/sh/);
  });
});

describe('commands off the list', () => {
  const sudoRefusals: [string, string][] = [
    ['sudo -n cat /etc/shadow', 'not a program sudoers allows'],
    ['sudo -n sh -c id', 'a shell'],
    ['sudo -n /bin/sh -c id', 'a shell by path'],
    ['sudo -n /usr/bin/env id', 'env'],
    ['sudo -n -u root /usr/bin/tee /etc/cron.d/katafleet', 'tee outside kf-root'],
  ];
  const kfRoot = '/usr/local/libexec/katafleet/kf-root';
  const helperRefusals: [string, RegExp][] = [
    [`${kfRoot} cat /etc/shadow`, /cat: \/etc\/shadow is outside katafleet's areas/],
    [`${kfRoot} sh -c id`, /sh is not a program katafleet runs as root/],
    [`${kfRoot} bash`, /bash is not a program katafleet runs as root/],
    [`${kfRoot} cat /etc/containerd/../shadow`, /cat: \/etc\/containerd\/..\/shadow is outside katafleet's areas/],
    [`${kfRoot} cat /etc/containerd/evil-link`, /resolves to \/etc\/shadow, outside katafleet's areas/],
    [`echo '* * * * * root id' | ${kfRoot} tee /etc/cron.d/katafleet`, /tee: \/etc\/cron.d\/katafleet is outside/],
    [`${kfRoot} tee /etc/containerd/a /etc/cron.d/b`, /tee: exactly one file/],
    [`${kfRoot} ln -sfn /etc/shadow /etc/containerd/evil`, /ln: \/etc\/shadow is outside/],
    [`${kfRoot} cp -p /etc/shadow /etc/containerd/copy`, /cp: \/etc\/shadow is outside/],
    [`${kfRoot} mv /etc/containerd/config.toml /etc/cron.d/x`, /mv: \/etc\/cron.d\/x is outside/],
    [`${kfRoot} cp --preserve=all /etc/containerd/config.toml /etc/containerd/x`, /cp: option --preserve=all is not allowed/],
    [`${kfRoot} rm -rf /etc/containerd`, /rm: recursive removal of \/etc\/containerd/],
    [`${kfRoot} rmdir /etc/cron.d`, /rmdir: .*\/etc\/cron\.d/],
    [`${kfRoot} rmdir -p /opt/kata-releases/x`, /rmdir: option -p is not allowed/],
    [`${kfRoot} chmod 4755 /etc/containerd/config.toml`, /chmod: mode 4755 is not allowed/],
    [`${kfRoot} chown root:${user} /etc/containerd/config.toml`, /chown: only --reference=FILE/],
    [`${kfRoot} apt-get -o APT::Update::Pre-Invoke::=id update`, /apt-get: -o APT::Update::Pre-Invoke::=id is not allowed/],
    [`${kfRoot} apt-get install -y /tmp/evil.deb`, /apt-get: \/tmp\/evil.deb is not a package name/],
    [`${kfRoot} apt-get install -y --reinstall openssh-server`, /apt-get: option --reinstall is not allowed/],
    [`${kfRoot} systemctl restart ssh`, /systemctl: service ssh is not one of: containerd kubelet crio/],
    [`${kfRoot} systemctl stop containerd`, /systemctl: only is-active, restart/],
    [`${kfRoot} modprobe -r kvm`, /modprobe: one module, no options/],
    [`${kfRoot} journalctl -u ssh -n 5 --no-pager`, /journalctl: service ssh is not one of/],
    [`${kfRoot} tar --xz -xf /etc/containerd/config.toml -C /`, /tar: \/ is outside|tar: extracts only under/],
    [`${kfRoot} curl -fsSL --retry 2 -o /etc/cron.d/x http://127.0.0.1/x`, /curl: \/etc\/cron.d\/x is outside/],
    [`${kfRoot} curl -fsSL --retry 2 -o /var/lib/katafleet/x file:///etc/shadow`, /curl: file:\/\/\/etc\/shadow is not an http\(s\) URL/],
    [`${kfRoot} containerd --config /etc/shadow config dump`, /containerd: \/etc\/shadow is outside/],
    [`${kfRoot} kata-runtime exec x`, /kata-runtime: only check/],
    [`${kfRoot} tee --reference=/etc/containerd/config.toml`, /tee: option --reference is not allowed/],
    [`cd /tmp && ${kfRoot} touch x`, /touch: relative path x from a working folder outside katafleet's areas/],
  ];
  let before: string;

  beforeAll(async () => {
    before = await nodeState();
  });

  it.each(sudoRefusals)('sudo refuses `%s` (%s)', async (command) => {
    const result = await pool.run(asUser, raw(command), { asRoot: false, allowExitCodes: [...Array(256).keys()] });
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/sudo: a password is required|is not allowed to execute/);
    expect(result.stdout).toBe('');
  });

  it.each(helperRefusals)('kf-root refuses `%s` with exit 126 and the reason', async (command, reason) => {
    const result = await pool.run(asUser, raw(command.replace(kfRoot, `sudo -n ${kfRoot}`)), { asRoot: false, allowExitCodes: [...Array(256).keys()] });
    expect(result.exitCode).toBe(126);
    expect(result.stderr).toMatch(/^kf-root: refused: /);
    expect(result.stderr).toMatch(reason);
    expect(result.stdout).not.toMatch(/root:/);
  });

  it('changed nothing on the node', async () => {
    expect(await nodeState()).toBe(before);
    const absent = await pool.run(asUser, raw('ls /etc/cron.d/katafleet /etc/containerd/evil /etc/containerd/copy /etc/containerd/x /etc/cron.d/x /var/lib/katafleet/x'),
      { asRoot: false, allowExitCodes: [2] });
    expect(absent.stdout).toBe('');
  });
});

describe('every node step kind of the kata playbook in narrow mode', () => {
  it('runs prereq-check, package-install, kata-runtime check, containerd-patch and service-restart, then undoes them', async () => {
    const a = activities();
    const before = (await pool.run(asUser, raw('sha256sum /etc/containerd/config.toml'), { asRoot: false })).stdout;
    const undos: Undo[] = [];
    const keep = (outcome: StepOutcome) => { if (outcome.undo) undos.unshift(outcome.undo); return outcome; };
    keep(await runStep(a.prereqCheck, request(narrow, { id: 'prereq', kind: 'prereq-check', cpu_flags: [], require_kvm: false, modules: ['vhost_net'], persist_modules: true })));
    const installed = keep(await runStep(a.packageInstall, request(narrow, { id: 'install', kind: 'package-install', packages: [{ name: 'kata-containers', version: '3.2.0' }] })));
    expect(installed.changed).toBe(true);
    const check = await runStep(a.prereqCheck, request(narrow, { id: 'kata-check', kind: 'prereq-check', cpu_flags: [], require_kvm: false, persist_modules: false, run_kata_check: true }));
    expect(check.summary).toMatch(/kata-runtime check/i);
    const patched = keep(await runStep(a.containerdPatch, request(narrow, { id: 'containerd', kind: 'containerd-patch', runtimes: [{ name: 'kata', runtime_type: 'io.containerd.kata.v2' }] })));
    expect(patched.changed).toBe(true);
    const restarted = await runStep(a.serviceRestart, request(narrow, { id: 'restart', kind: 'service-restart', service: 'containerd', wait_for_handlers: ['kata'] }));
    expect(restarted.summary).toContain('kata');
    expect(undos.map((undo) => undo.kind)).toEqual(['restore-containerd-config', 'remove-packages', 'restore-file']);

    for (const undo of undos) expect((await runUndo(narrow, undo))).toBe(true);
    expect((await pool.run(asUser, raw('sha256sum /etc/containerd/config.toml'), { asRoot: false })).stdout).toBe(before);
    expect((await pool.run(asUser, raw('test -e /etc/modules-load.d/katafleet.conf'), { asRoot: false, allowExitCodes: [0, 1] })).exitCode).toBe(1);
    expect((await pool.run(asUser, raw('dpkg-query -W kata-containers 2>&1'), { asRoot: false, allowExitCodes: [0, 1] })).stdout).toContain('no packages found');
  }, 600_000);

  it('runs release-tarball (pushed by the worker, extracted, linked), kata-runtime check through the link, and the undo', async () => {
    const a = activities();
    const installed = await runStep(a.releaseTarball, request(narrow, { id: 'kata', kind: 'release-tarball', version: '3.31.0', url: mirrorUrl, sha256: { amd64: kataSha } }, 'narrow-sudo-0002'));
    expect(installed.changed).toBe(true);
    const layout = (await pool.run(asUser, raw('readlink /opt/kata /usr/local/bin/kata-runtime; find /opt/kata-releases -perm /6000 | wc -l'), { asRoot: false })).stdout;
    expect(layout).toBe('/opt/kata-releases/3.31.0/opt/kata\n/opt/kata/bin/kata-runtime\n0\n');
    const check = await runStep(a.prereqCheck, request(narrow, { id: 'kata-check', kind: 'prereq-check', cpu_flags: [], require_kvm: false, persist_modules: false, run_kata_check: true }, 'narrow-sudo-0002'));
    expect(check.summary).toMatch(/kata-runtime check/i);
    expect(installed.undo).toBeDefined();
    expect((await runUndo(narrow, installed.undo as Undo))).toBe(true);
    // /opt/kata-releases too: this run made it (kf-root's rmdir, empty folders only).
    expect((await pool.run(asUser, raw('ls -d /opt/kata /usr/local/bin/kata-runtime /opt/kata-releases 2>&1 | grep -c "No such file"'), { asRoot: false, allowExitCodes: [0, 1] })).stdout).toBe('3\n');
    // The program probe (docs/sudo-proof-commands.md) searched with kf-root's shims first: the steps called the shims
    // by path, so kf-root still decided what ran as root; programs without a shim are found where root would find them.
    const probed = pool.programsOf(sshNodeOf(narrow));
    expect(probed?.searched).toBe('/usr/local/libexec/katafleet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
    for (const program of ['systemctl', 'tar', 'ln', 'mv', 'tee', 'sha256sum']) expect(probed?.paths.get(program)).toBe(`/usr/local/libexec/katafleet/bin/${program}`);
    expect(probed?.paths.get('ps')).toMatch(/^\/(usr\/)?bin\/ps$/);
  }, 600_000);
});

describe('sudo-proof commands', () => {
  it('find kata-runtime in /usr/local/bin on a node whose sudo secure_path lacks it (as on RHEL)', async () => {
    const target = nodes.targets['rhel-2'];
    const full = sshNodeOf(target);
    await pool.run(full, sh`printf 'Defaults secure_path="/sbin:/bin:/usr/sbin:/usr/bin"\\n' > /etc/sudoers.d/00-secure-path && chmod 0440 /etc/sudoers.d/00-secure-path && visudo -cf /etc/sudoers.d/00-secure-path`);
    const a = activities();
    const installed = await runStep(a.releaseTarball, request(target, { id: 'kata', kind: 'release-tarball', version: '3.31.0', url: mirrorUrl, sha256: { amd64: kataSha } }, 'secure-path-0001'));
    expect(installed.changed).toBe(true);
    // What sudo alone would do: /usr/local/bin is not in its PATH, so a bare kata-runtime is not found.
    const bare = await pool.run(full, raw('sudo -n sh -c "command -v kata-runtime || echo missing"'), { asRoot: false });
    expect(bare.stdout).toBe('missing\n');
    // katafleet's root commands run with their own PATH, so the step finds it.
    const check = await runStep(a.prereqCheck, request(target, { id: 'kata-check', kind: 'prereq-check', cpu_flags: [], require_kvm: false, persist_modules: false, run_kata_check: true }, 'secure-path-0001'));
    expect(check.summary).toMatch(/kata-runtime check/i);
  }, 600_000);
});
