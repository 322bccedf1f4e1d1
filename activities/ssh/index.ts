/** The SSH layer: safe command building, host key checking, a connection pool, flat results and typed failures. */
export { SshPool, type RunOptions, type SshPoolOptions } from './pool';
export { sh, cmd, flag, sudo, withDeadline, quote, isSafeShellValue, unsafeShellValueMessage, SAFE_SHELL_VALUE, type Command, type Flag, type ShellArg } from './quote';
export { SshFailureType, nonRetryableSshFailureTypes, sshFailure } from './failure-types';
export { type CommandResult, tail, MESSAGE_TAIL_BYTES } from './result';
export { type SshNode, DEFAULT_MAX_SESSIONS, DEFAULT_SSH_PORT } from './node';
export {
  commandFailedMessage, commandTimedOutMessage, commandOutcomeUnknownMessage, describeExitCode, formatDuration,
} from './command-error';
export { classifyConnectError, hostKeyMismatchMessage, hostKeyUnknownMessage } from './connect-error';
export {
  parseKnownHosts, checkHostKey, sshFingerprint, hashKnownHostsName, formatKnownHostsLine, readKnownHosts, appendKnownHost,
  type KnownHostEntry, type HostKeyVerdict,
} from './known-hosts';
