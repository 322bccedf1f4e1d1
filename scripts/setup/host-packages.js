'use strict';
// What the simulated fleet (sim/) runs on this machine: OpenSSH, Debian's containerd 1.6 and runc, sudo,
// dpkg/apt (always there on Debian), crictl (to read each node's CRI), and containerd 2.x (so some nodes
// run config version 3). Debian packages come from apt; crictl and containerd 2.x are built once from the
// Go module proxy into ~/.cache/katafleet/bin. KATAFLEET_SKIP_CONTAINERD2=1 skips the containerd 2.x build
// (about 10 minutes on 2 cores); every node then runs containerd 1.6. Also Debian's postgresql, for the local
// Temporal cluster (`katafleet cluster up`), which runs its own instance: the package's system service never starts.
// And Debian's dnf, zypper, rpm (rpmbuild, rpmsign) and createrepo-c, for the Fedora-like and openSUSE-like nodes and
// the mirror's signed rpm-md repositories (sim/rpm-node.ts, sim/rpm-repo.ts).
const { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { cacheDir, run, runTimed } = require('./util.js');

const aptPackages = ['openssh-server', 'openssh-client', 'containerd', 'runc', 'sudo', 'util-linux', 'dpkg', 'apt', 'openssl', 'xz-utils', 'zstd', 'postgresql',
  'dnf', 'zypper', 'rpm', 'createrepo-c'];
const commands = ['/usr/sbin/sshd', '/usr/bin/ssh', '/usr/bin/ssh-keygen', '/usr/bin/containerd', '/usr/sbin/runc', '/usr/bin/sudo',
  '/usr/bin/unshare', '/usr/bin/setpriv', '/usr/bin/nsenter', '/usr/bin/dpkg-deb', '/usr/bin/openssl', '/usr/bin/xz', '/usr/bin/zstd',
  '/usr/bin/dnf', '/usr/bin/zypper', '/usr/bin/rpm', '/usr/bin/rpmbuild', '/usr/bin/rpmsign', '/usr/bin/createrepo_c'];

const binDir = join(cacheDir, 'bin');

/** Debian's PostgreSQL server: /usr/lib/postgresql/<major>/bin/initdb (the major version depends on the release). */
function postgresInstalled() {
  const base = '/usr/lib/postgresql';
  return existsSync(base) && readdirSync(base).some((major) => existsSync(join(base, major, 'bin', 'initdb')));
}
const crictl = { path: join(binDir, 'crictl'), module: 'sigs.k8s.io/cri-tools/cmd/crictl@v1.36.0', binary: 'crictl', expected: 'crictl' };
const containerd2 = {
  path: join(binDir, 'containerd-2'),
  module: 'github.com/containerd/containerd/v2/cmd/containerd@v2.2.9',
  binary: 'containerd',
  expected: 'containerd2',
  // No btrfs/devmapper/zfs snapshotters: they need C headers, and the fleet uses none of them.
  tags: 'no_btrfs,no_devmapper,no_zfs',
};
const skipContainerd2 = process.env.KATAFLEET_SKIP_CONTAINERD2 === '1';

function goBuilds() {
  return skipContainerd2 ? [crictl] : [crictl, containerd2];
}

async function goInstall({ path, module, binary, tags, expected }) {
  const gobin = join(binDir, `.gobin-${binary}`);
  rmSync(gobin, { recursive: true, force: true });
  mkdirSync(gobin, { recursive: true });
  await runTimed(`go install ${module}`, expected, 'go', ['install', ...(tags ? ['-tags', tags] : []), module], {
    env: { ...process.env, GOBIN: gobin, CGO_ENABLED: '0', GOFLAGS: '-buildvcs=false' },
  });
  renameSync(join(gobin, binary), path);
  rmSync(gobin, { recursive: true, force: true });
}

module.exports = {
  title: 'simulated fleet host packages (openssh-server, containerd, crictl, containerd 2.x, dnf, zypper, rpm, createrepo-c) and postgresql',
  async isInstalled() {
    return commands.every((c) => existsSync(c)) && postgresInstalled() && goBuilds().every((b) => existsSync(b.path));
  },
  async install() {
    if (!commands.every((c) => existsSync(c)) || !postgresInstalled()) {
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      // The machine's own sshd/containerd must not start: an sshd on *:22 would take every node's port.
      const policy = '/usr/sbin/policy-rc.d';
      const ownPolicy = !existsSync(policy);
      if (ownPolicy) writeFileSync(policy, '#!/bin/sh\n# katafleet setup: install services without starting them\nexit 101\n', { mode: 0o755 });
      try {
        run('apt-get', ['update', '-qq'], { env });
        run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...aptPackages], { env });
      } finally {
        if (ownPolicy) rmSync(policy, { force: true });
      }
    }
    mkdirSync(binDir, { recursive: true });
    for (const build of goBuilds()) if (!existsSync(build.path)) await goInstall(build);
  },
};
