import { UsageError } from './command';

/** Exit status for mistakes in the user's input (bad flags, invalid playbook, config we refuse). */
export const exitInvalidInput = 2;
/** Exit status for failures of the operation itself (a server unreachable, a rollout failed). */
export const exitFailure = 1;

/**
 * Prints an error the way a person can act on it: user mistakes without stack traces,
 * with every problem listed. Returns the exit status.
 */
export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  const error = err instanceof Error ? err : new Error(String(err));
  if (error instanceof UsageError) {
    stderr.write(`${error.message}\n`);
    if (error.usage) stderr.write(`\n${error.usage}\n`);
    return exitInvalidInput;
  }
  // Checked by name, not instanceof: these classes may come from another module instance (tsx, jest).
  if (error.name === 'PlaybookError' || error.name === 'ContainerdConfigError') {
    stderr.write(`${error.message}\n`);
    return exitInvalidInput;
  }
  stderr.write(`${error.message}\n`);
  if (process.env.KATAFLEET_DEBUG && error.stack) stderr.write(`${error.stack}\n`);
  return exitFailure;
}
