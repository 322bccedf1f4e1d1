// The scale-out path, for real: `katafleet cluster up` starts the Temporal server built from the Go module proxy
// on a private PostgreSQL (docs/cluster.md), two `katafleet worker` processes poll it, and a rollout of a small
// simulated fleet runs on them. The worker that holds a running activity is killed with SIGKILL mid-rollout;
// the rollout completes on the other one and every node is patched exactly once. Also: `cluster` input errors,
// `status`, and that `down` leaves no process.
//
// Cost: one PostgreSQL, one Temporal server (~1 min to start on 2 busy cores the first time: initdb + schema),
// three simulated nodes without Kubernetes, kata.toml's steps prereq, containerd and restart.
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { patchContainerdConfig } from '../activities/containerd-config';
import { startRollout } from '../api/rollout-service';
import { freeServerPort } from '../cli/cluster';
import { alive } from '../sim/addresses';
import { startFleet, type Fleet } from '../sim/fleet';
import type { Step } from '../playbooks/schema';
import { nodeWorkflowId } from '../workflows/node';
import { rolloutProgressQuery, type RolloutProgress } from '../workflows/rollout-messages';
import { runKatafleet } from './helpers/cli';
import { activityAttempts, runningStep } from './helpers/node-workflow';
import { startWorkerProcess, type WorkerProcess } from './helpers/worker-process';
import { configBackups, inventoryOf, kataSubset, onNode, waitFor } from './rollout-helpers';

const nodes = ['k-1', 'k-2', 'k-3'];
/** The node whose `systemctl restart containerd` hangs until the worker running it is killed. */
const held = 'k-2';

let base: string;
let clusterDir: string;
let address: string | undefined;
let fleet: Fleet | undefined;
let connection: Connection | undefined;
let client: Client;
const workers: WorkerProcess[] = [];

type History = Awaited<ReturnType<ReturnType<Client['workflow']['getHandle']>['fetchHistory']>>;
const eventSeconds = (event: NonNullable<History['events']>[number]) => Number(event.eventTime?.seconds ?? 0) + (event.eventTime?.nanos ?? 0) / 1e9;

/** How many activities a node's run took, and how long they held a worker's activity slot (started → closed). */
function slotUse(history: History): { activities: number; seconds: number } {
  const started = new Map<string, number>();
  let activities = 0;
  let seconds = 0;
  for (const event of history.events ?? []) {
    const start = event.activityTaskStartedEventAttributes;
    if (start) started.set(String(start.scheduledEventId), eventSeconds(event));
    const closed = event.activityTaskCompletedEventAttributes ?? event.activityTaskFailedEventAttributes ?? event.activityTaskTimedOutEventAttributes;
    if (closed && started.has(String(closed.scheduledEventId))) {
      activities += 1;
      seconds += eventSeconds(event) - started.get(String(closed.scheduledEventId))!;
    }
  }
  return { activities, seconds };
}

/** `katafleet cluster ACTION --dir <clusterDir> ...args` as a user runs it. */
const cluster = (action: string, ...args: string[]) => runKatafleet('', ['cluster', action, '--dir', clusterDir, ...args], 400_000);

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'kf-cluster-'));
  // PostgreSQL runs as the postgres user (it refuses root): it must be able to enter the directories above its data.
  await chmod(base, 0o755);
  clusterDir = join(base, 'cluster');
  const port = await freeServerPort();
  const pgPort = await freeServerPort(new Set([port]));
  const [up, started] = await Promise.all([
    cluster('up', '--port', String(port), '--pg-port', String(pgPort)),
    startFleet({ nodes: nodes.map((name) => ({ name, containerd: '1.6' as const })), dir: join(base, 'fleet') }),
  ]);
  fleet = started;
  if (up.code !== 0) throw new Error(`katafleet cluster up exited ${up.code}:\n${up.stderr}`);
  address = /^TEMPORAL_ADDRESS=(\S+)$/m.exec(up.stdout)?.[1];
  if (!address) throw new Error(`katafleet cluster up printed no TEMPORAL_ADDRESS:\n${up.stdout}`);
  connection = await Connection.connect({ address });
  client = new Client({ connection, namespace: 'default' });
  for (const name of ['worker-a', 'worker-b']) workers.push(await startWorkerProcess(address, join(base, `${name}.log`), 120_000));
}, 600_000);

afterAll(async () => {
  for (const worker of workers) await worker.kill();
  await connection?.close();
  await fleet?.stop();
  if (clusterDir) await cluster('down', '--purge');
  if (base) await rm(base, { recursive: true, force: true });
}, 180_000);

describe('katafleet cluster', () => {
  it('refuses bad input with exit 2, naming the flag and the fix, and starts nothing', async () => {
    const cases: [string[], RegExp][] = [
      [['cluster'], /expected 1 argument/],
      [['cluster', 'start'], /unknown action "start"; use up, down or status/],
      [['cluster', 'up', '--port', '80'], /--port "80" is not a port from 1024 to 32767 \(Temporal stores its ports in a SMALLINT column\)/],
      [['cluster', 'up', '--port', '40000'], /--port "40000" is not a port from 1024 to 32767/],
      [['cluster', 'up', '--pg-port', '70000'], /--pg-port "70000" is not a port from 1024 to 65535/],
      [['cluster', 'up', '--port', '7233x'], /--port "7233x" is not a port/],
      [['cluster', 'up', '--port', '7400', '--pg-port', '7400'], /--port and --pg-port are both 7400/],
      [['cluster', 'up', '--shards', '0'], /--shards "0" is not a whole number from 1 to 16384/],
      [['cluster', 'down', '--port', '7400'], /--port applies to up only/],
      [['cluster', 'status', '--purge'], /--purge applies to down only/],
    ];
    for (const [args, message] of cases) {
      const result = await runKatafleet('', [...args, '--dir', join(base, 'never')]);
      expect({ args, code: result.code, stderr: result.stderr }).toEqual({ args, code: 2, stderr: expect.stringMatching(message) });
    }
    expect(await cluster('status').then((r) => r.code)).toBe(0);
    const never = await runKatafleet('', ['cluster', 'status', '--dir', join(base, 'never')]);
    expect(never).toMatchObject({ code: 1, stdout: expect.stringContaining('no cluster in') });
  }, 120_000);

  it('refuses a frontend port that is taken, naming it and the fix', async () => {
    const taken = Number(address!.split(':')[1]);
    const result = await runKatafleet('', ['cluster', 'up', '--dir', join(base, 'second'), '--port', String(taken)]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`127.0.0.1:${taken} is already in use: pass --port with a free port`);
  }, 60_000);

  it('up prints TEMPORAL_ADDRESS, and the cluster has katafleet\'s search attributes on its SQL visibility store', async () => {
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    const attributes = await connection!.operatorService.listSearchAttributes({ namespace: 'default' });
    expect(Object.keys(attributes.customAttributes ?? {}).filter((name) => name.startsWith('Katafleet')).sort()).toEqual([
      'KatafleetDrift', 'KatafleetNode', 'KatafleetNodes', 'KatafleetNodesDone', 'KatafleetNodesFailed', 'KatafleetNodesTotal', 'KatafleetPhase', 'KatafleetPlaybook', 'KatafleetRolloutId',
    ]);
    const status = await cluster('status');
    expect(status.stdout).toContain(`TEMPORAL_ADDRESS=${address}`);
    expect(status.stdout).toMatch(/PostgreSQL: running on 127\.0\.0\.1:\d+/);
  });
});

describe('two workers on the cluster', () => {
  it('a worker SIGKILLed while it runs an activity: the rollout completes on the other, each node patched exactly once', async () => {
    const playbook = await kataSubset(['prereq', 'containerd', 'restart'], 'kata-cluster');
    const originals = Object.fromEntries(await Promise.all(nodes.map(async (name) => [name, await onNode(fleet!, name, 'cat /etc/containerd/config.toml')] as const)));
    const originalSha = Object.fromEntries(await Promise.all(nodes.map(async (name) => [name, (await onNode(fleet!, name, 'sha256sum < /etc/containerd/config.toml')).split(' ')[0]] as const)));
    // The restart of `held` hangs until the worker that runs it is gone: the kill surely lands mid-activity.
    await fleet!.setFault(held, 'command-hangs', true);
    try {
      const started = await startRollout(client, playbook, await inventoryOf(fleet!, nodes), {
        requestId: 'cluster-two-workers',
        overrides: { canary: 1, wave_size: 2, failure_budget: 0, pause_between_waves: '0s' },
      });
      const rollout = client.workflow.getHandle(started.workflowId);

      // The worker that holds the run of steps of `held` while its restart hangs, as the server sees it (the attempt's
      // worker identity; the run's heartbeat names the step it runs).
      const heldHandle = client.workflow.getHandle(nodeWorkflowId(held));
      const holder = await waitFor(`a worker running the restart of ${held} in its run of steps`, async () => {
        if ((await runningStep(heldHandle))?.stepId !== 'restart') return undefined;
        const run = (await heldHandle.describe()).raw.pendingActivities?.find((activity) => activity.activityType?.name === 'runSteps');
        return run?.lastWorkerIdentity ? { identity: run.lastWorkerIdentity, attempt: run.attempt } : undefined;
      }, 300_000, 500);
      expect(holder.attempt).toBe(1);
      // The other nodes finish first, so that the kill interrupts exactly one activity: the held restart.
      await waitFor('the other nodes succeeded', async () => {
        const progress = await rollout.query(rolloutProgressQuery);
        return progress.nodes.filter((node) => node.name !== held).every((node) => node.status === 'succeeded') ? true : undefined;
      }, 300_000, 500);
      const victim = workers.find((worker) => holder.identity.startsWith(`${worker.process.pid}@`));
      expect(victim).toBeDefined();
      const survivor = workers.find((worker) => worker !== victim)!;
      await victim!.kill();
      expect(alive(victim!.process.pid!)).toBe(false);
      await fleet!.setFault(held, 'command-hangs', false);

      const result: RolloutProgress = await rollout.result();
      expect(result.phase).toBe('succeeded');
      expect(result.nodes.map((node) => [node.name, node.status])).toEqual(nodes.map((name) => [name, 'succeeded']));
      expect((await rollout.query(rolloutProgressQuery)).phase).toBe('succeeded');

      // The held node's run of steps was lost with its worker (its heartbeat timed out); its steps then ran again one
      // activity each, all on the surviving worker.
      const heldEvents = (await heldHandle.fetchHistory()).events ?? [];
      const lost = heldEvents.findIndex((event) => event.activityTaskTimedOutEventAttributes);
      expect(lost).toBeGreaterThan(0);
      const startsAfter = heldEvents.slice(lost).flatMap((event) => event.activityTaskStartedEventAttributes?.identity ?? []);
      expect(startsAfter.length).toBeGreaterThanOrEqual(3);
      expect(startsAfter).toEqual(startsAfter.map(() => expect.stringMatching(new RegExp(`^${survivor.process.pid}@`))));

      const containerdStep = playbook.steps.find((step) => step.id === 'containerd') as Extract<Step, { kind: 'containerd-patch' }>;
      for (const name of nodes) {
        // Exactly once, by the workflow: the steps in one run of steps; on the held node the run lost with its worker,
        // then each step as its second attempt, the containerd patch finding its effect in place.
        const attempts = (await activityAttempts(client.workflow.getHandle(nodeWorkflowId(name)))).map((a) => [a.activityType, a.attempt, a.result]);
        expect({ name, attempts }).toEqual({
          name,
          attempts: name === held
            ? [['runSteps', 1, 'timed-out'], ['prereqCheck', 2, 'completed'], ['containerdPatch', 2, 'completed'], ['serviceRestart', 2, 'completed']]
            : [['prereqCheck', 1, 'completed'], ['containerdPatch', 1, 'completed'], ['serviceRestart', 1, 'completed']],
        });
        // Exactly once, on the node: the config is the original patched once (one kata runtime), one backup holding the original bytes.
        const config = await onNode(fleet!, name, 'cat /etc/containerd/config.toml');
        expect(config).toBe(patchContainerdConfig(originals[name], containerdStep.runtimes, { replace: containerdStep.replace, mode: containerdStep.mode }).content);
        expect(config.match(/runtimes\.kata\]/g)).toHaveLength(1);
        expect((await configBackups(fleet!, name)).map((backup) => backup.sha256)).toEqual([originalSha[name]]);
        expect((await onNode(fleet!, name, 'ls /var/lib/katafleet/applied/')).trim().split('\n')).toHaveLength(1);
        expect((await onNode(fleet!, name, 'systemctl is-active containerd')).trim()).toBe('active');
      }
      expect(alive(survivor.process.pid!)).toBe(true);
      // Figures for docs/cluster.md's sizing (printed, not asserted): activities per node, time they hold a slot, worker RSS.
      const perNode = await Promise.all(nodes.filter((name) => name !== held).map(async (name) => slotUse(await client.workflow.getHandle(nodeWorkflowId(name)).fetchHistory())));
      const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${survivor.process.pid}/status`, 'utf8'))?.[1] ?? 0);
      console.log(`[cluster sizing] per node (not held): ${perNode.map((n) => `${n.activities} activities, ${n.seconds.toFixed(1)} s in slots`).join('; ')}; surviving worker RSS ${(rssKiB / 1024).toFixed(0)} MiB`);
    } finally {
      await fleet!.setFault(held, 'command-hangs', false);
    }
  }, 600_000);

  it('down stops the server and PostgreSQL and leaves no process', async () => {
    const state = JSON.parse(await readFile(join(clusterDir, 'cluster.json'), 'utf8')) as { serverPid: number };
    const pgPid = Number((await readFile(join(clusterDir, 'pg', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    for (const worker of workers) await worker.kill();
    const down = await cluster('down');
    expect(down).toMatchObject({ code: 0, stdout: expect.stringContaining('stopped temporal-server') });
    expect(down.stdout).toContain('PostgreSQL');
    // Gone, or a zombie that its new parent (the machine's init) has not reaped yet.
    const exists = async (pid: number) => (await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).replace(/^.*\) /s, '').match(/^[^Z]/) !== null;
    expect([await exists(state.serverPid), await exists(pgPid)]).toEqual([false, false]);
    expect(await cluster('status')).toMatchObject({ code: 1, stdout: expect.stringMatching(/temporal-server .*: stopped/) });
  }, 120_000);
});
