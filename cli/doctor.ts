import { randomUUID } from 'node:crypto';
import { connectTemporal, taskQueue, temporalTargetFromEnv } from '../worker/connection';
import { doctorWorkflow } from '../workflows';
import { parseCommandArgs, type Command } from './command';

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'check that Temporal is reachable and a worker runs activities',
  usage: `Usage: katafleet doctor

Runs one tiny workflow on task queue "${taskQueue}" and prints which worker answered (waits up to 20 s).`,
  async run(args) {
    parseCommandArgs(this, args, {}, { min: 0, max: 0 });
    const target = temporalTargetFromEnv();
    const { client, connection } = await connectTemporal(target);
    try {
      const report = await client.workflow.execute(doctorWorkflow, {
        taskQueue,
        workflowId: `katafleet-doctor-${randomUUID()}`,
        workflowExecutionTimeout: '20s',
      });
      process.stdout.write(`Temporal ${target.address} (namespace ${target.namespace}): ok\n`);
      process.stdout.write(`worker: ${report.worker.hostname} pid ${report.worker.pid}, Node ${report.worker.node}, katafleet ${report.worker.katafleet}\n`);
      return 0;
    } catch (err) {
      throw new Error(`No worker completed the check within 20 s: is \`katafleet worker\` running against ${target.address}? (${(err as Error).message})`, { cause: err });
    } finally {
      await connection.close();
    }
  },
};
