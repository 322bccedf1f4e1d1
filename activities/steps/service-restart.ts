/**
 * `service-restart`: restarts containerd so that it loads its new config, then waits until the unit
 * is active and the running daemon's CRI offers the handlers. Cordons (and drains) the node around
 * the restart when asked, and uncordons it afterwards, also when the restart failed (the rollback
 * then restores the old config; a node left cordoned would stay empty for no reason).
 *
 * Idempotent: a daemon that is active, offers the handlers and was started after its config files
 * were last written is not restarted.
 *
 * Running containers survive a restart of containerd only because their shims are separate processes that systemd
 * leaves alone: upstream's containerd.service sets `KillMode=process` (containerd/containerd containerd.service;
 * reality/KATA.md). Before restarting containerd the step reads the unit's KillMode and refuses, changing nothing,
 * when another mode would kill running containers; after the restart it checks that every shim running before
 * still runs.
 */
import { parse } from '@iarna/toml';
import { Kubectl, requireKubernetes } from '../kubectl';
import { flag, sh, type Command, type SshPool } from '../ssh';
import type { ServiceRestartStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest } from '../node-types';
import type { NodeShell, PartResult } from './node-shell';
import { dropIntent, writeIntent } from './journal';
import { failureType, firstLine, permanentFailure, pollUntil, timeLeftMs, transientFailure } from './step-runtime';
import { parseDuration } from '../../playbooks/duration';

/** The unit did not become active (or its CRI did not offer the handlers) within the step's timeout. Retried. */
export const ServiceNotActive = 'ServiceNotActive';

/**
 * Annotation on the Node naming the run that cordoned it (`<run id>`), set in the same patch as the cordon:
 * a retry or a rollback uncordons only a cordon katafleet's own run made, never someone else's.
 */
export const CORDON_ANNOTATION = 'katafleet.dev/cordoned-by';

/** containerd's CRI socket inside a node. */
export const CONTAINERD_SOCKET = 'unix:///run/containerd/containerd.sock';

/** Restarting containerd now would kill running containers (its unit's KillMode is not `process`). Never retried. */
export const RestartWouldKillContainers = 'RestartWouldKillContainers';
/** Containers that ran before the restart of containerd did not survive it. Never retried. */
export const ContainersLostOnRestart = 'ContainersLostOnRestart';

/** A shim's command line (`/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id …`): one per running sandbox or container. */
const shimCommandLine = /^(\S*\/)?containerd-shim-[a-z0-9.-]+(\s|$)/;

/** PIDs of the running containerd shims in `ps -eo pid=,args=` output. Pure. */
export function shimPids(ps: string): number[] {
  return ps.split('\n').map((line) => /^\s*(\d+)\s+(.*)$/.exec(line)).filter((match): match is RegExpExecArray => match !== null && shimCommandLine.test(match[2])).map((match) => Number(match[1]));
}

/**
 * The refusal when a restart would kill running containers: why, and the two fixes. `during = "rollback"`: the
 * restart an undo needs after putting the config back (refused before the undo changed anything; it is tried again). Pure.
 */
export function killModeRefusal(node: string, killMode: string, shims: number, during: 'step' | 'rollback' = 'step'): string {
  const fix = during === 'step'
    ? 'run systemctl daemon-reload, and run again; or empty the node first (drain = true for this step, and no DaemonSet pods left on it)'
    : `run systemctl daemon-reload; the rollback tries again until [rollout] rollback_for runs out (the old config is not back yet, nothing was changed by this attempt); or empty the node (kubectl drain ${node} --ignore-daemonsets)`;
  return `Node ${node}: not restarting containerd${during === 'rollback' ? ' to roll back' : ''}: its unit has KillMode=${killMode || '(unknown)'}, so systemd would kill the ${shims} running container shim(s) ` +
    'with it (upstream\'s containerd.service sets KillMode=process, which leaves them running) — add a drop-in ' +
    `/etc/systemd/system/containerd.service.d/10-killmode.conf with "[Service]" and "KillMode=process", ${fix}`;
}

/** The failure when containers that ran before a restart of containerd are gone after it. Pure. */
export function containersLostMessage(node: string, lost: readonly number[], before: number): string {
  return `Node ${node}: ${lost.length} of ${before} container shim(s) running before the restart of containerd are gone (PIDs ${lost.slice(0, 10).join(', ')}): ` +
    'their containers were stopped with it — check the unit\'s KillMode (systemctl show -p KillMode containerd) and the kubelet\'s restarts of those pods';
}

/** The programs service-restart and the undo that restores containerd's config run by path (the probe's answer). */
export type DaemonPrograms = { systemctl: string; ps: string; crictl?: string; containerd?: string; journalctl?: string };

/** The probed paths of the programs that reading and restarting `service` need; ProgramMissing when one is missing. */
export function daemonPrograms(shell: NodeShell, what: string): Promise<DaemonPrograms> {
  return shell.programs(what, ['systemctl', 'ps'], ['crictl', 'containerd', 'journalctl']);
}

/** The reads of the running containers' guard, parts of one batch: the shims (`ps`) and the unit's KillMode. */
function guardReads(bin: DaemonPrograms, service: string): { shims: Command; killMode: Command } {
  return { shims: sh`${bin.ps} -eo pid=,args=`, killMode: sh`${bin.systemctl} show -p KillMode --value ${service}` };
}

/**
 * The guard over read shims and KillMode: refuses (RestartWouldKillContainers, nothing changed) when the restart
 * would kill running shims; returns the check to run on the shims read after the restart. Pure but for the throw.
 */
function containersGuard(node: string, before: readonly number[], killMode: string, during: 'step' | 'rollback'): (after: readonly number[]) => string {
  if (before.length > 0 && killMode !== 'process') throw permanentFailure(RestartWouldKillContainers, killModeRefusal(node, killMode, before.length, during));
  return (afterPids) => {
    if (before.length === 0) return '';
    const after = new Set(afterPids);
    const lost = before.filter((pid) => !after.has(pid));
    if (lost.length > 0) throw permanentFailure(ContainersLostOnRestart, containersLostMessage(node, lost, before.length));
    return `; ${before.length} running container shim(s) kept (KillMode=process)`;
  };
}

/**
 * Before a restart of `service`: for containerd, reads the running shims and the unit's KillMode (one command), and
 * refuses (RestartWouldKillContainers, nothing changed) when the restart would kill them. Returns the check to run
 * after the restart: it throws ContainersLostOnRestart when a shim running before is gone, else returns the
 * summary's phrase (empty when no container ran). Used by the undo that restores containerd's config.
 */
export async function guardRunningContainers(shell: NodeShell, service: string, during: 'step' | 'rollback' = 'step'): Promise<() => Promise<string>> {
  if (service !== 'containerd') return async () => '';
  const bin = await daemonPrograms(shell, during === 'step' ? 'service-restart' : 'the undo of containerd-patch');
  const reads = await shell.readAll(guardReads(bin, service));
  const check = containersGuard(shell.name, shimPids(reads.shims.stdout), reads.killMode.stdout.trim(), during);
  return async () => check(shimPids((await shell.readAll({ shims: guardReads(bin, service).shims })).shims.stdout));
}

/** Where containerd's config files live: files here newer than the daemon mean it has not loaded them. */
const CONTAINERD_CONFIG_DIR = '/etc/containerd';

export interface DaemonState {
  active: boolean;
  /** Handlers the running daemon offers; undefined when they cannot be read (the daemon is down). */
  handlers?: string[];
  /** How `handlers` were found, for summaries. */
  handlerSource?: 'crictl info' | 'containerd config dump';
  /** True when a config file changed after the daemon started (it runs an older config). */
  stale: boolean;
}

/** Handler names in `crictl info` JSON: the CRI config's runtimes and (CRI ≥ 1.30) the status' runtimeHandlers. */
export function handlersFromCrictlInfo(json: string): string[] {
  const info = JSON.parse(json) as {
    config?: { containerd?: { runtimes?: Record<string, unknown> } };
    runtimeHandlers?: { name?: string }[];
  };
  const names = new Set(Object.keys(info.config?.containerd?.runtimes ?? {}));
  for (const handler of info.runtimeHandlers ?? []) if (handler.name) names.add(handler.name);
  return [...names].sort();
}

/** Handler names in `containerd config dump` output: the keys of every CRI plugin's `containerd.runtimes`. */
export function handlersFromConfigDump(toml: string): string[] {
  const data = parse(toml) as { plugins?: Record<string, { containerd?: { runtimes?: Record<string, unknown> } }> };
  const names = new Set<string>();
  for (const plugin of Object.values(data.plugins ?? {})) {
    for (const name of Object.keys(plugin?.containerd?.runtimes ?? {})) names.add(name);
  }
  return [...names].sort();
}

/**
 * The reads of what `service` runs with, parts of one batch (see {@link NodeShell.readAll}): active, the daemon's
 * start against its config files' times, and (containerd, while active) its handlers from `crictl info`, or where
 * the node has no crictl from `containerd config dump`.
 */
export function daemonReads(bin: DaemonPrograms, service: string): Record<'active' | 'times' | 'handlers', Command> {
  const whileActive = sh`${bin.systemctl} is-active ${service} >/dev/null || exit 9`;
  return {
    active: sh`${bin.systemctl} is-active ${service}`,
    times: service === 'containerd' ? daemonTimes(bin, service) : sh`true`,
    handlers: service !== 'containerd' ? sh`true`
      : bin.crictl ? sh`${whileActive}; ${bin.crictl} --runtime-endpoint ${CONTAINERD_SOCKET} info`
        : bin.containerd ? sh`${whileActive}; ${bin.containerd} config dump; exit 127` : sh`exit 126`,
  };
}

/** The daemon's state from the answers to {@link daemonReads}. Pure. */
export function parseDaemonState(service: string, parts: Record<'active' | 'times' | 'handlers', PartResult>): DaemonState {
  const active = parts.active.exitCode === 0;
  if (!active) return { active, stale: true };
  if (service !== 'containerd') return { active, stale: false };
  const stale = staleFromTimes(parts.times.stdout.trim());
  const { exitCode, stdout } = parts.handlers;
  // crictl answered; exit 1 (or 9): the CRI does not answer yet (still starting), nothing is known about its handlers.
  if (exitCode === 0) return { active, stale, handlers: handlersFromCrictlInfo(stdout), handlerSource: 'crictl info' };
  // No crictl on the node: the config containerd loads (the dump's own exit is lost in the `exit 127`: it printed or not).
  if (exitCode === 127 && stdout.trim() !== '') {
    try {
      return { active, stale, handlers: handlersFromConfigDump(stdout), handlerSource: 'containerd config dump' };
    } catch {
      return { active, stale };
    }
  }
  return { active, stale };
}

/** Reads what the node's containerd is running with (one command). */
export async function readDaemonState(shell: NodeShell, service: string, bin?: DaemonPrograms): Promise<DaemonState> {
  const programs = bin ?? await daemonPrograms(shell, `reading ${service}'s state`);
  return parseDaemonState(service, await shell.readAll(daemonReads(programs, service)));
}

/**
 * The unit's main process start and the newest `*.toml` under /etc/containerd, in seconds ago, or `unknown` (see
 * {@link staleFromTimes}): process start from /proc, file times from find, 10 ms precision.
 */
function daemonTimes(bin: DaemonPrograms, service: string): Command {
  return sh`pid=$(${bin.systemctl} show -p MainPID --value ${service})
if [ -z "$pid" ] || [ "$pid" = 0 ] || [ ! -r /proc/$pid/stat ]; then echo unknown; exit 0; fi
ticks=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f20)
started=$(awk -v now="$(date +%s.%N)" -v hz="$(getconf CLK_TCK)" -v t="$ticks" '{ printf "%.2f", now - ($1 - t / hz) }' /proc/uptime)
newest=$(find ${CONTAINERD_CONFIG_DIR} -type f -name '*.toml' -printf '%T@\\n' 2>/dev/null | sort -n | tail -n 1)
echo "$started \${newest:-0}"`;
}

/** True when a config file was written after the daemon started (or that is unknown). Pure. */
export function staleFromTimes(output: string): boolean {
  if (output === 'unknown') return true;
  const [started, newest] = output.split(/\s+/).map(Number);
  return !(Number.isFinite(started) && Number.isFinite(newest)) || newest > started;
}

/** The unit's last log lines, for failure messages. */
async function lastLogLines(shell: NodeShell, service: string, bin: DaemonPrograms): Promise<string> {
  const log = bin.journalctl ? sh`${bin.journalctl} -u ${service} -n 15 --no-pager || ${bin.systemctl} status ${service}` : sh`${bin.systemctl} status ${service}`;
  const result = await shell.run(log, { allowExitCodes: [...Array(256).keys()] });
  return result.stdout.trim().split('\n').slice(-15).join('\n');
}

/**
 * Waits until the unit is active and its CRI offers every handler in `handlers`, from `first` (a state read just
 * before) when given. Returns the last state; throws ServiceNotActive with the unit's last log lines on timeout.
 */
export async function waitForService(shell: NodeShell, service: string, handlers: readonly string[], timeoutMs: number, first?: DaemonState): Promise<DaemonState> {
  const bin = await daemonPrograms(shell, `waiting for ${service}`);
  let last: DaemonState = first ?? { active: false, stale: true };
  const isReady = (state: DaemonState) => state.active && handlers.every((h) => state.handlers?.includes(h));
  const ready = first && isReady(first) ? first : await pollUntil(async () => {
    last = await readDaemonState(shell, service, bin);
    return isReady(last) ? last : undefined;
  }, timeoutMs, 1_000);
  if (ready) return ready;
  const problem = !last.active
    ? `${service} is not active`
    : `${service} is active but its CRI offers ${last.handlers ? `only ${last.handlers.join(', ') || 'no handlers'}` : 'no readable handlers'} (missing ${handlers.filter((h) => !last.handlers?.includes(h)).join(', ')})`;
  const log = await lastLogLines(shell, service, bin).catch(() => '');
  throw transientFailure(ServiceNotActive,
    `Node ${shell.name}: ${problem} ${Math.round(timeoutMs / 1000)} s after the restart${log ? `; last log lines:\n${log}` : ''}`);
}

/**
 * service-restart in few commands: one batch reads the daemon's state with the running shims and the unit's
 * KillMode; the restart and the first read after it (state and shims) are one more; the wait reads again (one
 * command each) only while containerd is not ready yet.
 */
export async function serviceRestart(shell: NodeShell, pool: SshPool, request: StepRequest<ServiceRestartStep>): Promise<StepOutcome> {
  const started = Date.now();
  const { step } = request;
  const handlers = step.wait_for_handlers;
  const bin = await daemonPrograms(shell, `service-restart "${step.id}"`);
  const guarded = step.service === 'containerd';
  const unguarded = { shims: sh`true`, killMode: sh`true` };
  const first = await shell.readAll({ ...daemonReads(bin, step.service), ...(guarded ? guardReads(bin, step.service) : unguarded) });
  const before = parseDaemonState(step.service, first);
  if (before.active && !before.stale && handlers.every((h) => before.handlers?.includes(h))) {
    // An earlier attempt of this run may have cordoned the node and died before uncordoning it.
    const leftCordon = request.kubernetes ? await uncordonIfOurs(new Kubectl(pool, request.kubernetes), shell.name, request.runId) : false;
    if (leftCordon) await dropIntent(shell, request);
    return { changed: false, summary: `${step.service} active, already running its current config${describeHandlers(before)}${leftCordon ? '; uncordoned the node an earlier attempt of this run had cordoned' : ''}` };
  }

  const drain = step.drain ?? request.drain;
  const cordon = drain || (step.cordon ?? request.drain);
  const kubectl = cordon ? new Kubectl(pool, requireKubernetes(request.kubernetes, `service-restart "${step.id}" with cordon/drain`)) : undefined;
  // Without a cordon, the shims and KillMode read above decide; a drain changes which containers run, so read them again after it.
  const check = guarded && !kubectl ? containersGuard(shell.name, shimPids(first.shims.stdout), first.killMode.stdout.trim(), 'step') : undefined;
  if (kubectl) await writeIntent(shell, request, { kind: 'uncordon-node', stepId: step.id, owner: request.runId }, `cordon${drain ? ' and drain' : ''} node ${shell.name} around the restart of ${step.service}`);
  const cordoned = kubectl ? await cordonNode(kubectl, shell.name, request.runId, drain, timeLeftMs(started, parseDuration(step.timeout), 60_000)) : false;
  try {
    let containersKept = check;
    if (guarded && !containersKept) {
      const reads = await shell.readAll(guardReads(bin, step.service));
      containersKept = containersGuard(shell.name, shimPids(reads.shims.stdout), reads.killMode.stdout.trim(), 'step');
    }
    // Not stopped by a cancellation: the restart (and its first read) finish, so the node is never left between two configs.
    const restart = await shell.readAll({
      restart: sh`${bin.systemctl} restart ${step.service}`, ...daemonReads(bin, step.service), shims: guarded ? guardReads(bin, step.service).shims : sh`true`,
    }, { timeoutMs: Math.max(10_000, timeLeftMs(started, parseDuration(step.timeout), 20_000)), signal: undefined });
    if (restart.restart.exitCode > 1) {
      throw transientFailure('CommandFailed', `Node ${shell.name}: systemctl restart ${step.service} exited with ${restart.restart.exitCode}${describeExit(restart.restart.exitCode)}; trying again`);
    }
    const after = await waitForService(shell, step.service, handlers, timeLeftMs(started, parseDuration(step.timeout), 15_000), parseDaemonState(step.service, restart));
    const kept = containersKept ? containersKept(shimPids(restart.shims.stdout)) : '';
    return {
      changed: true,
      summary: `restarted ${step.service}: active${describeHandlers(after)}${kept}${cordoned ? `; ${drain ? 'drained' : 'cordoned'} and uncordoned` : ''}`,
    };
  } finally {
    if (kubectl && cordoned) {
      await uncordonOwned(kubectl, shell.name);
      // Best effort: an entry left behind only makes a recovery check the annotation (and find no cordon of this run).
      await dropIntent(shell, request).catch(() => undefined);
    }
  }
}

/** systemctl's exit codes worth a word (LSB: 5 = no such unit). Pure. */
function describeExit(code: number): string {
  return code === 5 ? ' (no such unit)' : code === 4 ? ' (no permission)' : '';
}

/**
 * Uncordons the Node and removes katafleet's cordon annotation (one merge patch). Not stopped by a
 * cancellation: a cordon katafleet made is always taken back.
 */
export async function uncordonOwned(kubectl: Kubectl, node: string): Promise<void> {
  await kubectl.withStdin(['patch', 'node', node, flag('--type'), 'merge', flag('--patch-file'), '/dev/stdin'],
    { spec: { unschedulable: null }, metadata: { annotations: { [CORDON_ANNOTATION]: null } } }, { signal: undefined });
}

/** Uncordons the Node when katafleet's annotation says this run cordoned it; true when it did. */
async function uncordonIfOurs(kubectl: Kubectl, node: string, runId: string): Promise<boolean> {
  const current = await kubectl.getJson<{ metadata?: { annotations?: Record<string, string> } }>(['get', 'node', node]);
  if (current?.metadata?.annotations?.[CORDON_ANNOTATION] !== runId) return false;
  await uncordonOwned(kubectl, node);
  return true;
}

/** kubectl's own last error line from a failed command (`error: cannot delete Pods that declare no controller …`), if any. */
function kubectlError(err: unknown): string {
  const stderr = (err as { details?: { stderr?: string }[] } | null)?.details?.[0]?.stderr?.trim();
  const last = stderr?.split('\n').filter(Boolean).pop();
  return last ? ` (${last.slice(0, 300)})` : '';
}

function describeHandlers(state: DaemonState): string {
  return state.handlers ? `, handlers ${state.handlers.join(', ')} (${state.handlerSource})` : '';
}

/**
 * Cordons (and drains) the node unless someone else made it unschedulable. The cordon and the
 * annotation naming this run are one patch, so a retry (after a worker SIGKILL) knows the cordon is
 * its own. Returns whether this run holds the cordon, so only then it uncordons it again.
 */
async function cordonNode(kubectl: Kubectl, node: string, runId: string, drain: boolean, timeoutMs: number): Promise<boolean> {
  const current = await kubectl.getJson<{ spec?: { unschedulable?: boolean }; metadata?: { annotations?: Record<string, string> } }>(['get', 'node', node]);
  const owner = current?.metadata?.annotations?.[CORDON_ANNOTATION];
  const someoneElses = current?.spec?.unschedulable === true && owner !== runId;
  if (someoneElses) return false;
  if (current?.spec?.unschedulable !== true || owner !== runId) {
    await kubectl.withStdin(['patch', 'node', node, flag('--type'), 'merge', flag('--patch-file'), '/dev/stdin'],
      { spec: { unschedulable: true }, metadata: { annotations: { [CORDON_ANNOTATION]: runId } } });
  }
  if (drain) {
    const seconds = Math.max(30, Math.floor(timeoutMs / 1000));
    try {
      await kubectl.run(['drain', node, flag('--ignore-daemonsets'), flag('--delete-emptydir-data'), flag(`--timeout=${seconds}s`)], { timeoutMs: (seconds + 15) * 1000 });
    } catch (err) {
      await uncordonOwned(kubectl, node).catch(() => undefined);
      throw failureType(err) === 'CommandFailed'
        ? transientFailure('DrainFailed', `Node ${node}: kubectl drain did not finish: ${firstLine(err)}${kubectlError(err)}; the node was uncordoned again`, err)
        : err;
    }
  }
  return true;
}
