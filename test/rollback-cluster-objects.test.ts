// A failed canary leaves the cluster as it found it (issue 12): the rollout applies its RuntimeClass once, before
// the first node; when the canary then fails and the rollout halts (or it is aborted with rollback, or cancelled
// straight through Temporal), it deletes the class it created itself, and never one that existed before it started. Through the public CLI, against the simulated fleet's real
// kube-apiserver (kubectl over SSH on its control-plane host), with a canary that has no hardware virtualization.
import { writeFileSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { CREATED_BY_ROLLOUT } from '../activities/steps/runtime-class';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { runKatafleet } from './helpers/cli';
import { historyToJsonText } from './helpers/history-json';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { kubectlRunner } from './kube-helpers';
import { rolloutProgressQuery } from '../workflows/rollout-messages';
import { historiesOfAllRuns, nodeWorkflowExists, waitFor } from './rollout-helpers';

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let work: string;
let admin: ReturnType<typeof kubectlRunner>;

/** A kata playbook cut down to what matters here: its canary fails the prereq check after the RuntimeClass was applied. */
const playbookToml = `
[playbook]
name = "kata-class-canary"

[[steps]]
id = "prereq"
kind = "prereq-check"
cpu_flags = ["vmx", "svm"]
require_kvm = true
persist_modules = false

[[steps]]
id = "containerd"
kind = "containerd-patch"
[[steps.runtimes]]
name = "kata"
runtime_type = "io.containerd.kata.v2"

[[steps]]
id = "label"
kind = "node-label"
labels = { "katacontainers.io/kata-runtime" = "true" }

[[steps]]
id = "runtime-class"
kind = "runtime-class"
name = "kata"
handler = "kata"
node_selector = { "katacontainers.io/kata-runtime" = "true" }
overhead = { cpu = "250m", memory = "160Mi" }
`;

const katafleet = (...args: string[]) => runKatafleet(env.address, args, 600_000);

/** `katafleet rollout` of the playbook to the fleet (canary node-1, then node-2), followed to its end. */
const rollout = (requestId: string) => katafleet('rollout', join(work, 'kata-class-canary.toml'), '--inventory', fleet.inventoryPath,
  '--canary', '1', '--wave-size', '1', '--failure-budget', '1', '--pause', '0s', '--follow', '--request-id', requestId);

/** With KATAFLEET_RECORD_HISTORIES=1, the halted rollout's history that took its RuntimeClass back is saved for test/replay.test.ts. */
async function keepHistory(requestId: string, name: string): Promise<void> {
  if (process.env.KATAFLEET_RECORD_HISTORIES !== '1') return;
  const history = await env.client.workflow.getHandle(`katafleet-rollout-${requestId}`).fetchHistory();
  writeFileSync(join(__dirname, 'histories', `${name}.json`), `${historyToJsonText(history)}\n`);
}

/** The cluster activities a rollout's history scheduled, in order. */
async function clusterActivities(requestId: string): Promise<string[]> {
  return (await historiesOfAllRuns(env.client, `katafleet-rollout-${requestId}`)).flat()
    .map((event) => event.activityTaskScheduledEventAttributes?.activityType?.name)
    .filter((name): name is string => name === 'clusterStep' || name === 'clusterTakeBack');
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-rollback-cluster-objects-'));
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: [{ name: 'node-1', containerd: '1.6' }, { name: 'node-2', containerd: '1.6' }], faults: { 'node-1': ['no-virtualization'] }, kubernetes: true, dir: join(work, 'fleet') }),
  ]);
  admin = kubectlRunner(join(kubernetesBinaries().binDir, 'kubectl'), fleet.controlPlane!.kubeconfig);
  await writeFile(join(work, 'kata-class-canary.toml'), playbookToml);
  worker = await runKatafleetWorker(env, taskQueue);
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('a rollout whose canary fails after its RuntimeClass was applied', () => {
  it('deletes the RuntimeClass it created when it halts: kubectl get runtimeclass kata is NotFound, node-2 untouched', async () => {
    expect((await admin(['get', 'runtimeclass', 'kata'])).stderr).toContain('NotFound');
    const run = await rollout('class-created');
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: '' });
    expect(run.stdout).toMatch(/canary did not succeed: node-1 failed/);
    expect(run.stdout).toContain('runtime-class: created RuntimeClass kata (handler kata');
    expect(run.stdout).toContain('runtime-class: deleted RuntimeClass kata (handler kata), created by this rollout: no node carries katacontainers.io/kata-runtime=true any more');
    expect(await clusterActivities('class-created')).toEqual(['clusterStep', 'clusterTakeBack']);

    const after = await admin(['get', 'runtimeclass', 'kata']);
    expect(after.code).toBe(1);
    expect(after.stderr).toContain('Error from server (NotFound): runtimeclasses.node.k8s.io "kata" not found');
    expect((await admin(['get', 'nodes', '--selector=katacontainers.io/kata-runtime=true', '-o', 'name'])).stdout).toBe('');
    expect(await nodeWorkflowExists(env.client, 'node-2')).toBe(false);
    await keepHistory('class-created', 'rollout-cluster-take-back');
  }, 600_000);

  it('leaves a RuntimeClass that existed before the rollout as it was (same uid, resourceVersion, spec, annotations)', async () => {
    // As an earlier katafleet rollout left it: the same manifest, applied by katafleet's field manager, with that rollout's id.
    const earlier = {
      apiVersion: 'node.k8s.io/v1', kind: 'RuntimeClass',
      metadata: { name: 'kata', labels: { 'app.kubernetes.io/managed-by': 'katafleet' }, annotations: { [CREATED_BY_ROLLOUT]: 'an-earlier-rollout' } },
      handler: 'kata', scheduling: { nodeSelector: { 'katacontainers.io/kata-runtime': 'true' } }, overhead: { podFixed: { cpu: '250m', memory: '160Mi' } },
    };
    expect((await admin(['apply', '--server-side', '--field-manager=katafleet', '-f', '-'], JSON.stringify(earlier))).code).toBe(0);
    const before = await admin(['get', 'runtimeclass', 'kata', '-o', 'json']);
    expect(before.code).toBe(0);

    const run = await rollout('class-existed');
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: '' });
    expect(run.stdout).toContain('runtime-class: RuntimeClass kata already up to date (handler kata)');
    expect(run.stdout).toContain('runtime-class: kept RuntimeClass kata: it existed before this rollout');
    expect(await clusterActivities('class-existed')).toEqual(['clusterStep', 'clusterTakeBack']);

    const after = await admin(['get', 'runtimeclass', 'kata', '-o', 'json']);
    expect(after.code).toBe(0);
    const pick = (json: string) => {
      const object = JSON.parse(json) as { metadata: Record<string, unknown>; handler: string; scheduling: unknown; overhead: unknown };
      const { uid, resourceVersion, annotations, labels } = object.metadata;
      return { uid, resourceVersion, annotations, labels, handler: object.handler, scheduling: object.scheduling, overhead: object.overhead };
    };
    expect(pick(after.stdout)).toEqual(pick(before.stdout));
    expect(pick(after.stdout).annotations).toEqual({ [CREATED_BY_ROLLOUT]: 'an-earlier-rollout' });
  }, 600_000);

  it('deletes the RuntimeClass it created after an abort with rollback, once the rolled-back canary no longer carries the label', async () => {
    await admin(['delete', 'runtimeclass', 'kata', '--ignore-not-found']);
    // node-2 (fit) is the canary; the rollout waits for approval after it, and is aborted with rollback there.
    await writeFile(join(work, 'kata-class-approval.toml'), playbookToml.replace('name = "kata-class-canary"\n', 'name = "kata-class-approval"\n\n[rollout]\napproval_after_canary = true\n'));
    const [header, ...blocks] = (await readFile(fleet.inventoryPath, 'utf8')).split('[[nodes]]');
    const inventory = join(fleet.dir, 'canary-node-2.toml');
    await writeFile(inventory, [header, ...blocks.filter((block) => block.includes('name = "node-2"')), ...blocks.filter((block) => !block.includes('name = "node-2"'))].join('[[nodes]]'));
    const start = await katafleet('rollout', join(work, 'kata-class-approval.toml'), '--inventory', inventory, '--canary', '1', '--wave-size', '1', '--pause', '0s', '--request-id', 'class-aborted');
    expect({ code: start.code, stderr: start.stderr }).toEqual({ code: 0, stderr: '' });
    const handle = env.client.workflow.getHandle('katafleet-rollout-class-aborted');
    await waitFor('the canary node-2 done, approval awaited', async () => ((await handle.query(rolloutProgressQuery)).phase === 'awaiting-approval' ? true : undefined), 300_000);
    expect((await admin(['get', 'runtimeclass', 'kata', '-o', 'jsonpath={.metadata.annotations}'])).stdout).toContain('class-aborted');
    expect((await admin(['get', 'node', 'node-2', '-o', 'jsonpath={.metadata.labels.katacontainers\\.io/kata-runtime}'])).stdout).toBe('true');

    const aborted = await katafleet('abort', 'class-aborted', '--rollback');
    expect({ code: aborted.code, stderr: aborted.stderr }).toEqual({ code: 0, stderr: '' });
    await handle.result().catch(() => undefined);
    const status = await katafleet('status', 'class-aborted');
    expect(status.stdout).toContain('aborted');
    expect(status.stdout).toContain('runtime-class: deleted RuntimeClass kata (handler kata), created by this rollout: no node carries katacontainers.io/kata-runtime=true any more');
    expect((await admin(['get', 'runtimeclass', 'kata'])).stderr).toContain('NotFound');
  }, 600_000);
});

describe('a rollout cancelled through Temporal (not katafleet abort) after its RuntimeClass was applied', () => {
  /** The prereq check and the RuntimeClass, no label step: after node-2's canary no node carries the class's label. */
  const unlabelledToml = playbookToml.replace('name = "kata-class-canary"\n', 'name = "kata-class-cancel"\n\n[rollout]\napproval_after_canary = true\n')
    .replace(/\n\[\[steps\]\]\nid = "label"[\s\S]*?(?=\n\[\[steps\]\])/, '');

  /** Starts the rollout with canary node-2, waits for its approval after the canary, cancels it through Temporal; its status. */
  async function cancelAfterCanary(requestId: string): Promise<string> {
    const playbook = join(work, 'kata-class-cancel.toml');
    await writeFile(playbook, unlabelledToml);
    expect(await readFile(playbook, 'utf8')).not.toContain('kind = "node-label"');
    const [header, ...blocks] = (await readFile(fleet.inventoryPath, 'utf8')).split('[[nodes]]');
    const inventory = join(fleet.dir, 'canary-node-2-cancel.toml');
    await writeFile(inventory, [header, ...blocks.filter((block) => block.includes('name = "node-2"')), ...blocks.filter((block) => !block.includes('name = "node-2"'))].join('[[nodes]]'));
    const start = await katafleet('rollout', playbook, '--inventory', inventory, '--canary', '1', '--wave-size', '1', '--pause', '0s', '--request-id', requestId);
    expect({ code: start.code, stderr: start.stderr }).toEqual({ code: 0, stderr: '' });
    const handle = env.client.workflow.getHandle(`katafleet-rollout-${requestId}`);
    await waitFor('the canary node-2 done, approval awaited', async () => ((await handle.query(rolloutProgressQuery)).phase === 'awaiting-approval' ? true : undefined), 300_000);
    // What `temporal workflow cancel --workflow-id katafleet-rollout-<id>` sends: a cancel request, no katafleet abort.
    await handle.cancel();
    await expect(handle.result()).rejects.toMatchObject({ cause: { name: 'CancelledFailure' } });
    const status = await katafleet('status', requestId);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^cancelled: /m);
    return status.stdout;
  }

  it('deletes the RuntimeClass it created: kubectl get runtimeclass kata is NotFound after the cancel', async () => {
    await admin(['delete', 'runtimeclass', 'kata', '--ignore-not-found']);
    const status = await cancelAfterCanary('class-cancelled');
    expect(status).toContain('runtime-class: created RuntimeClass kata (handler kata');
    expect(status).toContain('runtime-class: deleted RuntimeClass kata (handler kata), created by this rollout: no node carries katacontainers.io/kata-runtime=true any more');
    expect(await clusterActivities('class-cancelled')).toEqual(['clusterStep', 'clusterTakeBack']);
    expect((await admin(['get', 'runtimeclass', 'kata'])).stderr).toContain('NotFound');
    await keepHistory('class-cancelled', 'rollout-cancel-take-back');
  }, 600_000);

  it('leaves a RuntimeClass that existed before the cancelled rollout as it was (same uid, resourceVersion, annotations)', async () => {
    const earlier = {
      apiVersion: 'node.k8s.io/v1', kind: 'RuntimeClass',
      metadata: { name: 'kata', labels: { 'app.kubernetes.io/managed-by': 'katafleet' }, annotations: { [CREATED_BY_ROLLOUT]: 'an-earlier-rollout' } },
      handler: 'kata', scheduling: { nodeSelector: { 'katacontainers.io/kata-runtime': 'true' } }, overhead: { podFixed: { cpu: '250m', memory: '160Mi' } },
    };
    expect((await admin(['apply', '--server-side', '--field-manager=katafleet', '-f', '-'], JSON.stringify(earlier))).code).toBe(0);
    const metadata = async () => (await admin(['get', 'runtimeclass', 'kata', '-o', 'jsonpath={.metadata.uid} {.metadata.resourceVersion} {.metadata.annotations}'])).stdout;
    const before = await metadata();
    expect(before).toContain('an-earlier-rollout');
    const status = await cancelAfterCanary('class-existed-cancelled');
    expect(status).toContain('runtime-class: kept RuntimeClass kata: it existed before this rollout');
    expect(await metadata()).toBe(before);
  }, 600_000);
});
