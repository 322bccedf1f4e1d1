/**
 * The lock on the node: one owner at a time (a run's step attempt, its recovery, a release) may act on a
 * node, whatever Temporal retries. The lock file `/var/lib/katafleet/lock-<node name>` holds `<owner> <expires>`
 * (the node's clock, seconds): a lease that ends with the owner's attempt. Taking it is a
 * read-modify-write under `flock`; a lease expires on its own, so a SIGKILLed worker never blocks
 * the node for longer than its attempt's start-to-close.
 *
 * While it holds the lease (30 s, renewed before a command when short, never past the attempt's
 * start-to-close), an owner runs every command through {@link LockedShell}: each command first checks on
 * the node that the lease is still its own and not expired, then runs holding `lock.running` shared (taken
 * while the check still holds the lock file's flock, so no take can slip in between). A new owner takes the
 * lock only when no command of the old owner still runs and the lease has expired, or the old owner is an
 * earlier activity of the same run: one of lower {@link lockRank} (the workflow schedules a run's activities one
 * after the other, so that one has ended or been given up; a late attempt of it can never take the lease back
 * from a later one). No command of a late attempt (a dead worker's, or one past its
 * start-to-close) can start, or still run, when the next owner acts.
 *
 * Cost in SSH commands: the lease is taken by the step's first command (one remote script: take, then the
 * command), and a step that succeeds leaves it for the run's next activity to take over instead of releasing it
 * with a command of its own; the run's last activity (and any that fails) releases it.
 */
import { quote, sh, type Command, type CommandResult, type RunOptions, type SshPool } from '../ssh';
import type { NodeTarget } from '../node-types';
import type { ProbedProgram } from '../ssh/programs';
import { NodeShell, type PartResult } from './node-shell';
import { activityContext, attemptDeadline, pause, permanentFailure, transientFailure } from './step-runtime';

/** katafleet's directory on a node: markers, journal, lock, quarantine. */
export const KATAFLEET_DIR = '/var/lib/katafleet';
/**
 * The lease file of the node named `node`: keyed by the inventory's node name, so that several node names served
 * by one host (the simulated fleet's scale tests) each have their own lock, as separate hosts would.
 */
export function lockPath(node: string): string {
  return `${KATAFLEET_DIR}/lock-${node}`;
}
/** Seconds after a lease's expiry before another owner may take it (clock granularity, a guard in progress). */
export const LOCK_GRACE_SECONDS = 3;
/**
 * Held shared (`flock -s -o`) by every command an owner runs, for as long as it runs (not by daemons it
 * starts); a new owner takes the lock only when it can take this one exclusively: no command of the
 * previous owner is still running.
 */
export function runningPath(node: string): string {
  return `${lockPath(node)}.running`;
}

/** The path (or, before the connection's probe answered, the name) of a program: {@link NodeShell.tool}. */
type ToolOf = (program: ProbedProgram) => string;

/** Another owner holds the node's lease; retried (the lease ends with its attempt). */
export const NodeBusy = 'NodeBusy';
/** This attempt's lease ended (or was taken over) before its work was done; retried. */
export const NodeLockLost = 'NodeLockLost';

const LOCK_LOST_EXIT = 97;
const LOCK_LOST_TEXT = 'katafleet-node-lock-lost';
/** On stderr when a take found the lock held (exit 97, the holder on stdout) or its flock busy (exit 98). */
const NODE_BUSY_TEXT = 'katafleet-node-busy';

/**
 * The order of an activity's lease within its run, stored with the lease: an owner of the same run may take over a
 * lease of lower rank without waiting for it to end. `position` is the activity's place in the run (0 the first, the
 * playbook's steps after it, the run's closing activities last); a later attempt ranks above an earlier one.
 */
export function lockRank(position: number, attempt = activityContext()?.info.attempt ?? 1): number {
  return position * 1000 + Math.min(attempt, 999);
}

/** Who holds a lease: `<run id>/<what>/<attempt>`, e.g. `0192…/step-containerd/2`. */
export function lockOwner(runId: string, what: string, attempt = activityContext()?.info.attempt ?? 1): string {
  return `${runId}/${what}/${attempt}`;
}

/** A lease lasts 30 s (never past the attempt's start-to-close); renewed before a command when less than 10 s are left. */
const LEASE_STEP_MS = 30_000;
const RENEW_BELOW_MS = 10_000;

/**
 * The shell script that takes (or renews) the lease for OWNER for LEASE seconds; exit 97 prints the holder, 98 says
 * the lock file's flock stayed busy (both with {@link NODE_BUSY_TEXT} on stderr). A lease of the same run and of a
 * lower RANK is taken over without waiting for its end (never while a command of it runs). The lock file holds
 * `<owner> <expires> <rank>`. The script leaves fd 9
 * (the lock file's flock) open, so that a command that follows in the same script starts before any other take.
 */
function takeScript(node: string, owner: string, leaseSeconds: number, rank: number, tool: ToolOf): Command {
  const [mkdir, touch, flock, tee, sync, mv] = (['mkdir', 'touch', 'flock', 'tee', 'sync', 'mv'] as const).map(tool);
  const lockFile = lockPath(node);
  const runningFile = runningPath(node);
  const sameRun = `${owner.split('/')[0]}/`;
  return sh`${mkdir} -p ${KATAFLEET_DIR} && { test -e ${lockFile}.flock || ${touch} ${lockFile}.flock; } && { test -e ${runningFile} || ${touch} ${runningFile}; } && exec 9<${lockFile}.flock && ${flock} -w 10 9 || { echo ${NODE_BUSY_TEXT} >&2; exit 98; }
now=$(date +%s); o=; e=0; k=; g=${LOCK_GRACE_SECONDS}; l=${leaseSeconds}; r=${sameRun}; n=${rank}
if [ -f ${lockFile} ]; then read o e k < ${lockFile} || true; fi
case "$e" in ''|*[!0-9]*) e=0 ;; esac
s=; case "$o" in "$r"*) case "$k" in ''|*[!0-9]*) ;; *) if [ "$k" -lt "$n" ]; then s=1; fi ;; esac ;; esac
if [ -n "$o" ] && [ "$o" != ${owner} ] && [ -z "$s" ] && [ "$now" -lt $((e + g)) ]; then echo "$o $e $now"; echo ${NODE_BUSY_TEXT} >&2; exit 97; fi
if [ -n "$o" ] && [ "$o" != ${owner} ] && ! ${flock} -x -n ${runningFile} true; then echo "$o $e $now running"; echo ${NODE_BUSY_TEXT} >&2; exit 97; fi
printf '%s %s %s\\n' ${owner} $((now + l)) "$n" | ${tee} ${lockFile}.tmp >/dev/null && ${sync} ${lockFile}.tmp && ${mv} -f ${lockFile}.tmp ${lockFile} && ${sync} ${KATAFLEET_DIR}`;
}

/**
 * Runs COMMAND holding the running lock shared (fd 8, not inherited by the command, so not by daemons it starts),
 * taken while fd 9 (the lock file's flock) is still held; the script's exit status is the command's.
 */
function underRunningLock(node: string, command: Command, tool: ToolOf): Command {
  return sh`exec 8<${runningPath(node)} && ${tool('flock')} -s -w 10 8 || { echo ${LOCK_LOST_TEXT} >&2; exit ${LOCK_LOST_EXIT}; }
exec 9>&-
sh -c ${quoted(command)} 8>&-`;
}

/** `command` as one single-quoted shell word, to hand to `sh -c` (already-checked text: no new values). */
function quoted(command: Command): Command {
  return { ...command, text: quote(command.text) };
}

/** The holder and expiry a refused take printed, in words. */
function describeHolder(stdout: string): string {
  const [holder, expires, now, running] = stdout.trim().split(/\s+/);
  const left = Number(expires) - Number(now);
  const [run, what, attempt] = (holder ?? '?').split('/');
  return `${what ?? '?'} (attempt ${attempt ?? '?'}) of run ${run}, lease ${left >= 0 ? `ends in ${left} s` : `ended ${-left} s ago`}${running ? ', a command of it still running on the node' : ''}`;
}

/**
 * A {@link NodeShell} that acts only while `owner` holds the node's lease. Construct it with
 * {@link lockNode}: its first command takes the lease (waiting while another owner holds it) in the same remote
 * script; {@link release} it when done (an expired lease, or one never taken, needs no release).
 */
export class LockedShell extends NodeShell {
  private expiresAt = 0;
  private taken = false;

  constructor(pool: SshPool, target: NodeTarget, readonly owner: string, private readonly waitUntil: number, private readonly deadline: number, private readonly rank = 0) {
    super(pool, target);
  }

  /** {@link NodeShell.tool} as a function, for the lock's scripts. */
  private readonly toolOf: ToolOf = (program) => this.tool(program);

  /** True once a command of this shell has taken the lease. */
  get holdsLease(): boolean {
    return this.taken;
  }

  /** Seconds of lease to ask for now: 30, never past the attempt's deadline, at least 5. */
  private leaseSeconds(): number {
    return Math.max(5, Math.ceil(Math.min(LEASE_STEP_MS, this.deadline - Date.now()) / 1000));
  }

  /** Extends the lease to `until` (worker clock, capped at the attempt's deadline). */
  private async extend(until: number): Promise<void> {
    const seconds = Math.ceil((Math.min(until, this.deadline) - Date.now()) / 1000);
    if (seconds <= 1) return;
    const requested = Date.now();
    const result = await super.send(takeScript(this.name, this.owner, seconds, this.rank, this.toolOf), { allowExitCodes: [0, 97, 98], timeoutMs: 30_000 });
    if (result.exitCode !== 0) {
      throw transientFailure(NodeLockLost, `Node ${this.name}: ${this.owner} could not extend its lease on the node's lock (${result.exitCode === 97 ? describeHolder(result.stdout) : 'flock busy'}); nothing more was done by this attempt`);
    }
    this.expiresAt = requested + seconds * 1000;
  }

  /**
   * Runs `command` only if this owner's lease is valid (taken by this very command the first time, renewed
   * first when it is short), holding the running lock shared while it runs, so the next owner waits for it to end.
   */
  protected override async send(command: Command, options: RunOptions = {}): Promise<CommandResult> {
    if (!this.taken) return this.takeAndRun(command, options);
    if (this.expiresAt - Date.now() < RENEW_BELOW_MS) await this.extend(Date.now() + LEASE_STEP_MS);
    if (this.expiresAt - Date.now() <= 1_000) throw transientFailure(NodeLockLost, `Node ${this.name}: the lease of ${this.owner} on the node's lock has ended with its attempt; the attempt stops here and the next one takes over`);
    const lockFile = lockPath(this.name);
    const guard = sh`exec 9<${lockFile}.flock && ${this.tool('flock')} -w 10 9 || exit ${LOCK_LOST_EXIT}
read o e k < ${lockFile} 2>/dev/null; if [ "$o" != ${this.owner} ] || [ "$(date +%s)" -ge "\${e:-0}" ]; then echo ${LOCK_LOST_TEXT} >&2; exit ${LOCK_LOST_EXIT}; fi`;
    return this.runChecked(command, sh`${guard}\n${underRunningLock(this.name, command, this.toolOf)}`, options);
  }

  /**
   * The first command: one remote script takes the lease, then runs `command` under the running lock. While another
   * owner holds the lease, nothing of `command` runs: the take is tried again every 2 s until the wait ends (NodeBusy).
   */
  private async takeAndRun(command: Command, options: RunOptions): Promise<CommandResult> {
    for (;;) {
      if (this.deadline - Date.now() <= 1_000) throw transientFailure(NodeLockLost, `Node ${this.name}: the attempt of ${this.owner} has ended before it took the node's lock; nothing was done by it`);
      const lease = this.leaseSeconds();
      const requested = Date.now();
      const script = sh`${takeScript(this.name, this.owner, lease, this.rank, this.toolOf)} || { echo katafleet-node-lock-not-written >&2; exit 96; }\n${underRunningLock(this.name, command, this.toolOf)}`;
      const result = await this.runChecked(command, script, options, [97, 98]);
      if (!result.stderr.includes(NODE_BUSY_TEXT)) {
        this.taken = true;
        this.expiresAt = requested + lease * 1000;
        return result;
      }
      const holder = result.exitCode === 98 ? `${lockPath(this.name)}.flock held for over 10 s` : describeHolder(result.stdout);
      if (Date.now() + 2_000 > this.waitUntil) {
        throw transientFailure(NodeBusy, `Node ${this.name} is locked by ${holder}; ${this.owner} waited ${Math.round((this.waitUntil - requested) / 1000)} s or more and will be retried`);
      }
      await pause(Math.min(2_000, this.waitUntil - Date.now()));
    }
  }

  /** Runs `script` (which runs `command` when the lock allows) and turns the lock's own exits into failures. */
  private async runChecked(command: Command, script: Command, options: RunOptions, lockExits: number[] = []): Promise<CommandResult> {
    const allowed = options.allowExitCodes ?? [0];
    // Timeouts nest: no command runs past the attempt's start-to-close.
    const timeoutMs = Math.min(options.timeoutMs ?? 60_000, this.deadline - Date.now() - 1_000);
    const result = await super.send({ ...script, display: command.display }, { ...options, timeoutMs, allowExitCodes: [...new Set([...allowed, LOCK_LOST_EXIT, ...lockExits])] });
    if (lockExits.length > 0 && result.stderr.includes(NODE_BUSY_TEXT)) return result;
    if (result.exitCode === LOCK_LOST_EXIT && result.stderr.includes(LOCK_LOST_TEXT)) {
      throw transientFailure(NodeLockLost, `Node ${this.name}: ${this.owner} no longer holds the node's lock (its lease ended or another attempt took over); nothing more was done by this attempt`);
    }
    if (!allowed.includes(result.exitCode ?? -1)) {
      throw transientFailure('CommandFailed', `Node ${this.name}: ${command.display} exited with ${result.exitCode}: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    }
    return result;
  }

  /** Gives the lease back if it is still this owner's (a no-op otherwise, and when no command ever took it). */
  async release(): Promise<void> {
    if (!this.taken) return;
    await super.send(this.releaseScript(), { signal: undefined, timeoutMs: 20_000 });
  }

  /** The release on the node: removes the lease file when it still names this owner (under the lock file's flock). */
  private releaseScript(): Command {
    return sh`test -e ${lockPath(this.name)}.flock || exit 0; exec 9<${lockPath(this.name)}.flock && ${this.tool('flock')} -w 10 9 || exit 0; read o e < ${lockPath(this.name)} 2>/dev/null || exit 0; if [ "$o" = ${this.owner} ]; then ${this.tool('rm')} -f ${lockPath(this.name)}; ${this.tool('sync')} ${KATAFLEET_DIR}; fi`;
  }

  /**
   * The release as the last part of this owner's last command (NodeShell.runInOrder, a part that always runs), for
   * the run's closing activity: one command fewer. `ran` takes that part's answer; once the part ran, the lease is
   * given back and {@link release} sends nothing more. (The command still holds the running lock until it ends, so
   * no other owner's command starts before it has.)
   */
  releaseInLastCommand(): { command: Command; ran: (answer: PartResult | undefined) => void } {
    return {
      command: this.releaseScript(),
      ran: (answer) => {
        if (answer?.exitCode === 0) this.taken = false;
      },
    };
  }
}

/**
 * The node's lock for `owner` for the rest of this attempt: a {@link LockedShell} whose first command takes the
 * lease, waiting (heartbeating) while another owner holds it, at most `waitMs`; then it fails with {@link NodeBusy}
 * naming the holder. Nothing runs on the node until then.
 */
export function lockNode(pool: SshPool, target: NodeTarget, owner: string, options: { waitMs: number; fallbackAttemptMs?: number; rank?: number }): LockedShell {
  return new LockedShell(pool, target, owner, Date.now() + options.waitMs, attemptDeadline(options.fallbackAttemptMs ?? 10 * 60_000), options.rank);
}

/**
 * Runs `work` while holding the node's lock; releases it afterwards, also on failure. With `handOver`, a `work` that
 * succeeds leaves the lease for the run's next activity to take over (one SSH command fewer per step); the lease
 * still ends on its own if none follows.
 */
export async function withNodeLock<T>(pool: SshPool, target: NodeTarget, owner: string, waitMs: number, work: (shell: LockedShell) => Promise<T>, options: { handOver?: boolean; rank?: number } = {}): Promise<T> {
  if (waitMs < 0) throw permanentFailure('NodeLockMisused', 'negative wait for the node lock');
  const shell = lockNode(pool, target, owner, { waitMs, rank: options.rank });
  let done = false;
  try {
    const result = await work(shell);
    done = true;
    return result;
  } finally {
    if (!(done && options.handOver)) await shell.release().catch(() => undefined);
  }
}
