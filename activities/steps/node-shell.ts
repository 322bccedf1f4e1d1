/**
 * One node as the step activities see it: commands over the shared SSH pool (heartbeating while they
 * run, stopped when the activity is cancelled) plus the few file reads every step needs.
 */
import { createHash, randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { sh, type Command, type CommandResult, type RunOptions, type SshNode, type SshPool } from '../ssh';
import type { Login } from '../../playbooks/credentials';
import { loginFor, ProfileScopeError } from '../../playbooks/login';
import { programMissingMessage, type ProbedProgram, type ProgramPaths } from '../ssh/programs';
import { KF_ROOT_SHIMS, narrowSudo, ROOT_PATH, withPrelude } from '../ssh/quote';
import type { NodeTarget } from '../node-types';
import { checkTargets } from '../step-policy';
import { cancellationSignal, permanentFailure, transientFailure, whileHeartbeating } from './step-runtime';

/**
 * The SSH layer's view of an inventory node; the login is read by this worker from where the target says (see
 * {@link loginFor}). Every activity reaches a node through here, so the target is checked here (StepRefused): a
 * workflow started straight on Temporal cannot send a hostile name, address or credentials reference to SSH.
 */
export function sshNodeOf(target: NodeTarget): SshNode {
  checkTargets(target, undefined);
  let login: Login;
  try {
    login = loginFor(target.credentials, target);
  } catch (error) {
    if (error instanceof ProfileScopeError) throw permanentFailure(CredentialProfileRefused, `Node ${target.name} (${target.address}): nothing was run: ${error.message}`);
    throw permanentFailure('SshAuthFailed', `Node ${target.name} (${target.address}): no login: ${(error as Error).message}`);
  }
  // Narrow sudo is applied by NodeShell.run (as the user, with kf-root's shims first in PATH), not by the pool.
  return { name: target.name, address: target.address, port: target.port, maxSessions: target.maxSessions, ...login, sudo: login.sudo === 'narrow' ? false : login.sudo };
}

/** Failure type: the target's credential profile is not bound to the node's address (its `hosts`). Permanent. */
export const CredentialProfileRefused = 'CredentialProfileRefused';

/**
 * Failure type: a program the step needs is not on the node (not found by the program probe under the PATH root
 * commands run with). Permanent; raised before the step changes anything.
 */
export const ProgramMissing = 'ProgramMissing';

/** True when `target`'s login reaches root only through kf-root (profile `sudo = "narrow"`). */
function isNarrow(target: NodeTarget): boolean {
  return loginFor(target.credentials, target).sudo === 'narrow';
}

/** sha256 (hex) of text as UTF-8, the way `sha256sum` on the node sees the same bytes. */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** A temp file next to `path` for one writer: `<path>.katafleet-tmp-<8 hex digits>`. */
export function tempPathFor(path: string): string {
  return `${path}.katafleet-tmp-${randomBytes(4).toString('hex')}`;
}

/** A file katafleet writes has a directory in its place (a write would land inside it). Never retried. */
export const FileIsDirectory = 'FileIsDirectory';

/** The exit status of {@link NodeShell.writeFileCommand} when a directory stands where the file should be. */
export const FILE_IS_DIRECTORY_EXIT = 20;

/** The message of {@link FileIsDirectory}. */
export function fileIsDirectoryMessage(node: string, path: string): string {
  return `Node ${node}: ${path} is a directory, not a file: katafleet does not write into it (remove or rename it, then run again); nothing was written`;
}

export class NodeShell {
  readonly ssh: SshNode;
  /** Root only through kf-root: root commands run as the user with its shims first in PATH. */
  private readonly narrow: boolean;

  /**
   * Reads queued with {@link queueRead} to ride on this shell's next command; each is checked (its `check` may
   * throw) before anything the step read with that command is handed back.
   */
  private pending: PendingRead[] = [];

  constructor(private readonly pool: SshPool, readonly target: NodeTarget) {
    this.ssh = sshNodeOf(target);
    this.narrow = isNarrow(target);
  }

  get name(): string {
    return this.target.name;
  }

  /** The PATH root commands run with: in narrow mode kf-root's shims first, so kf-root still decides what runs as root. */
  get rootPath(): string {
    return this.narrow ? `${KF_ROOT_SHIMS}:${ROOT_PATH}` : ROOT_PATH;
  }

  /**
   * Runs `command` (as root unless `asRoot: false`); heartbeats while it runs. A root command sent on a connection
   * that has not been probed yet carries the program probe ({@link NodeShell.programs}).
   */
  async run(command: Command, options: RunOptions = {}): Promise<CommandResult> {
    await this.flushQueuedReads();
    return this.send(command, options);
  }

  /** {@link run} without the queued reads: the wire itself (subclasses that wrap `run` send through here). */
  protected send(command: Command, options: RunOptions = {}): Promise<CommandResult> {
    const asRoot = options.asRoot !== false;
    const narrowed = this.narrow && asRoot ? { command: narrowSudo(command), asRoot: false } : { command, asRoot: options.asRoot };
    const probe = asRoot ? { path: this.rootPath } : undefined;
    return whileHeartbeating(this.pool.run(this.ssh, narrowed.command, { signal: cancellationSignal(), ...options, asRoot: narrowed.asRoot, probe }));
  }

  /**
   * The absolute paths of the programs a step runs, as the connection's probe found them under {@link rootPath}.
   * `required` programs the node lacks fail the step with a permanent {@link ProgramMissing} naming node, programs,
   * the directories searched and the fix; `optional` ones are left out of the answer when missing. Call it after the
   * step's first (read-only) root command, which carried the probe: then it costs no round trip; otherwise (a
   * reconnect since) it sends the probe alone.
   */
  async programs<R extends ProbedProgram, O extends ProbedProgram = never>(stepName: string, required: readonly R[], optional: readonly O[] = []): Promise<Record<R, string> & Partial<Record<O, string>>> {
    let found = this.pool.programsOf(this.ssh);
    if (found !== undefined && required.some((program) => !found!.paths.has(program))) {
      // Missing in an answer from earlier on this connection: the program may have been installed since; look again.
      this.pool.forgetPrograms(this.ssh);
      found = undefined;
    }
    for (let tries = 0; found === undefined && tries < 3; tries++) {
      await this.run(sh`true`);
      found = this.pool.programsOf(this.ssh);
    }
    if (found === undefined) throw transientFailure('ProgramProbeFailed', `Node ${this.name}: the connection closed before the program probe answered; trying again`);
    const answer: ProgramPaths = found;
    const missing = required.filter((program) => !answer.paths.has(program));
    // (Only a fresh answer can lack a required program: an older one lacking it was dropped above.)
    if (missing.length > 0) throw permanentFailure(ProgramMissing, programMissingMessage(this.name, missing, answer.searched, stepName));
    const paths: Partial<Record<ProbedProgram, string>> = {};
    for (const program of [...required, ...optional]) {
      const path = answer.paths.get(program);
      if (path !== undefined) paths[program] = path;
    }
    return paths as Record<R, string> & Partial<Record<O, string>>;
  }

  /**
   * The absolute path of `program` as this connection's probe found it, for commands built by shared code (file
   * reads and writes, the journal, the node lock) that has no step of its own to fail. Before the connection's answer
   * is known (only the command that carries the probe is built then) it is the bare name, found by the same PATH
   * lookup the probe makes in the same shell a moment earlier; a program the probe did not find keeps its name (the
   * shell then fails with exit 127, as a step's own {@link programs} check would have refused first).
   */
  tool(program: ProbedProgram): string {
    return this.pool.programsOf(this.ssh)?.paths.get(program) ?? program;
  }

  /**
   * {@link tool} for a command run as the login user (`asRoot: false`): in narrow mode a kf-root shim runs its
   * program as root through kf-root (which refuses reads such as `rpm -q`), so there the user's own lookup is used.
   */
  userTool(program: ProbedProgram): string {
    const path = this.tool(program);
    return path.startsWith(`${KF_ROOT_SHIMS}/`) ? program : path;
  }

  /** stdout of `command`, trimmed. */
  async output(command: Command, options: RunOptions = {}): Promise<string> {
    return (await this.run(command, options)).stdout.trim();
  }

  /** True when `command` exits 0, false when it exits 1 (a test, `grep -q`); other codes fail. */
  async test(command: Command): Promise<boolean> {
    return (await this.run(command, { allowExitCodes: [0, 1] })).exitCode === 0;
  }

  /** A regular file's bytes as text, or undefined when there is no such file. */
  async readFile(path: string): Promise<string | undefined> {
    const result = await this.run(this.readFileCommand(path), { allowExitCodes: [0, 3] });
    return result.exitCode === 0 ? result.stdout : undefined;
  }

  /** The command {@link readFile} sends: the file's bytes, or exit 3 when there is no such regular file (for readAll parts). */
  readFileCommand(path: string): Command {
    return sh`if test -f ${path}; then ${this.tool('cat')} ${path}; else exit 3; fi`;
  }

  async exists(path: string): Promise<boolean> {
    return this.test(sh`test -e ${path}`);
  }

  /** sha256 (hex) of a file on the node, or undefined when it does not exist. */
  async sha256(path: string): Promise<string | undefined> {
    const result = await this.run(sh`if test -f ${path}; then ${this.tool('sha256sum')} ${path}; else exit 3; fi`, { allowExitCodes: [0, 3] });
    return result.exitCode === 0 ? result.stdout.trim().split(/\s+/)[0] : undefined;
  }

  /**
   * Writes `content` to `path` atomically: through stdin into a temp file next to it, then a rename.
   * The new file keeps the old one's mode and owner when there was one. The temp file is this writer's own
   * (`<file>.katafleet-tmp-<random>`), so two writers of one file never share one (with one fixed name, the first
   * rename took the other's temp away and its rename failed); it is removed when the write fails on the node.
   */
  async writeFileAtomic(path: string, content: string, tempPath = tempPathFor(path)): Promise<void> {
    const result = await this.run(this.writeFileCommand(path, tempPath), { stdin: content, allowExitCodes: [0, FILE_IS_DIRECTORY_EXIT] });
    if (result.exitCode === FILE_IS_DIRECTORY_EXIT) throw permanentFailure(FileIsDirectory, fileIsDirectoryMessage(this.name, path));
  }

  /**
   * {@link writeFileAtomic}'s command (the content on its stdin), for a step that sends it in a script of its own:
   * exit {@link FILE_IS_DIRECTORY_EXIT} when a directory stands where the file should be, nothing written.
   */
  writeFileCommand(path: string, tempPath = tempPathFor(path)): Command {
    const bin = (program: ProbedProgram) => this.tool(program);
    // A directory (or a link to one) where the file should be: `mv -f` would move the file into it and "succeed".
    return sh`if test -d ${path}; then exit ${FILE_IS_DIRECTORY_EXIT}; fi; { ${bin('mkdir')} -p ${posix.dirname(path)} && ${bin('tee')} ${tempPath} >/dev/null && { if test -e ${path}; then ${bin('chmod')} --reference=${path} ${tempPath} && ${bin('chown')} --reference=${path} ${tempPath}; else ${bin('chmod')} 0644 ${tempPath}; fi; } && ${bin('mv')} -f ${tempPath} ${path}; } || { s=$?; if test -e ${tempPath}; then ${bin('rm')} -f ${tempPath}; fi; exit $s; }`;
  }

  /**
   * Runs several reads as one remote command (one SSH round trip instead of one each): every part runs in its own
   * subshell, in order, whatever the others did; returns each part's stdout (exactly as it printed it) and exit
   * status by name. stderr of the parts is dropped: use it for reads whose answer is their output and status.
   */
  async readAll<K extends string>(parts: Record<K, Command>, options: Pick<RunOptions, 'timeoutMs' | 'signal' | 'stdin'> = {}): Promise<Record<K, PartResult>> {
    const queued = this.pending;
    this.pending = [];
    const names = Object.keys(parts) as K[];
    if (names.length === 0 && queued.length === 0) return {} as Record<K, PartResult>;
    const marker = `@@katafleet-${randomBytes(6).toString('hex')}`;
    // The queued reads first, then the step's parts (markers are by index, so names never clash on the node).
    const commands = [...queued.map((read) => read.command), ...names.map((name) => parts[name])];
    const script = commands
      .map((command, i) => sh`echo ${`${marker}-${i}`}; ( ${command}
) 2>/dev/null; s=$?; echo; echo ${`${marker}-${i}`} "$s"`)
      .reduce((all, part) => sh`${all}
${part}`);
    // Sent without flushing: the queued reads are in this very script. If no answer comes, they stay queued, so a
    // caller that goes on with this shell after the failure still has them checked first.
    let all: Record<string, PartResult>;
    try {
      const { stdout } = await this.send(script, options);
      all = parseParts(stdout, [...queued.map((_, i) => `queued ${i}`), ...names], marker);
    } catch (err) {
      this.pending = [...queued, ...this.pending];
      throw err;
    }
    queued.forEach((read, i) => read.check(all[`queued ${i}`]));
    const result = {} as Record<K, PartResult>;
    for (const name of names) result[name] = all[name];
    return result;
  }

  /**
   * Runs several commands (as root) as one remote command, in order, each in its own subshell with its stderr merged
   * into its stdout, and returns each one's output and exit status, or undefined for a part whose `when` did not
   * hold (it did not run). `when` names earlier parts by index: all of `ok` ran and exited 0, all of `failed` ran
   * and exited non-zero, and each list of `anyOk` has one that ran and exited 0. So a sequence stops where a step
   * would stop (the first failure of a required module), as separate commands did, in one round trip.
   */
  async runInOrder(parts: readonly OrderedPart[], options: Pick<RunOptions, 'timeoutMs' | 'signal' | 'stdin'> = {}): Promise<(PartResult | undefined)[]> {
    if (parts.length === 0) return [];
    const marker = `@@katafleet-${randomBytes(6).toString('hex')}`;
    const index = (i: number, before: number) => {
      if (!Number.isInteger(i) || i < 0 || i >= before) throw new Error(`runInOrder: part ${before} names part ${i}, which does not run before it`);
      return `"$kf_${i}"`;
    };
    const script = parts
      .map((part, i) => {
        const tests = [
          ...(part.when?.ok ?? []).map((j) => `[ ${index(j, i)} = 0 ]`),
          ...(part.when?.failed ?? []).map((j) => `{ [ ${index(j, i)} != 0 ] && [ ${index(j, i)} != - ]; }`),
          ...(part.when?.anyOk ?? []).map((group) => `{ ${group.length === 0 ? 'false' : group.map((j) => `[ ${index(j, i)} = 0 ]`).join(' || ')}; }`),
        ];
        // Trusted text: indices checked above, nothing from the input.
        const guard = withPrelude(tests.length === 0 ? 'true' : tests.join(' && '), sh``);
        return sh`echo ${`${marker}-${i}`}; if ${guard}; then ( ${part.command}
) 2>&1; s=$?; else s=-; fi; ${withPrelude(`kf_${i}=$s`, sh``)}; echo; echo ${`${marker}-${i}`} "$s"`;
      })
      .reduce((all, part) => sh`${all}
${part}`);
    const { stdout } = await this.run(script, options);
    const answer = parseParts(stdout, parts.map((_, i) => String(i)), marker);
    return parts.map((_, i) => (answer[String(i)].exitCode === NOT_RUN ? undefined : answer[String(i)]));
  }

  /**
   * Queues a read (as root) to ride on this shell's next command instead of costing a round trip of its own: the
   * next {@link readAll} carries it as one more part, in front of the step's own reads, and calls `check` with its
   * answer before it hands anything back; any other command sends it first, alone, and checks it, before it runs.
   * So a `check` that throws (a refusal) always stops the step before the command that follows its read is used,
   * and before anything but a read ran on the node (readAll's parts are reads). The read is sent at most once.
   */
  queueRead(command: Command, check: (answer: PartResult) => void): void {
    this.pending.push({ command, check });
  }

  /** Sends the queued reads now, alone (one command), and checks their answers. */
  protected async flushQueuedReads(): Promise<void> {
    if (this.pending.length === 0) return;
    await this.readAll({});
  }

  /** The node's kernel release, `uname -r`. */
  async kernelRelease(): Promise<string> {
    return this.output(sh`uname -r`, { asRoot: false });
  }
}

/** One part of {@link NodeShell.runInOrder}: the command and when it runs (by the earlier parts' exit status). */
export interface OrderedPart {
  command: Command;
  when?: { ok?: readonly number[]; failed?: readonly number[]; anyOk?: readonly (readonly number[])[] };
}

/** The exit status {@link parseParts} gives a part of {@link NodeShell.runInOrder} that did not run. */
const NOT_RUN = -1;

/** A read queued to ride on a shell's next command ({@link NodeShell.queueRead}). */
interface PendingRead {
  command: Command;
  check: (answer: PartResult) => void;
}

/** One part of {@link NodeShell.readAll}: its stdout and exit status. */
export interface PartResult {
  stdout: string;
  exitCode: number;
}

/** The parts of a {@link NodeShell.readAll} answer; a part the answer lacks (the script was cut short) is an error. */
export function parseParts<K extends string>(stdout: string, names: readonly K[], marker: string): Record<K, PartResult> {
  const result = {} as Record<K, PartResult>;
  names.forEach((name, i) => {
    const start = stdout.indexOf(`${marker}-${i}\n`);
    const endMatch = new RegExp(`\n${marker}-${i} (\\d+|-)\n`).exec(stdout.slice(start));
    if (start < 0 || !endMatch) throw new Error(`the answer to a batch of reads lacks its part ${i} (${name}): the remote script was cut short`);
    // The script prints a newline after each part's output, so the end marker is always on a line of its own.
    const body = stdout.slice(start + marker.length + `-${i}\n`.length, start + endMatch.index);
    result[name] = { stdout: body, exitCode: endMatch[1] === '-' ? NOT_RUN : Number(endMatch[1]) };
  });
  return result;
}
