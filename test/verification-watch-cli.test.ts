// README "Kubernetes access", "The worker watches the verification pod until it runs (one watch request, no polls)",
// from the outside: `katafleet rollout kata --follow` through the CLI, run by a `katafleet worker` process with the
// kubeconfig of deploy/rbac.yaml's ServiceAccount, and what the simulated fleet's real kube-apiserver wrote in its
// audit log (sim/control-plane.ts auditPolicy: every request on pods in katafleet-verify, with verb, user and object).
// No hook in the worker: the API server's own record of the requests it received.
import { readFile, rm, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { startTestTemporal } from './helpers/temporal';
import { startWorkerProcess, type WorkerProcess } from './helpers/worker-process';
import { kubectlRunner, serviceAccountKubeconfig } from './kube-helpers';

/** One audit event as kube-apiserver writes it (audit.k8s.io/v1 Event, level Metadata): the fields read here. */
interface AuditEvent {
  auditID: string;
  stage: string;
  verb: string;
  user: { username: string };
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
}

const serviceAccount = 'system:serviceaccount:katafleet-system:katafleet';
let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: WorkerProcess | undefined;
let work: string;
const previousKubectl = process.env.KATAFLEET_KUBECTL;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-verification-watch-'));
  [env, fleet] = await Promise.all([startTestTemporal(), startFleet({ nodes: [{ name: 'node-1', containerd: '2' }], kubernetes: true, dir: join(work, 'fleet') })]);
  // The worker process inherits this: kubectl reads the kubeconfig once; every other call goes through the API.
  process.env.KATAFLEET_KUBECTL = join(kubernetesBinaries().binDir, 'kubectl');
  worker = await startWorkerProcess(env.address, join(work, 'worker.log'), 180_000);
}, 300_000);

afterAll(async () => {
  if (previousKubectl === undefined) delete process.env.KATAFLEET_KUBECTL;
  else process.env.KATAFLEET_KUBECTL = previousKubectl;
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
  if (work) await rm(work, { recursive: true, force: true });
});

it('a rollout through the CLI: kube-apiserver\'s audit log shows one watch of the verification pod and no GET of it', async () => {
  const admin = kubectlRunner(process.env.KATAFLEET_KUBECTL!, fleet.controlPlane!.kubeconfig);
  const kubeconfig = join(work, 'katafleet-sa.kubeconfig');
  await serviceAccountKubeconfig(admin, join(__dirname, '..', 'deploy', 'rbac.yaml'), kubeconfig);
  const inventory = await writeFleetInventory(fleet, work, 'one', ['node-1']);
  await writeFile(inventory, `${await readFile(inventory, 'utf8')}\n[kubernetes]\nkubeconfig = ${JSON.stringify(kubeconfig)}\n`);

  const run = await runKatafleet(env.address, ['rollout', 'kata', '--inventory', inventory, '--canary', '0', '--follow', '--request-id', 'verification-watch'], 600_000);
  expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
  expect(run.stdout).toMatch(/^node-1\s+\S+\s+succeeded\s+6\.1\.0-katafleet-sim\s+\S+-kata/m);

  // The fleet's control plane keeps its audit log beside its kubeconfig (sim/control-plane.ts ControlPlane.auditLog).
  const audit = (await readFile(join(dirname(fleet.controlPlane!.kubeconfig), 'logs', 'audit.log'), 'utf8')).split('\n').filter(Boolean).map((line) => JSON.parse(line) as AuditEvent);
  const requests = [...new Map(audit.filter((event) => event.user.username === serviceAccount && event.objectRef?.namespace === 'katafleet-verify')
    .map((event) => [event.auditID, event])).values()];
  const shown = requests.map((event) => `${event.verb} ${event.objectRef?.resource}${event.objectRef?.subresource ? `/${event.objectRef.subresource}` : ''}`);
  // One pod: created, watched once until it ran, its `uname -r` exec'd (a GET of pods/exec over WebSocket), deleted.
  expect(shown.sort()).toEqual(['create pods', 'delete pods', 'get pods/exec', 'watch pods'].sort());
  const watch = requests.find((event) => event.verb === 'watch')!;
  const deleted = requests.find((event) => event.verb === 'delete')!;
  expect(watch.objectRef?.name).toBe(deleted.objectRef?.name);
  expect(watch.objectRef?.name).toMatch(/^katafleet-verify-node-1-/);
  // No polling: no GET and no list of the pod.
  expect(requests.filter((event) => event.verb === 'get' && !event.objectRef?.subresource)).toEqual([]);
  expect(requests.filter((event) => event.verb === 'list')).toEqual([]);
}, 600_000);
