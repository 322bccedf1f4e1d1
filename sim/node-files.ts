// The files that make one simulated node what it is: pure builders for their contents, and
// `prepareNodeDir`, which lays them out in the node's directory before its first boot.
// sim/node/init.sh mounts them into the node's view; sim/README.md lists every one.
import { execFile } from 'node:child_process';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { dirname, join } from 'node:path';
import type { Fault } from './faults';

export type CpuVendor = 'intel' | 'amd';

/** Where in the node's directory each piece of the node's view lives (host paths). */
export function nodePaths(dir: string) {
  const etc = join(dir, 'overlay', 'etc', 'upper');
  return {
    dir,
    etc,
    fs: join(dir, 'fs'),
    run: join(dir, 'fs', 'run'),
    faults: join(dir, 'fs', 'run', 'katafleet-sim', 'faults'),
    services: join(dir, 'fs', 'run', 'katafleet-sim', 'services'),
    nodeEnv: join(dir, 'fs', 'run', 'katafleet-sim', 'node.env'),
    ready: join(dir, 'fs', 'run', 'katafleet-sim', 'ready'),
    containerdSocket: join(dir, 'fs', 'run', 'containerd', 'containerd.sock'),
    kvm: join(dir, 'fs', 'dev', 'kvm'),
    cpuinfo: join(dir, 'proc', 'cpuinfo'),
    hosts: join(etc, 'hosts'),
    sshdConfig: join(etc, 'ssh', 'sshd_config'),
    hostKey: join(etc, 'ssh', 'ssh_host_ed25519_key'),
    /** The key sshd normally presents, kept outside the node's view (for host-key-changed off). */
    originalHostKey: join(dir, 'keys', 'ssh_host_ed25519_key'),
    changedHostKey: join(dir, 'keys', 'changed_ssh_host_ed25519_key'),
    containerdConfig: join(etc, 'containerd', 'config.toml'),
    log: join(dir, 'init.log'),
  };
}
export type NodePaths = ReturnType<typeof nodePaths>;

/** The package mirror's name in every node's /etc/hosts; the fleet serves it on 127.0.0.1. */
export const mirrorHostName = 'packages.katafleet.test';
/** Where the mirror's name points while package-repo-unreachable is on: a loopback address nothing listens on. */
const unreachableAddress = '127.254.0.1';

export function hostsFile(name: string, address: string, repoUnreachable: boolean): string {
  return [
    '127.0.0.1\tlocalhost',
    `${address}\t${name}`,
    '::1\tlocalhost ip6-localhost ip6-loopback',
    `${repoUnreachable ? unreachableAddress : '127.0.0.1'}\t${mirrorHostName}`,
    '',
  ].join('\n');
}

/** `rootLogin: false` for fleets whose login user is a sudo user: root cannot log in, as on hardened hosts. */
export function sshdConfig(o: { name: string; address: string; port: number; maxSessions: number; rootLogin: boolean }): string {
  return `# sshd of simulated node ${o.name} (written by sim/node-files.ts)
ListenAddress ${o.address}:${o.port}
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin ${o.rootLogin ? 'prohibit-password' : 'no'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
MaxSessions ${o.maxSessions}
MaxStartups 200:30:400
UseDNS no
PrintMotd no
PidFile /run/sshd.pid
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
`;
}

/**
 * The machine's /proc/cpuinfo rewritten for the node: vendor as asked, and the virtualization flag
 * (vmx for Intel, svm for AMD) present or not.
 */
export function nodeCpuinfo(machineCpuinfo: string, vendor: CpuVendor, virtualization: boolean): string {
  const vendorId = vendor === 'intel' ? 'GenuineIntel' : 'AuthenticAMD';
  const virtFlag = vendor === 'intel' ? 'vmx' : 'svm';
  return machineCpuinfo
    .split('\n')
    .map((line) => {
      if (line.startsWith('vendor_id')) return `vendor_id\t: ${vendorId}`;
      if (line.startsWith('model name')) {
        return `model name\t: ${vendor === 'intel' ? 'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz' : 'AMD EPYC 7R13 Processor'}`;
      }
      if (!line.startsWith('flags')) return line;
      const [key, value = ''] = line.split(':');
      const flags = value.trim().split(/\s+/).filter((f) => f && f !== 'vmx' && f !== 'svm' && f !== 'hypervisor');
      if (virtualization) flags.splice(flags.indexOf('fpu') + 1, 0, virtFlag);
      for (const needed of ['lm', 'sse4_1']) if (!flags.includes(needed)) flags.push(needed);
      return `${key}: ${flags.join(' ')}`;
    })
    .join('\n');
}

export interface NodeEnv {
  NODE_NAME: string;
  NODE_ROLE: 'worker' | 'control-plane';
  NODE_ADDRESS: string;
  HOST_KERNEL: string;
  FLEET_DIR: string;
  SSH_USER: string;
  /** Replaces the node's /usr/bin/containerd (containerd 2.x nodes); empty = Debian's containerd. */
  CONTAINERD_BIN: string;
  /** Mounted at /usr/local/bin/kubectl (the control-plane host); empty = none. */
  KUBECTL_BIN: string;
  /** `absent`: the node has no /etc/containerd/config.toml (the machine's must not show through). */
  CONTAINERD_CONFIG: 'present' | 'absent';
  /** The lower layer of the node's /var: the machine's /var as it was at fleet start ({@link snapshotMachineVar}). */
  VAR_LOWER: string;
  /** The node's package manager: `apt` (Debian-like), `dnf` (Fedora-like) or `zypper` (openSUSE-like; sim/rpm-node.ts). */
  PACKAGE_MANAGER: 'apt' | 'dnf' | 'zypper';
}

export function nodeEnvFile(env: NodeEnv): string {
  return Object.entries(env)
    .map(([key, value]) => `${key}='${value.replace(/'/g, `'\\''`)}'`)
    .join('\n') + '\n';
}

export interface NodeDirContents {
  env: NodeEnv;
  port: number;
  maxSessions: number;
  cpuinfo: string;
  containerdConfig: string | null;
  authorizedKey: string;
  hostKey: { private: string; public: string };
  repoPort: number;
  faults: Fault[];
  kubeconfig?: string;
}

/**
 * The machine's /var as it is now, for the nodes' /var overlays, so that what the machine installs or logs later
 * (apt lists, the dpkg database) does not show through into running nodes. Hard links where the fleet directory
 * shares /var's file system (a file the machine replaces — dpkg, apt and most tools write a new file and rename it —
 * keeps its old content here; one it rewrites in place, such as an appended log, shows through), a copy otherwise.
 * `/var/tmp` is left out (an empty one, mode 1777). Returns `target`.
 */
export async function snapshotMachineVar(target: string): Promise<string> {
  await mkdir(target, { recursive: true });
  for (const entry of await readdir('/var')) {
    if (entry === 'tmp') continue;
    await promisify(execFile)('cp', ['-al', `/var/${entry}`, `${target}/`]).catch(() => promisify(execFile)('cp', ['-a', `/var/${entry}`, `${target}/`]));
  }
  await mkdir(join(target, 'tmp'), { recursive: true });
  await chmod(join(target, 'tmp'), 0o1777);
  return target;
}

/** Writes everything a node needs before its first boot into its (fresh) directory. */
export async function prepareNodeDir(dir: string, c: NodeDirContents): Promise<NodePaths> {
  const p = nodePaths(dir);
  const has = (fault: Fault) => c.faults.includes(fault);
  const write = async (file: string, content: string, mode = 0o644) => {
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, content, { mode });
  };
  for (const sub of ['overlay/etc/work', 'overlay/var/upper', 'overlay/var/work', 'overlay/usr/upper', 'overlay/usr/work', 'fs/tmp', 'fs/home', 'fs/opt',
    'fs/usr/local/bin', 'fs/var/lib/containerd', 'fs/sys/module', 'fs/dev', 'fs/run/containerd', 'fs/run/sshd',
    'fs/run/katafleet-sim/services', 'fs/run/katafleet-sim/faults', 'keys']) {
    await mkdir(join(dir, sub), { recursive: true });
  }
  // /tmp is world-writable with the sticky bit on every Debian/Ubuntu host (FHS 3.0 §3.18): apt verifies signatures as
  // its sandbox user _apt, whose apt-key writes /tmp/apt.conf.* (a 0755 /tmp made every signed repository "not signed").
  await chmod(join(dir, 'fs', 'tmp'), 0o1777);
  await mkdir(join(dir, 'fs', 'root'), { recursive: true, mode: 0o700 });
  await write(p.nodeEnv, nodeEnvFile(c.env));
  for (const fault of c.faults) await write(join(p.faults, fault), '');

  await write(p.cpuinfo, c.cpuinfo);
  await write(join(p.run, 'katafleet-sim', 'modules'), '');
  await write(join(dir, 'proc', 'sys', 'kernel', 'osrelease'), `${c.env.HOST_KERNEL}\n`);
  await write(join(dir, 'proc', 'version'),
    `Linux version ${c.env.HOST_KERNEL} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian ${c.env.HOST_KERNEL} (2025-05-01)\n`);

  await write(join(p.etc, 'hostname'), `${c.env.NODE_NAME}\n`);
  await write(p.hosts, hostsFile(c.env.NODE_NAME, c.env.NODE_ADDRESS, has('package-repo-unreachable')));
  await write(p.sshdConfig, sshdConfig({ name: c.env.NODE_NAME, address: c.env.NODE_ADDRESS, port: c.port,
    maxSessions: has('max-sessions-2') ? 2 : c.maxSessions, rootLogin: c.env.SSH_USER === 'root' }));
  await write(p.originalHostKey, c.hostKey.private, 0o600);
  await write(p.hostKey, c.hostKey.private, 0o600);
  await write(`${p.hostKey}.pub`, c.hostKey.public);
  if (c.containerdConfig !== null) await write(p.containerdConfig, c.containerdConfig);
  else await mkdir(dirname(p.containerdConfig), { recursive: true });
  await write(join(p.etc, 'crictl.yaml'), 'runtime-endpoint: unix:///run/containerd/containerd.sock\nimage-endpoint: unix:///run/containerd/containerd.sock\ntimeout: 10\n');
  await write(join(p.etc, 'apt', 'sources.list.d', 'katafleet-sim.list'),
    `# The fleet's package mirror (sim/packages.ts)\ndeb [trusted=yes] http://${mirrorHostName}:${c.repoPort}/ ./\n`);

  const home = join(dir, 'fs', 'root');
  await write(join(home, '.bashrc'), plainBashrc);
  await write(join(home, '.profile'), plainProfile);
  await mkdir(join(home, '.ssh'), { recursive: true, mode: 0o700 });
  await write(join(home, '.ssh', 'authorized_keys'), `${c.authorizedKey.trim()}\n`, 0o600);
  if (c.kubeconfig !== undefined) await write(join(home, '.kube', 'config'), c.kubeconfig, 0o600);
  return p;
}

// A plain Debian root profile: the machine's own ~/.bashrc (pyenv) would cost 0.6 s per SSH command.
const plainBashrc = `# ~/.bashrc of a simulated node: Debian's default for root.
[ -z "$PS1" ] && return
PS1='\${debian_chroot:+($debian_chroot)}\\h:\\w\\$ '
umask 022
`;
const plainProfile = `# ~/.profile of a simulated node: Debian's default for root.
if [ "$BASH" ]; then
  if [ -f ~/.bashrc ]; then
    . ~/.bashrc
  fi
fi
mesg n 2> /dev/null || true
`;
