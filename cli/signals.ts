/**
 * SIGINT/SIGTERM for commands that stop several things in order (`katafleet up`, `katafleet demo`): the first
 * signal starts a graceful stop, bounded in time; a second one stops at once.
 */

/** What {@link onInterrupt} gives back. */
export interface Interruption {
  /** Resolves with the first SIGINT or SIGTERM. */
  signalled: Promise<NodeJS.Signals>;
  /** Removes the handlers (after a normal end). */
  dispose(): void;
}

/**
 * Listens for SIGINT and SIGTERM. On the second signal, or when the graceful stop has not ended within `graceMs`
 * of the first, `force` runs (kill child processes) and the process exits with 130.
 */
export function onInterrupt(force: () => void, graceMs = 9_000): Interruption {
  let count = 0;
  let resolve!: (signal: NodeJS.Signals) => void;
  const signalled = new Promise<NodeJS.Signals>((r) => { resolve = r; });
  const forceExit = () => {
    try {
      force();
    } finally {
      process.exit(130);
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const handler = (signal: NodeJS.Signals) => {
    count++;
    if (count === 1) {
      process.stderr.write(`\n${signal}: stopping (again to stop at once) ...\n`);
      timer = setTimeout(() => {
        process.stderr.write(`still not stopped ${graceMs / 1000} s after ${signal}: stopping at once\n`);
        forceExit();
      }, graceMs);
      timer.unref();
      resolve(signal);
    } else {
      forceExit();
    }
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signalled,
    dispose() {
      if (timer) clearTimeout(timer);
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
