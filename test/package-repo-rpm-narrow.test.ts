// Narrow sudo mode (docs/node-privileges.md) for package-repo on a Fedora-like node (dnf): the shipped deploy/ files
// installed on a node whose login user is `deploy`, its NOPASSWD:ALL rule removed; package-repo with sudo = "narrow"
// adds the key file, imports it (rpm --import), writes the .repo file, runs dnf makecache --repo and installs the
// package, and its undo takes it all back; kf-root refuses the rpm/dnf commands off its list with exit 126 and the
// reason, and nothing changes on the node.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { NodeTarget, StepOutcome, StepRequest, Undo } from '../activities/node-types';
import { sh, SshPool, type Command, type SshNode } from '../activities/ssh';
import { checkStep } from '../activities/step-policy';
import { sshNodeOf } from '../activities/steps/node-shell';
import { loginFor } from '../playbooks/login';
import { Step, type PackageRepoStep } from '../playbooks/schema';
import type { RpmRepositories } from '../sim/rpm-repo';
import { startNodeFleet, type NodeFleet } from './helpers/node-workflow';

const user = 'deploy';
const deployDir = join(__dirname, '..', 'deploy');
const deployFiles = ['kf-root', 'kf-shim', 'install.sh', 'sudoers.d/katafleet'];
const kfRoot = '/usr/local/libexec/katafleet/kf-root';
let nodes: NodeFleet;
let pool: SshPool;
let narrow: NodeTarget;
let asUser: SshNode;
let repos: RpmRepositories;
let credentialsDir: string;

/** A trusted literal command (test code only). */
const raw = (text: string): Command => sh(Object.assign([text], { raw: [text] }) as unknown as TemplateStringsArray);

beforeAll(async () => {
  nodes = await startNodeFleet('package-repo-rpm-narrow', { nodes: [{ name: 'fedora-narrow', packageManager: 'dnf', containerd: '1.6' }], sshUser: user });
  pool = new SshPool({ connectTimeoutMs: 10_000 });
  const target = nodes.targets['fedora-narrow'];
  const full = sshNodeOf(target);
  for (const file of deployFiles) {
    await pool.run(full, sh`mkdir -p /tmp/kf-deploy/sudoers.d && cat > ${`/tmp/kf-deploy/${file}`}`, { stdin: await readFile(join(deployDir, file), 'utf8') });
  }
  await pool.run(full, sh`sh /tmp/kf-deploy/install.sh ${user} && rm -rf /tmp/kf-deploy && rm -f ${`/etc/sudoers.d/90-${user}`}`);
  const login = loginFor(target.credentials, target);
  credentialsDir = await mkdtemp(join(tmpdir(), 'kf-rpm-narrow-'));
  const credentials = join(credentialsDir, 'credentials.toml');
  await writeFile(credentials, [
    '[profiles.narrow]', `user = "${user}"`, `identity_file = "${login.identityFile}"`, `known_hosts = "${login.knownHosts}"`,
    'sudo = "narrow"', 'hosts = ["127.0.0.0/8"]', '',
  ].join('\n'), { mode: 0o600 });
  narrow = { ...target, credentials: { profile: 'narrow', file: credentials } };
  asUser = sshNodeOf(narrow);
  repos = JSON.parse(await readFile(join(nodes.fleet.mirror.dir, 'rpm-repo.json'), 'utf8')) as RpmRepositories;
}, 240_000);

afterAll(async () => {
  await pool?.closeAll();
  await nodes?.fleet.stop();
  if (credentialsDir) await rm(credentialsDir, { recursive: true, force: true });
}, 60_000);

const env = () => new MockActivityEnvironment({ startToCloseTimeoutMs: 300_000 }, { logger: new DefaultLogger('ERROR') });
const activities = () => createNodeActivities({ pool });
const asLogin = async (command: string) => (await pool.run(asUser, raw(command), { asRoot: false, allowExitCodes: [...Array(256).keys()] }));
/** What the refusals must not change, as the login user sees it. */
const rpmState = async () => (await asLogin('ls -A /etc/yum.repos.d /etc/pki/rpm-gpg; rpm -qa | sort; sudo -n -l 2>&1 | grep -c kf-root')).stdout;

describe('package-repo (dnf) with sudo = "narrow"', () => {
  it('adds the key (file and rpm database), the .repo file, makes the cache of that repository and installs the package; the undo takes it all back', async () => {
    const url = `http://127.0.0.1:${nodes.fleet.mirror.port}/${repos.obs.fedoraPath}`;
    const step = Step.parse({
      id: 'install', kind: 'package-repo', manager: 'dnf', name: 'kata', url, key_url: `${url}repodata/repomd.xml.key`, key_fingerprint: repos.obs.fingerprint,
      packages: [{ name: 'kata-containers', version: '3.2.0' }],
    }) as PackageRepoStep;
    const request = { runId: 'narrow-rpm-0001', rolloutId: 'narrow', node: narrow, step: checkStep(step, narrow), drain: false } satisfies StepRequest;
    const outcome = (await env().run(activities().packageRepo, request as never)) as StepOutcome;
    expect(outcome).toMatchObject({ changed: true, undo: { kind: 'remove-package-repo', manager: 'dnf', packages: ['kata-containers'], source: '/etc/yum.repos.d/katafleet-kata.repo' } });
    expect((await asLogin("rpm -q --qf '%{VERSION}-%{RELEASE}\\n' kata-containers; id -un")).stdout).toBe('3.2.0-1.1\ndeploy\n');
    expect(((await env().run(activities().undoStep, { node: narrow, undo: outcome.undo as Undo })) as { ok: boolean }).ok).toBe(true);
    expect((await asLogin(`rpm -q kata-containers gpg-pubkey-${repos.obs.fingerprint.slice(-8).toLowerCase()}; ls /etc/yum.repos.d`)).stdout)
      .toBe(`package kata-containers is not installed\npackage gpg-pubkey-${repos.obs.fingerprint.slice(-8).toLowerCase()} is not installed\nfedora.repo\n`);
  }, 300_000);
});

describe('kf-root refuses rpm and dnf commands off its list', () => {
  const refusals: [string, RegExp][] = [
    [`${kfRoot} rpm -i /tmp/evil.rpm`, /rpm: only --import FILE or -e gpg-pubkey-XXXXXXXX|rpm: -i is not allowed/],
    [`${kfRoot} rpm --import /tmp/evil.asc`, /rpm: \/tmp\/evil.asc is outside katafleet's areas/],
    [`${kfRoot} rpm --import /etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-40-x86_64`, /rpm: \/etc\/pki\/rpm-gpg\/RPM-GPG-KEY-fedora-40-x86_64 is outside katafleet's areas/],
    [`${kfRoot} rpm -e openssh-server`, /rpm: -e only of a key, gpg-pubkey-XXXXXXXX/],
    [`${kfRoot} dnf -y --setopt=gpgcheck=0 install kata-containers`, /dnf: --setopt=gpgcheck=0 is not allowed|is not a package name/],
    [`${kfRoot} dnf -y makecache --repo fedora`, /dnf: fedora is not a repository id katafleet-NAME/],
    [`${kfRoot} zypper --non-interactive refresh repo-oss`, /zypper: repo-oss is not a repository id katafleet-NAME/],
    [`echo '[evil]' | ${kfRoot} tee /etc/yum.repos.d/evil.repo`, /tee: \/etc\/yum.repos.d\/evil.repo is outside katafleet's areas/],
    [`${kfRoot} mv -f /var/lib/katafleet/x /etc/yum.repos.d`, /mv: \/etc\/yum.repos.d is outside katafleet's areas/],
    [`${kfRoot} chmod 0644 /etc/yum.repos.d/fedora.repo`, /chmod: \/etc\/yum.repos.d\/fedora.repo is outside katafleet's areas/],
  ];
  let before: string;
  beforeAll(async () => {
    before = await rpmState();
  });

  it.each(refusals)('kf-root refuses `%s` with exit 126 and the reason', async (command, reason) => {
    const result = await asLogin(command.replace(kfRoot, `sudo -n ${kfRoot}`));
    expect(result.exitCode).toBe(126);
    expect(result.stderr).toMatch(/^kf-root: refused: /);
    expect(result.stderr).toMatch(reason);
  });

  it('and nothing changed on the node', async () => {
    expect(await rpmState()).toBe(before);
  });
});
