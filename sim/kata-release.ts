// Kata Containers static release tarballs as upstream publishes them, for the fleet's mirror: the asset
// names, compression and member layout of github.com/kata-containers/kata-containers releases (sources in
// sim/README.md, "Kata release tarballs"); the binaries inside are the simulator's (sim/node/packages).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { mirrorHostName } from './node-files';

const run = promisify(execFile);
const scripts = join(__dirname, 'node', 'packages');

/** The guest kernel inside the simulated release tarballs (name form of `KC@3.20.0:tools/packaging/kernel/build-kernel.sh`). */
export const releaseGuestKernel = '6.12.47-kata';

/**
 * The Kata releases the mirror serves: below 3.21 as `.tar.xz`, from 3.21 as `.tar.zst` (KATA.md §1.1); 4.1.0 as
 * upstream's pair, `kata-static` (runtime-rs and the shared assets) and `kata-go-static` (the Go shim and kata-runtime).
 */
export const simulatedKataReleases = ['3.20.0', '3.31.0', '3.32.0', '4.1.0'] as const;

/** The tarballs of one Kata release: `kata-static` alone, or from 4.1.0 also `kata-go-static` (commits 1550d12899, f05ef98e4a). */
export function kataStaticAssets(version: string): ('kata-static' | 'kata-go-static')[] {
  const [major, minor] = version.split('.').map((part) => Number.parseInt(part, 10));
  return major > 4 || (major === 4 && minor >= 1) ? ['kata-static', 'kata-go-static'] : ['kata-static'];
}

/** Upstream's asset name: `kata-static-<version>-<arch>.tar.xz`, `.tar.zst` from 3.21.0 (commit ad240a39e6). */
export function kataStaticAssetName(version: string, arch: string, asset: 'kata-static' | 'kata-go-static' = 'kata-static'): string {
  return `${asset}-${version}-${arch}.${kataStaticExtension(version)}`;
}

/** `tar.zst` from 3.21.0, `tar.xz` before (KC@3.21.0:tools/packaging/release/release.sh). */
export function kataStaticExtension(version: string): 'tar.xz' | 'tar.zst' {
  const [major, minor] = version.split('.').map((part) => Number.parseInt(part, 10));
  return major > 3 || (major === 3 && minor >= 21) ? 'tar.zst' : 'tar.xz';
}

/** Where GitHub serves a release asset, relative to https://github.com/: the mirror keeps the same path. */
export function kataReleasePath(version: string, arch: string, asset: 'kata-static' | 'kata-go-static' = 'kata-static'): string {
  return `kata-containers/kata-containers/releases/download/${version}/${kataStaticAssetName(version, arch, asset)}`;
}

/**
 * The runtime-rs configurations kata-deploy's handlers point at, by version: `configuration-<shim>.toml` under
 * `share/defaults/kata-containers/runtime-rs/` (KATA.md §1.2 from `KC@<tag>:src/runtime-rs/Makefile`):
 * `cloud-hypervisor` until 3.29, `clh-runtime-rs` from 3.30 (KATA.md §4).
 */
function runtimeRsConfigs(version: string): string[] {
  const [major, minor] = version.split('.').map((part) => Number.parseInt(part, 10));
  const clh = major > 3 || (major === 3 && minor >= 30) ? 'clh-runtime-rs' : 'cloud-hypervisor';
  return ['dragonball', 'qemu-runtime-rs', clh];
}

type Entry = string | { link: string } | { script: string };

/**
 * The members of `kata-static-<version>-amd64` under `./opt/kata/`, upstream's paths (KATA.md §1.2): the Go
 * shim and kata-runtime in bin/, the Rust shim under runtime-rs/bin/ with the same name, the Go configs with
 * `configuration.toml` → `configuration-qemu.toml`, runtime-rs configs in their own directory (3.3.0+), the
 * guest kernel and image with their `.container`/`.img` links. `guest-kernel-version` is the simulator's
 * own file: what a pod of this runtime answers to `uname -r`. From 4.1.0 the Go parts (bin/kata-runtime,
 * bin/containerd-shim-kata-v2, kata-collect-data.sh and the Go configs) are `kata-go-static`'s, the rest
 * `kata-static`'s (KATA.md §1.1, `KC@4.1.0:tools/packaging/kata-deploy/local-build/kata-release-tarball-inputs.sh`).
 */
export function kataReleaseTree(version: string, asset: 'kata-static' | 'kata-go-static' = 'kata-static'): Record<string, Entry> {
  const config = (hypervisor: string) => `# Kata Containers ${version} configuration-${hypervisor}.toml (simulated by katafleet)\n` +
    `[hypervisor.${hypervisor}]\npath = "/opt/kata/bin/qemu-system-x86_64"\nkernel = "/opt/kata/share/kata-containers/vmlinux.container"\n` +
    'image = "/opt/kata/share/kata-containers/kata-containers.img"\n\n[runtime]\ninternetworking_model = "tcfilter"\n';
  const go: Record<string, Entry> = {
    'opt/kata/bin/kata-runtime': { script: 'kata-runtime' },
    'opt/kata/bin/containerd-shim-kata-v2': { script: 'containerd-shim-kata-v2' },
    'opt/kata/bin/kata-collect-data.sh': '#!/bin/sh\necho "kata-collect-data.sh of the simulated fleet collects nothing" >&2\n',
    'opt/kata/share/defaults/kata-containers/configuration-qemu.toml': config('qemu'),
    'opt/kata/share/defaults/kata-containers/configuration-clh.toml': config('clh'),
    'opt/kata/share/defaults/kata-containers/configuration-fc.toml': config('fc'),
    'opt/kata/share/defaults/kata-containers/configuration.toml': { link: 'configuration-qemu.toml' },
  };
  const rest: Record<string, Entry> = {
    'opt/kata/runtime-rs/bin/containerd-shim-kata-v2': { script: 'containerd-shim-kata-v2' },
    ...Object.fromEntries(runtimeRsConfigs(version).map((name) => [`opt/kata/share/defaults/kata-containers/runtime-rs/configuration-${name}.toml`, config(name)])),
    [`opt/kata/share/kata-containers/vmlinux-${releaseGuestKernel}`]: `simulated guest kernel ${releaseGuestKernel}\n`,
    'opt/kata/share/kata-containers/vmlinux.container': { link: `vmlinux-${releaseGuestKernel}` },
    'opt/kata/share/kata-containers/kata-ubuntu-noble.image': 'simulated guest image\n',
    'opt/kata/share/kata-containers/kata-containers.img': { link: 'kata-ubuntu-noble.image' },
    'opt/kata/share/kata-containers/guest-kernel-version': `${releaseGuestKernel}\n`,
    'opt/kata/share/bash-completion/completions/kata-runtime': '# bash completion for kata-runtime (simulated)\n',
  };
  if (kataStaticAssets(version).length === 1) return { ...go, ...rest };
  return asset === 'kata-go-static' ? go : rest;
}

/**
 * Builds `<asset>-<version>-amd64.tar.{xz,zst}` under `dir` at GitHub's path and returns its path and sha256
 * (hex). The build is reproducible (sorted members, fixed owner, modes and mtime), so a playbook can pin it. Members are `./opt/kata/...`, owned by root, as upstream's.
 */
export async function buildKataRelease(dir: string, version: string, asset: 'kata-static' | 'kata-go-static' = 'kata-static'): Promise<{ path: string; sha256: string }> {
  const root = join(dir, 'build-kata', `${asset}-${version}`);
  await rm(root, { recursive: true, force: true });
  for (const [path, entry] of Object.entries(kataReleaseTree(version, asset))) {
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    if (typeof entry === 'string') {
      await writeFile(target, entry);
      if (entry.startsWith('#!')) await chmod(target, 0o755);
    } else if ('link' in entry) {
      await symlink(entry.link, target);
    } else {
      await writeFile(target, (await readFile(join(scripts, entry.script), 'utf8')).replaceAll('@VERSION@', version));
      await chmod(target, 0o755);
    }
  }
  const path = kataReleasePath(version, 'amd64', asset);
  const file = join(dir, path);
  await mkdir(dirname(file), { recursive: true });
  const compress = kataStaticExtension(version) === 'tar.zst' ? '--zstd' : '--xz';
  await run('tar', ['--owner=0', '--group=0', '--numeric-owner', '--mode=u+rwX,go+rX,go-w', '--sort=name', '--mtime=2026-06-01 00:00Z', compress, '-C', root, '-cf', file, './opt']);
  await rm(join(dir, 'build-kata'), { recursive: true, force: true });
  return { path, sha256: createHash('sha256').update(await readFile(file)).digest('hex') };
}

/** One release as built: `kata-static`'s path and sha256, and every asset of the release (one, or the 4.1 pair). */
export interface BuiltKataRelease {
  path: string;
  sha256: string;
  assets: { asset: 'kata-static' | 'kata-go-static'; path: string; sha256: string }[];
}

/** Builds every release of {@link simulatedKataReleases}; returns version → its tarballs (also in `kata-releases.json`). */
export async function buildKataReleases(dir: string): Promise<Record<string, BuiltKataRelease>> {
  const built: Record<string, BuiltKataRelease> = {};
  for (const version of simulatedKataReleases) {
    const assets: BuiltKataRelease['assets'] = [];
    for (const asset of kataStaticAssets(version)) assets.push({ asset, ...(await buildKataRelease(dir, version, asset)) });
    built[version] = { path: assets[0].path, sha256: assets[0].sha256, assets };
  }
  await writeFile(join(dir, 'kata-releases.json'), `${JSON.stringify(built, null, 2)}\n`);
  return built;
}

/**
 * The shell command that installs `version` on a node by hand the way upstream's manual install does
 * (`KC@3.2.0:docs/install/container-manager/containerd/containerd-install.md`; kata-manager's `tar -C / -xvf`,
 * `KC@3.20.0:utils/kata-manager.sh`): the release tarball from the fleet's mirror extracted to `/`, so that
 * `/opt/kata` holds it, and `kata-runtime` and `containerd-shim-kata-v2` linked into `/usr/local/bin`. For tests
 * that need Kata on a node without a rollout; katafleet's own install is the release-tarball step.
 */
export function manualKataInstallCommand(mirrorPort: number, version = '3.32.0'): string {
  const url = `http://${mirrorHostName}:${mirrorPort}/${kataReleasePath(version, 'amd64')}`;
  const compress = kataStaticExtension(version) === 'tar.zst' ? '--zstd' : '--xz';
  return `curl -fsS ${url} | tar ${compress} -xf - -C / && ln -sf /opt/kata/bin/kata-runtime /opt/kata/bin/containerd-shim-kata-v2 /usr/local/bin/`;
}
