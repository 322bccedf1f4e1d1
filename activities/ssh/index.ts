/**
 * The SSH layer: safe command building, host key checking, a connection pool, flat results and typed failures.
 *
 * @example
 * const pool = new SshPool();
 * const node: SshNode = { name: 'worker-2', address: '127.0.1.3', user: 'root', identityFile, knownHosts };
 * const { stdout } = await pool.run(node, sh`cat ${configPath}`);
 * await pool.run(node, sh`cat > ${tempPath}`, { stdin: newConfig, timeoutMs: 30_000 });
 *
 * Contract for callers that change a node: `CommandOutcomeUnknown` (the connection dropped before the exit status
 * came) is retryable, but the command may have run. Read the node's state again and decide, never blindly redo.
 * Every other failure says exactly what happened: a command failure carries the flat result in `details[0]`.
 */
export { SshPool, type CommandEvent, type RunOptions, type SshPoolOptions } from './pool';
export { sh, cmd, flag, sudo, withDeadline, quote, isSafeShellValue, unsafeShellValueMessage, SAFE_SHELL_VALUE, type Command, type Flag, type ShellArg } from './quote';
export { SshFailureType, nonRetryableSshFailureTypes, sshFailure } from './failure-types';
export { type CommandResult, failureDetails, tail, MESSAGE_TAIL_BYTES } from './result';
export { type SshNode, DEFAULT_MAX_SESSIONS, DEFAULT_SSH_PORT } from './node';
export {
  commandFailedMessage, commandTimedOutMessage, commandOutcomeUnknownMessage, describeExitCode, formatDuration,
} from './command-error';
export { classifyConnectError, hostKeyMismatchMessage, hostKeyUnknownMessage } from './connect-error';
export {
  parseKnownHosts, checkHostKey, sshFingerprint, hashKnownHostsName, formatKnownHostsLine, readKnownHosts, appendKnownHost,
  type KnownHostEntry, type HostKeyVerdict,
} from './known-hosts';
