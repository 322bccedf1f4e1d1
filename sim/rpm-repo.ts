// The fleet mirror's RPM-family repositories: a real `kata-containers` rpm (rpmbuild, signed with rpmsign) with the
// same files as the simulated .deb (sim/packages.ts: /opt/kata/..., the /usr/local/bin links), in an rpm-md repository
// (createrepo_c) whose `repodata/repomd.xml` is signed (`repomd.xml.asc`, detached, ASCII-armored) and whose key is
// published as `repodata/repomd.xml.key`, as the Open Build Service publishes its projects (and as dnf's
// `repo_gpgcheck=1` and zypper's repository signature check read them). The key is made at fleet start in a throwaway
// GnuPG home. sim/README.md ("RPM-family nodes") names the upstream sources.
import { execFile } from 'node:child_process';
import { chmod, cp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { packageSpecs } from './packages';

const run = promisify(execFile);
const scripts = join(__dirname, 'node', 'packages');

/** Where the mirror serves the Fedora-flavoured repository (OBS's path scheme: project, then distribution). */
export const RPM_REPO_FEDORA_PATH = 'obs/home:/katacontainers:/releases:/x86_64:/stable/Fedora_40/';
/** Where the mirror serves the openSUSE-flavoured repository (same packages and key, OBS's openSUSE path). */
export const RPM_REPO_OPENSUSE_PATH = 'obs/home:/katacontainers:/releases:/x86_64:/stable/openSUSE_Leap_15.6/';
/**
 * The release part of each repository's rpm, as each builder names them: OBS appends its build counter (`1.1`),
 * Fedora its dist tag (`1.fc40`), openSUSE Leap its `lp156` prefix. With the same version in the distribution's and
 * the OBS repository, dnf's choice is then the one rpm's version comparison makes (1.1 > 1.fc40: the OBS build).
 */
export const RPM_RELEASES = { obs: '1.1', fedora: '1.fc40', opensuse: 'lp156.1.1' } as const;

/** A built and signed rpm-md repository, as `rpm-repo.json` in the mirror records it. */
export interface RpmRepository {
  /** Path under the mirror of the Fedora-flavoured copy (ends with "/"). */
  fedoraPath: string;
  /** Path under the mirror of the openSUSE-flavoured copy (ends with "/"). */
  opensusePath: string;
  /** Fingerprint (40 hex, upper case) of the key that signs the packages and repomd.xml. */
  fingerprint: string;
  /** `name-version-release` of each rpm in it. */
  packages: string[];
}

/** The spec file rpmbuild builds `name` from: files copied from `staging`, no scriptlets, no dependencies. */
export function rpmSpecText(o: { name: string; version: string; release: string; summary: string; files: string[]; staging: string }): string {
  return [
    `Name: ${o.name}`,
    `Version: ${o.version}`,
    `Release: ${o.release}`,
    `Summary: ${o.summary}`,
    'License: Apache-2.0',
    'URL: https://github.com/kata-containers/kata-containers',
    'BuildArch: x86_64',
    // The node's rpm database holds no base system, so the package requires nothing (Fedora's requires qemu etc.).
    'AutoReqProv: no',
    '%global debug_package %{nil}',
    '%global __os_install_post %{nil}',
    '%description',
    `${o.summary}`,
    '%install',
    `cp -a ${o.staging}/. %{buildroot}/`,
    '%files',
    ...o.files.map((file) => `/${file}`),
    '',
  ].join('\n');
}

/** Lays out one package's files (as sim/packages.ts describes them) under `root`. */
async function stage(files: (typeof packageSpecs)[number]['files'], version: string, root: string): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    if (typeof content === 'string') await writeFile(target, content);
    else if ('link' in content) await symlink(content.link, target);
    else {
      await writeFile(target, (await readFile(join(scripts, content.script), 'utf8')).replaceAll('@VERSION@', version));
      await chmod(target, 0o755);
    }
  }
}

/** gpg in a throwaway home, no passphrase (keys made here have none). */
function gpgIn(home: string) {
  return (...args: string[]) => run('gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { timeout: 120_000, maxBuffer: 4 << 20 });
}

/** Makes a signing key (RSA 3072, as OBS and Fedora keys are RSA) in `home`; returns its fingerprint. */
export async function makeSigningKey(home: string, uid: string): Promise<string> {
  await rm(home, { recursive: true, force: true });
  await mkdir(home, { recursive: true, mode: 0o700 });
  const gpg = gpgIn(home);
  await gpg('--quick-gen-key', uid, 'rsa3072', 'sign', 'never');
  const { stdout } = await gpg('--with-colons', '--list-keys');
  return stdout.split('\n').find((line) => line.startsWith('fpr:'))!.split(':')[9].toUpperCase();
}

/**
 * Builds packageSpecs' kata-containers (its files, version and description) with rpmbuild as the rpm `name`
 * (openSUSE calls it katacontainers) into `rpmsDir`; returns the rpm paths.
 */
export async function buildRpms(work: string, rpmsDir: string, name: string, release: string): Promise<string[]> {
  const spec = packageSpecs.find((s) => s.name === 'kata-containers');
  if (!spec) throw new Error('sim/packages.ts has no kata-containers package to build an rpm from');
  const staging = join(work, 'staging');
  await stage(spec.files, spec.version, staging);
  const specFile = join(work, `${name}.spec`);
  await writeFile(specFile, rpmSpecText({ name, version: spec.version, release, summary: spec.description, files: Object.keys(spec.files), staging }));
  await run('rpmbuild', ['-bb', '--quiet', '--define', `_topdir ${join(work, 'top')}`, '--define', '_build_id_links none', specFile], { timeout: 120_000, maxBuffer: 4 << 20 });
  await mkdir(rpmsDir, { recursive: true });
  const built = join(work, 'top', 'RPMS', 'x86_64');
  const out: string[] = [];
  for (const file of (await readdir(built)).filter((f) => f.startsWith(`${name}-${spec.version}-${release}.`))) {
    await cp(join(built, file), join(rpmsDir, file));
    out.push(join(rpmsDir, file));
  }
  return out;
}

/**
 * Signs `rpms` with the key `fingerprint` of GnuPG home `home` (rpmsign --addsign, as OBS's signd and Fedora's
 * sigul do), writes the rpm-md metadata with createrepo_c, then signs repomd.xml (detached, armored) and publishes
 * the key next to it. `sign: false` leaves packages and metadata unsigned (a test's unsigned repository).
 */
export async function writeRpmRepository(dir: string, rpms: readonly string[], signer: { home: string; fingerprint: string } | undefined): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const rpm of rpms) {
    const target = join(dir, rpm.split('/').pop()!);
    await cp(rpm, target);
    if (signer) {
      // Debian's rpm names gpg2 (%__gpg), which Debian 12 no longer ships: gpg is GnuPG 2.
      await run('rpmsign', ['--addsign', '--define', '__gpg /usr/bin/gpg', '--define', `_gpg_name ${signer.fingerprint}`, '--define', `_gpg_path ${signer.home}`,
        '--define', '_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback --passphrase ""', target], { timeout: 120_000 });
    }
  }
  await run('createrepo_c', ['--quiet', '--no-database', dir], { timeout: 120_000 });
  if (signer) {
    const gpg = gpgIn(signer.home);
    const repomd = join(dir, 'repodata', 'repomd.xml');
    await gpg('--local-user', signer.fingerprint, '--armor', '--detach-sign', '--output', `${repomd}.asc`, repomd);
    await writeFile(`${repomd}.key`, (await gpg('--armor', '--export', signer.fingerprint)).stdout);
  }
}

/** Where the mirror serves the simulated Fedora 40 "fedora" repository (Fedora ships kata-containers). */
export const FEDORA_DISTRO_PATH = 'fedora/releases/40/Everything/x86_64/os/';
/** Where the mirror serves the simulated openSUSE Leap 15.6 "repo-oss" repository (openSUSE ships katacontainers). */
export const OPENSUSE_DISTRO_PATH = 'distribution/leap/15.6/repo/oss/';

/** What `rpm-repo.json` in the mirror records: the OBS-style repositories and the distributions' own. */
export interface RpmRepositories {
  /** The OBS-style project (kata-containers, signed by the project key): what package-repo adds. */
  obs: RpmRepository;
  /** The distributions' repositories every RPM-family node lists (signed by the distribution key). */
  distro: { fedoraPath: string; opensusePath: string; fingerprint: string; key: string };
}

/**
 * Builds the rpms once and writes four signed repositories into the mirror directory `mirrorDir`: the OBS-style
 * project at its Fedora_40 and openSUSE_Leap_15.6 paths (kata-containers, project key), Fedora 40's own repository
 * (kata-containers) and openSUSE Leap 15.6's (katacontainers, openSUSE's name), those two signed by a distribution
 * key. Records them in `rpm-repo.json`. The keys live only for this call (their GnuPG homes are removed).
 */
export async function buildRpmRepositories(mirrorDir: string): Promise<RpmRepositories> {
  const work = join(mirrorDir, 'rpm-build');
  const obsHome = join(work, 'obs-gnupg');
  const distroHome = join(work, 'distro-gnupg');
  try {
    const [kata, fedoraKata, katacontainers, obsFingerprint, distroFingerprint] = await Promise.all([
      buildRpms(join(work, 'obs'), join(work, 'out'), 'kata-containers', RPM_RELEASES.obs),
      buildRpms(join(work, 'fedora'), join(work, 'out'), 'kata-containers', RPM_RELEASES.fedora),
      buildRpms(join(work, 'opensuse'), join(work, 'out'), 'katacontainers', RPM_RELEASES.opensuse),
      makeSigningKey(obsHome, 'home:katacontainers OBS Project (simulated by katafleet) <katacontainers@build.opensuse.test>'),
      makeSigningKey(distroHome, 'Distribution signing key (simulated Fedora 40 / openSUSE Leap 15.6, katafleet) <security@distro.katafleet.test>'),
    ]);
    const obs = { home: obsHome, fingerprint: obsFingerprint };
    const distro = { home: distroHome, fingerprint: distroFingerprint };
    await writeRpmRepository(join(mirrorDir, RPM_REPO_FEDORA_PATH), kata, obs);
    await writeRpmRepository(join(mirrorDir, RPM_REPO_OPENSUSE_PATH), kata, obs);
    await writeRpmRepository(join(mirrorDir, FEDORA_DISTRO_PATH), fedoraKata, distro);
    await writeRpmRepository(join(mirrorDir, OPENSUSE_DISTRO_PATH), katacontainers, distro);
    const built: RpmRepositories = {
      obs: { fedoraPath: RPM_REPO_FEDORA_PATH, opensusePath: RPM_REPO_OPENSUSE_PATH, fingerprint: obsFingerprint, packages: kata.map(nevr) },
      distro: { fedoraPath: FEDORA_DISTRO_PATH, opensusePath: OPENSUSE_DISTRO_PATH, fingerprint: distroFingerprint, key: (await gpgIn(distroHome)('--armor', '--export', distroFingerprint)).stdout },
    };
    await writeFile(join(mirrorDir, 'rpm-repo.json'), `${JSON.stringify(built, null, 2)}\n`);
    return built;
  } finally {
    for (const home of [obsHome, distroHome]) await run('gpgconf', ['--homedir', home, '--kill', 'all']).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}

/** `kata-containers-3.2.0-1` of `/path/kata-containers-3.2.0-1.x86_64.rpm`. */
function nevr(rpm: string): string {
  return rpm.split('/').pop()!.replace(/\.x86_64\.rpm$/, '');
}

/**
 * A copy of the mirror's rpms at `path` under the mirror, unsigned (`signedBy: undefined`) or signed by a new key
 * that is not the published one: what a test points package-repo at to see it refused. Returns the other key's
 * fingerprint when there is one.
 */
export async function writeRogueRpmRepository(mirrorDir: string, path: string, signed: boolean): Promise<string | undefined> {
  const source = join(mirrorDir, RPM_REPO_FEDORA_PATH);
  const rpms = (await readdir(source)).filter((f) => f.endsWith('.rpm'));
  const work = join(mirrorDir, `rogue-${Date.now()}`);
  const home = join(work, 'gnupg');
  try {
    await mkdir(work, { recursive: true });
    const copies: string[] = [];
    for (const rpm of rpms) {
      await cp(join(source, rpm), join(work, rpm));
      // An unsigned or re-signed copy: the published key's signature goes (rpmsign --delsign).
      await run('rpmsign', ['--delsign', join(work, rpm)], { timeout: 60_000 });
      copies.push(join(work, rpm));
    }
    const fingerprint = signed ? await makeSigningKey(home, 'Someone else (simulated by katafleet) <rogue@katafleet.test>') : undefined;
    await writeRpmRepository(join(mirrorDir, path), copies, fingerprint ? { home, fingerprint } : undefined);
    return fingerprint;
  } finally {
    await run('gpgconf', ['--homedir', home, '--kill', 'all']).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}
