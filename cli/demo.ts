import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { buildApi } from '../api/server';
import { startFleet, type Fleet } from '../sim/fleet';
import { connectTemporal, temporalTargetFromEnv } from '../worker/connection';
import { startDevServer, type RunningDevServer } from '../worker/dev-server';
import { installWorkerLogging, parseLogLevel } from '../worker/logging';
import { createWorker } from '../worker/worker';
import type { RolloutProgress } from '../workflows/rollout-messages';
import { parseCommandArgs, UsageError, type Command } from './command';
import { onInterrupt } from './signals';
import { followRollout } from './rollout';
import { formatResultTable } from './rollout-view';

const say = (line = '') => process.stdout.write(`${line}\n`);

/** Nodes of the demo fleet; the last has no hardware virtualization, so it must be refused untouched. */
const demoNodes = 6;
const nodeWithoutVirtualization = `node-${demoNodes}`;

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the main job, on the embedded default: Temporal + a simulated fleet, kata rolled out through the HTTP API',
  usage: `Usage: katafleet demo [--keep] [--log-level trace|debug|info|warn|error]

Starts the embedded Temporal dev server (unless TEMPORAL_ADDRESS is set), a simulated fleet of ${demoNodes} nodes with real sshd,
containerd and apt plus a real Kubernetes control plane (${nodeWithoutVirtualization} has no hardware virtualization), a worker and the
HTTP API; then starts the kata playbook through the API (canary 1, waves of 3, failure budget 1), follows it to the
end and prints the result table and the Temporal UI link.
  --keep        leave everything running for exploration (Ctrl-C stops it)
  --log-level   what the worker writes to .katafleet/worker.log (JSON lines; default info); the terminal shows
                progress only: a node that fails is one line with its step and reason`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, { keep: { type: 'boolean' }, 'log-level': { type: 'string' } }, { min: 0, max: 0 });
    let level;
    try {
      level = parseLogLevel(values['log-level']);
    } catch (err) {
      throw new UsageError(`katafleet demo: ${(err as Error).message}`, this.usage);
    }
    const logFile = join('.katafleet', 'worker.log');
    installWorkerLogging({ file: logFile, level, sdkHandlesSignals: false });
    const stack: (() => Promise<void>)[] = [];
    let server: RunningDevServer | undefined;
    // A second Ctrl-C kills the dev server and exits at once; the first one leaves a minute to stop the fleet in order.
    const interruption = onInterrupt(() => server?.process.kill('SIGKILL'), 60_000);
    try {
      const target = temporalTargetFromEnv();
      if (!target.external) {
        const started: RunningDevServer = await startDevServer({ dbFile: join('.katafleet', 'temporal.db') });
        server = started;
        stack.push(() => started.stop(3_000));
        say(`Temporal dev server on ${started.address}, Web UI ${started.uiUrl}`);
      }
      say(`Starting the simulated fleet: ${demoNodes} nodes and a Kubernetes control plane ...`);
      const started = Date.now();
      const fleet: Fleet = await startFleet({ nodes: demoNodes, faults: { [nodeWithoutVirtualization]: ['no-virtualization'] }, kubernetes: true, dir: join('.katafleet', 'demo-fleet') });
      stack.push(() => fleet.stop());
      say(`Fleet up in ${((Date.now() - started) / 1000).toFixed(1)} s: ${fleet.nodes.map((node) => `${node.name} ${node.address}`).join(', ')}`);
      say(`Inventory ${fleet.inventoryPath}`);

      // The worker's lines (bundling, state changes, expected step failures) go to the log file, not between the progress lines.
      say(`Worker log (JSON lines): ${logFile}`);
      const worker = await createWorker({ target });
      const running = worker.worker.run();
      stack.push(async () => {
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

      const progress: RolloutProgress & { status: string } = await Promise.race([
        followRollout(() => call('GET', `/v1/rollouts/${startedRollout.rollout_id}`), process.stdout, 2000),
        interruption.signalled.then((signal) => { throw new Error(`${signal}: stopped following rollout ${startedRollout.rollout_id}; stopping the demo`); }),
      ]);
      say(`\n${formatResultTable(progress)}`);
      say(`\nTemporal UI: ${startedRollout.ui_link}`);
      if (values.keep) {
        say(`\nEverything keeps running (--keep): API ${baseUrl}, inventory ${fleet.inventoryPath}. Ctrl-C stops it.`);
        await interruption.signalled;
      }
      return progress.phase === 'succeeded' || progress.phase === 'completed' ? 0 : 1;
    } finally {
      for (const stop of stack.reverse()) await stop().catch((err: Error) => process.stderr.write(`cleanup: ${err.message}\n`));
      interruption.dispose();
    }
  },
};
