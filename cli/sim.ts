// `katafleet sim`: start, inspect, break and stop the simulated fleet (sim/README.md).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UsageError, parseCommandArgs, type Command } from './command';
import { faultNames, faults as faultDescriptions, parseFault, type Fault } from '../sim/faults';
import { assertNoFleetIn, defaultFleetDir, fleetStatus, readFleetRecord, setFaultInDir, startFleet, stopFleetInDir, type NodeSpec } from '../sim/fleet';
import type { NodePackageManager } from '../sim/rpm-node';

/** The operating systems `sim up --os` offers, and the package manager that makes a node one (sim/rpm-node.ts). */
const nodeOsManagers = { debian: 'apt', fedora: 'dnf', opensuse: 'zypper' } as const satisfies Record<string, NodePackageManager>;
type NodeOs = keyof typeof nodeOsManagers;
const nodeOsDescriptions: Record<NodeOs, string> = {
  debian: 'Debian 12-like: apt and dpkg (the default)',
  fedora: 'Fedora 40-like: dnf and rpm, no apt',
  opensuse: 'openSUSE Leap 15.6-like: zypper and rpm, no apt',
};

const usage = `Usage:
  katafleet sim up [--nodes N] [--dir D] [--os NODE=OS ...] [--fault NODE=FAULT ...] [--no-kubernetes] [--user U] [--port P]
  katafleet sim down [--dir D]
  katafleet sim fault NODE FAULT on|off [--dir D]
  katafleet sim status [--dir D]

Starts N simulated nodes (default 3) on 127.0.1.x with real sshd, containerd and apt, and a real
Kubernetes control plane with kubectl on the SSH host \`control-plane\` (unless --no-kubernetes), writes the
inventory D/inventory.toml and returns; the fleet keeps running until \`katafleet sim down\`.
D defaults to ${relativeToCwd(defaultFleetDir)}.

Nodes are node-1 … node-N, Debian 12-like (apt) unless --os says otherwise for a node:
${Object.entries(nodeOsDescriptions).map(([os, text]) => `  ${os.padEnd(26)} ${text}`).join('\n')}
e.g. --os node-2=fedora --os node-3=opensuse.

Faults:
${faultNames.map((f) => `  ${f.padEnd(26)} ${faultDescriptions[f]}`).join('\n')}`;

function relativeToCwd(path: string): string {
  const cwd = process.cwd();
  return path.startsWith(`${cwd}/`) ? path.slice(cwd.length + 1) : path;
}

/**
 * The package manager of each node from \`--os NODE=OS\` values (nodes node-1 … node-\`nodes\`), or a UsageError that
 * names the flag, the value and the choices. Pure.
 */
export function parseNodeOs(specs: readonly string[], nodes: number): Record<string, NodePackageManager> {
  const managers: Record<string, NodePackageManager> = {};
  const choices = Object.keys(nodeOsManagers).join(' | ');
  for (const spec of specs) {
    const match = /^([^=]*)=(.*)$/.exec(spec);
    if (!match || !match[1] || !match[2]) throw new UsageError(`katafleet sim up: --os expects NODE=OS (e.g. node-2=fedora), got ${JSON.stringify(spec)}`, usage);
    const [, node, os] = match;
    const index = /^node-([1-9]\d*)$/.exec(node);
    if (!index || Number(index[1]) > nodes) throw new UsageError(`katafleet sim up: --os ${spec}: no node ${JSON.stringify(node)} in this fleet (its nodes are node-1 … node-${nodes}; --nodes sets how many)`, usage);
    if (!Object.hasOwn(nodeOsManagers, os)) throw new UsageError(`katafleet sim up: --os ${spec}: expected one of ${choices}, got ${JSON.stringify(os)}`, usage);
    if (managers[node]) throw new UsageError(`katafleet sim up: --os ${spec}: ${node} already has an --os; give each node at most one`, usage);
    managers[node] = nodeOsManagers[os as NodeOs];
  }
  return managers;
}

const upStartTimeoutMs = 240_000;

const upOptions = {
  nodes: { type: 'string' },
  dir: { type: 'string' },
  fault: { type: 'string', multiple: true },
  os: { type: 'string', multiple: true },
  'no-kubernetes': { type: 'boolean' },
  user: { type: 'string' },
  port: { type: 'string' },
} as const;

function parseUp(args: string[]) {
  const { values } = parseCommandArgs(simCliCommand, args, upOptions, { min: 0, max: 0 });
  const nodes = Number(values.nodes ?? 3);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 500) throw new UsageError(`katafleet sim up: --nodes must be a whole number from 1 to 500, got "${values.nodes}"`, usage);
  const port = Number(values.port ?? 22);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`katafleet sim up: --port must be a port number, got "${values.port}"`, usage);
  const faults: Record<string, Fault[]> = {};
  for (const spec of values.fault ?? []) {
    const [node, fault] = spec.split('=');
    if (!node || !fault) throw new UsageError(`katafleet sim up: --fault expects NODE=FAULT (e.g. node-2=sshd-down), got "${spec}"`, usage);
    (faults[node] ??= []).push(parseFault(fault, `--fault ${spec}`));
  }
  const managers = parseNodeOs(values.os ?? [], nodes);
  const nodeSpecs: number | NodeSpec[] = Object.keys(managers).length === 0 ? nodes : Array.from({ length: nodes }, (_, index) => ({ packageManager: managers[`node-${index + 1}`] ?? 'apt' }));
  return { nodes: nodeSpecs, port, faults, dir: resolve(values.dir ?? defaultFleetDir), kubernetes: !values['no-kubernetes'], user: values.user ?? 'root' };
}

/** `sim up`: starts a detached `sim serve` that owns the fleet, waits until it is up, prints it. */
async function up(args: string[]): Promise<number> {
  const o = parseUp(args);
  await assertNoFleetIn(o.dir);
  const logFile = `${o.dir}.log`;
  await rm(logFile, { force: true });
  const fd = openSync(logFile, 'a');
  // The owner runs this very file (see the end), so it does not depend on cli/main.ts's command list.
  const child = spawn(process.execPath, ['--require', require.resolve('tsx/cjs'), __filename, 'serve', ...args], {
    detached: true,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  child.unref();
  let exited = false;
  child.on('exit', () => (exited = true));
  const deadline = Date.now() + upStartTimeoutMs;
  while (!existsSync(join(o.dir, 'fleet.json'))) {
    if (exited || Date.now() > deadline) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      process.stderr.write(`katafleet sim up: the fleet did not start${exited ? '' : ` within ${upStartTimeoutMs / 1000} s`}; ${logFile}:\n${log}`);
      if (!exited) await stopFleetInDir(o.dir);
      return 1;
    }
    await sleep(100);
  }
  return printStatus(o.dir);
}

/** `sim serve` (internal): owns a fleet until SIGTERM/SIGINT, then stops it. */
async function serve(args: string[]): Promise<number> {
  const o = parseUp(args);
  const fleet = await startFleet({
    nodes: o.nodes,
    dir: o.dir,
    faults: o.faults,
    kubernetes: o.kubernetes,
    sshUser: o.user,
    port: o.port,
    log: (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
  });
  await new Promise<void>((resolveStop) => {
    const keepAlive = setInterval(() => undefined, 60_000);
    const stop = () => {
      clearInterval(keepAlive);
      fleet.stop().then(resolveStop, resolveStop);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await rm(`${o.dir}.log`, { force: true });
  return 0;
}

async function printStatus(dir: string): Promise<number> {
  const status = await fleetStatus(dir);
  if (!status) {
    process.stderr.write(`katafleet sim status: no simulated fleet in ${dir}; start one with \`katafleet sim up\`\n`);
    return 1;
  }
  const { record, nodes } = status;
  const rows = nodes.map((n) => [n.name, n.address, n.role, n.containerd ? `containerd ${n.containerd}: ${n.containerdState}` : '-',
    n.running ? (n.faults.length ? `faults: ${n.faults.join(', ')}` : 'ok') : 'STOPPED']);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  process.stdout.write(
    [
      `inventory: ${record.inventoryPath}`,
      ...rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i])).join('  ')}`.trimEnd()),
      `ssh: ssh -i ${record.identityFile} -o UserKnownHostsFile=${record.knownHostsPath} root@${nodes[0].address}`,
      ...(record.kubeconfig ? [`kubectl: kubectl --kubeconfig ${record.kubeconfig} get nodes   (or over ssh on the control-plane host)`] : []),
      '',
    ].join('\n'),
  );
  return 0;
}

/** `katafleet sim …`; returns the exit status. */
export async function simCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const dirOnly = () => resolve(parseCommandArgs(simCliCommand, rest, { dir: { type: 'string' } }, { min: 0, max: 0 }).values.dir ?? defaultFleetDir);
  switch (sub) {
    case 'up':
      return up(rest);
    case 'serve':
      return serve(rest);
    case 'down': {
      const dir = dirOnly();
      const stopped = await stopFleetInDir(dir);
      await rm(`${dir}.log`, { force: true });
      process.stdout.write(stopped ? `stopped the simulated fleet in ${dir}\n` : `no simulated fleet was running in ${dir}\n`);
      return 0;
    }
    case 'status':
      return printStatus(dirOnly());
    case 'fault': {
      const { values, positionals } = parseCommandArgs(simCliCommand, rest, { dir: { type: 'string' } }, { min: 3, max: 3 });
      const [node, fault, state] = positionals;
      if (state !== 'on' && state !== 'off') throw new UsageError(`katafleet sim fault: the third argument must be on or off, got "${state}"`, usage);
      const dir = resolve(values.dir ?? defaultFleetDir);
      if (!(await readFleetRecord(dir))) throw new UsageError(`katafleet sim fault: no simulated fleet in ${dir}; start one with \`katafleet sim up\``);
      await setFaultInDir(dir, node, parseFault(fault, 'katafleet sim fault'), state === 'on');
      process.stdout.write(`${node}: ${fault} ${state}\n`);
      return 0;
    }
    default:
      throw new UsageError(sub ? `katafleet sim: unknown sub-command "${sub}"` : 'katafleet sim: missing sub-command', usage);
  }
}

/** The `sim` entry for cli/main.ts's command list. */
export const simCliCommand: Command = {
  name: 'sim',
  summary: 'start, break and stop the simulated fleet of test hosts (sshd, containerd, apt on 127.0.1.x)',
  usage,
  run: simCommand,
};

if (require.main === module) {
  simCommand(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: Error) => {
      process.stderr.write(`${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
