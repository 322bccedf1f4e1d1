// The Kubernetes steps (readiness-gate, node-label, runtime-class, verification-pod, drain) against the
// simulated fleet's real control plane, reached with kubectl over SSH on its control-plane host, and the
// whole kata playbook on one node: every step changes it once, a second pass changes nothing.
import { activityByKind } from '../workflows/step-activities';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { KubernetesTarget, NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from '../activities/node-types';
import { SshPool } from '../activities/ssh';
import { toKubernetesTarget, toNodeTarget } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import type { Step } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';

let fleet: Fleet;
let pool: SshPool;
let targets: Record<string, NodeTarget>;
let kubernetes: KubernetesTarget;
let kataSteps: Step[];
const runId = '7d1e4b2c-9a3f-4e5d-8c6b-1a2b3c4d5e6f';
const activities = () => createNodeActivities({ pool });

beforeAll(async () => {
  fleet = await startFleet({
    nodes: [{ name: 'kube-1' }, { name: 'kube-2' }],
    kubernetes: true,
    dir: join(await mkdtemp(join(tmpdir(), 'kf-node-activities-kube-')), 'fleet'),
  });
  const inventory = await loadInventory(fleet.inventoryPath);
  targets = Object.fromEntries(inventory.nodes.map((node) => [node.name, toNodeTarget(inventory, node)]));
  kubernetes = toKubernetesTarget(inventory)!;
  kataSteps = (await loadPlaybook('kata')).steps;
  pool = new SshPool();
}, 240_000);
afterAll(async () => {
  await pool?.closeAll();
  await fleet?.stop();
});


function activityEnv(info: Partial<Info> = {}) {
  return new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000, ...info }, { logger: new DefaultLogger('ERROR') });
}

async function runStep(node: string, step: Step, info: Partial<Info> = {}, drain = false): Promise<StepOutcome> {
  const fn = activities()[activityByKind[step.kind]] as (request: StepRequest) => Promise<StepOutcome>;
  return (await activityEnv(info).run(fn, { runId, rolloutId: 'test', node: targets[node], kubernetes, step, drain })) as StepOutcome;
}

async function undo(node: string, record: Undo): Promise<UndoOutcome> {
  return (await activityEnv().run(activities().undoStep, { node: targets[node], kubernetes, undo: record })) as UndoOutcome;
}

function kataStep<K extends Step['kind']>(id: string): Extract<Step, { kind: K }> {
  const found = kataSteps.find((s) => s.id === id);
  if (!found) throw new Error(`kata.toml has no step ${id}`);
  return found as Extract<Step, { kind: K }>;
}

const kubectl = async (command: string) =>
  (await sshRun(fleet, fleet.nodes.find((n) => n.name === 'control-plane')!, `${kubernetes.kubectl} --kubeconfig ${kubernetes.kubeconfig} ${command}`)).stdout;

describe('the kata playbook, step by step, on a node of a real cluster', () => {
  const outcomes: Record<string, StepOutcome> = {};

  it('changes the node once per mutating step and proves the pod ran in a VM', async () => {
    for (const step of kataSteps) outcomes[step.id] = await runStep('kube-1', step);
    expect(Object.fromEntries(Object.entries(outcomes).map(([id, o]) => [id, o.changed]))).toEqual({
      prereq: true, install: true, 'kata-check': false, containerd: true, restart: true, ready: false, label: true, 'runtime-class': true, verify: false,
    });
    // kube-1 runs containerd 1.6, which never reports runtime handlers: the gate says so and asks the node's CRI instead.
    expect(outcomes.ready.summary).toMatch(/^Ready; status\.runtimeHandlers not reported \(it needs containerd >= 2\.0 and Kubernetes >= 1\.31\), so kata checked on the node instead: crictl info lists .*\bkata\b/);
    expect(outcomes.label.undo).toEqual({ kind: 'remove-node-labels', stepId: 'label', keys: ['katacontainers.io/kata-runtime'] });
    expect(outcomes.verify.facts?.hostKernel).toBe('6.1.0-katafleet-sim');
    expect(outcomes.verify.facts?.guestKernel).toMatch(/./);
    expect(outcomes.verify.facts?.guestKernel).not.toBe(outcomes.verify.facts?.hostKernel);
    expect(await kubectl('get runtimeclass kata -o jsonpath={.handler}/{.scheduling.nodeSelector}/{.overhead.podFixed.memory}'))
      .toBe('kata/{"katacontainers.io/kata-runtime":"true"}/160Mi');
    expect(await kubectl('get pods -n katafleet-verify -l katafleet.dev/verify=true -o name')).not.toContain('Running');
  }, 240_000);

  it('changes nothing when run again (another run of the same playbook)', async () => {
    const again: Record<string, boolean> = {};
    for (const step of kataSteps) {
      const fn = activities()[activityByKind[step.kind]] as (request: StepRequest) => Promise<StepOutcome>;
      const outcome = (await activityEnv().run(fn, { runId: 'ffffffff-second-run', rolloutId: 'test', node: targets['kube-1'], kubernetes, step, drain: false })) as StepOutcome;
      again[step.id] = outcome.changed;
    }
    expect(Object.values(again).every((changed) => !changed)).toBe(true);
  }, 240_000);

  it('undoes the label: only the key this run added goes', async () => {
    const outcome = await undo('kube-1', outcomes.label.undo!);
    expect(outcome).toMatchObject({ ok: true, summary: 'removed labels katacontainers.io/kata-runtime' });
    expect(await kubectl('get node kube-1 -o jsonpath={.metadata.labels}')).not.toContain('katacontainers.io/kata-runtime');
  }, 60_000);
});

describe('the verification pod meets real admission and real image pulls', () => {
  const verifyPods = async (node: string) =>
    (JSON.parse(await kubectl(`get pods -n katafleet-verify -l katafleet.dev/verify=true --field-selector spec.nodeName=${node} -o json`)) as { items: { metadata: { deletionTimestamp?: string } }[] })
      .items.filter((pod) => !pod.metadata.deletionTimestamp);

  it('the API server enforces PodSecurity restricted on katafleet-verify: a pod without a securityContext is refused, the verification pod is admitted', async () => {
    const refused = await sshRun(fleet, fleet.nodes.find((n) => n.name === 'control-plane')!,
      `${kubernetes.kubectl} --kubeconfig ${kubernetes.kubeconfig} run -n katafleet-verify plain --image=docker.io/library/busybox:1.36.1 --restart=Never -- sleep 1`);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toContain('violates PodSecurity "restricted:latest"');
    expect(refused.stderr).toMatch(/allowPrivilegeEscalation != false.*unrestricted capabilities.*runAsNonRoot != true.*seccompProfile/);
    expect(await kubectl('get pods -n katafleet-verify plain --ignore-not-found -o name')).toBe('');
  }, 60_000);

  it('an image that cannot be pulled is told apart: warn passes unverified and says so, fail fails with VerificationImagePullFailed; no rollback needed, no pod left', async () => {
    await kubectl('label node kube-1 katacontainers.io/kata-runtime=true --overwrite');
    const verify = { ...kataStep<'verification-pod'>('verify'), image: 'registry.invalid/library/busybox:1.36.1', timeout: '90s' };
    try {
      const warned = await runStep('kube-1', verify);
      expect(warned).toMatchObject({ changed: false, facts: { verification: 'image-pull-failed' } });
      expect(warned.summary).toMatch(/^not verified \(warning, on_image_pull_failure = "warn"\): Verification pod on node kube-1: image registry\.invalid\/library\/busybox:1\.36\.1 could not be pulled \((ErrImagePull|ImagePullBackOff): .*/);
      expect(warned.summary).toContain('image_pull_policy = "Never"');
      await expect(runStep('kube-1', { ...verify, on_image_pull_failure: 'fail' as const }, { attempt: 2 })).rejects.toMatchObject({
        type: 'VerificationImagePullFailed',
        nonRetryable: true,
        message: expect.stringMatching(/lookup registry\.invalid: no such host|Back-off pulling image "registry\.invalid/),
      });
    } finally {
      await kubectl('label node kube-1 katacontainers.io/kata-runtime-');
    }
    expect(await verifyPods('kube-1')).toEqual([]);
  }, 240_000);
});

describe('Kubernetes steps that fail', () => {
  it('a verification pod on a node without the kata handler never runs: the reason is its FailedCreatePodSandBox event, and the pod is deleted', async () => {
    await runStep('kube-2', kataStep('runtime-class'));
    // Labelled like a node the rollout got to, so the RuntimeClass's nodeSelector matches (an unlabelled node
    // would refuse the pod with NodeAffinity, as a real kubelet does): what is missing is only containerd's handler.
    await kubectl('label node kube-2 katacontainers.io/kata-runtime=true --overwrite');
    const verify = { ...kataStep<'verification-pod'>('verify'), timeout: '40s' };
    try {
      await expect(runStep('kube-2', verify, { startToCloseTimeoutMs: 40_000 })).rejects.toMatchObject({
        type: 'VerificationPodNotRunning',
        message: expect.stringMatching(/did not reach Running within 40s: FailedCreatePodSandBox: .*kata/),
      });
    } finally {
      await kubectl('label node kube-2 katacontainers.io/kata-runtime-');
    }
    const pods = JSON.parse(await kubectl('get pods -n katafleet-verify -l katafleet.dev/verify=true --field-selector spec.nodeName=kube-2 -o json')) as { items: { metadata: { deletionTimestamp?: string } }[] };
    expect(pods.items.filter((pod) => !pod.metadata.deletionTimestamp)).toEqual([]);
  }, 90_000);

  it('a restart with drain cordons the node, restarts containerd and uncordons it again', async () => {
    const restart = { ...kataStep<'service-restart'>('restart'), wait_for_handlers: [] };
    await sshRun(fleet, fleet.nodes.find((n) => n.name === 'kube-2')!, 'touch /etc/containerd/config.toml');
    const outcome = await runStep('kube-2', restart, {}, true);
    expect(outcome).toMatchObject({ changed: true, summary: expect.stringContaining('drained and uncordoned') });
    expect(await kubectl('get node kube-2 -o jsonpath={.spec.unschedulable}')).toBe('');
  }, 120_000);
});
