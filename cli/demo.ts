import { join } from 'node:path';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import { connectTemporal, taskQueue, temporalTargetFromEnv, workflowUiLink } from '../worker/connection';
import { startDevServer, type RunningDevServer } from '../worker/dev-server';
import { createWorker } from '../worker/worker';
import { doctorWorkflow } from '../workflows';
import { parseCommandArgs, type Command } from './command';
import { formatPlan } from './plan';

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the main job on the embedded default: Temporal + worker, then the kata playbook planned on the example fleet',
  usage: `Usage: katafleet demo [--keep]

Starts the embedded Temporal dev server (unless TEMPORAL_ADDRESS is set) and a worker, checks the round trip,
validates the kata playbook against the example inventory and prints the rollout plan and the Web UI address.
  --keep   leave the server and worker running (Ctrl-C stops them)`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, { keep: { type: 'boolean' } }, { min: 0, max: 0 });
    const target = temporalTargetFromEnv();
    const say = (line: string) => process.stdout.write(`${line}\n`);
    let server: RunningDevServer | undefined;
    if (!target.external) {
      server = await startDevServer({ dbFile: join('.katafleet', 'temporal.db') });
      say(`Temporal dev server on ${server.address}, Web UI ${server.uiUrl}`);
    }
    const { worker, close: closeWorker } = await createWorker({ target });
    const running = worker.run();
    try {
      const { client, connection } = await connectTemporal(target);
      const workflowId = `katafleet-demo-doctor-${Date.now()}`;
      const report = await client.workflow.execute(doctorWorkflow, { taskQueue, workflowId });
      say(`worker ${report.worker.hostname} (pid ${report.worker.pid}) answered through Temporal: ${workflowUiLink(workflowId, target)}`);
      await connection.close();

      const playbook = await loadPlaybook('kata');
      const inventory = await loadInventory(join(__dirname, '..', 'playbooks', 'examples', 'inventory.toml'));
      say('');
      say(formatPlan(playbook, inventory));
      if (values.keep) {
        say('Everything keeps running (--keep); Ctrl-C stops it.');
        await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
      }
    } finally {
      worker.shutdown();
      await running;
      await closeWorker();
      await server?.stop();
    }
    return 0;
  },
};
