import { ApplicationFailure } from '@temporalio/common';

/**
 * Failure types raised by the SSH layer, as `ApplicationFailure.type`.
 *
 * Retry policies name these strings (`nonRetryableErrorTypes: [SshFailureType.CommandFailed]`), so they are
 * permanent API: rename one and every policy that mentions it silently changes meaning.
 */
export const SshFailureType = {
  /** The node's host key differs from the one in known_hosts. Never retried: a human must decide. */
  HostKeyMismatch: 'HostKeyMismatch',
  /** The node is not in known_hosts and trust-on-first-use is off. Never retried. */
  HostKeyUnknown: 'HostKeyUnknown',
  /** TCP connect or SSH handshake failed (refused, unreachable, sshd frozen). Retryable. */
  SshConnectFailed: 'SshConnectFailed',
  /** The server rejected our key, or the identity file cannot be read. Never retried. */
  SshAuthFailed: 'SshAuthFailed',
  /** The server refused to open a session channel for a reason other than MaxSessions. Retryable. */
  SshChannelFailed: 'SshChannelFailed',
  /** The command ran and exited with a code the caller did not allow, or was killed by a signal. Retryable. */
  CommandFailed: 'CommandFailed',
  /** The command ran longer than its timeout; its channel was closed. Retryable. */
  CommandTimedOut: 'CommandTimedOut',
  /**
   * The connection dropped while the command ran: it may or may not have taken effect. Retryable, but a
   * caller must re-read the node's state before redoing a mutation.
   */
  CommandOutcomeUnknown: 'CommandOutcomeUnknown',
  /** The command printed more than the pool's output cap. Never retried: the same command prints as much again. */
  CommandOutputTooLarge: 'CommandOutputTooLarge',
  /** A value interpolated into a command is not on the allowlist. Never retried: nothing was sent. */
  UnsafeShellValue: 'UnsafeShellValue',
} as const;

export type SshFailureType = (typeof SshFailureType)[keyof typeof SshFailureType];

/** Failure types that no retry can fix; {@link sshFailure} marks them `nonRetryable`. */
export const nonRetryableSshFailureTypes: readonly SshFailureType[] = [
  SshFailureType.HostKeyMismatch,
  SshFailureType.HostKeyUnknown,
  SshFailureType.SshAuthFailed,
  SshFailureType.CommandOutputTooLarge,
  SshFailureType.UnsafeShellValue,
];

/**
 * Builds the `ApplicationFailure` the SSH layer throws: Temporal retry policies see `type`, the original error stays
 * reachable as `cause`, and `details[0]` carries the flat command result when there is one.
 *
 * It is a plain `Error` subclass, so code outside activities (tests, drift checks) handles it like any error:
 * check `err.type`, not `instanceof`.
 */
export function sshFailure(type: SshFailureType, message: string, extra: { cause?: unknown; details?: unknown } = {}): ApplicationFailure {
  return ApplicationFailure.create({
    type,
    message,
    nonRetryable: nonRetryableSshFailureTypes.includes(type),
    cause: isError(extra.cause) ? extra.cause : undefined,
    details: extra.details === undefined ? undefined : [extra.details],
  });
}

/**
 * True for anything shaped like an Error. Not `instanceof`: errors from Node's core (sockets) come from another realm
 * under Jest and in Temporal's sandbox, and would be missed.
 */
export function isError(value: unknown): value is Error {
  return typeof value === 'object' && value !== null && typeof (value as Error).message === 'string';
}
