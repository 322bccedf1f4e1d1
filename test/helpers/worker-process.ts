// A katafleet worker in its own process (`katafleet worker`, as an operator runs it), so that a test can
// kill it with SIGKILL mid-rollout and start another one.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface WorkerProcess {
  process: ChildProcess;
  /** Kills the worker at once (no graceful shutdown: in-flight activities are lost) and waits until it is gone. */
  kill(): Promise<void>;
  /** Stops the worker gracefully (SIGINT) and waits until it is gone. */
  stop(): Promise<void>;
}

const repoRoot = join(__dirname, '..', '..');

/**
 * Starts `bin/katafleet.js worker` (its launcher sets the worker's memory settings, as for a user) against `address`
 * and resolves once it polls its task queue.
 * Its output is appended to `logFile`.
 */
export async function startWorkerProcess(address: string, logFile: string, timeoutMs = 60_000): Promise<WorkerProcess> {
  const log = openSync(logFile, 'a');
  const child = spawn(join(repoRoot, 'bin', 'katafleet.js'), ['worker'], {
    cwd: repoRoot,
    env: { ...process.env, TEMPORAL_ADDRESS: address, TEMPORAL_NAMESPACE: 'default' },
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  while (!readFileSync(logFile, 'utf8').includes('katafleet worker polling')) {
    if (gone) throw new Error(`katafleet worker exited before it polled ${address}; see ${logFile}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`katafleet worker did not poll ${address} within ${timeoutMs / 1000} s; see ${logFile}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const end = async (signal: NodeJS.Signals) => {
    if (gone) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  };
  return { process: child, kill: () => end('SIGKILL'), stop: () => end('SIGINT') };
}
