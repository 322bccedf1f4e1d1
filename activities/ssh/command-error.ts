import { nodeEndpointLabel, nodeLabel, type SshNode } from './node';
import { MESSAGE_TAIL_BYTES, tail, type CommandResult } from './result';

/** Linux signal numbers, to explain exit codes 128+n that a shell reports for a child killed by signal n. */
const linuxSignalNames: Record<number, string> = {
  1: 'SIGHUP', 2: 'SIGINT', 3: 'SIGQUIT', 4: 'SIGILL', 6: 'SIGABRT', 7: 'SIGBUS', 8: 'SIGFPE', 9: 'SIGKILL',
  10: 'SIGUSR1', 11: 'SIGSEGV', 12: 'SIGUSR2', 13: 'SIGPIPE', 14: 'SIGALRM', 15: 'SIGTERM',
};

/**
 * What an exit code usually means, or null when it has no conventional meaning.
 *
 * @example describeExitCode(127) === 'command not found'
 */
export function describeExitCode(exitCode: number, stderr = ''): string | null {
  if (/^sudo: (a password is required|a terminal is required)/m.test(stderr)) {
    return 'sudo -n needs a password: allow passwordless sudo for this user, or connect as root';
  }
  switch (exitCode) {
    case 124: return 'timed out by timeout(1)';
    case 126: return 'permission denied or not executable';
    case 127: return 'command not found';
  }
  const signal = linuxSignalNames[exitCode - 128];
  return signal ? `killed by ${signal}` : null;
}

/** The stderr tail (or stdout's, when stderr is empty) on its own lines below a message, saying when it was cut. */
function outputSuffix(result: Pick<CommandResult, 'stdout' | 'stderr'>): string {
  const stream = result.stderr.trim() !== '' ? 'stderr' : 'stdout';
  const output = result[stream].trimEnd();
  if (output.trim() === '') return '';
  const cut = Buffer.byteLength(output) > MESSAGE_TAIL_BYTES ? `\n(${stream}, last ${MESSAGE_TAIL_BYTES / 1024} KiB)` : '';
  return `${cut}\n${tail(output)}`;
}

/**
 * The message for a command that ran and failed.
 *
 * @example `Command failed with exit code 127 (command not found): kata-runtime check — on node worker-2 (127.0.1.3)`
 */
export function commandFailedMessage(result: CommandResult): string {
  const where = `on node ${nodeLabel({ name: result.host, address: result.address })}`;
  let what: string;
  if (result.signal !== null) {
    what = `Command was killed by ${result.signal}`;
  } else {
    const meaning = result.exitCode === null ? null : describeExitCode(result.exitCode, result.stderr);
    what = `Command failed with exit code ${result.exitCode}${meaning ? ` (${meaning})` : ''}`;
  }
  return `${what}: ${result.command} — ${where}${outputSuffix(result)}`;
}

/** The message for a command cut by its timeout. */
export function commandTimedOutMessage(result: CommandResult, timeoutMs: number): string {
  return `Command timed out after ${formatDuration(timeoutMs)} and was stopped: ${result.command} — on node ${nodeLabel({ name: result.host, address: result.address })}; ` +
    'raise the step\'s timeout if the command is merely slow' + outputSuffix(result);
}

/** The message for a command whose connection dropped before it reported an exit status. */
export function commandOutcomeUnknownMessage(result: CommandResult, node: SshNode, reason: string): string {
  return `Connection to node ${nodeEndpointLabel(node)} was lost while running: ${result.command} (${reason}). ` +
    'The command may or may not have taken effect: re-read the node\'s state before running it again' + outputSuffix(result);
}

/** The message for a command that printed more than the pool keeps. */
export function commandOutputTooLargeMessage(result: CommandResult, maxOutputBytes: number): string {
  return `Command printed more than ${maxOutputBytes} bytes and was stopped: ${result.command} — on node ${nodeLabel({ name: result.host, address: result.address })}; ` +
    'narrow what it prints, or raise maxOutputBytes of the SSH pool';
}

/** `850 ms`, `30 s`, `2.5 min`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${+(ms / 1000).toFixed(1)} s`;
  return `${+(ms / 60_000).toFixed(1)} min`;
}
