// RPM-family simulated nodes: a Fedora-like node whose package manager is dnf, an openSUSE-like one with zypper.
// The node keeps the machine's (Debian's) /usr, where setup installed dnf 4.14, zypper 1.14 and rpm 4.18; what makes it
// Fedora or openSUSE is written here into the node's /etc layer before its first boot, and sim/node/sbin/.provision-rpm
// (run by .provision) removes what such a node does not have (apt, dpkg, the other RPM front end) and initialises its
// rpm database. sim/README.md ("RPM-family nodes") names the upstream sources of each file.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { mirrorHostName } from './node-files';
import type { RpmRepositories } from './rpm-repo';

/** A node's package manager: apt (Debian-like, the default), dnf (Fedora-like) or zypper (openSUSE-like). */
export type NodePackageManager = 'apt' | 'dnf' | 'zypper';

/** Where an RPM-family node keeps the distribution's key (Fedora's path; openSUSE keeps its keys in the rpm database). */
export function distroKeyPath(manager: 'dnf' | 'zypper'): string {
  return manager === 'dnf' ? '/etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-40-x86_64' : '/usr/lib/rpm/gnupg/keys/gpg-pubkey-katafleet-sim.asc';
}

/** `/etc/os-release` of Fedora 40 (fedora-release) or openSUSE Leap 15.6 (openSUSE-release), the fields tools read. */
export function osReleaseText(manager: 'dnf' | 'zypper'): string {
  return manager === 'dnf'
    ? 'NAME="Fedora Linux"\nVERSION="40 (Server Edition)"\nID=fedora\nVERSION_ID=40\nPLATFORM_ID="platform:f40"\nPRETTY_NAME="Fedora Linux 40 (Server Edition)"\nVARIANT_ID=server\n'
    : 'NAME="openSUSE Leap"\nVERSION="15.6"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.6"\nPRETTY_NAME="openSUSE Leap 15.6"\nCPE_NAME="cpe:/o:opensuse:leap:15.6"\n';
}

/** The distribution's repository file, as fedora-repos / openSUSE's installer write it, pointing at the fleet's mirror. */
export function distroRepoFile(manager: 'dnf' | 'zypper', repoPort: number, repos: RpmRepositories): { path: string; text: string } {
  const base = `http://${mirrorHostName}:${repoPort}/`;
  if (manager === 'dnf') {
    return {
      path: '/etc/yum.repos.d/fedora.repo',
      text: `[fedora]\nname=Fedora 40 - x86_64 (katafleet's mirror)\nbaseurl=${base}${repos.distro.fedoraPath}\nenabled=1\nrepo_gpgcheck=0\ntype=rpm\ngpgcheck=1\n` +
        `gpgkey=file://${distroKeyPath('dnf')}\nskip_if_unavailable=False\n`,
    };
  }
  return {
    path: '/etc/zypp/repos.d/repo-oss.repo',
    text: `[repo-oss]\nname=Main Repository (katafleet's mirror)\nenabled=1\nautorefresh=1\nbaseurl=${base}${repos.distro.opensusePath}\ntype=rpm-md\ngpgcheck=1\n` +
      `gpgkey=file://${distroKeyPath('zypper')}\nkeeppackages=0\n`,
  };
}

/**
 * dnf.conf with dnf's own default `skip_if_unavailable=False` (dnf.conf(5), rpm-software-management/dnf
 * doc/conf_ref.rst, 4.14), which Fedora keeps and Debian's dnf-data overrides with True; and the rpm macro that puts
 * the database where Fedora and openSUSE have it (Debian's rpm keeps a per-user ~/.rpmdb).
 */
const dnfConf = '[main]\ngpgcheck=True\ninstallonly_limit=3\nclean_requirements_on_remove=True\nbest=False\nskip_if_unavailable=False\n';
const rpmMacros = '# The system rpm database, as on Fedora and openSUSE (Debian\'s rpm defaults to ~/.rpmdb)\n%_dbpath /var/lib/rpm\n';

/**
 * The spec of the package that says which Fedora a node runs, as Fedora 40 Server has it: `fedora-release-server` 40,
 * which provides `system-release` and `system-release(40)` (src.fedoraproject.org/rpms/fedora-release,
 * fedora-release.spec, branch f40; `system-release(releasever)` only on rawhide). dnf takes `$releasever` from the
 * version of the package that provides `system-release(releasever)`, else `system-release` (dnf/rpm/__init__.py
 * `detect_releasever`, dnf/const.py `DISTROVERPKG`, rpm-software-management/dnf 4.14.0); without one it warns "Unable
 * to detect release version". .provision-rpm builds it with rpmbuild and installs it into the node's rpm database.
 * The real package also carries os-release and preset files; this one carries none (sim/rpm-node.ts writes os-release).
 */
export const fedoraReleaseSpec = [
  'Name: fedora-release-server',
  'Version: 40',
  'Release: 1',
  'Summary: Base package for Fedora Server-specific default configurations',
  'License: MIT',
  'BuildArch: noarch',
  'Provides: fedora-release = 40-1',
  'Provides: fedora-release-variant = 40-1',
  'Provides: system-release',
  'Provides: system-release(40)',
  'Provides: base-module(platform:f40)',
  '%description',
  'Provides a base package for Fedora Server-specific configuration files to depend on.',
  '%files',
  '',
].join('\n');

/** Writes the RPM-family files into the node's /etc layer (`etcUpper`). */
export async function prepareRpmNode(etcUpper: string, manager: 'dnf' | 'zypper', repoPort: number, repos: RpmRepositories): Promise<void> {
  const write = async (path: string, text: string) => {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, text, { mode: 0o644 });
  };
  const inEtc = (path: string) => join(etcUpper, path.replace(/^\/etc\//, ''));
  await write(inEtc('/etc/os-release'), osReleaseText(manager));
  await write(inEtc('/etc/rpm/macros.dbpath'), rpmMacros);
  const repo = distroRepoFile(manager, repoPort, repos);
  await write(inEtc(repo.path), repo.text);
  if (manager === 'dnf') {
    await write(inEtc('/etc/dnf/dnf.conf'), dnfConf);
    // .provision-rpm builds and installs it, then removes it.
    await write(inEtc('/etc/katafleet-sim/fedora-release-server.spec'), fedoraReleaseSpec);
    await write(inEtc(distroKeyPath('dnf')), repos.distro.key);
  } else {
    // .provision-rpm imports it into the rpm database (openSUSE-build-key does this on a real node) and moves it under /usr.
    await write(inEtc('/etc/katafleet-sim/distro-key.asc'), repos.distro.key);
  }
}
