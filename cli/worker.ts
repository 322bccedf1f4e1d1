import { taskQueue, temporalTargetFromEnv } from '../worker/connection';
import { createWorker } from '../worker/worker';
import { parseCommandArgs, type Command } from './command';

export const workerCommand: Command = {
  name: 'worker',
  summary: `run a worker on task queue "${taskQueue}" (workflows + SSH activities)`,
  usage: `Usage: katafleet worker

Connects to the embedded server (127.0.0.1:7233) or to TEMPORAL_ADDRESS, and runs until Ctrl-C.
Run several workers on several machines for larger fleets; Temporal spreads the work.`,
  async run(args) {
    parseCommandArgs(this, args, {}, { min: 0, max: 0 });
    const target = temporalTargetFromEnv();
    const { worker, close } = await createWorker({ target });
    process.stdout.write(`katafleet worker polling "${taskQueue}" on ${target.address} (namespace ${target.namespace})\n`);
    try {
      await worker.run();
    } finally {
      await close();
    }
    return 0;
  },
};
