import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { createActivities } from '../../activities';
import { SshPool } from '../../activities/ssh';
import { workerActivities } from '../../worker/worker';
import { temporalCliPath } from '../../worker/temporal-cli';
import { allSearchAttributes } from '../../workflows/search-attributes';

// Keep test output readable: the worker's INFO lines (bundling, state changes) drown the results.
Runtime.install({ logger: new DefaultLogger('WARN') });

/** A real Temporal dev server (the installed CLI, no download) for one test file. */
export async function startTestTemporal(): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: temporalCliPath() },
      searchAttributes: allSearchAttributes,
      extraArgs: ['--log-level', 'error'],
    },
  });
}

/** A worker for katafleet's workflows on its own task queue of the test environment. */
export async function createTestWorker(env: TestWorkflowEnvironment, taskQueue: string, activities = createActivities({ version: 'test' })): Promise<Worker> {
  return Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace,
    taskQueue,
    workflowsPath: require.resolve('../../workflows'),
    activities,
  });
}

/** A worker with every katafleet activity and its own SSH pool, running until `stop()`. */
export interface RunningTestWorker {
  pool: SshPool;
  stop(): Promise<void>;
}

/** Runs a worker with katafleet's real activities (one SSH pool) on `taskQueue` of the test environment. */
export async function runKatafleetWorker(env: TestWorkflowEnvironment, taskQueue: string): Promise<RunningTestWorker> {
  const pool = new SshPool();
  const worker = await createTestWorker(env, taskQueue, workerActivities(pool));
  const running = worker.run();
  return {
    pool,
    async stop() {
      worker.shutdown();
      await running;
      await pool.closeAll();
    },
  };
}
