import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { NodeSSH } from 'node-ssh';
import type { ClientChannel } from 'ssh2';
import {
  commandFailedMessage, commandOutcomeUnknownMessage, commandOutputTooLargeMessage, commandTimedOutMessage,
} from './command-error';
import {
  classifyConnectError, hostKeyMismatchMessage, hostKeyRevokedMessage, hostKeyUnknownMessage, identityUnreadableMessage,
  type ConnectFailure,
} from './connect-error';
import { isError, SshFailureType, sshFailure } from './failure-types';
import { appendKnownHost, checkHostKey, entriesForHost, hostKeyAlgorithmsFor, readKnownHosts, type KnownHostEntry } from './known-hosts';
import { DEFAULT_MAX_SESSIONS, DEFAULT_SSH_PORT, nodeEndpointLabel, type SshNode } from './node';
import { probeMarker, probeScript, splitProbe, type ProgramPaths, type ProgramProbeRequest } from './programs';
import { sudo, withDeadline, withPrelude, type Command } from './quote';
import { failureDetails, normalizeSignal, type CommandResult } from './result';
import { Semaphore } from './semaphore';

/** Pool-wide settings; every field has a default suited to a fleet on a LAN. */
export interface SshPoolOptions {
  /** Time for TCP connect + SSH handshake + auth (ssh2 `readyTimeout`): a frozen sshd fails after this. @default 15000 */
  connectTimeoutMs?: number;
  /** Keepalive probe interval on idle connections, so a dead peer is noticed. @default 5000 */
  keepaliveIntervalMs?: number;
  /** Unanswered keepalives before the connection is declared dead. @default 3 */
  keepaliveCountMax?: number;
  /** Per-command timeout when {@link RunOptions.timeoutMs} is not given. @default 60000 */
  defaultTimeoutMs?: number;
  /** Most bytes kept per stream (stdout, stderr); more fails the command with `CommandOutputTooLarge`. @default 16 MiB */
  maxOutputBytes?: number;
  /** After a timeout, how long to wait for the channel to close before dropping the whole connection. @default 2000 */
  closeGraceMs?: number;
  /**
   * A connection with no channel open for this long is closed (the next command reconnects), so a worker that has
   * rolled out thousands of nodes does not keep a connection, its buffers and an sshd process on each. @default 60000
   */
  idleCloseMs?: number;
  /**
   * Called once per command after it ended (also when it failed): for benchmarks and tracing. It runs in the caller's
   * async context (an activity's, inside a worker), must not throw, and sees the command as sent (after sudo/deadline).
   */
  onCommand?: (event: CommandEvent) => void;
}

/** One command as {@link SshPoolOptions.onCommand} sees it. */
export interface CommandEvent {
  /** Inventory name of the node. */
  node: string;
  /** The command line as sent to the node's shell. */
  text: string;
  stdin?: string | Buffer;
  /** `performance.timeOrigin`-relative start and end, in ms. */
  startedMs: number;
  endedMs: number;
  /** Exit code, or null when the command failed (exit code not allowed, timeout, drop, abort). */
  exitCode: number | null;
}

/** Per-command settings. */
export interface RunOptions {
  /** Sent to the command's stdin, then EOF. The way to deliver file contents: never interpolate them. */
  stdin?: string | Buffer;
  /**
   * How long the command may run once started; then it is stopped (signal, channel closed, and timeout(1) on the node
   * a second later) and the call fails with `CommandTimedOut`. @default the pool's defaultTimeoutMs
   */
  timeoutMs?: number;
  /** Exit codes that count as success (e.g. `[0, 1]` for `grep -q`, `test`). @default [0] */
  allowExitCodes?: readonly number[];
  /** Run through `sudo -n` when the node's user is not root. Set false for read-only commands that need no root. @default true */
  asRoot?: boolean;
  /** Stops the command when aborted (pass the activity's `cancellationSignal`); the promise rejects with the abort reason. */
  signal?: AbortSignal;
  /**
   * Probe the connection's programs ({@link SshPool.programsOf}) with this command when the connection has no answer
   * yet: the probe runs first in the same remote shell (no extra round trip) and its output is split off stdout.
   */
  probe?: ProgramProbeRequest;
}

type ResolvedNode = SshNode & Required<Pick<SshNode, 'port' | 'sudo' | 'trustOnFirstUse' | 'maxSessions'>>;

function resolveNode(node: SshNode): ResolvedNode {
  return {
    ...node,
    port: node.port ?? DEFAULT_SSH_PORT,
    sudo: node.sudo ?? node.user !== 'root',
    trustOnFirstUse: node.trustOnFirstUse ?? false,
    maxSessions: node.maxSessions ?? DEFAULT_MAX_SESSIONS,
  };
}

/** One live SSH connection; `closed` settles when it goes away for any reason. */
interface Session {
  ssh: NodeSSH;
  closed: Promise<string>;
  isOpen(): boolean;
  /** Calls `listener` with the reason when the connection closes; returns the unsubscribe function. */
  onClose(listener: (reason: string) => void): () => void;
  /** The program probe's answer on this connection (see {@link RunOptions.probe}); gone with the connection. */
  programs?: ProgramPaths;
}

/** Why a started command stopped early, decided by whichever comes first. */
type Interruption =
  | { kind: 'timeout' }
  | { kind: 'abort'; reason: unknown }
  | { kind: 'output-too-large' }
  | { kind: 'dropped'; reason: string };

/** One node's connection (re-established on demand) and the channel budget on it. */
class NodeConnection {
  readonly channels: Semaphore;
  private session: Session | null = null;
  private connecting: Promise<Session> | null = null;

  constructor(readonly node: ResolvedNode, private readonly options: Required<SshPoolOptions>) {
    this.channels = new Semaphore(node.maxSessions);
  }

  /** The open session, connecting (once, shared by concurrent callers) when there is none. */
  async open(): Promise<Session> {
    if (this.session?.isOpen()) return this.session;
    this.connecting ??= this.connect().finally(() => { this.connecting = null; });
    return this.connecting;
  }

  /** The open session, if there is one (never connects). */
  current(): Session | null {
    return this.session?.isOpen() ? this.session : null;
  }

  /** Ends the connection; in-flight commands end with `CommandOutcomeUnknown`. */
  async close(): Promise<void> {
    const session = this.session ?? await this.connecting?.catch(() => null);
    this.session = null;
    if (!session) return;
    session.ssh.connection?.end();
    const timer = setTimeout(() => session.ssh.connection?.destroy(), this.options.closeGraceMs);
    await session.closed;
    clearTimeout(timer);
  }

  /** Destroys the socket at once: used when a channel will not close (the server stopped answering). */
  drop(session: Session): void {
    if (this.session === session) this.session = null;
    session.ssh.connection?.destroy();
  }

  private async connect(): Promise<Session> {
    const { node, options } = this;
    let privateKey: string;
    try {
      privateKey = await readFile(node.identityFile, 'utf8');
    } catch (err) {
      throw sshFailure(SshFailureType.SshAuthFailed, identityUnreadableMessage(node, err), { cause: err });
    }
    // The host verifier below lives as long as the connection: it keeps only the lines that can decide this node's key.
    const knownHosts = knownHostsForNode(await readKnownHosts(node.knownHosts), node.address, node.port);
    let refusal: ConnectFailure | null = null;
    const hostVerifier = (key: Buffer, verify: (valid: boolean) => void): void => {
      const verdict = checkHostKey(knownHosts.entries, node.address, node.port, key);
      if (verdict.verdict === 'known') return verify(true);
      if (verdict.verdict === 'unknown' && node.trustOnFirstUse) {
        appendKnownHost(node.knownHosts, node.address, node.port, key).then(() => verify(true), (err: Error) => {
          refusal = { type: SshFailureType.HostKeyUnknown, message: `${hostKeyUnknownMessage(node, key, knownHosts.exists)} (trust-on-first-use could not write it: ${err.message})` };
          verify(false);
        });
        return;
      }
      refusal = verdict.verdict === 'mismatch'
        ? { type: SshFailureType.HostKeyMismatch, message: hostKeyMismatchMessage(node, key, verdict.expected) }
        : verdict.verdict === 'revoked'
          ? { type: SshFailureType.HostKeyMismatch, message: hostKeyRevokedMessage(node, key, verdict.entry) }
          : { type: SshFailureType.HostKeyUnknown, message: hostKeyUnknownMessage(node, key, knownHosts.exists) };
      verify(false);
    };
    const serverHostKey = hostKeyAlgorithmsFor(knownHosts.entries, node.address, node.port);

    const ssh = new NodeSSH();
    const connecting = ssh.connect({
      host: node.address,
      port: node.port,
      username: node.user,
      privateKey,
      readyTimeout: options.connectTimeoutMs,
      keepaliveInterval: options.keepaliveIntervalMs,
      keepaliveCountMax: options.keepaliveCountMax,
      hostVerifier,
      // ssh2's types allow only its literal algorithm names; these come from known_hosts key types.
      algorithms: serverHostKey ? { serverHostKey: serverHostKey as never } : undefined,
    });
    // node-ssh created the ssh2 client synchronously (no await before it when the key is given inline). Listen now:
    // node-ssh removes its own `error` listener once connected, and an unheard `error` event kills the process.
    const client = ssh.connection;
    if (!client) throw new Error('node-ssh did not create a client');
    // node-ssh adds an `error` listener per command while its channel opens: allow one per channel slot, and ours.
    client.setMaxListeners(node.maxSessions + 5);
    let lastError = 'the server closed the connection';
    client.on('error', (err: Error) => { lastError = err.message; });
    let open = true;
    const listeners = new Set<(reason: string) => void>();
    const closed = new Promise<string>((resolve) => client.once('close', () => {
      open = false;
      resolve(lastError);
      listeners.forEach((listener) => listener(lastError));
    }));
    try {
      await connecting;
    } catch (err) {
      client.destroy();
      const failure = refusal ?? classifyConnectError(node, err, options.connectTimeoutMs);
      throw sshFailure(failure.type, failure.message, { cause: err });
    }
    const session: Session = {
      ssh,
      closed,
      isOpen: () => open,
      onClose: (listener) => {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
    };
    this.session = session;
    void closed.then(() => { if (this.session === session) this.session = null; });
    return session;
  }
}

/**
 * Of a parsed known_hosts, the lines that can decide `host`:`port`'s key: its own and every `@revoked` one
 * (`checkHostKey` gives the same verdict on them as on the whole file). A fleet's known_hosts has a line per node, and
 * each open connection kept all of them: memory grew with fleet × connections (issue 13's worker memory). Pure.
 */
export function knownHostsForNode(read: { exists: boolean; entries: KnownHostEntry[] }, host: string, port: number): { exists: boolean; entries: KnownHostEntry[] } {
  return { exists: read.exists, entries: [...read.entries.filter((e) => e.marker === '@revoked'), ...entriesForHost(read.entries, host, port)] };
}

const defaultPoolOptions: Required<SshPoolOptions> = {
  connectTimeoutMs: 15_000,
  keepaliveIntervalMs: 5_000,
  keepaliveCountMax: 3,
  defaultTimeoutMs: 60_000,
  maxOutputBytes: 16 * 1024 * 1024,
  closeGraceMs: 2_000,
  idleCloseMs: 60_000,
  onCommand: () => undefined,
};

/** How many times a command is re-queued when its channel could not be opened (refused, or the connection died). */
const MAX_CHANNEL_REFUSALS = 8;

/**
 * SSH connections to the fleet: one per node, reused by every command, with at most `maxSessions` channels open on
 * it at once. A dropped connection is re-established by the next command. Host keys are checked against the node's
 * known_hosts before anything runs.
 *
 * Usable anywhere (activities, tests, drift checks); failures are `ApplicationFailure`s whose `type` is one of
 * {@link SshFailureType}.
 *
 * @example
 * const pool = new SshPool();
 * const result = await pool.run(node, cmd('kata-runtime', ['check']));
 * await pool.run(node, sh`tee ${path}`, { stdin: configText });
 * await pool.closeAll();
 */
export class SshPool {
  private readonly options: Required<SshPoolOptions>;
  private readonly connections = new Map<string, NodeConnection>();
  /** When each connection was last handed to a command (ms, Date.now()). */
  private readonly lastUsed = new Map<string, number>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(options: SshPoolOptions = {}) {
    this.options = { ...defaultPoolOptions, ...options };
  }

  /**
   * Runs `command` on `node` and returns its result when the exit code is allowed.
   *
   * @throws ApplicationFailure typed `CommandFailed` (exit code not allowed, or killed by a signal; the result is in
   * `details[0]`, with at most the last 4 KiB of stdout and of stderr), `CommandTimedOut`, `CommandOutputTooLarge`, `CommandOutcomeUnknown` (the connection dropped mid-command:
   * re-read the node's state before redoing a mutation), or a connection failure (`SshConnectFailed`, `SshAuthFailed`,
   * `HostKeyMismatch`, `HostKeyUnknown`, `SshChannelFailed`).
   */
  async run(node: SshNode, command: Command, options: RunOptions = {}): Promise<CommandResult> {
    const connection = this.connectionFor(node);
    const timeoutMs = options.timeoutMs ?? this.options.defaultTimeoutMs;
    const startedMs = performance.now();
    let sent = this.effective(connection, command, options, timeoutMs);
    const report = (exitCode: number | null) => this.options.onCommand({ node: node.name, text: sent.text, stdin: options.stdin, startedMs, endedMs: performance.now(), exitCode });
    try {
      const result = await this.runEffective(connection, command, options, timeoutMs, (effective) => { sent = effective; });
      report(result.exitCode);
      return result;
    } catch (err) {
      report(null);
      throw err;
    }
  }

  /**
   * The program probe's answer on `node`'s open connection (see {@link RunOptions.probe}), or undefined when the
   * connection is closed or has not been probed yet. Never connects.
   */
  programsOf(node: SshNode): ProgramPaths | undefined {
    return this.connections.get(node.name)?.current()?.programs;
  }

  /** Drops the program probe's answer on `node`'s connection: its next probing command probes again. */
  forgetPrograms(node: SshNode): void {
    const session = this.connections.get(node.name)?.current();
    if (session) session.programs = undefined;
  }

  /** `command` as sent: under the node's own deadline (a second after ours) and sudo when root is asked for. */
  private effective(connection: NodeConnection, command: Command, options: RunOptions, timeoutMs: number): Command {
    // The node's own deadline comes a second after ours, so a timeout is reported by us, and enforced by the node
    // even when the connection is gone.
    const guarded = withDeadline(command, timeoutMs / 1000 + 1);
    return connection.node.sudo && options.asRoot !== false ? sudo(guarded) : guarded;
  }

  private async runEffective(connection: NodeConnection, command: Command, options: RunOptions, timeoutMs: number, onSent: (effective: Command) => void): Promise<CommandResult> {
    for (let refusals = 0; ; refusals++) {
      const release = await connection.channels.acquire();
      let session: Session;
      try {
        session = await connection.open();
      } catch (err) {
        release();
        throw err;
      }
      // The connection's first probing command carries the probe (commands sent meanwhile on it may carry one too).
      const probe = options.probe && session.programs === undefined ? { marker: probeMarker(), searched: options.probe.path } : undefined;
      const effective = this.effective(connection, probe ? withPrelude(probeScript(probe.searched, probe.marker), command) : command, options, timeoutMs);
      onSent(effective);
      const outcome = await this.exec(connection, session, effective, { ...options, timeoutMs }, release, probe);
      if (outcome.kind === 'done') return outcome.result;
      const othersInFlight = connection.channels.inUse - 1;
      release();
      // Not a refusal but a connection dying while the channel opened: nothing ran, so reconnect and try again.
      if (!session.isOpen() || !/open failure/i.test(outcome.error.message)) {
        connection.drop(session);
        if (refusals < MAX_CHANNEL_REFUSALS) continue;
        throw sshFailure(SshFailureType.SshConnectFailed,
          `Cannot keep a connection to node ${nodeEndpointLabel(connection.node)}: it was lost ${refusals + 1} times while opening a channel ` +
          `(${outcome.error.message}) — check sshd's log on the node and the network`, { cause: outcome.error });
      }
      if (othersInFlight === 0 || refusals >= MAX_CHANNEL_REFUSALS) {
        throw sshFailure(SshFailureType.SshChannelFailed,
          `Node ${nodeEndpointLabel(connection.node)} refused to open a session channel (${outcome.error.message}) with ${othersInFlight} other channels open; ` +
          'check MaxSessions in its sshd_config and max_sessions in the inventory', { cause: outcome.error });
      }
      // sshd frees a closed session only after it has read everything queued, so one refusal right after a close can
      // be a race; a second one means the server allows fewer sessions than configured: stay below what it accepts.
      if (refusals > 0) connection.channels.lower(othersInFlight);
      await new Promise((resolve) => setTimeout(resolve, Math.min(500, 10 * 2 ** refusals)));
    }
  }

  /** Closes the connection to one node (by inventory name). */
  async close(nodeName: string): Promise<void> {
    const connection = this.connections.get(nodeName);
    this.connections.delete(nodeName);
    this.lastUsed.delete(nodeName);
    await connection?.close();
  }

  /**
   * Closes the connection to one node now if no command uses it, else leaves it to the idle sweep: for the end of a
   * node's run, so that a worker holds connections for the nodes in flight, not for every node done in the last
   * `idleCloseMs` (at 200 nodes in flight, those made up most of its memory's peak once a wave ended).
   */
  closeIfIdle(nodeName: string): void {
    const connection = this.connections.get(nodeName);
    if (!connection || connection.channels.inUse > 0 || connection.channels.waiting > 0) return;
    this.connections.delete(nodeName);
    this.lastUsed.delete(nodeName);
    void connection.close();
  }

  /** Closes every connection; call it when the worker or test shuts down. */
  async closeAll(): Promise<void> {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    const all = [...this.connections.keys()];
    await Promise.all(all.map((name) => this.close(name)));
  }

  /** Closes the connections no command has used for `idleCloseMs` and that have no channel open. */
  private closeIdle(): void {
    const before = Date.now() - this.options.idleCloseMs;
    for (const [name, connection] of this.connections) {
      if (connection.channels.inUse === 0 && (this.lastUsed.get(name) ?? 0) < before) {
        this.connections.delete(name);
        this.lastUsed.delete(name);
        void connection.close();
      }
    }
    if (this.connections.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private connectionFor(node: SshNode): NodeConnection {
    this.lastUsed.set(node.name, Date.now());
    this.sweeper ??= setInterval(() => this.closeIdle(), Math.max(1_000, this.options.idleCloseMs / 2)).unref();
    const resolved = resolveNode(node);
    const existing = this.connections.get(node.name);
    if (existing && sameEndpoint(existing.node, resolved)) return existing;
    if (existing) void existing.close();
    const connection = new NodeConnection(resolved, this.options);
    this.connections.set(node.name, connection);
    return connection;
  }

  /**
   * Runs one command on an open session. Resolves `refused` when the channel could not be opened (nothing ran; the
   * caller frees the slot), `done` with a result, or throws the failure. `release` frees the channel slot once the
   * channel is really gone.
   */
  private async exec(
    connection: NodeConnection, session: Session, command: Command, options: RunOptions, release: () => void,
    probe?: { marker: string; searched: string },
  ): Promise<{ kind: 'done'; result: CommandResult } | { kind: 'refused'; error: Error }> {
    const { node } = connection;
    const timeoutMs = options.timeoutMs ?? this.options.defaultTimeoutMs;
    const maxBytes = this.options.maxOutputBytes;
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const bytes = { stdout: 0, stderr: 0 };
    const started = performance.now();
    let channel: ClientChannel | null = null;
    let exit: { code: number | null; signal: string | null } | null = null;
    let interrupt!: (why: Interruption) => void;
    const interrupted = new Promise<Interruption>((resolve) => { interrupt = resolve; });

    const collect = (stream: 'stdout' | 'stderr', chunks: Buffer[]) => (chunk: Buffer) => {
      bytes[stream] += chunk.length;
      if (bytes[stream] > maxBytes) return interrupt({ kind: 'output-too-large' });
      chunks.push(chunk);
    };
    const timer = setTimeout(() => interrupt({ kind: 'timeout' }), timeoutMs);
    const onAbort = () => interrupt({ kind: 'abort', reason: options.signal?.reason });
    if (options.signal?.aborted) onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const unwatch = session.onClose((reason) => interrupt({ kind: 'dropped', reason }));

    const execution = session.ssh.execCommand(command.text, {
      stdin: typeof options.stdin === 'string' || options.stdin === undefined ? options.stdin : Readable.from([options.stdin]),
      noTrim: true,
      onChannel: (ch) => {
        channel = ch;
        ch.on('exit', (code: number | null, signal?: string) => { exit = { code: code ?? null, signal: normalizeSignal(signal) }; });
      },
      onStdout: collect('stdout', stdout),
      onStderr: collect('stderr', stderr),
    }).then(
      () => ({ kind: 'finished' as const }),
      (error: Error) => ({ kind: 'failed' as const, error }),
    );

    const first = await Promise.race([execution, interrupted]);
    clearTimeout(timer);
    unwatch();
    options.signal?.removeEventListener('abort', onAbort);
    /** The command's own stdout: a probe's answer is split off (and kept on the session). */
    const ownStdout = (): string => {
      const text = Buffer.concat(stdout).toString('utf8');
      if (!probe) return text;
      const { paths, rest } = splitProbe(text, probe.marker, probe.searched);
      if (paths && session.programs === undefined) session.programs = paths;
      return rest;
    };
    const result = (): CommandResult => ({
      host: node.name,
      address: node.address,
      command: command.display,
      exitCode: exit?.code ?? null,
      signal: exit?.signal ?? null,
      stdout: ownStdout(),
      stderr: Buffer.concat(stderr).toString('utf8'),
      durationMs: Math.round(performance.now() - started),
    });

    if (first.kind === 'failed') {
      // No channel: the server refused it (MaxSessions) or the connection was already gone. Nothing ran.
      if (channel === null) return { kind: 'refused', error: first.error };
      release();
      throw sshFailure(SshFailureType.CommandOutcomeUnknown, commandOutcomeUnknownMessage(result(), node, first.error.message), { cause: first.error });
    }
    if (first.kind === 'finished' || first.kind === 'dropped') {
      // A drop can race the channel's own close; if the exit status arrived, the command's outcome is known.
      release();
      const finished = result();
      if (exit === null || (finished.exitCode === null && finished.signal === null)) {
        const reason = first.kind === 'dropped' ? first.reason : 'the channel closed without an exit status';
        throw sshFailure(SshFailureType.CommandOutcomeUnknown, commandOutcomeUnknownMessage(finished, node, reason), { details: failureDetails(finished) });
      }
      const allowed = options.allowExitCodes ?? [0];
      if (finished.signal !== null || !allowed.includes(finished.exitCode ?? -1)) {
        throw sshFailure(SshFailureType.CommandFailed, commandFailedMessage(finished), { details: failureDetails(finished) });
      }
      return { kind: 'done', result: finished };
    }

    // Timeout, abort or too much output: stop the command, and free the slot only once the channel is really gone.
    this.stopChannel(connection, session, channel, execution, release);
    const stopped = result();
    if (first.kind === 'timeout') {
      throw sshFailure(SshFailureType.CommandTimedOut, commandTimedOutMessage(stopped, timeoutMs), { details: failureDetails(stopped) });
    }
    if (first.kind === 'output-too-large') {
      throw sshFailure(SshFailureType.CommandOutputTooLarge, commandOutputTooLargeMessage(stopped, maxBytes), { details: failureDetails(stopped) });
    }
    throw isError(first.reason) ? first.reason : new Error(`Command aborted: ${command.display}`);
  }

  /** Sends KILL and closes the channel; if the server does not confirm in time, drops the connection instead. */
  private stopChannel(
    connection: NodeConnection, session: Session, channel: ClientChannel | null, execution: Promise<unknown>, release: () => void,
  ): void {
    try {
      if (channel) sendSignal(channel, 'KILL');
      channel?.close();
    } catch {
      // The channel is already closing; the grace timer below still bounds the wait.
    }
    const grace = setTimeout(() => connection.drop(session), this.options.closeGraceMs);
    void Promise.race([execution, session.closed]).then(() => {
      clearTimeout(grace);
      release();
    });
  }
}

/** The parts of ssh2's channel that `signal()` uses, reached directly (see {@link sendSignal}). */
interface ChannelInternals {
  type?: string;
  outgoing?: { id: number; state: string };
  _client?: { _protocol?: { signal(channelId: number, signal: string): void } };
}

/**
 * Asks sshd to signal the command's process group (OpenSSH ≥ 7.8 honours it). ssh2's `channel.signal()` does nothing
 * once our side of the channel is ended (EOF), which node-ssh does right after stdin, although SSH allows requests
 * after EOF; so the request is sent the way ssh2 would, without that check.
 */
function sendSignal(channel: ClientChannel, signal: string): void {
  const internals = channel as unknown as ChannelInternals;
  // After EOF ('eof') the channel still takes requests; only 'closing'/'closed' do not.
  if (internals.type === 'session' && (internals.outgoing?.state === 'open' || internals.outgoing?.state === 'eof')) {
    internals._client?._protocol?.signal(internals.outgoing.id, signal);
  }
}

function sameEndpoint(a: ResolvedNode, b: ResolvedNode): boolean {
  return a.address === b.address && a.port === b.port && a.user === b.user && a.identityFile === b.identityFile &&
    a.knownHosts === b.knownHosts && a.sudo === b.sudo && a.maxSessions === b.maxSessions && a.trustOnFirstUse === b.trustOnFirstUse;
}
