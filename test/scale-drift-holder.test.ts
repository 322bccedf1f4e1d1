// A drift schedule's inventory workflow (`<schedule id>-inventory`, driftInventoryWorkflow) ends itself once its
// schedule is gone, also when the schedule is deleted straight through Temporal (the UI, `temporal schedule delete`,
// the client) rather than by `katafleet drift unschedule` (which terminates it at once): it asks at every check
// (24 h by default; 3 s here) whether the schedule exists (patch `drift-holder-ends-with-schedule`).
// Real: the dev server, katafleet's worker (createWorker, as `katafleet worker` makes it), createDriftSchedule (what
// `POST /v1/schedules` and `katafleet drift schedule` call). The nodes are never contacted (the schedule runs hourly).
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { driftInventoryWorkflowId } from '../api/drift-service';
import { createDriftSchedule } from '../api/schedule-service';
import { sharedHostPlaybook } from '../bench/scale-run';
import { attachCredentials, parseInventory, parsePlaybook } from '../playbooks/load';
import { credentialsToml } from '../sim/inventory';
import { historyToJsonText } from './helpers/history-json';
import { createWorker } from '../worker/worker';
import { startTestTemporal } from './helpers/temporal';

describe('drift schedule inventory workflow', () => {
  let env: TestWorkflowEnvironment;
  let worker: { stop(): Promise<void> };
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kf-drift-holder-'));
    env = await startTestTemporal();
    const created = await createWorker({ target: { address: env.address, namespace: 'default', external: true } });
    const running = created.worker.run();
    worker = { stop: async () => { created.worker.shutdown(); await running; await created.close(); } };
  }, 300_000);

  afterAll(async () => {
    await worker?.stop();
    await env?.teardown();
  });

  const inventory = async () => {
    await writeFile(join(dir, 'id_ed25519'), 'not used: the nodes are never contacted\n', { mode: 0o600 });
    await writeFile(join(dir, 'known_hosts'), '');
    await writeFile(join(dir, 'credentials.toml'), credentialsToml({ dir, user: 'root', identityFile: join(dir, 'id_ed25519'), knownHostsPath: join(dir, 'known_hosts') }), { mode: 0o600 });
    const text = ['[ssh]', 'profile = "sim"', '', ...[1, 2, 3].flatMap((n) => ['[[nodes]]', `name = "worker-node-000${n}.prod.example.internal"`, `address = "127.0.9.${n}"`, ''])].join('\n');
    return attachCredentials(parseInventory(text, 'inventory_toml', { profilesOnly: true }), join(dir, 'credentials.toml'));
  };
  const playbook = () => parsePlaybook(sharedHostPlaybook('25%').replace(/\[\[steps\]\]\nid = "label"[\s\S]*$/, ''), 'playbook_toml');

  it('completes once its schedule is deleted straight through Temporal, and runs while the schedule exists', async () => {
    const scheduleId = await createDriftSchedule(env.client, playbook(), await inventory(), { every: '1h', reportOnly: true, scheduleId: 'holder-ends', holderCheckEvery: '3s' });
    const holder = env.client.workflow.getHandle(driftInventoryWorkflowId(scheduleId));
    // At least two checks answered "the schedule exists", and the holder still runs.
    const checksSaidExists = async () => ((await holder.fetchHistory()).events ?? []).filter((event) => event.activityTaskCompletedEventAttributes).length;
    while ((await checksSaidExists()) < 2) await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await holder.describe()).status.name).toBe('RUNNING');

    await env.client.schedule.getHandle(scheduleId).delete();
    await holder.result();
    expect((await holder.describe()).status.name).toBe('COMPLETED');
    const history = await holder.fetchHistory();
    // With KATAFLEET_RECORD_HISTORIES=1, saved for test/replay.test.ts (the patched path of the holder).
    if (process.env.KATAFLEET_RECORD_HISTORIES === '1') await writeFile(join(__dirname, 'histories', 'drift-holder-ends-with-schedule.json'), `${historyToJsonText(history)}\n`);
    const events = history.events ?? [];
    expect(events.some((event) => event.markerRecordedEventAttributes)).toBe(true);
    expect(events.filter((event) => event.activityTaskScheduledEventAttributes).map((event) => event.activityTaskScheduledEventAttributes!.activityType!.name)).toEqual(
      Array(events.filter((event) => event.activityTaskScheduledEventAttributes).length).fill('driftScheduleExists'),
    );
  }, 300_000);

  it('is still ended at once by katafleet\'s own delete (terminated), as before', async () => {
    const { deleteDriftSchedule } = await import('../api/schedule-service');
    const scheduleId = await createDriftSchedule(env.client, playbook(), await inventory(), { every: '1h', reportOnly: true, scheduleId: 'holder-unschedule' });
    const holder = env.client.workflow.getHandle(driftInventoryWorkflowId(scheduleId));
    expect((await holder.describe()).status.name).toBe('RUNNING');
    await deleteDriftSchedule(env.client, scheduleId);
    expect((await holder.describe()).status.name).toBe('TERMINATED');
  }, 300_000);
});
