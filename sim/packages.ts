// The fleet's package mirror: real .deb packages built with dpkg-deb (a simulated gVisor in the default
// flat apt repository, Packages + Release; a simulated Kata Containers only in the OBS-style repository no
// node lists, as no Debian/Ubuntu archive offers Kata), Kata static release tarballs with upstream's
// names and layout (sim/kata-release.ts), and an HTTP server for all of it on 127.0.0.1.
// Every node's apt source points at http://packages.katafleet.test:PORT/ (see node-files.ts).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, dirname, join, normalize, relative } from 'node:path';
import { promisify } from 'node:util';
import { buildKataReleases } from './kata-release';
import { mirrorHostName } from './node-files';

/** The worker's release mirror variable (activities/steps/release-tarball.ts `RELEASE_MIRROR_ENV`). */
const RELEASE_MIRROR_ENV = 'KATAFLEET_RELEASE_MIRROR';

const run = promisify(execFile);
const sources = join(__dirname, 'node', 'packages');

/** The guest kernel the simulated Kata ships; a pod with runtimeClassName kata reports it in `uname -r`. */
export const kataGuestKernel = '6.12.47-kata';
/** gVisor's Sentry answers `uname -r` with this release whatever the host runs. */
export const gvisorKernel = '4.4.0';

interface PackageSpec {
  name: string;
  version: string;
  description: string;
  /**
   * Which of the mirror's repositories offers it: `default`, the flat repository in every node's apt sources (as
   * a distribution's archive), or `obs`, only the OBS-style repository a test adds (Debian and Ubuntu ship no
   * Kata package: reality/KATA.md §2).
   */
  repository: 'default' | 'obs';
  /** path inside the package → content, or { link } for a relative symlink, or { script } from sim/node/packages. */
  files: Record<string, string | { link: string } | { script: string }>;
}

export const packageSpecs: PackageSpec[] = [
  {
    name: 'kata-containers',
    version: '3.2.0',
    repository: 'obs',
    description: 'Kata Containers (simulated by katafleet): kata-runtime check, containerd-shim-kata-v2, guest kernel',
    files: {
      'opt/kata/bin/kata-runtime': { script: 'kata-runtime' },
      'opt/kata/bin/containerd-shim-kata-v2': { script: 'containerd-shim-kata-v2' },
      'opt/kata/share/defaults/kata-containers/configuration.toml':
        '# Kata Containers configuration (simulated)\n[hypervisor.qemu]\npath = "/opt/kata/bin/qemu-system-x86_64"\nkernel = "/opt/kata/share/kata-containers/vmlinux.container"\n\n[runtime]\ninternetworking_model = "tcfilter"\n',
      [`opt/kata/share/kata-containers/vmlinux-${kataGuestKernel}`]: `simulated guest kernel ${kataGuestKernel}\n`,
      'opt/kata/share/kata-containers/vmlinux.container': { link: `vmlinux-${kataGuestKernel}` },
      'opt/kata/share/kata-containers/guest-kernel-version': `${kataGuestKernel}\n`,
      'usr/local/bin/kata-runtime': { link: '../../../opt/kata/bin/kata-runtime' },
      'usr/local/bin/containerd-shim-kata-v2': { link: '../../../opt/kata/bin/containerd-shim-kata-v2' },
    },
  },
  {
    name: 'runsc',
    version: '20240212.0',
    repository: 'default',
    description: 'gVisor runsc and containerd-shim-runsc-v1 (simulated by katafleet)',
    files: {
      'usr/local/bin/runsc': { script: 'runsc' },
      'usr/local/bin/containerd-shim-runsc-v1': { script: 'containerd-shim-runsc-v1' },
    },
  },
];

function controlFile(spec: PackageSpec, installedSizeKb: number): string {
  return [
    `Package: ${spec.name}`,
    `Version: ${spec.version}`,
    'Architecture: amd64',
    'Maintainer: katafleet simulated fleet <sim@katafleet.test>',
    `Installed-Size: ${installedSizeKb}`,
    'Section: admin',
    'Priority: optional',
    `Description: ${spec.description}`,
    '',
  ].join('\n');
}

async function buildDeb(spec: PackageSpec, workDir: string, poolDir: string): Promise<string> {
  const root = join(workDir, `${spec.name}_${spec.version}`);
  await rm(root, { recursive: true, force: true });
  let bytes = 0;
  for (const [path, content] of Object.entries(spec.files)) {
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    if (typeof content === 'string') {
      await writeFile(target, content);
      bytes += content.length;
    } else if ('link' in content) {
      await symlink(content.link, target);
    } else {
      const script = (await readFile(join(sources, content.script), 'utf8')).replaceAll('@VERSION@', spec.version);
      await writeFile(target, script);
      await chmod(target, 0o755);
      bytes += script.length;
    }
  }
  await mkdir(join(root, 'DEBIAN'), { recursive: true });
  await writeFile(join(root, 'DEBIAN', 'control'), controlFile(spec, Math.max(1, Math.ceil(bytes / 1024))));
  const deb = join(poolDir, `${spec.name}_${spec.version}_amd64.deb`);
  await run('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', root, deb]);
  return deb;
}

/** A flat apt repository's `Release` file: `fields`, then the index's checksums (MD5Sum, SHA256) as apt checks them. */
async function writeAptRelease(path: string, packagesFile: string, fields: string[]): Promise<void> {
  const size = (await stat(packagesFile)).size;
  await writeFile(path, [
    ...fields,
    'Architectures: amd64',
    `Date: ${new Date().toUTCString()}`,
    'MD5Sum:',
    ` ${await digest(packagesFile, 'md5')} ${size} Packages`,
    'SHA256:',
    ` ${await digest(packagesFile, 'sha256')} ${size} Packages`,
    '',
  ].join('\n'));
}

async function digest(file: string, algorithm: 'md5' | 'sha256'): Promise<string> {
  return createHash(algorithm).update(await readFile(file)).digest('hex');
}

/**
 * Builds every package, the default flat repository (Packages, Release, pool/) with the packages of
 * `repository: 'default'` only, the OBS-style repository with the others, and the Kata release tarballs into `dir`.
 */
export async function buildPackageRepository(dir: string): Promise<{ dir: string; debs: string[] }> {
  const pool = join(dir, 'pool');
  const obsBuild = join(dir, 'obs-build');
  await mkdir(pool, { recursive: true });
  await mkdir(obsBuild, { recursive: true });
  const debs: string[] = [];
  const obsDebs: string[] = [];
  const entries: string[] = [];
  for (const spec of packageSpecs) {
    if (spec.repository === 'obs') {
      obsDebs.push(await buildDeb(spec, join(dir, 'build'), obsBuild));
      continue;
    }
    const deb = await buildDeb(spec, join(dir, 'build'), pool);
    debs.push(deb);
    const { stdout: control } = await run('dpkg-deb', ['--field', deb]);
    entries.push(
      `${control.trimEnd()}\nFilename: ./pool/${basename(deb)}\nSize: ${(await stat(deb)).size}\n` +
        `MD5sum: ${await digest(deb, 'md5')}\nSHA256: ${await digest(deb, 'sha256')}\n`,
    );
  }
  await rm(join(dir, 'build'), { recursive: true, force: true });
  await buildKataReleases(dir);
  await buildObsRepository(dir, obsDebs);
  await rm(obsBuild, { recursive: true, force: true });
  const packagesFile = join(dir, 'Packages');
  await writeFile(packagesFile, entries.join('\n'));
  await writeAptRelease(join(dir, 'Release'), packagesFile, ['Origin: katafleet-sim', 'Label: katafleet-sim', 'Suite: stable', 'Codename: katafleet-sim']);
  return { dir, debs };
}

/**
 * Serves `dir` read-only over HTTP on 127.0.0.1 (a free port); GET and HEAD, 404 for anything else.
 * While it serves, this process's worker takes Kata releases from it instead of github.com (the
 * `KATAFLEET_RELEASE_MIRROR` of an air-gapped site; the tarballs are at GitHub's paths, and the pinned
 * sha256 still decides), so the shipped kata playbook runs unchanged against the fleet. `close` restores it.
 */
export async function servePackageRepository(dir: string): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const path = normalize(decodeURIComponent((req.url ?? '/').split('?')[0]));
    const file = join(dir, path);
    if (relative(dir, file).startsWith('..') || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404).end();
      return;
    }
    stat(file).then(
      (s) => {
        if (!s.isFile()) {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { 'content-length': s.size, 'last-modified': s.mtime.toUTCString() });
        if (req.method === 'HEAD') res.end();
        else createReadStream(file).pipe(res);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  server.unref();
  const port = (server.address() as AddressInfo).port;
  const mirror = `http://127.0.0.1:${port}/`;
  const before = process.env[RELEASE_MIRROR_ENV];
  process.env[RELEASE_MIRROR_ENV] = mirror;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        if (process.env[RELEASE_MIRROR_ENV] === mirror) {
          if (before === undefined) delete process.env[RELEASE_MIRROR_ENV];
          else process.env[RELEASE_MIRROR_ENV] = before;
        }
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Where the mirror serves its OBS-style repository: the path of Kata's 1.x OBS projects (KATA.md §2), Debian 12 flavour. */
export const OBS_REPO_PATH = 'obs/home:/katacontainers:/releases:/x86_64:/stable/Debian_12/';

/** The OBS-style repository as built: its path under the mirror and its signing key's fingerprint. */
export interface ObsRepository {
  path: string;
  fingerprint: string;
}

/**
 * An OBS-style apt repository (flat: `deb URL /`) holding `debs`, signed the way OBS signs its projects: a
 * `Release` with `InRelease` (clear-signed) and `Release.gpg` (detached), and the project key as `Release.key`
 * (ASCII-armored). The key is made here, at fleet start, in a throwaway GnuPG home; its fingerprint is in
 * `obs-repo.json`. No node lists this repository: a test adds it (package-repo), as on a real Debian/Ubuntu node.
 */
export async function buildObsRepository(dir: string, debs: readonly string[]): Promise<ObsRepository> {
  const repo = join(dir, OBS_REPO_PATH);
  await mkdir(repo, { recursive: true });
  const home = join(dir, 'obs-gnupg');
  await rm(home, { recursive: true, force: true });
  await mkdir(home, { recursive: true, mode: 0o700 });
  const gpg = (...args: string[]) => run('gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { timeout: 60_000 });
  try {
    await gpg('--quick-gen-key', 'home:katacontainers OBS Project (simulated by katafleet) <katacontainers@build.opensuse.test>', 'ed25519', 'sign', 'never');
    const { stdout: colons } = await gpg('--with-colons', '--list-keys');
    const fingerprint = colons.split('\n').find((line) => line.startsWith('fpr:'))!.split(':')[9];
    await writeFile(join(repo, 'Release.key'), (await gpg('--armor', '--export', fingerprint)).stdout);
    const entries: string[] = [];
    for (const deb of debs) {
      await writeFile(join(repo, basename(deb)), await readFile(deb));
      const { stdout: control } = await run('dpkg-deb', ['--field', deb]);
      entries.push(`${control.trimEnd()}\nFilename: ./${basename(deb)}\nSize: ${(await stat(deb)).size}\nMD5sum: ${await digest(deb, 'md5')}\nSHA256: ${await digest(deb, 'sha256')}\n`);
    }
    const packagesFile = join(repo, 'Packages');
    await writeFile(packagesFile, entries.join('\n'));
    await writeAptRelease(join(repo, 'Release'), packagesFile, [
      'Archive: Debian_12',
      'Origin: obs://build.opensuse.org/home:katacontainers:releases:x86_64:stable/Debian_12',
      'Label: home:katacontainers:releases:x86_64:stable',
    ]);
    await gpg('--local-user', fingerprint, '--clearsign', '--output', join(repo, 'InRelease'), join(repo, 'Release'));
    await gpg('--local-user', fingerprint, '--armor', '--detach-sign', '--output', join(repo, 'Release.gpg'), join(repo, 'Release'));
    const built = { path: OBS_REPO_PATH, fingerprint };
    await writeFile(join(dir, 'obs-repo.json'), `${JSON.stringify(built, null, 2)}\n`);
    return built;
  } finally {
    await run('gpgconf', ['--homedir', home, '--kill', 'all']).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  }
}

/**
 * The shell command with which an admin adds the OBS-style repository to a node by hand (what the package-repo
 * step does, without katafleet): the project key from `Release.key` into `/etc/apt/keyrings/kata-obs.asc`, a
 * `signed-by=` source in `/etc/apt/sources.list.d/kata-obs.list`, then `apt-get update`. The source names the
 * mirror by its host name, so the `package-repo-unreachable` fault cuts it off like the default one. For tests
 * about packages: a node's own sources offer no Kata package.
 */
export function addObsSourceCommand(mirrorPort: number): string {
  const url = `http://${mirrorHostName}:${mirrorPort}/${OBS_REPO_PATH}`;
  return `install -d -m 0755 /etc/apt/keyrings && curl -fsS ${url}Release.key | tee /etc/apt/keyrings/kata-obs.asc >/dev/null && ` +
    `echo 'deb [signed-by=/etc/apt/keyrings/kata-obs.asc] ${url} /' | tee /etc/apt/sources.list.d/kata-obs.list >/dev/null && apt-get update -qq`;
}
