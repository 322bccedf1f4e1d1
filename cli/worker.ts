import { taskQueue, temporalTargetFromEnv } from '../worker/connection';
import { installWorkerLogging, parseLogLevel } from '../worker/logging';
import { createWorker, prepareWorkerProcess } from '../worker/worker';
import { parseCommandArgs, UsageError, type Command } from './command';

export const workerCommand: Command = {
  name: 'worker',
  summary: `run a worker on task queue "${taskQueue}" (workflows + SSH activities)`,
  usage: `Usage: katafleet worker [--log-level trace|debug|info|warn|error] [--log-file FILE]

Connects to the embedded server (127.0.0.1:7233) or to TEMPORAL_ADDRESS, and runs until Ctrl-C.
Run several workers on several machines for larger fleets; Temporal spreads the work.
Its first line gives its memory settings: bin/katafleet.js starts it with MALLOC_ARENA_MAX=2 and node's
--max-semi-space-size=2 unless the environment has its own (KATAFLEET_MEMORY_DEFAULTS=0: neither), and
KATAFLEET_WORKFLOW_SEMI_SPACE_MB (default 2) bounds the workflow thread's, and KATAFLEET_HEAP_GROWING_PERCENT
(default 30, 0: V8's own) how far the old generation grows between major GCs; see docs/scale.md "Worker memory".
It logs one JSON line per event (time, level, node, step, rollout id) to stderr, or to --log-file; a failure a
step expects (a node unfit for Kata, a transient error a retry fixes) is one info line with its reason, no stack.`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, { 'log-level': { type: 'string' }, 'log-file': { type: 'string' } }, { min: 0, max: 0 });
    let level;
    try {
      level = parseLogLevel(values['log-level']);
    } catch (err) {
      throw new UsageError(`katafleet worker: ${(err as Error).message}`, this.usage);
    }
    const memory = workerMemoryLines(this.usage);
    installWorkerLogging({ level, file: values['log-file'] });
    process.stderr.write(memory.map((line) => `${line}\n`).join(''));
    const target = temporalTargetFromEnv();
    const { worker, close } = await createWorker({ target, bundleInChild: true });
    process.stdout.write(`katafleet worker polling "${taskQueue}" on ${target.address} (namespace ${target.namespace})\n`);
    try {
      await worker.run();
    } finally {
      await close();
    }
    return 0;
  },
};

/**
 * For `katafleet worker` and `katafleet up`, when they start: bounds the workflow thread's young generation and the
 * old generation's growth (process-wide V8 flags) and returns the lines that say the memory settings in effect.
 * @throws UsageError naming KATAFLEET_WORKFLOW_SEMI_SPACE_MB, KATAFLEET_HEAP_GROWING_PERCENT or KATAFLEET_MEMORY_DEFAULTS and the fix when it is invalid.
 */
export function workerMemoryLines(usage: string): string[] {
  try {
    return prepareWorkerProcess();
  } catch (err) {
    throw new UsageError(`katafleet: ${(err as Error).message}`, usage);
  }
}
