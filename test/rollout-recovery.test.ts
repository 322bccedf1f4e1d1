// Durable resume: a rollout survives its worker being killed (SIGKILL, a separate process) and the
// Temporal dev server being stopped and started again on its SQLite file, and still patches every
// node exactly once.
//
// Cost: four nodes in waves of one, kata.toml's node steps (prereq, install, containerd, restart). The moments are
// made, not caught: a node's step takes a fraction of a second, too short to catch by polling (CI once missed r-3's
// containerd step that way), so r-2's and r-3's `systemctl restart` hang (the fleet's command-hangs fault) until the
// test lets them go: the worker dies while r-2 restarts containerd, and the server stops while r-3 does.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { startRollout } from '../api/rollout-service';
import { startFleet, type Fleet } from '../sim/fleet';
import { PackageInstallStep } from '../playbooks/schema';
import { addObsSourceCommand } from '../sim/packages';
import { startDevServer, type RunningDevServer } from '../worker/dev-server';
import { nodeWorkflowId } from '../workflows/node';
import type { RolloutProgress } from '../workflows/rollout-messages';
import { activitiesInHistory } from './helpers/node-workflow';
import { startWorkerProcess, type WorkerProcess } from './helpers/worker-process';
import { childTimeline, configBackups, configHashes, historiesOfAllRuns, inventoryOf, kataSubset, nodeOf, onNode, waitFor } from './rollout-helpers';
import { freeLoopbackPort } from '../sim/addresses';

const nodes = ['r-1', 'r-2', 'r-3', 'r-4'];

let dir: string;
let fleet: Fleet;
let server: RunningDevServer | undefined;
const workers: WorkerProcess[] = [];
const connections: Connection[] = [];


async function connect(address: string): Promise<Client> {
  const connection = await Connection.connect({ address });
  connections.push(connection);
  return new Client({ connection, namespace: 'default' });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kf-rollout-recovery-'));
  fleet = await startFleet({ nodes: nodes.map((name) => ({ name })), dir: join(dir, 'fleet') });
  // The install is a package's (below): its source, the OBS-style repository, added as an admin would (no node's own sources offer Kata).
  await Promise.all(nodes.map((name) => onNode(fleet, name, addObsSourceCommand(fleet.mirror.port))));
}, 180_000);

afterAll(async () => {
  for (const worker of workers) await worker.kill();
  for (const connection of connections) await connection.close().catch(() => undefined);
  await server?.stop();
  await fleet?.stop();
});

describe('a rollout across crashes', () => {
  it('finishes with every node patched exactly once after its worker was killed and Temporal was restarted', async () => {
    const options = { dbFile: join(dir, 'temporal', 'temporal.db'), port: await freeLoopbackPort(), uiPort: await freeLoopbackPort() };
    server = await startDevServer(options);
    const workerLog = join(dir, 'worker.log');
    workers.push(await startWorkerProcess(server.address, workerLog));
    let client = await connect(server.address);

    const before = await configHashes(fleet, nodes);
    for (const name of ['r-2', 'r-3']) await fleet.setFault(name, 'command-hangs', true);
    // kata.toml's node steps, but the install from a package (the OBS-style repository's kata-containers .deb), so that
    // "exactly once" also covers a package manager's install.
    const kata = await kataSubset(['prereq', 'install', 'containerd', 'restart'], 'kata-node-steps');
    const packageInstall = PackageInstallStep.parse({ id: 'install', kind: 'package-install', packages: [{ name: 'kata-containers', version: '3.2.0' }], remove_on_rollback: true, timeout: '10m', retry: { max_attempts: 3, initial_interval: '10s', backoff: 2 } });
    const playbook = { ...kata, steps: kata.steps.map((step) => (step.id === 'install' ? packageInstall : step)) };
    const started = await startRollout(client, playbook, await inventoryOf(fleet, nodes), {
      requestId: 'recovery-1',
      overrides: { canary: 1, wave_size: 1, failure_budget: 0, pause_between_waves: '0s' },
    });
    const restartHanging = async (name: string) => ((await onNode(fleet, name, "pgrep -f '^(/bin/bash |bash )?/usr/local/sbin/systemctl restart containerd' || true")).trim() !== '' ? true : undefined);

    // 1. The worker dies (SIGKILL) while r-2 restarts containerd; another worker takes over.
    await waitFor('r-2 restarting containerd', () => restartHanging('r-2'), 300_000);
    await workers[0].kill();
    workers.push(await startWorkerProcess(server.address, workerLog));
    await fleet.setFault('r-2', 'command-hangs', false);

    // 2. Temporal stops while r-3 restarts containerd, and starts again on the same SQLite file.
    await waitFor('r-3 restarting containerd', () => restartHanging('r-3'), 300_000);
    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    server = await startDevServer(options);
    client = await connect(server.address);
    await fleet.setFault('r-3', 'command-hangs', false);

    const result: RolloutProgress = await client.workflow.getHandle(started.workflowId).result();
    expect(result.phase).toBe('succeeded');
    expect(result.nodes.map((node) => node.status)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded']);

    // Exactly once: one nodeWorkflow per node, one backup per node holding the original bytes, one kata table.
    const children = childTimeline(await historiesOfAllRuns(client, started.workflowId));
    expect(children.map((child) => [nodeOf(child.workflowId), child.outcome])).toEqual(nodes.map((name) => [name, 'completed']));
    for (const name of nodes) {
      expect((await configBackups(fleet, name)).map((backup) => backup.sha256)).toEqual([before[name]]);
      expect(await onNode(fleet, name, 'grep -c "runtimes.kata\\]" /etc/containerd/config.toml')).toBe('1\n');
      expect(await onNode(fleet, name, "dpkg-query -W -f='${Version} ${Status}' kata-containers")).toBe('3.2.0 install ok installed');
    }
    // The kill really hit r-2 mid-restart: the attempt the dead worker had started timed out, the new worker's retry completed.
    const r2Activities = activitiesInHistory(await client.workflow.getHandle(nodeWorkflowId('r-2')).fetchHistory());
    expect(r2Activities.find((activity) => activity.activityType === 'serviceRestart')).toMatchObject({ result: 'completed', attempt: 2 });
  }, 600_000);
});
