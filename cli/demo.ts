import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { buildApi } from '../api/server';
import { startFleet, type Fleet } from '../sim/fleet';
import { connectTemporal, temporalTargetFromEnv } from '../worker/connection';
import { startDevServer, type RunningDevServer } from '../worker/dev-server';
import { createWorker } from '../worker/worker';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { RolloutProgress } from '../workflows/rollout-messages';
import { parseCommandArgs, type Command } from './command';
import { followRollout } from './rollout';
import { formatResultTable } from './rollout-view';

const say = (line = '') => process.stdout.write(`${line}\n`);

/** Nodes of the demo fleet; the last has no hardware virtualization, so it must be refused untouched. */
const demoNodes = 6;
const nodeWithoutVirtualization = `node-${demoNodes}`;

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the main job, on the embedded default: Temporal + a simulated fleet, kata rolled out through the HTTP API',
  usage: `Usage: katafleet demo [--keep]

Starts the embedded Temporal dev server (unless TEMPORAL_ADDRESS is set), a simulated fleet of ${demoNodes} nodes with real sshd,
containerd and apt plus a real Kubernetes control plane (${nodeWithoutVirtualization} has no hardware virtualization), a worker and the
HTTP API; then starts the kata playbook through the API (canary 1, waves of 3, failure budget 1), follows it to the
end and prints the result table and the Temporal UI link.
  --keep   leave everything running for exploration (Ctrl-C stops it)`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, { keep: { type: 'boolean' } }, { min: 0, max: 0 });
    const stack: (() => Promise<void>)[] = [];
    try {
      const target = temporalTargetFromEnv();
      if (!target.external) {
        const server: RunningDevServer = await startDevServer({ dbFile: join('.katafleet', 'temporal.db') });
        stack.push(() => server.stop());
        say(`Temporal dev server on ${server.address}, Web UI ${server.uiUrl}`);
      }
      say(`Starting the simulated fleet: ${demoNodes} nodes and a Kubernetes control plane ...`);
      const started = Date.now();
      const fleet: Fleet = await startFleet({ nodes: demoNodes, faults: { [nodeWithoutVirtualization]: ['no-virtualization'] }, kubernetes: true, dir: join('.katafleet', 'demo-fleet') });
      stack.push(() => fleet.stop());
      say(`Fleet up in ${((Date.now() - started) / 1000).toFixed(1)} s: ${fleet.nodes.map((node) => `${node.name} ${node.address}`).join(', ')}`);
      say(`Inventory ${fleet.inventoryPath}`);

      // The worker's INFO lines (bundling, state changes) would bury the rollout's progress.
      Runtime.install({ logger: new DefaultLogger('WARN') });
      const worker = await createWorker({ target });
      const running = worker.worker.run();
      stack.push(async () => {
        // On Ctrl-C (--keep) the SDK has already begun shutting the worker down.
        if (worker.worker.getState() === 'RUNNING') worker.worker.shutdown();
        await running;
        await worker.close();
      });

      const token = randomBytes(16).toString('hex');
      const { client, connection } = await connectTemporal(target);
      stack.push(() => connection.close());
      // The API reads inventories by name from its folder, and the login from the fleet's credential profile.
      const api = await buildApi({ client, token, inventoriesDir: dirname(fleet.inventoryPath), credentialsFile: join(dirname(fleet.inventoryPath), 'credentials.toml') });
      await api.listen({ host: '127.0.0.1', port: 0 });
      stack.push(() => api.close());
      const baseUrl = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
      say(`HTTP API on ${baseUrl} (bearer token ${token})`);

      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON answers of our own API, typed by its OpenAPI document
      const call = async (method: string, path: string, body?: unknown): Promise<any> => {
        const response = await fetch(`${baseUrl}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
        const json = (await response.json()) as { message?: string };
        if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status}: ${json.message}`);
        return json;
      };
      const startedRollout = await call('POST', '/v1/rollouts', {
        playbook: 'kata',
        inventory: 'inventory',
        options: { canary: 1, wave_size: 3, failure_budget: 1, pause_between_waves: '0s' },
        request_id: `demo-${Date.now()}`,
      });
      say(`\nPOST /v1/rollouts → 202, rollout ${startedRollout.rollout_id}\n  ${startedRollout.ui_link}\n`);

      const progress: RolloutProgress & { status: string } = await followRollout(() => call('GET', `/v1/rollouts/${startedRollout.rollout_id}`), process.stdout, 2000);
      say(`\n${formatResultTable(progress)}`);
      say(`\nTemporal UI: ${startedRollout.ui_link}`);
      if (values.keep) {
        say(`\nEverything keeps running (--keep): API ${baseUrl}, inventory ${fleet.inventoryPath}. Ctrl-C stops it.`);
        await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
      }
      return progress.phase === 'succeeded' || progress.phase === 'completed' ? 0 : 1;
    } finally {
      for (const stop of stack.reverse()) await stop().catch((err: Error) => process.stderr.write(`cleanup: ${err.message}\n`));
    }
  },
};
