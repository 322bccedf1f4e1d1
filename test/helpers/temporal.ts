import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { createActivities } from '../../activities';
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
