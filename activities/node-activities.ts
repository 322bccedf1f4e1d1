/**
 * The step activities of nodeWorkflow: one per step kind, plus `undoStep`. Each reads the node's
 * state first and changes nothing when the step's effect is already there; each heartbeats while
 * it waits; failures are `ApplicationFailure`s with PascalCase types that retry policies name.
 *
 * Each first checks its input again with the playbook schema (`step-policy.ts`): a workflow started
 * straight on Temporal gets the same refusals as `katafleet validate`, as `StepRefused`.
 */
import type {
  ContainerdPatchStep,
  NodeLabelStep,
  PackageInstallStep,
  PrereqCheckStep,
  ReadinessGateStep,
  PackageRepoStep,
  ReleaseTarballStep,
  RollbackStep,
  RuntimeClassStep,
  ServiceRestartStep,
  Step,
  VerificationPodStep,
} from '../playbooks/schema';
import type { SshPool } from './ssh';
import type { KubernetesTarget, NodeTarget, StepOutcome, StepRequest, StepRunRequest, StepRunResult, Undo, UndoOutcome } from './node-types';
import { runSteps, withAttemptsBefore } from './step-runs';
import { checkStep, checkStepPlace, checkTargets, checkUndo, nodePathsOfStep, queueResolvedPathsCheck, StepRefused, stepRefusedMessage } from './step-policy';
import { containerdPatch } from './steps/containerd-patch';
import { NodeShell } from './steps/node-shell';
import { nodeLabel } from './steps/node-label';
import { packageInstall } from './steps/package-install';
import { prereqCheck } from './steps/prereq-check';
import { readinessGate } from './steps/readiness-gate';
import { releaseTarball } from './steps/release-tarball';
import { packageRepo } from './steps/package-repo';
import { rollback } from './steps/rollback';
import { runtimeClass } from './steps/runtime-class';
import { createClusterActivities } from './steps/cluster-objects';
import { serviceRestart } from './steps/service-restart';
import { permanentFailure } from './steps/step-runtime';
import { runUndo } from './steps/undo';
import { verificationPod } from './steps/verification-pod';
import { commitAfterLastStep, createRecoveryActivities, withStepLock } from './node-recovery';
import { checkNodeBeforeFirstStep, NodeNeedsPrepare, notCheckedFailure } from './steps/recover';
import { kindsWithoutNodeLock } from '../workflows/step-activities';

/** What the step activities need: the worker's SSH pool (one connection per node, shared by all activities). */
export interface NodeActivityDeps {
  pool: SshPool;
}

/**
 * Builds the step activities. Register them with the worker; workflows import only the type:
 * `proxyActivities<ReturnType<typeof createNodeActivities>>(...)`.
 *
 * @example
 * const pool = new SshPool();
 * Worker.create({ activities: { ...createActivities(deps), ...createNodeActivities({ pool }) }, ... });
 */
export function createNodeActivities(deps: NodeActivityDeps) {
  const { pool } = deps;
  const shellFor = (node: NodeTarget) => new NodeShell(pool, node);
  /** The request with its step checked (StepRefused otherwise); its node paths are resolved on the node by {@link withShell}. */
  const admit = async <S extends Step>(kind: S['kind'], request: StepRequest<S>): Promise<StepRequest<S>> =>
    // A run's first step: whatever stops it before it checked the node is left to the run's prepareNode activity.
    request.firstOfRun ? admitStep(kind, request).catch((err: unknown) => { throw notCheckedFailure(request.node.name, err); }) : admitStep(kind, request);
  const admitStep = async <S extends Step>(kind: S['kind'], request: StepRequest<S>): Promise<StepRequest<S>> => {
    checkTargets(request.node, request.kubernetes);
    // The run's first step checks them all before anything reaches the node, as the prepareNode activity did.
    for (const other of request.firstOfRun?.steps ?? []) checkStep(other, request.node);
    const step = checkStep(request.step, request.node);
    checkStepPlace(request, step, request.node);
    if (step.kind !== kind) {
      throw permanentFailure(StepRefused, stepRefusedMessage(`a ${JSON.stringify(step.kind)} step given to the ${kind} activity`, [{ path: 'kind', message: `must be "${kind}"` }]));
    }
    // A step kind that does not hold the node's lock cannot make the run's first check (the workflow never asks it
    // to, from the same set): the run's own prepare activity does.
    if (request.journal && request.firstOfRun && kindsWithoutNodeLock.has(kind)) {
      throw permanentFailure(NodeNeedsPrepare, `a ${kind} step does not hold the node's lock, so it cannot check node ${request.node.name} before the run's first step`);
    }
    return { ...request, step };
  };
  /**
   * The step's shell: for journaling runs, one holding the node's lock for the step's whole remote work. The step's
   * node paths are resolved on the node by its first command (queued on the shell; refused before the step uses that
   * command's answer). The two kinds not run through here (readiness-gate, runtime-class) write no node path. A run's
   * first step checks the node first (that command carries the path check); its last one commits the run.
   */
  const withShell = (request: StepRequest, work: (shell: NodeShell) => Promise<StepOutcome>): Promise<StepOutcome> => {
    const queuePathCheck = (shell: NodeShell) => queueResolvedPathsCheck(shell, `step "${request.step.id}" (${request.step.kind}) on node ${request.node.name}`, nodePathsOfStep(request.step));
    if (!request.journal) {
      const shell = shellFor(request.node);
      queuePathCheck(shell);
      return work(shell);
    }
    // A run's first step: whatever stops it before its check of the node is done (the node's login refused, the lock,
    // the check itself) is left to the run's prepareNode activity.
    let checked = !request.firstOfRun;
    return withStepLock(pool, request, async (shell) => {
      queuePathCheck(shell);
      if (request.firstOfRun) await checkNodeBeforeFirstStep(shell, request);
      checked = true;
      return commitAfterLastStep(shell, request, await work(shell));
    }).then((outcome) => {
      // The run is over on this node: its connection is not kept for the idle sweep.
      if (outcome.committed) pool.closeIfIdle(request.node.name);
      return outcome;
    }, (err: unknown) => {
      throw checked ? err : notCheckedFailure(request.node.name, err);
    });
  };
  const stepActivities = {
    /** `prereq-check`: CPU flags, /dev/kvm, kernel modules (loaded and persisted), `kata-runtime check`. */
    async prereqCheck(request: StepRequest<PrereqCheckStep>): Promise<StepOutcome> {
      const admitted = await admit('prereq-check', request);
      return withShell(admitted, (shell) => prereqCheck(shell, admitted));
    },
    /** `package-install`: pinned packages with apt, dnf or zypper; undo removes what this run installed. */
    async packageInstall(request: StepRequest<PackageInstallStep>): Promise<StepOutcome> {
      const admitted = await admit('package-install', request);
      return withShell(admitted, (shell) => packageInstall(shell, admitted));
    },
    /** `package-repo`: an apt repository and its key (fingerprint pinned), then pinned packages from it; undo removes all three. */
    async packageRepo(request: StepRequest<PackageRepoStep>): Promise<StepOutcome> {
      const admitted = await admit('package-repo', request);
      return withShell(admitted, (shell) => packageRepo(shell, admitted));
    },
    /** `release-tarball`: a Kata static release side by side under /opt/kata-releases, /opt/kata switched to it. */
    async releaseTarball(request: StepRequest<ReleaseTarballStep>): Promise<StepOutcome> {
      const admitted = await admit('release-tarball', request);
      return withShell(admitted, (shell) => releaseTarball(shell, admitted));
    },
    /** `containerd-patch`: backup, patch, validate on the node, atomic swap; undo restores the exact bytes. */
    async containerdPatch(request: StepRequest<ContainerdPatchStep>): Promise<StepOutcome> {
      const admitted = await admit('containerd-patch', request);
      return withShell(admitted, (shell) => containerdPatch(shell, admitted));
    },
    /** `service-restart`: (cordon/drain,) restart, wait active with the handlers in the CRI, (uncordon). */
    async serviceRestart(request: StepRequest<ServiceRestartStep>): Promise<StepOutcome> {
      const admitted = await admit('service-restart', request);
      return withShell(admitted, (shell) => serviceRestart(shell, pool, admitted));
    },
    /** `readiness-gate`: Node Ready and its runtimeHandlers (or, where the kubelet does not report them, the node's CRI) listing the handlers. */
    async readinessGate(request: StepRequest<ReadinessGateStep>): Promise<StepOutcome> {
      const admitted = await admit('readiness-gate', request);
      return readinessGate(shellFor(admitted.node), pool, admitted);
    },
    /** `node-label`: sets the labels that differ; undo removes the ones this run added. */
    async nodeLabel(request: StepRequest<NodeLabelStep>): Promise<StepOutcome> {
      const admitted = await admit('node-label', request);
      return withShell(admitted, (shell) => nodeLabel(shell, pool, admitted));
    },
    /** `runtime-class`: server-side apply of a node.k8s.io/v1 RuntimeClass (or delete). */
    async runtimeClass(request: StepRequest<RuntimeClassStep>): Promise<StepOutcome> {
      return runtimeClass(pool, await admit('runtime-class', request));
    },
    /** `verification-pod`: a pod with the RuntimeClass on this node must run a kernel other than the host's. */
    async verificationPod(request: StepRequest<VerificationPodStep>): Promise<StepOutcome> {
      const admitted = await admit('verification-pod', request);
      return withShell(admitted, (shell) => verificationPod(shell, pool, admitted));
    },
    /** `rollback`: takes back the newest katafleet run recorded on the node (its backup, labels, and optionally its packages). */
    async rollback(request: StepRequest<RollbackStep>): Promise<StepOutcome> {
      const admitted = await admit('rollback', request);
      return withShell(admitted, (shell) => rollback(shell, pool, admitted));
    },
  };
  // Each step activity sees the attempts its step had in a run of steps (StepRequest.attemptsBefore).
  const retriedAlone = Object.fromEntries(Object.entries(stepActivities).map(([name, activity]) => [name, withAttemptsBefore(activity as (request: StepRequest) => Promise<StepOutcome>)])) as typeof stepActivities;
  return {
    ...createRecoveryActivities(pool),
    ...createClusterActivities(pool),
    ...retriedAlone,
    /** Several consecutive steps of a run, each as its own activity would run it (patch `node-step-runs`). */
    async runSteps(request: StepRunRequest): Promise<StepRunResult> {
      return runSteps(stepActivities as unknown as Record<string, (request: StepRequest) => Promise<StepOutcome>>, request);
    },
    /** Runs one undo record of an earlier step of this run. */
    async undoStep(request: { node: NodeTarget; kubernetes?: KubernetesTarget; undo: Undo }): Promise<UndoOutcome> {
      checkTargets(request.node, request.kubernetes);
      // Refused before the node's login is even read; runUndo checks again, as its records also come from the node's journal.
      checkUndo(request.undo, request.node);
      return runUndo(shellFor(request.node), pool, request.kubernetes, request.undo);
    },
  };
}
