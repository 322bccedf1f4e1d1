// Kubernetes from the orchestrator with least privilege (issue 12): deploy/rbac.yaml applied to the simulated
// fleet's real kube-apiserver, a kubeconfig for its ServiceAccount's token on the worker (`[kubernetes] kubeconfig`,
// no control-plane host), and the shipped kata and kata-uninstall playbooks rolled out through the public CLI
// with it. The RuntimeClass is handled once per rollout: applied before the first node, deleted by the uninstall
// only once no node carries its label.
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../api/server';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId } from '../workflows/node';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { kubectlRunner } from './kube-helpers';
import { historiesOfAllRuns } from './rollout-helpers';
import { activitiesInHistory } from './helpers/node-workflow';

const token = 'kube-rbac-test-token-0123456789abcdef01234567';
const root = join(__dirname, '..');
let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let api: FastifyInstance;
let apiUrl: string;
let work: string;
let admin: ReturnType<typeof kubectlRunner>;
let katafleetSa: ReturnType<typeof kubectlRunner>;
let saKubeconfig: string;
const previousKubectl = process.env.KATAFLEET_KUBECTL;

const katafleet = (...args: string[]) => runKatafleet(env.address, args, 600_000);

/** An inventory of the fleet's nodes `names` whose Kubernetes access is the ServiceAccount's kubeconfig on the worker. */
async function inventory(name: string, names: string[]): Promise<string> {
  const file = await writeFleetInventory(fleet, work, name, names);
  await writeFile(file, `${await readFile(file, 'utf8')}\n[kubernetes]\nkubeconfig = ${JSON.stringify(saKubeconfig)}\n`);
  return file;
}

/** Exit 0 and nothing on stderr; on failure the whole output shows in the test's message. */
function expectSuccess(run: { code: number; stdout: string; stderr: string }): void {
  expect({ code: run.code, stderr: run.stderr, output: run.code === 0 ? '' : run.stdout }).toEqual({ code: 0, stderr: '', output: '' });
}

/** The activity types a workflow's history scheduled, every run. */
async function scheduledActivities(workflowId: string): Promise<string[]> {
  return (await historiesOfAllRuns(env.client, workflowId)).flat()
    .map((event) => event.activityTaskScheduledEventAttributes?.activityType?.name)
    .filter((name): name is string => typeof name === 'string');
}

async function rolloutBody(id: string): Promise<{ phase: string; cluster?: string[]; nodes: { name: string; status: string }[] }> {
  const response = await fetch(`${apiUrl}/v1/rollouts/${id}`, { headers: { authorization: `Bearer ${token}` } });
  expect(response.status).toBe(200);
  return (await response.json()) as { phase: string; cluster?: string[]; nodes: { name: string; status: string }[] };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-kube-rbac-'));
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: [{ name: 'node-1', containerd: '1.6' }, { name: 'node-2', containerd: '1.6' }], kubernetes: true, dir: join(work, 'fleet') }),
  ]);
  const kubectlPath = join(kubernetesBinaries().binDir, 'kubectl');
  // The worker runs kubectl itself (no kubectl on this machine's PATH): where to find it.
  process.env.KATAFLEET_KUBECTL = kubectlPath;
  admin = kubectlRunner(kubectlPath, fleet.controlPlane!.kubeconfig);
  const applied = await admin(['apply', '-f', join(root, 'deploy', 'rbac.yaml')]);
  expect(applied).toMatchObject({ code: 0 });
  const tokenResult = await admin(['-n', 'katafleet-system', 'create', 'token', 'katafleet', '--duration=2h']);
  expect(tokenResult.code).toBe(0);
  const adminConfig = await admin(['config', 'view', '--raw', '-o', 'jsonpath={.clusters[0].cluster.certificate-authority-data} {.clusters[0].cluster.server}']);
  const [caData, server] = adminConfig.stdout.trim().split(' ');
  saKubeconfig = join(work, 'katafleet-sa.kubeconfig');
  await writeFile(saKubeconfig, [
    'apiVersion: v1', 'kind: Config',
    'clusters:', '- name: sim', '  cluster:', `    server: ${server}`, `    certificate-authority-data: ${caData}`,
    'users:', '- name: katafleet', '  user:', `    token: ${tokenResult.stdout.trim()}`,
    'contexts:', '- name: sim', '  context:', '    cluster: sim', '    user: katafleet', 'current-context: sim', '',
  ].join('\n'), { mode: 0o600 });
  await chmod(saKubeconfig, 0o600);
  katafleetSa = kubectlRunner(kubectlPath, saKubeconfig);
  worker = await runKatafleetWorker(env, taskQueue);
  api = await buildApi({ client: env.client, token, credentialsFile: join(fleet.dir, 'credentials.toml') });
  apiUrl = await api.listen({ host: '127.0.0.1', port: 0 });
}, 300_000);

afterAll(async () => {
  if (previousKubectl === undefined) delete process.env.KATAFLEET_KUBECTL;
  else process.env.KATAFLEET_KUBECTL = previousKubectl;
  await api?.close();
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('the shipped RBAC manifest is least privilege', () => {
  it('lets the ServiceAccount read and patch nodes, manage RuntimeClasses and verification pods, and nothing else', async () => {
    const can = async (...args: string[]) => (await katafleetSa(['auth', 'can-i', ...args])).stdout.trim();
    expect(await can('patch', 'nodes')).toBe('yes');
    expect(await can('create', 'runtimeclasses.node.k8s.io')).toBe('yes');
    expect(await can('delete', 'runtimeclasses.node.k8s.io')).toBe('yes');
    expect(await can('create', 'pods', '-n', 'katafleet-verify')).toBe('yes');
    expect(await can('create', 'pods/exec', '-n', 'katafleet-verify')).toBe('yes');
    expect(await can('watch', 'pods', '-n', 'katafleet-verify')).toBe('yes');
    expect(await can('watch', 'pods', '-n', 'default')).toBe('no');
    expect(await can('delete', 'pods', '-n', 'default')).toBe('no');
    expect(await can('create', 'pods', '-n', 'kube-system')).toBe('no');
    expect(await can('get', 'secrets', '-A')).toBe('no');
    expect(await can('delete', 'nodes')).toBe('no');

    // Not only what the API says it would allow: a real delete of a pod in another namespace is refused.
    expect((await admin(['run', '-n', 'default', 'bystander', '--image=docker.io/library/busybox:1.36.1', '--restart=Never', '--', 'sleep', '3600'])).code).toBe(0);
    const refused = await katafleetSa(['delete', 'pod', '-n', 'default', 'bystander', '--wait=false']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('pods "bystander" is forbidden: User "system:serviceaccount:katafleet-system:katafleet" cannot delete resource "pods" in API group "" in the namespace "default"');
    expect((await admin(['get', 'pod', '-n', 'default', 'bystander', '-o', 'name'])).stdout.trim()).toBe('pod/bystander');
    // A bare pod would stop kubectl drain (it refuses pods without a controller unless forced): the admin removes it.
    expect((await admin(['delete', 'pod', '-n', 'default', 'bystander', '--grace-period=0', '--force'])).code).toBe(0);
  }, 60_000);
});

describe('a rollout with kubectl on the worker, as the ServiceAccount', () => {
  it('halts before any node when the RuntimeClass cannot be applied (another handler holds the name): the reason in the CLI and the API', async () => {
    expect((await admin(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'node.k8s.io/v1', kind: 'RuntimeClass', metadata: { name: 'kata' }, handler: 'kata-qemu' }))).code).toBe(0);
    try {
      const run = await katafleet('rollout', 'kata', '--inventory', await inventory('conflict', ['node-1', 'node-2']),
        '--canary', '1', '--wave-size', '1', '--pause', '0s', '--follow', '--request-id', 'rbac-conflict');
      expect(run.code).toBe(1);
      expect(run.stdout).toMatch(/halted: 0 of 2 nodes done, 0 failed, 2 skipped — runtime-class "runtime-class" failed before the first node: RuntimeClass kata exists with handler kata-qemu, not kata: .*; no node was started/);
      const body = await rolloutBody('rbac-conflict');
      expect(body.phase).toBe('halted');
      expect(body.nodes.map((node) => node.status)).toEqual(['skipped', 'skipped']);
      expect(await scheduledActivities('katafleet-rollout-rbac-conflict')).toEqual(['clusterStep']);
      expect((await admin(['get', 'runtimeclass', 'kata', '-o', 'jsonpath={.handler}'])).stdout).toBe('kata-qemu');
    } finally {
      await admin(['delete', 'runtimeclass', 'kata']);
    }
  }, 300_000);

  it('rolls the kata playbook out to two nodes: the RuntimeClass applied once by the rollout, never by a node, a pod in a VM on each node', async () => {
    const run = await katafleet('rollout', 'kata', '--inventory', await inventory('both', ['node-1', 'node-2']),
      '--canary', '1', '--wave-size', '1', '--pause', '0s', '--follow', '--request-id', 'rbac-install');
    expectSuccess(run);
    expect(run.stdout).toMatch(/^node-1\s+1\s+succeeded\s+6\.1\.0-katafleet-sim\s+\S+-kata/m);
    expect(run.stdout).toMatch(/^node-2\s+2\s+succeeded\s+6\.1\.0-katafleet-sim\s+\S+-kata/m);
    expect(run.stdout).toContain('cluster (once for the rollout):\n  runtime-class: created RuntimeClass kata (handler kata, nodeSelector katacontainers.io/kata-runtime=true');

    // One clusterStep in the rollout's history; no runtimeClass activity in any node's.
    const rolloutActivities = await scheduledActivities('katafleet-rollout-rbac-install');
    expect(rolloutActivities.filter((name) => name === 'clusterStep')).toHaveLength(1);
    for (const node of ['node-1', 'node-2']) {
      // The steps of a node run, also those inside its run of steps (runSteps).
      const nodeActivities = (await historiesOfAllRuns(env.client, nodeWorkflowId(node))).flatMap((events) => activitiesInHistory({ events }).map((a) => a.activityType));
      expect(nodeActivities).toContain('verificationPod');
      expect(nodeActivities).not.toContain('runtimeClass');
    }
    // The class is the one katafleet applied (server-side, its field manager), through the ServiceAccount.
    const managers = (await admin(['get', 'runtimeclass', 'kata', '--show-managed-fields', '-o', 'jsonpath={.metadata.managedFields[*].manager}'])).stdout;
    expect(managers.split(' ')).toEqual(['katafleet']);
    const body = await rolloutBody('rbac-install');
    expect(body.phase).toBe('succeeded');
    expect(body.cluster).toEqual([expect.stringMatching(/^runtime-class: created RuntimeClass kata/)]);
  }, 600_000);

  it('uninstalls from node-1 only: the RuntimeClass stays, because node-2 still carries the label; the uninstall of node-2 then deletes it', async () => {
    const first = await katafleet('rollout', 'kata-uninstall', '--inventory', await inventory('first', ['node-1']),
      '--canary', '0', '--pause', '0s', '--follow', '--request-id', 'rbac-uninstall-1');
    expectSuccess(first);
    expect(first.stdout).toMatch(/^node-1\s+1\s+succeeded/m);
    expect(first.stdout).toContain('runtime-class: kept RuntimeClass kata: 1 node(s) still carry katacontainers.io/kata-runtime=true (node-2); it is deleted once none does');
    expect((await admin(['get', 'runtimeclass', 'kata', '-o', 'name'])).stdout.trim()).toBe('runtimeclass.node.k8s.io/kata');
    expect((await rolloutBody('rbac-uninstall-1')).cluster).toEqual([expect.stringContaining('kept RuntimeClass kata')]);

    const second = await katafleet('rollout', 'kata-uninstall', '--inventory', await inventory('second', ['node-2']),
      '--canary', '0', '--pause', '0s', '--follow', '--request-id', 'rbac-uninstall-2');
    expectSuccess(second);
    expect(second.stdout).toContain('runtime-class: deleted RuntimeClass kata (handler kata): no node carries katacontainers.io/kata-runtime=true any more');
    expect((await admin(['get', 'runtimeclass', 'kata', '--ignore-not-found', '-o', 'name'])).stdout.trim()).toBe('');
  }, 600_000);
});
