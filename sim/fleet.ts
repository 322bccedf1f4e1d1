/**
 * The simulated fleet: test hosts on this machine that behave like Kubernetes nodes over SSH.
 * Each node is a real OpenSSH server on its own loopback address, in its own mount/PID/UTS
 * namespaces, with a real containerd, a real apt/dpkg against the fleet's package mirror, and
 * fault switches. sim/README.md says exactly what is real and what is simulated.
 *
 * @example
 * const fleet = await startFleet({ nodes: 3, faults: { 'node-2': ['no-virtualization'] } });
 * // ssh -i fleet.identityFile -o UserKnownHostsFile=fleet.knownHostsPath root@fleet.nodes[0].address
 * await fleet.stop();
 */
import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { alive, leaseAddresses, releaseAddresses } from './addresses';
import { kubernetesBinaries, startControlPlane } from './control-plane';
import { faultNames, parseFault, type Fault } from './faults';
import { credentialsToml, inventoryToml } from './inventory';
import {
  hostsFile,
  nodeCpuinfo,
  nodePaths,
  prepareNodeDir,
  sshdConfig,
  type CpuVendor,
} from './node-files';
import { readNodeRuntimeState } from './node-state';
import type { SimNode } from './sim-node';
import { buildPackageRepository, servePackageRepository } from './packages';
import { prepareRpmNode, type NodePackageManager } from './rpm-node';
import { buildRpmRepositories, type RpmRepositories } from './rpm-repo';
import { snapshotMachineVar } from './node-files';
import { containerd2Path, crictlPath, nodeProcessEnv } from './tools';

export { containerd2Path, crictlPath, nodeProcessEnv } from './tools';

export type { Fault } from './faults';
export type { SimNode } from './sim-node';

const run = promisify(execFile);

/** How one node should look; everything is optional. */
export interface NodeSpec {
  name?: string;
  address?: string;
  /** @default "6.1.0-katafleet-sim" */
  hostKernel?: string;
  /** @default "intel" */
  cpuVendor?: CpuVendor;
  /** @default "1.6", except every third node ("2") when containerd 2.x is installed */
  containerd?: '1.6' | '2';
  /** The node's /etc/containerd/config.toml; `null` = the node has no config file. @default that containerd's `config default` with SystemdCgroup = true */
  containerdConfig?: string | null;
  labels?: Record<string, string>;
  /** How many alias addresses the host's sshd also answers on ({@link SimNode.aliases}). @default 0 */
  aliases?: number;
  /**
   * The node's package manager: `dnf` makes a Fedora 40-like node, `zypper` an openSUSE Leap 15.6-like one (no apt,
   * dpkg; the mirror's signed rpm-md repositories, sim/rpm-repo.ts). @default "apt"
   */
  packageManager?: NodePackageManager;
}

export interface FleetOptions {
  /** A count (nodes node-1 … node-N) or one spec per node. */
  nodes: number | NodeSpec[];
  /** Fault switches on at start, by node name. */
  faults?: Record<string, Fault[]>;
  /** Where everything lives. @default `.katafleet/sim` in the repository */
  dir?: string;
  /** Start a Kubernetes control plane (sim/control-plane.ts) and an SSH host `control-plane` with kubectl. @default false */
  kubernetes?: boolean;
  /** Login user: root, or a user with passwordless sudo created on every node. @default "root" */
  sshUser?: 'root' | string;
  /** @default 22 */
  port?: number;
  /** sshd MaxSessions (fault max-sessions-2 lowers it to 2). @default 10 */
  maxSessions?: number;
  /** Progress lines; default: silent. */
  log?: (line: string) => void;
}

export interface Fleet {
  dir: string;
  inventoryPath: string;
  knownHostsPath: string;
  identityFile: string;
  nodes: SimNode[];
  controlPlane?: { kubeconfig: string; host?: SimNode };
  /**
   * The package mirror on 127.0.0.1: its port and the directory it serves (the apt repository, and the Kata
   * release tarballs at GitHub's paths, with their sha256 in `kata-releases.json`; see sim/kata-release.ts).
   */
  mirror: { port: number; dir: string };
  /** Turns a fault switch on or off on a running node. */
  setFault(node: string, fault: Fault, on: boolean): Promise<void>;
  /** The fault switches currently on for a node. */
  faultsOf(node: string): Promise<Fault[]>;
  /** Stops every process of the fleet and removes its directory; leaves no process, mount or lease behind. */
  stop(): Promise<void>;
}

/** A tool the fleet needs is not installed. */
export class FleetPrerequisiteMissing extends Error {
  override readonly name = 'FleetPrerequisiteMissing';
}
/** A node did not come up; the message carries the end of its log. */
export class NodeStartFailed extends Error {
  override readonly name = 'NodeStartFailed';
}
/** A fleet is already running in that directory. */
export class FleetAlreadyRunning extends Error {
  override readonly name = 'FleetAlreadyRunning';
}
export class UnknownNode extends Error {
  override readonly name = 'UnknownNode';
}

const repoRoot = resolve(__dirname, '..');
export const defaultFleetDir = join(repoRoot, '.katafleet', 'sim');
export const defaultHostKernel = '6.1.0-katafleet-sim';
const nodeStartTimeoutMs = 90_000;

interface NodeRecord extends SimNode {
  /** Host PID of `unshare` (killing it kills the node). */
  pid: number;
  /** Host PID of the node's PID 1 (for nsenter). */
  initPid: number;
  /** sshd MaxSessions the fleet was started with (restored when max-sessions-2 is switched off). */
  maxSessions: number;
}

/** What a running fleet writes to `<dir>/fleet.json`, so that `katafleet sim down` finds it. */
export interface FleetRecord {
  dir: string;
  /** Process that started the fleet; the nodes die with it. */
  ownerPid: number;
  inventoryPath: string;
  knownHostsPath: string;
  identityFile: string;
  repoPort: number;
  nodes: NodeRecord[];
  addresses: string[];
  kubeconfig?: string;
}

async function which(command: string): Promise<boolean> {
  for (const dir of nodeProcessEnv.PATH.split(':')) if (existsSync(join(dir, command))) return true;
  return false;
}

async function checkPrerequisites(): Promise<void> {
  const missing: string[] = [];
  for (const command of ['sshd', 'ssh-keygen', 'containerd', 'unshare', 'setpriv', 'nsenter', 'dpkg-deb', 'apt-get', 'mknod']) {
    if (!(await which(command))) missing.push(command);
  }
  if (!existsSync(crictlPath)) missing.push(crictlPath);
  if (missing.length > 0) {
    throw new FleetPrerequisiteMissing(`the simulated fleet needs ${missing.join(', ')}: run \`npm run setup\` (scripts/setup/host-packages.js installs them)`);
  }
  if (process.getuid?.() !== 0) throw new FleetPrerequisiteMissing('the simulated fleet needs root (mount namespaces, sshd on port 22): run it as root');
}

async function sshKeygen(file: string, comment: string): Promise<{ private: string; public: string }> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
  const keys = { private: await readFile(file, 'utf8'), public: (await readFile(`${file}.pub`, 'utf8')).trim() };
  return keys;
}

async function containerdDefaultConfig(binary: string): Promise<string> {
  const { stdout } = await run(binary, ['config', 'default'], { env: nodeProcessEnv, maxBuffer: 4 << 20 });
  // Kubernetes nodes (kubeadm's guide) run runc with the systemd cgroup driver.
  return stdout.replace(/SystemdCgroup = false/g, 'SystemdCgroup = true');
}

/** Host PID of the only child of `pid` (unshare's forked child = the node's PID 1). */
async function childOf(pid: number): Promise<number | undefined> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) return Number(entry);
  }
  return undefined;
}

async function tail(file: string, lines = 15): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Runs a command inside a running node's namespaces (as the node's root, outside SSH). */
export async function nodeExec(initPid: number, argv: string[]): Promise<{ stdout: string; stderr: string }> {
  return run('nsenter', ['--target', String(initPid), '--mount', '--pid', '--uts', '--', ...argv], {
    env: nodeProcessEnv,
    timeout: 30_000,
  });
}

interface HostSpec {
  name: string;
  address?: string;
  role: SimNode['role'];
  hostKernel: string;
  cpuVendor: CpuVendor;
  containerd: '1.6' | '2';
  /** undefined = the default config of the node's containerd; null = no file. */
  containerdConfig: string | null | undefined;
  labels: Record<string, string>;
  aliases: number;
  packageManager: NodePackageManager;
}

function hostSpecs(nodes: number | NodeSpec[], containerd2: boolean, kubernetes: boolean): HostSpec[] {
  const specs: NodeSpec[] = typeof nodes === 'number' ? Array.from({ length: nodes }, () => ({})) : nodes;
  if (specs.length < 1) throw new RangeError('startFleet: nodes must be at least 1');
  const hosts: HostSpec[] = specs.map((spec, i) => ({
    name: spec.name ?? `node-${i + 1}`,
    address: spec.address,
    role: 'worker',
    hostKernel: spec.hostKernel ?? defaultHostKernel,
    cpuVendor: spec.cpuVendor ?? 'intel',
    containerd: spec.containerd ?? (containerd2 && i % 3 === 2 ? '2' : '1.6'),
    containerdConfig: spec.containerdConfig,
    labels: spec.labels ?? {},
    aliases: spec.aliases ?? 0,
    packageManager: spec.packageManager ?? 'apt',
  }));
  if (kubernetes) {
    hosts.push({ name: 'control-plane', role: 'control-plane', hostKernel: defaultHostKernel, cpuVendor: 'intel',
      containerd: '1.6', containerdConfig: null, labels: {}, aliases: 0, packageManager: 'apt' });
  }
  if (new Set(hosts.map((h) => h.name)).size !== hosts.length) throw new RangeError('startFleet: node names must be unique');
  return hosts;
}

/** Starts a fleet and waits until every node answers (sshd up, containerd started). */
export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const log = options.log ?? (() => undefined);
  const dir = resolve(options.dir ?? defaultFleetDir);
  const port = options.port ?? 22;
  const sshUser = options.sshUser ?? 'root';
  const started = Date.now();
  await checkPrerequisites();
  await assertNoFleetIn(dir);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o700 });

  const hasContainerd2 = existsSync(containerd2Path);
  const hosts = hostSpecs(options.nodes, hasContainerd2, Boolean(options.kubernetes));
  const names = hosts.map((h) => h.name);
  const faultsByNode = new Map<string, Fault[]>();
  for (const [node, list] of Object.entries(options.faults ?? {})) {
    if (!names.includes(node)) throw new UnknownNode(`startFleet faults: no node "${node}" in this fleet (nodes: ${names.join(', ')})`);
    faultsByNode.set(node, list.map((f) => parseFault(f, `startFleet faults["${node}"]`)));
  }
  const missing2 = hosts.find((h) => h.containerd === '2' && !hasContainerd2);
  if (missing2) {
    throw new FleetPrerequisiteMissing(`node ${missing2.name} asks for containerd 2 but ${containerd2Path} is missing: run \`npm run setup\``);
  }

  const rpmTools = hosts.some((h) => h.packageManager !== 'apt') ? ['rpm', 'rpmbuild', 'rpmsign', 'createrepo_c', 'dnf', 'zypper'] : [];
  const missingRpm = [];
  for (const command of rpmTools) if (!(await which(command))) missingRpm.push(command);
  if (missingRpm.length > 0) {
    throw new FleetPrerequisiteMissing(`dnf and zypper nodes need ${missingRpm.join(', ')}: run \`npm run setup\` (scripts/setup/host-packages.js installs them)`);
  }

  const mainAddresses = await leaseAddresses(hosts.map((h) => h.address), port, dir);
  const aliasLeases = await leaseAddresses(Array.from({ length: hosts.reduce((sum, h) => sum + h.aliases, 0) }, () => undefined), port, dir).catch(async (err: unknown) => {
    await releaseAddresses(mainAddresses);
    throw err;
  });
  const addresses = [...mainAddresses, ...aliasLeases];
  const aliasesOf = hosts.map((_, i) => aliasLeases.slice(hosts.slice(0, i).reduce((sum, before) => sum + before.aliases, 0), hosts.slice(0, i + 1).reduce((sum, before) => sum + before.aliases, 0)));
  const records: NodeRecord[] = [];
  let repo: Awaited<ReturnType<typeof servePackageRepository>> | undefined;
  let controlPlane: { kubeconfig: string; stop(): Promise<void> } | undefined;

  const stopAll = async () => {
    await killNodes(records);
    await repo?.close();
    await controlPlane?.stop();
    await releaseAddresses(addresses);
  };

  try {
    const identityFile = join(dir, 'id_ed25519');
    const [clientKey, repoBuilt, config16, config2] = await Promise.all([
      sshKeygen(identityFile, 'katafleet-sim'),
      buildPackageRepository(join(dir, 'repo')),
      containerdDefaultConfig('containerd'),
      hasContainerd2 ? containerdDefaultConfig(containerd2Path) : Promise.resolve(''),
      installNodeCommands(join(dir, 'sbin')),
    ]);
    // The RPM-family repositories only when a node uses them (three rpmbuilds, two RSA keys: 3 to 8 s at load 25).
    const rpmRepos: RpmRepositories | undefined = hosts.some((h) => h.packageManager !== 'apt') ? await buildRpmRepositories(repoBuilt.dir) : undefined;
    repo = await servePackageRepository(repoBuilt.dir);
    const varSnapshot = await snapshotMachineVar(join(dir, 'var-snapshot'));
    log(`package mirror on 127.0.0.1:${repo.port}`);

    let kubectlBin = '';
    if (options.kubernetes) {
      kubectlBin = join(kubernetesBinaries().binDir, 'kubectl');
      if (!existsSync(kubectlBin)) {
        throw new FleetPrerequisiteMissing(`kubernetes: true needs ${kubectlBin} (built by scripts/setup/kubernetes.js): run \`npm run setup\``);
      }
    }

    await Promise.all(
      hosts.map(async (host, i) => {
        const role = host.role;
        const nodeDir = join(dir, 'nodes', host.name);
        await mkdir(join(nodeDir, 'keys'), { recursive: true });
        const hostKey = await sshKeygen(join(nodeDir, 'keys', 'generated'), `${host.name}-host-key`);
        const nodeFaults = faultsByNode.get(host.name) ?? [];
        const machineCpuinfo = await readFile('/proc/cpuinfo', 'utf8');
        const isWorker = role === 'worker';
        const defaultConfig = host.containerd === '2' ? config2 : config16;
        const containerdConfig = !isWorker ? null : host.containerdConfig === undefined ? defaultConfig : host.containerdConfig;
        const paths = await prepareNodeDir(nodeDir, {
          env: {
            NODE_NAME: host.name,
            NODE_ROLE: role,
            NODE_ADDRESS: addresses[i],
            HOST_KERNEL: host.hostKernel,
            FLEET_DIR: dir,
            SSH_USER: sshUser,
            CONTAINERD_BIN: isWorker && host.containerd === '2' ? containerd2Path : '',
            KUBECTL_BIN: role === 'control-plane' ? kubectlBin : '',
            CONTAINERD_CONFIG: containerdConfig === null ? 'absent' : 'present',
            VAR_LOWER: varSnapshot,
            PACKAGE_MANAGER: host.packageManager,
          },
          port,
          maxSessions: options.maxSessions ?? 10,
          cpuinfo: nodeCpuinfo(machineCpuinfo, host.cpuVendor, !nodeFaults.includes('no-virtualization')),
          containerdConfig,
          authorizedKey: clientKey.public,
          hostKey,
          repoPort: repo!.port,
          faults: nodeFaults,
        });
        if (host.packageManager !== 'apt') await prepareRpmNode(paths.etc, host.packageManager, repo!.port, rpmRepos!);
        if (nodeFaults.includes('host-key-changed')) await writeChangedHostKey(paths);
        await writeAliasSshdConfigs(paths.sshdConfig, aliasesOf[i], port);
        if (isWorker) await setKvmDevice(paths.kvm, !nodeFaults.includes('no-virtualization') && !nodeFaults.includes('no-kvm-device'));
        const record = await spawnNode(nodeDir, paths.log);
        records.push({
          name: host.name,
          address: addresses[i],
          role,
          dir: nodeDir,
          containerdSocket: paths.containerdSocket,
          hostKernel: host.hostKernel,
          port,
          labels: host.labels,
          containerd: isWorker ? host.containerd : '',
          cpuVendor: host.cpuVendor,
          aliases: aliasesOf[i],
          packageManager: host.packageManager,
          maxSessions: options.maxSessions ?? 10,
          ...record,
        });
      }),
    );
    await waitUntilReady(records);
    await Promise.all(records.map((record) => startAliasSshds(record)));
    for (const record of records) {
      if ((faultsByNode.get(record.name) ?? []).includes('sshd-frozen')) await applyFault(record, 'sshd-frozen', true);
    }
    records.sort((a, b) => hosts.findIndex((h) => h.name === a.name) - hosts.findIndex((h) => h.name === b.name));
    log(`${records.length} nodes up in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const workers = records.filter((r) => r.role === 'worker');
    const cpHost = records.find((r) => r.role === 'control-plane');
    if (options.kubernetes && cpHost) {
      const cp = await startControlPlane({ dir: join(dir, 'kubernetes'), nodes: workers.map(publicNode), readNodeRuntimeState, log });
      controlPlane = cp;
      const kubeconfigDir = join(cpHost.dir, 'fs', 'root', '.kube');
      await mkdir(kubeconfigDir, { recursive: true });
      await copyFile(cp.kubeconfig, join(kubeconfigDir, 'config'));
      await chmod(join(kubeconfigDir, 'config'), 0o600);
    }

    const knownHostsPath = join(dir, 'known_hosts');
    const knownHosts = await Promise.all(
      records.map(async (r) => {
        const key = (await readFile(join(r.dir, 'keys', 'generated.pub'), 'utf8')).trim().split(' ').slice(0, 2).join(' ');
        return [r.address, ...r.aliases].map((address) => `${port === 22 ? address : `[${address}]:${port}`} ${key}`).join('\n');
      }),
    );
    await writeFile(knownHostsPath, knownHosts.join('\n') + '\n');
    const inventoryPath = join(dir, 'inventory.toml');
    await writeFile(join(dir, 'credentials.toml'), credentialsToml({ dir, user: sshUser, identityFile, knownHostsPath }), { mode: 0o600 });
    await writeFile(inventoryPath, inventoryToml({ dir, port, nodes: records, kubernetes: Boolean(cpHost) }));
    const record: FleetRecord = {
      dir, ownerPid: process.pid, inventoryPath, knownHostsPath, identityFile, repoPort: repo.port, nodes: records, addresses,
      kubeconfig: controlPlane?.kubeconfig,
    };
    await writeFile(join(dir, 'fleet.json'), JSON.stringify(record, null, 2));

    let stopped: Promise<void> | undefined;
    return {
      dir,
      inventoryPath,
      knownHostsPath,
      identityFile,
      mirror: { port: repo.port, dir: repoBuilt.dir },
      nodes: records.map(publicNode),
      controlPlane: controlPlane ? { kubeconfig: controlPlane.kubeconfig, host: cpHost && publicNode(cpHost) } : undefined,
      setFault: async (node, fault, on) => applyFault(findNode(records, node), parseFault(fault, 'setFault'), on),
      faultsOf: async (node) => currentFaults(findNode(records, node)),
      stop: () => {
        stopped ??= (async () => {
          await stopAll();
          await rm(dir, { recursive: true, force: true });
        })();
        return stopped;
      },
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

function publicNode(r: NodeRecord): SimNode {
  return {
    name: r.name, address: r.address, role: r.role, dir: r.dir, containerdSocket: r.containerdSocket,
    hostKernel: r.hostKernel, port: r.port, labels: r.labels, containerd: r.containerd, cpuVendor: r.cpuVendor, aliases: r.aliases,
    packageManager: r.packageManager ?? 'apt',
  };
}

/**
 * OpenSSH's sshd listens on at most 16 addresses (MAX_LISTEN_SOCKS in openssh-portable sshd.c), so a host's
 * aliases are served by extra sshd daemons in the node, 16 addresses each: `sshd_config.alias-N`, the node's
 * own config with its ListenAddress and PidFile replaced.
 */
const aliasesPerSshd = 16;

async function writeAliasSshdConfigs(mainConfig: string, aliases: string[], port: number): Promise<void> {
  const base = (await readFile(mainConfig, 'utf8')).split('\n').filter((line) => !/^(ListenAddress|PidFile)\b/.test(line));
  for (let start = 0, n = 0; start < aliases.length; start += aliasesPerSshd, n++) {
    const listen = aliases.slice(start, start + aliasesPerSshd).map((address) => `ListenAddress ${address}:${port}`);
    await writeFile(`${mainConfig}.alias-${n}`, [...listen, `PidFile /run/sshd-alias-${n}.pid`, ...base].join('\n'));
  }
}

/**
 * Starts the alias sshds of a node (they daemonize inside the node, and die with it), and checks that each bound
 * every address it was given. sshd goes on when a ListenAddress cannot be bound ("Bind to port P on A failed",
 * `listen_on_addrs` in openssh-portable sshd.c, V_9_2_P1) and only fails when none is: a name on an address held by
 * another program would then be answered by that program's sshd, with another host key (`HostKeyMismatch`).
 */
async function startAliasSshds(record: NodeRecord): Promise<void> {
  for (let n = 0; n * aliasesPerSshd < record.aliases.length; n++) {
    const log = `/var/log/ssh-alias-${n}.log`;
    await nodeExec(record.initPid, ['/usr/sbin/sshd', '-f', `/etc/ssh/sshd_config.alias-${n}`, '-E', log]);
    // sshd binds before it daemonizes, so its log already says which addresses it listens on.
    const { stdout } = await nodeExec(record.initPid, ['cat', log]);
    const notBound = record.aliases.slice(n * aliasesPerSshd, (n + 1) * aliasesPerSshd).filter((address) => !stdout.includes(`Server listening on ${address} port ${record.port}.`));
    if (notBound.length > 0) throw new AliasAddressTaken(aliasNotBoundMessage(record.name, notBound, record.port, stdout));
  }
}

/** Another program (another fleet's sshd, most likely) listens on an alias address the fleet had leased. */
export class AliasAddressTaken extends Error {
  override readonly name = 'AliasAddressTaken';
}

/** The message of {@link AliasAddressTaken}: the addresses, what sshd said, and the fix. */
export function aliasNotBoundMessage(node: string, addresses: string[], port: number, sshdLog: string): string {
  const said = sshdLog.split('\n').filter((line) => /Bind to port|Cannot bind/.test(line)).slice(0, 3).join('; ');
  return `node ${node}: its alias sshd could not listen on ${addresses.map((a) => `${a}:${port}`).join(', ')}` +
    ` (${said || 'no "Server listening" line in its log'}): another program holds the address although the fleet leased it.` +
    ` Find it with \`ss -ltnp 'sport = :${port}'\`, stop it (\`katafleet sim down\` for another fleet), and start the fleet again`;
}

function findNode(records: NodeRecord[], name: string): NodeRecord {
  const record = records.find((r) => r.name === name);
  if (!record) throw new UnknownNode(`no node "${name}" in this fleet (nodes: ${records.map((r) => r.name).join(', ')})`);
  return record;
}

/** Copies the node commands (sim/node/sbin) and crictl into the fleet's sbin, mounted at /usr/local/sbin. */
async function installNodeCommands(sbin: string): Promise<void> {
  const source = join(__dirname, 'node', 'sbin');
  await mkdir(sbin, { recursive: true });
  for (const entry of await readdir(source)) {
    await copyFile(join(source, entry), join(sbin, entry));
    await chmod(join(sbin, entry), 0o755);
  }
  await copyFile(crictlPath, join(sbin, 'crictl'));
  await chmod(join(sbin, 'crictl'), 0o755);
  await copyFile(join(__dirname, 'node', 'init.sh'), join(sbin, '.init'));
}

async function spawnNode(nodeDir: string, logFile: string): Promise<{ pid: number; initPid: number }> {
  const fd = openSync(logFile, 'a');
  const child = spawn(
    'setpriv',
    ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--pid', '--uts', '--fork', '--kill-child', '--mount-proc',
      'bash', join(nodeDir, '..', '..', 'sbin', '.init'), nodeDir],
    { detached: true, stdio: ['ignore', fd, fd], env: nodeProcessEnv },
  );
  closeSync(fd);
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new NodeStartFailed(`could not start unshare for ${nodeDir}`);
  for (let i = 0; i < 200; i++) {
    const initPid = await childOf(pid);
    if (initPid !== undefined) return { pid, initPid };
    if (!alive(pid)) break;
    await sleep(10);
  }
  throw new NodeStartFailed(`node in ${nodeDir} did not start; its log ${logFile} ends with:\n${await tail(logFile)}`);
}

async function waitUntilReady(records: NodeRecord[]): Promise<void> {
  const deadline = Date.now() + nodeStartTimeoutMs;
  const pending = new Set(records);
  while (pending.size > 0) {
    for (const r of pending) {
      if (existsSync(nodePaths(r.dir).ready)) pending.delete(r);
      else if (!alive(r.initPid)) {
        throw new NodeStartFailed(`node ${r.name} (${r.address}) exited while starting; ${nodePaths(r.dir).log} ends with:\n${await tail(nodePaths(r.dir).log)}`);
      }
    }
    if (pending.size === 0) break;
    if (Date.now() > deadline) {
      const r = [...pending][0];
      throw new NodeStartFailed(`node ${r.name} not ready after ${nodeStartTimeoutMs / 1000} s; ${nodePaths(r.dir).log} ends with:\n${await tail(nodePaths(r.dir).log)}`);
    }
    await sleep(50);
  }
}

async function killNodes(records: Pick<NodeRecord, 'pid' | 'initPid'>[]): Promise<void> {
  for (const r of records) {
    for (const pid of [r.pid, r.initPid]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  const deadline = Date.now() + 10_000;
  while (records.some((r) => alive(r.pid) || alive(r.initPid)) && Date.now() < deadline) await sleep(20);
}

async function setKvmDevice(path: string, present: boolean): Promise<void> {
  if (present) {
    if (!existsSync(path)) await run('mknod', ['-m', '660', path, 'c', '10', '232']);
  } else {
    await unlink(path).catch(() => undefined);
  }
}

async function writeChangedHostKey(paths: ReturnType<typeof nodePaths>): Promise<void> {
  if (!existsSync(paths.changedHostKey)) {
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'changed-host-key', '-f', paths.changedHostKey]);
  }
  await writeFile(paths.hostKey, await readFile(paths.changedHostKey));
  await writeFile(`${paths.hostKey}.pub`, await readFile(`${paths.changedHostKey}.pub`));
}

async function currentFaults(node: NodeRecord): Promise<Fault[]> {
  const present = await readdir(nodePaths(node.dir).faults).catch(() => [] as string[]);
  return faultNames.filter((f) => present.includes(f));
}

/** The settings of the node's current sshd_config that a rewrite must keep. */
async function currentSshdSettings(node: NodeRecord): Promise<{ port: number; rootLogin: boolean }> {
  const config = await readFile(nodePaths(node.dir).sshdConfig, 'utf8');
  return {
    port: Number(/^ListenAddress .*:(\d+)$/m.exec(config)?.[1] ?? 22),
    rootLogin: !/^PermitRootLogin no$/m.test(config),
  };
}

/** Turns one fault switch on or off on a running node (the file the node's commands read, plus its effect). */
async function applyFault(node: NodeRecord, fault: Fault, on: boolean): Promise<void> {
  const paths = nodePaths(node.dir);
  const flag = join(paths.faults, fault);
  if (on) await writeFile(flag, '');
  else await unlink(flag).catch(() => undefined);
  const faultsNow = await currentFaults(node);
  const inNode = (...argv: string[]) => nodeExec(node.initPid, argv);
  const kvmModule = node.cpuVendor === 'intel' ? 'kvm_intel' : 'kvm_amd';
  switch (fault) {
    case 'no-virtualization': {
      const machine = await readFile('/proc/cpuinfo', 'utf8');
      await writeFile(paths.cpuinfo, nodeCpuinfo(machine, node.cpuVendor, !on));
      await setKvmDevice(paths.kvm, !on && !faultsNow.includes('no-kvm-device'));
      if (on) await inNode('/usr/local/sbin/modprobe', '-r', kvmModule);
      else await inNode('/usr/local/sbin/modprobe', kvmModule);
      break;
    }
    case 'no-kvm-device':
      await setKvmDevice(paths.kvm, !on && !faultsNow.includes('no-virtualization'));
      break;
    case 'vhost-vsock-busy':
      if (on) await inNode('/usr/local/sbin/modprobe', '-r', 'vhost_vsock');
      break;
    case 'package-repo-unreachable':
      await writeFile(paths.hosts, hostsFile(node.name, node.address, on));
      break;
    case 'sshd-down':
      await inNode('/usr/local/sbin/systemctl', on ? 'stop' : 'start', 'ssh');
      break;
    case 'sshd-frozen':
      await inNode('/usr/local/sbin/systemctl', 'kill', '-s', on ? 'STOP' : 'CONT', 'ssh');
      break;
    case 'host-key-changed':
      if (on) await writeChangedHostKey(paths);
      else {
        await writeFile(paths.hostKey, await readFile(paths.originalHostKey));
        await writeFile(`${paths.hostKey}.pub`, await readFile(join(node.dir, 'keys', 'generated.pub')));
      }
      await reloadSshd(node);
      break;
    case 'max-sessions-2': {
      const current = await currentSshdSettings(node);
      await writeFile(paths.sshdConfig, sshdConfig({ ...current, name: node.name, address: node.address, maxSessions: on ? 2 : node.maxSessions }));
      await reloadSshd(node);
      break;
    }
    case 'containerd-refuses-start':
    case 'containerd-killmode-default':
    case 'command-hangs':
      break;
  }
}

async function reloadSshd(node: NodeRecord): Promise<void> {
  const faultsNow = await currentFaults(node);
  if (faultsNow.includes('sshd-down')) return;
  // A frozen sshd cannot re-read its config: thaw, reload, freeze again.
  if (faultsNow.includes('sshd-frozen')) await nodeExec(node.initPid, ['/usr/local/sbin/systemctl', 'kill', '-s', 'CONT', 'ssh']);
  await nodeExec(node.initPid, ['/usr/local/sbin/systemctl', 'reload', 'ssh']);
  if (faultsNow.includes('sshd-frozen')) await nodeExec(node.initPid, ['/usr/local/sbin/systemctl', 'kill', '-s', 'STOP', 'ssh']);
}

/** Throws FleetAlreadyRunning when a live fleet is recorded in `dir`. */
export async function assertNoFleetIn(dir: string): Promise<void> {
  const record = await readFleetRecord(dir);
  if (record && (alive(record.ownerPid) || record.nodes.some((n) => alive(n.pid)))) {
    throw new FleetAlreadyRunning(`a simulated fleet is already running in ${dir} (started by process ${record.ownerPid}): run \`katafleet sim down --dir ${dir}\` first`);
  }
}

export async function readFleetRecord(dir: string): Promise<FleetRecord | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, 'fleet.json'), 'utf8')) as FleetRecord;
  } catch {
    return undefined;
  }
}

/**
 * Stops the fleet recorded in `dir` from any process (what `katafleet sim down` does): asks its
 * owner to stop, kills whatever node is left, releases the addresses and removes the directory.
 */
export async function stopFleetInDir(dir: string): Promise<boolean> {
  const record = await readFleetRecord(resolve(dir));
  if (!record) {
    await rm(resolve(dir), { recursive: true, force: true });
    return false;
  }
  if (record.ownerPid !== process.pid && alive(record.ownerPid)) {
    process.kill(record.ownerPid, 'SIGTERM');
    const deadline = Date.now() + 20_000;
    while (alive(record.ownerPid) && Date.now() < deadline) await sleep(50);
  }
  const ours = record.nodes.filter((n) => nodeProcessIsOurs(n));
  await killNodes(ours);
  await releaseAddresses(record.addresses);
  await rm(record.dir, { recursive: true, force: true });
  return true;
}

function nodeProcessIsOurs(n: NodeRecord): boolean {
  try {
    return readFileSync(`/proc/${n.pid}/cmdline`, 'utf8').includes(n.dir);
  } catch {
    return false;
  }
}

/** Records of a fleet's nodes, for tools that need the node's PID 1 (e.g. tests using nodeExec). */
export async function fleetNodeRecords(dir: string): Promise<NodeRecord[]> {
  return (await readFleetRecord(dir))?.nodes ?? [];
}

/** Turns a fault switch on or off on a node of the fleet recorded in `dir` (from any process). */
export async function setFaultInDir(dir: string, node: string, fault: Fault, on: boolean): Promise<void> {
  const record = await readFleetRecord(resolve(dir));
  if (!record) throw new UnknownNode(`no simulated fleet is running in ${resolve(dir)}: start one with \`katafleet sim up\``);
  await applyFault(findNode(record.nodes, node), fault, on);
}

/** Each node of the fleet recorded in `dir`: what it is, whether containerd is active, which faults are on. */
export async function fleetStatus(dir: string): Promise<{ record: FleetRecord; nodes: (SimNode & { running: boolean; containerdState: string; faults: Fault[] })[] } | undefined> {
  const record = await readFleetRecord(resolve(dir));
  if (!record) return undefined;
  const nodes = await Promise.all(
    record.nodes.map(async (n) => ({
      ...publicNode(n),
      running: alive(n.initPid),
      containerdState: n.role === 'worker'
        ? (await readFile(join(nodePaths(n.dir).services, 'containerd.state'), 'utf8').catch(() => 'inactive')).trim()
        : '-',
      faults: await currentFaults(n),
    })),
  );
  return { record, nodes };
}
