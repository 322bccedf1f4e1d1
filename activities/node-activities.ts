/**
 * The step activities of nodeWorkflow: one per step kind, plus `undoStep`. Each reads the node's
 * state first and changes nothing when the step's effect is already there; each heartbeats while
 * it waits; failures are `ApplicationFailure`s with PascalCase types that retry policies name.
 */
import type {
  ContainerdPatchStep,
  NodeLabelStep,
  PackageInstallStep,
  PrereqCheckStep,
  ReadinessGateStep,
  RollbackStep,
  RuntimeClassStep,
  ServiceRestartStep,
  VerificationPodStep,
} from '../playbooks/schema';
import type { SshPool } from './ssh';
import type { KubernetesTarget, NodeTarget, StepOutcome, StepRequest, Undo, UndoOutcome } from './node-types';
import { containerdPatch } from './steps/containerd-patch';
import { NodeShell } from './steps/node-shell';
import { nodeLabel } from './steps/node-label';
import { packageInstall } from './steps/package-install';
import { prereqCheck } from './steps/prereq-check';
import { readinessGate } from './steps/readiness-gate';
import { rollback } from './steps/rollback';
import { runtimeClass } from './steps/runtime-class';
import { serviceRestart } from './steps/service-restart';
import { runUndo } from './steps/undo';
import { verificationPod } from './steps/verification-pod';
import { createRecoveryActivities, withStepLock } from './node-recovery';

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
  /** The step's shell: for journaling runs, one holding the node's lock for the step's whole remote work. */
  const withShell = <T>(request: StepRequest, work: (shell: NodeShell) => Promise<T>): Promise<T> =>
    request.journal ? withStepLock(pool, request, work) : work(shellFor(request.node));
  return {
    ...createRecoveryActivities(pool),
    /** `prereq-check`: CPU flags, /dev/kvm, kernel modules (loaded and persisted), `kata-runtime check`. */
    async prereqCheck(request: StepRequest<PrereqCheckStep>): Promise<StepOutcome> {
      return withShell(request, (shell) => prereqCheck(shell, request));
    },
    /** `package-install`: pinned packages with apt, dnf or zypper; undo removes what this run installed. */
    async packageInstall(request: StepRequest<PackageInstallStep>): Promise<StepOutcome> {
      return withShell(request, (shell) => packageInstall(shell, request));
    },
    /** `containerd-patch`: backup, patch, validate on the node, atomic swap; undo restores the exact bytes. */
    async containerdPatch(request: StepRequest<ContainerdPatchStep>): Promise<StepOutcome> {
      return withShell(request, (shell) => containerdPatch(shell, request));
    },
    /** `service-restart`: (cordon/drain,) restart, wait active with the handlers in the CRI, (uncordon). */
    async serviceRestart(request: StepRequest<ServiceRestartStep>): Promise<StepOutcome> {
      return withShell(request, (shell) => serviceRestart(shell, pool, request));
    },
    /** `readiness-gate`: Node Ready and its runtimeHandlers listing the handlers. */
    async readinessGate(request: StepRequest<ReadinessGateStep>): Promise<StepOutcome> {
      return readinessGate(pool, request);
    },
    /** `node-label`: sets the labels that differ; undo removes the ones this run added. */
    async nodeLabel(request: StepRequest<NodeLabelStep>): Promise<StepOutcome> {
      return withShell(request, (shell) => nodeLabel(shell, pool, request));
    },
    /** `runtime-class`: server-side apply of a node.k8s.io/v1 RuntimeClass (or delete). */
    async runtimeClass(request: StepRequest<RuntimeClassStep>): Promise<StepOutcome> {
      return runtimeClass(pool, request);
    },
    /** `verification-pod`: a pod with the RuntimeClass on this node must run a kernel other than the host's. */
    async verificationPod(request: StepRequest<VerificationPodStep>): Promise<StepOutcome> {
      return withShell(request, (shell) => verificationPod(shell, pool, request));
    },
    /** `rollback`: takes back the newest katafleet run recorded on the node (its backup, labels, and optionally its packages). */
    async rollback(request: StepRequest<RollbackStep>): Promise<StepOutcome> {
      return withShell(request, (shell) => rollback(shell, pool, request));
    },
    /** Runs one undo record of an earlier step of this run. */
    async undoStep(request: { node: NodeTarget; kubernetes?: KubernetesTarget; undo: Undo }): Promise<UndoOutcome> {
      return runUndo(shellFor(request.node), pool, request.kubernetes, request.undo);
    },
  };
}
