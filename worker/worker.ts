import { NativeConnection, Worker } from '@temporalio/worker';
import { createActivities } from '../activities';
import { taskQueue, temporalTargetFromEnv, type TemporalTarget } from './connection';
import { katafleetVersion } from './version';

/** Options for {@link createWorker}; defaults come from the environment (see `temporalTargetFromEnv`). */
export interface WorkerOptions {
  target?: TemporalTarget;
  /** @default 'katafleet' */
  taskQueue?: string;
  /** Bounded so a worker on a small machine does not open hundreds of SSH sessions at once. @default 50 */
  maxConcurrentActivityTaskExecutions?: number;
}

/** Creates (but does not run) a worker for katafleet's workflows and activities. */
export async function createWorker(options: WorkerOptions = {}): Promise<{ worker: Worker; connection: NativeConnection }> {
  const target = options.target ?? temporalTargetFromEnv();
  const connection = await NativeConnection.connect({ address: target.address, tls: target.tls, apiKey: target.apiKey });
  const worker = await Worker.create({
    connection,
    namespace: target.namespace,
    taskQueue: options.taskQueue ?? taskQueue,
    workflowsPath: require.resolve('../workflows'),
    activities: createActivities({ version: katafleetVersion() }),
    maxConcurrentActivityTaskExecutions: options.maxConcurrentActivityTaskExecutions ?? 50,
  });
  return { worker, connection };
}
