/**
 * The read-only drift check driftWorkflow runs on every node: what the playbook's steps would
 * establish, compared with what the node and the cluster hold now. It only reads (files, package
 * database, `crictl info`, kubectl get); repairs are the nodeWorkflow's business.
 *
 * Checked per step kind (with `action = "remove"`/`"delete"` the inverse: the thing must be absent):
 * - `package-install`: each package installed at its pinned version;
 * - `release-tarball`: the version's tree with the pinned sha256, `/opt/kata` pointing to it, the links;
 * - `containerd-patch`: the pure patcher finds nothing to add to the config on disk (and, in drop-in
 *   mode, the drop-in file holds the runtimes);
 * - `service-restart`: the unit is active; for containerd, the running daemon is not older than its
 *   config files and its CRI lists the handlers the playbook adds (and none it removes);
 * - `node-label`: the Node has the labels;
 * - `runtime-class`: the RuntimeClass exists and says what the step would apply.
 *
 * Not checked, on purpose: `prereq-check` and `readiness-gate` are gates (conditions a rollout waits
 * for, not state it writes), `verification-pod` is a proof that starts a pod (not read-only), and
 * `rollback` is a one-shot action, not a state to hold (hold the uninstalled state with the
 * kata-uninstall playbook, whose remove/delete steps are checked).
 */
import { getPath, isTable, parseToml } from './containerd-config/data';
import { patchContainerdConfig, removeRuntimes, type PatchOutcome } from './containerd-config';
import { Kubectl, requireKubernetes, type KubeNode } from './kubectl';
import { SshFailureType, type SshPool } from './ssh';
import { desiredStatePath, parseDesiredState, quarantinePath, type DesiredState, type QuarantineMarker } from './desired-state';
import type { DriftCheck, DriftCheckRequest } from './node-types';
import type { ContainerdPatchStep, NodeLabelStep, PackageInstallStep, RuntimeClassStep, ServiceRestartStep, Step } from '../playbooks/schema';
import { checkStep, checkTargets } from './step-policy';
import { NodeShell } from './steps/node-shell';
import { detectPackageManager, installedVersions, versionMatches, type InstalledVersions, type PackageManager } from './steps/package-install';
import { checkRelease } from './steps/release-tarball';
import { checkPackageRepo } from './steps/package-repo';
import { runtimeClassManifest, type RuntimeClassObject } from './steps/runtime-class';
import { readDaemonState, type DaemonState } from './steps/service-restart';
import { failureType, firstLine } from './steps/step-runtime';

/**
 * Failures that mean "this node (or the control-plane host) cannot be checked now", reported as
 * state `unreachable`. Anything else is thrown: a check that cannot read a node it reached is a bug
 * or a state nobody planned for, and hiding it as drift would start a repair on a guess.
 */
const unreachableTypes: readonly string[] = [
  SshFailureType.SshConnectFailed,
  SshFailureType.SshAuthFailed,
  SshFailureType.SshChannelFailed,
  SshFailureType.HostKeyMismatch,
  SshFailureType.HostKeyUnknown,
  SshFailureType.CommandOutcomeUnknown,
  SshFailureType.CommandTimedOut,
];

/**
 * {@link DriftCheck} with what the node itself says it should run: its desired state (the playbook its last
 * successful rollout applied), its quarantine marker, and the packages a repair would downgrade.
 */
export interface NodeDriftCheck extends DriftCheck {
  desired?: DesiredState;
  quarantine?: QuarantineMarker;
  /** `name installed → pinned` for each package installed at a newer version than the playbook pins. */
  downgrades?: string[];
}

/** Builds the drift activity; register it with the worker (`workerActivities` does). */
export function createDriftActivities(deps: { pool: SshPool }) {
  return {
    /** Compares one node with the playbook's desired state; never writes. */
    async checkDrift(request: DriftCheckRequest): Promise<NodeDriftCheck> {
      const node = request.node.name;
      checkTargets(request.node, request.kubernetes);
      const steps = request.steps.map((step) => checkStep(step, request.node));
      try {
        const shell = new NodeShell(deps.pool, request.node);
        // The node first: one that cannot be reached is reported without a read of Kubernetes (with `control_plane`,
        // each is a kubectl over SSH on that host: 10,000 of them for a fleet whose nodes are down starved the
        // repairs' own kubectl calls until their steps timed out; test/scale-drift-payloads.test.ts).
        const desired = await readDesired(shell);
        const [drifted, quarantine, downgrades] = await Promise.all([findDrift(deps.pool, { ...request, steps }), readQuarantine(shell), findDowngrades(shell, steps)]);
        return { node, state: drifted.length > 0 ? 'drifted' : 'in-sync', drifted, desired, quarantine, downgrades };
      } catch (err) {
        const type = failureType(err);
        if (type !== undefined && unreachableTypes.includes(type)) return { node, state: 'unreachable', drifted: [], error: firstLine(err) };
        throw err;
      }
    },
  };
}

/**
 * Every difference between the node and the playbook's steps, in step order, without duplicates.
 * The steps' reads are independent, so they run at once (the pool bounds the channels per host).
 */
async function findDrift(pool: SshPool, request: DriftCheckRequest): Promise<string[]> {
  const shell = new NodeShell(pool, request.node);
  const kubectl = () => new Kubectl(pool, requireKubernetes(request.kubernetes, `the drift check of node ${request.node.name}`));
  const perStep = await Promise.all(request.steps.map(async (step): Promise<string[]> => {
    switch (step.kind) {
      case 'package-install':
        return checkPackages(shell, step);
      case 'release-tarball':
        return checkRelease(shell, step);
      case 'package-repo':
        return checkPackageRepo(shell, step);
      case 'containerd-patch':
        return containerdConfigDrift(step, await shell.readFile(step.config_path), step.action === 'add' && step.mode === 'drop-in' ? await shell.readFile(step.drop_in_path) : undefined);
      case 'service-restart':
        return daemonDrift(step, await readDaemonState(shell, step.service), expectedHandlers(request.steps));
      case 'node-label':
        return checkLabels(kubectl(), request.node.name, step);
      case 'runtime-class':
        return runtimeClassDrift(step, await kubectl().getJson<RuntimeClassObject>(['get', 'runtimeclass', step.name]));
      case 'prereq-check':
      case 'readiness-gate':
      case 'verification-pod':
      case 'rollback':
        return [];
    }
  }));
  return [...new Set(perStep.flat())];
}

async function readDesired(shell: NodeShell): Promise<DesiredState | undefined> {
  return parseDesiredState(await shell.readFile(desiredStatePath), shell.name);
}

/** The quarantine marker, when there is one; one that is not JSON still quarantines (its text is the reason). */
async function readQuarantine(shell: NodeShell): Promise<QuarantineMarker | undefined> {
  const text = await shell.readFile(quarantinePath);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as QuarantineMarker;
  } catch {
    return { reason: `${quarantinePath} is not JSON: ${text.slice(0, 200)}` };
  }
}

async function findDowngrades(shell: NodeShell, steps: readonly Step[]): Promise<string[]> {
  const installs = steps.filter((step): step is PackageInstallStep => step.kind === 'package-install' && step.action !== 'remove');
  const found = await Promise.all(installs.map(async (step) => {
    const manager = await detectPackageManager(shell, step.manager);
    return packageDowngrades(step, await installedVersions(shell, manager, step.packages.map((spec) => spec.name)));
  }));
  return found.flat();
}

/** Packages installed at a newer version than the step pins: repairing them would be a downgrade. */
export function packageDowngrades(step: PackageInstallStep, installed: InstalledVersions): string[] {
  return step.packages.flatMap((spec) => {
    const version = installed.get(spec.name);
    return version !== undefined && spec.version !== undefined && compareVersions(version, spec.version) > 0 ? [`${spec.name} ${version} → ${spec.version}`] : [];
  });
}

/**
 * Orders two package versions the way dpkg and rpm do for the usual shapes (`[epoch:]1.2.3[-release]`):
 * epoch first, then each run of digits numerically and each run of other characters as text, `~` before
 * anything. Negative: `a` is older; 0: equal; positive: `a` is newer.
 */
export function compareVersions(a: string, b: string): number {
  const split = (version: string) => {
    const match = /^(?:(\d+):)?(.*)$/.exec(version)!;
    return { epoch: Number(match[1] ?? 0), parts: match[2].match(/\d+|~|[^\d~]+/g) ?? [] };
  };
  const left = split(a);
  const right = split(b);
  if (left.epoch !== right.epoch) return left.epoch - right.epoch;
  for (let index = 0; index < Math.max(left.parts.length, right.parts.length); index++) {
    const x = left.parts[index];
    const y = right.parts[index];
    if (x === y) continue;
    if (x === '~' || y === undefined) return x === '~' ? -1 : 1;
    if (y === '~' || x === undefined) return y === '~' ? 1 : -1;
    const numeric = /^\d/.test(x) && /^\d/.test(y);
    const order = numeric ? Number(x) - Number(y) : x < y ? -1 : 1;
    if (order !== 0) return order;
  }
  return 0;
}

async function checkPackages(shell: NodeShell, step: PackageInstallStep): Promise<string[]> {
  const manager = await detectPackageManager(shell, step.manager);
  return packageDrift(step, await installedVersions(shell, manager, step.packages.map((spec) => spec.name)), manager);
}

/** Packages missing or at another version than pinned (install), or still installed (remove). */
export function packageDrift(step: PackageInstallStep, installed: InstalledVersions, manager: PackageManager): string[] {
  return step.packages.flatMap((spec) => {
    const version = installed.get(spec.name);
    if (step.action === 'remove') return version === undefined ? [] : [`package ${spec.name} is installed (${version}); the playbook removes it`];
    if (version === undefined) return [`package ${spec.name} is not installed${spec.version ? ` (want ${spec.version})` : ''}`];
    if (spec.version !== undefined && !versionMatches(version, spec.version, manager)) return [`package ${spec.name} is ${version}, not ${spec.version}`];
    return [];
  });
}

/**
 * What the containerd-patch step would still change in the config on disk (`current`, undefined =
 * no file) and, in drop-in mode, in the drop-in file (`dropInCurrent`). A config the patcher refuses
 * (a conflicting runtime, an unsupported shape) is drift too: the phrase is its reason.
 */
export function containerdConfigDrift(step: ContainerdPatchStep, current: string | undefined, dropInCurrent: string | undefined): string[] {
  const path = step.config_path;
  let outcome: PatchOutcome;
  try {
    outcome = step.action === 'add'
      ? patchContainerdConfig(current ?? '', step.runtimes, { replace: step.replace, mode: step.mode, dropInPath: step.drop_in_path, file: path })
      : removeRuntimes(current ?? '', step.runtimes.map((runtime) => runtime.name), { file: path });
  } catch (err) {
    if (failureType(err) === undefined) throw err;
    return [firstLine(err).split('; ')[0]];
  }
  const found: string[] = [];
  if (step.action === 'remove') {
    const data = outcome.status === 'patched' ? parseToml(current ?? '', path) : undefined;
    for (const name of outcome.status === 'patched' ? outcome.removed ?? [] : []) {
      const table = getPath(data!, [...outcome.pluginPath, name]);
      // The step only removes runtimes of the playbook's runtime_type; another one is not its to remove.
      const wanted = step.runtimes.find((runtime) => runtime.name === name)?.runtime_type;
      if (!isTable(table) || table.runtime_type === undefined || table.runtime_type === wanted) found.push(`containerd config ${path} still has runtime "${name}"`);
    }
    return found;
  }
  if (current === undefined) found.push(`containerd config ${path} is missing`);
  if (outcome.dropIn) {
    if (outcome.status === 'patched') found.push(`containerd config ${path} does not import ${outcome.dropIn.path}`);
    if (dropInCurrent !== outcome.dropIn.content) {
      found.push(dropInCurrent === undefined ? `containerd drop-in ${outcome.dropIn.path} is missing` : `containerd drop-in ${outcome.dropIn.path} differs from the playbook's runtimes`);
    }
  } else if (outcome.status === 'patched') {
    // The patcher also writes out containerd's default runc into an empty config; only the playbook's runtimes are drift.
    const ours = new Set(step.runtimes.map((runtime) => runtime.name));
    found.push(...outcome.added.filter((name) => ours.has(name)).map((name) => `containerd config lacks runtime "${name}"`));
    found.push(...outcome.replaced.map((name) => `containerd config has runtime "${name}" with other settings`));
  }
  return found;
}

/** Handlers the playbook adds (must be offered) and removes (must not be), from its containerd-patch and service-restart steps. */
export function expectedHandlers(steps: readonly Step[]): { present: string[]; absent: string[] } {
  const present = new Set<string>();
  const absent = new Set<string>();
  for (const step of steps) {
    if (step.kind === 'service-restart') step.wait_for_handlers.forEach((name) => present.add(name));
    if (step.kind !== 'containerd-patch') continue;
    for (const runtime of step.runtimes) {
      if (step.action === 'add') {
        present.add(runtime.name);
        absent.delete(runtime.name);
      } else {
        absent.add(runtime.name);
        present.delete(runtime.name);
      }
    }
  }
  return { present: [...present], absent: [...absent] };
}

/**
 * How the running service differs from what the service-restart step leaves: active, not older than
 * its config, offering the playbook's handlers (containerd only).
 */
export function daemonDrift(step: ServiceRestartStep, state: DaemonState, handlers: { present: string[]; absent: string[] }): string[] {
  const service = step.service;
  if (!state.active) return [`${service} is not active`];
  if (service !== 'containerd') return [];
  const found: string[] = [];
  if (state.stale) found.push('running containerd is older than its config (not restarted since /etc/containerd changed)');
  if (state.handlers === undefined) {
    found.push("running containerd's CRI does not answer (handlers unknown)");
    return found;
  }
  found.push(...handlers.present.filter((name) => !state.handlers!.includes(name)).map((name) => `running containerd does not list handler "${name}"`));
  found.push(...handlers.absent.filter((name) => state.handlers!.includes(name)).map((name) => `running containerd still lists handler "${name}"`));
  return found;
}

async function checkLabels(kubectl: Kubectl, nodeName: string, step: NodeLabelStep): Promise<string[]> {
  const node = await kubectl.getJson<KubeNode>(['get', 'node', nodeName]);
  if (!node) return [`Kubernetes has no Node ${nodeName}`];
  return labelDrift(step, node.metadata.labels ?? {});
}

/** Labels missing or with another value (add), or still set (remove). */
export function labelDrift(step: NodeLabelStep, labels: Record<string, string>): string[] {
  return Object.entries(step.labels).flatMap(([key, value]) => {
    if (step.action === 'remove') return key in labels ? [`node label ${key} is set; the playbook removes it`] : [];
    if (!(key in labels)) return [`node label ${key}=${value} is missing`];
    return labels[key] === value ? [] : [`node label ${key} is "${labels[key]}", not "${value}"`];
  });
}

/**
 * How the cluster's RuntimeClass (undefined = none) differs from what the runtime-class step applies,
 * or, for `action = "delete"`, that it still exists (only one with the step's handler: the step
 * leaves others alone).
 */
export function runtimeClassDrift(step: RuntimeClassStep, existing: RuntimeClassObject | undefined): string[] {
  const name = `RuntimeClass ${step.name}`;
  if (step.action === 'delete') return existing?.handler === step.handler ? [`${name} exists; the playbook deletes it`] : [];
  if (!existing) return [`${name} is missing`];
  const wanted = runtimeClassManifest(step);
  const found: string[] = [];
  if (existing.handler !== wanted.handler) found.push(`${name} has handler "${existing.handler}", not "${wanted.handler}"`);
  const describe = (map: Record<string, string> | undefined) => Object.entries(map ?? {}).sort().map(([k, v]) => `${k}=${v}`).join(',') || 'none';
  const compare = (what: string, actual: Record<string, string> | undefined, desired: Record<string, string> | undefined) => {
    if (describe(actual) !== describe(desired)) found.push(`${name} has ${what} ${describe(actual)}, not ${describe(desired)}`);
  };
  compare('nodeSelector', existing.scheduling?.nodeSelector, wanted.scheduling?.nodeSelector);
  compare('overhead', existing.overhead?.podFixed, wanted.overhead?.podFixed);
  if (existing.metadata.labels?.['app.kubernetes.io/managed-by'] !== 'katafleet') found.push(`${name} lacks label app.kubernetes.io/managed-by=katafleet`);
  return found;
}
