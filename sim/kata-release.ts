// Kata Containers static release tarballs as upstream publishes them, for the fleet's mirror: the asset
// names, compression and member layout of github.com/kata-containers/kata-containers releases (sources in
// sim/README.md, "Kata release tarballs"); the binaries inside are the simulator's (sim/node/packages).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const scripts = join(__dirname, 'node', 'packages');

/** The guest kernel inside the simulated release tarballs (name form of `KC@3.20.0:tools/packaging/kernel/build-kernel.sh`). */
export const releaseGuestKernel = '6.12.47-kata';

/** The Kata releases the mirror serves: below 3.21 as `.tar.xz`, from 3.21 as `.tar.zst` (KATA.md §1.1). */
export const simulatedKataReleases = ['3.20.0', '3.31.0', '3.32.0'] as const;

/** Upstream's asset name: `kata-static-<version>-<arch>.tar.xz`, `.tar.zst` from 3.21.0 (commit ad240a39e6). */
export function kataStaticAssetName(version: string, arch: string): string {
  return `kata-static-${version}-${arch}.${kataStaticExtension(version)}`;
}

/** `tar.zst` from 3.21.0, `tar.xz` before (KC@3.21.0:tools/packaging/release/release.sh). */
export function kataStaticExtension(version: string): 'tar.xz' | 'tar.zst' {
  const [major, minor] = version.split('.').map((part) => Number.parseInt(part, 10));
  return major > 3 || (major === 3 && minor >= 21) ? 'tar.zst' : 'tar.xz';
}

/** Where GitHub serves a release asset, relative to https://github.com/: the mirror keeps the same path. */
export function kataReleasePath(version: string, arch: string): string {
  return `kata-containers/kata-containers/releases/download/${version}/${kataStaticAssetName(version, arch)}`;
}

type Entry = string | { link: string } | { script: string };

/**
 * The members of `kata-static-<version>-amd64` under `./opt/kata/`, upstream's paths (KATA.md §1.2): the Go
 * shim and kata-runtime in bin/, the Rust shim under runtime-rs/bin/ with the same name, the Go configs with
 * `configuration.toml` → `configuration-qemu.toml`, runtime-rs configs in their own directory (3.3.0+), the
 * guest kernel and image with their `.container`/`.img` links. `guest-kernel-version` is the simulator's
 * own file: what a pod of this runtime answers to `uname -r`.
 */
export function kataReleaseTree(version: string): Record<string, Entry> {
  const config = (hypervisor: string) => `# Kata Containers ${version} configuration-${hypervisor}.toml (simulated by katafleet)\n` +
    `[hypervisor.${hypervisor}]\npath = "/opt/kata/bin/qemu-system-x86_64"\nkernel = "/opt/kata/share/kata-containers/vmlinux.container"\n` +
    'image = "/opt/kata/share/kata-containers/kata-containers.img"\n\n[runtime]\ninternetworking_model = "tcfilter"\n';
  return {
    'opt/kata/bin/kata-runtime': { script: 'kata-runtime' },
    'opt/kata/bin/containerd-shim-kata-v2': { script: 'containerd-shim-kata-v2' },
    'opt/kata/bin/kata-collect-data.sh': '#!/bin/sh\necho "kata-collect-data.sh of the simulated fleet collects nothing" >&2\n',
    'opt/kata/runtime-rs/bin/containerd-shim-kata-v2': { script: 'containerd-shim-kata-v2' },
    'opt/kata/share/defaults/kata-containers/configuration-qemu.toml': config('qemu'),
    'opt/kata/share/defaults/kata-containers/configuration-clh.toml': config('clh'),
    'opt/kata/share/defaults/kata-containers/configuration-fc.toml': config('fc'),
    'opt/kata/share/defaults/kata-containers/configuration.toml': { link: 'configuration-qemu.toml' },
    'opt/kata/share/defaults/kata-containers/runtime-rs/configuration-dragonball.toml': config('dragonball'),
    'opt/kata/share/defaults/kata-containers/runtime-rs/configuration-qemu-runtime-rs.toml': config('qemu'),
    [`opt/kata/share/kata-containers/vmlinux-${releaseGuestKernel}`]: `simulated guest kernel ${releaseGuestKernel}\n`,
    'opt/kata/share/kata-containers/vmlinux.container': { link: `vmlinux-${releaseGuestKernel}` },
    'opt/kata/share/kata-containers/kata-ubuntu-noble.image': 'simulated guest image\n',
    'opt/kata/share/kata-containers/kata-containers.img': { link: 'kata-ubuntu-noble.image' },
    'opt/kata/share/kata-containers/guest-kernel-version': `${releaseGuestKernel}\n`,
    'opt/kata/share/bash-completion/completions/kata-runtime': '# bash completion for kata-runtime (simulated)\n',
  };
}

/**
 * Builds `kata-static-<version>-amd64.tar.{xz,zst}` under `dir` at GitHub's path and returns
 * release path → sha256 (hex). Members are `./opt/kata/...`, owned by root, as upstream's.
 */
export async function buildKataRelease(dir: string, version: string): Promise<{ path: string; sha256: string }> {
  const root = join(dir, 'build-kata', version);
  await rm(root, { recursive: true, force: true });
  for (const [path, entry] of Object.entries(kataReleaseTree(version))) {
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
  const path = kataReleasePath(version, 'amd64');
  const file = join(dir, path);
  await mkdir(dirname(file), { recursive: true });
  const compress = kataStaticExtension(version) === 'tar.zst' ? '--zstd' : '--xz';
  await run('tar', ['--owner=0', '--group=0', '--numeric-owner', '--sort=name', '--mtime=2026-06-01 00:00Z', compress, '-C', root, '-cf', file, './opt']);
  await rm(join(dir, 'build-kata'), { recursive: true, force: true });
  return { path, sha256: createHash('sha256').update(await readFile(file)).digest('hex') };
}

/** Builds every release of {@link simulatedKataReleases}; returns version → { path, sha256 }. */
export async function buildKataReleases(dir: string): Promise<Record<string, { path: string; sha256: string }>> {
  const built: Record<string, { path: string; sha256: string }> = {};
  for (const version of simulatedKataReleases) built[version] = await buildKataRelease(dir, version);
  await writeFile(join(dir, 'kata-releases.json'), `${JSON.stringify(built, null, 2)}\n`);
  return built;
}
