// Cluster-wide objects once per rollout (issue 12): the playbook's `runtime-class` steps run in the rollout, not
// in every nodeWorkflow. An apply runs before the first node (the RuntimeClass only selects labelled nodes, so it
// is harmless before any node has Kata) and a delete after the last node, and only if no node still carries the
// class's labels; so an uninstall's canary never takes the class away from the nodes of later waves. A rollout that
// halts or is rolled back takes back the class it created itself (behind its own patch): a failed canary leaves the
// cluster as it found it.
import { ActivityFailure, ApplicationFailure, patched, proxyActivities } from '@temporalio/workflow';
import type { createClusterActivities } from '../activities/steps/cluster-objects';
import type { KubernetesTarget } from '../activities/node-types';
import type { RuntimeClassStep, Step } from '../playbooks/schema';
import type { RolloutProgress } from './rollout-messages';
import { parseDuration } from '../playbooks/duration';

/** The patch id: rollouts started before it run `runtime-class` on every node, as they did. */
export const clusterObjectsPatch = 'rollout-cluster-objects-once';
/** The patch id: rollouts started before it leave the RuntimeClass they created when they halt or roll back. */
export const clusterTakeBackPatch = 'rollout-cluster-objects-take-back';

/** What the rollout needs to know of its input. */
export interface ClusterObjectsInput {
  rolloutId: string;
  steps: Step[];
  kubernetes?: KubernetesTarget;
  /** Present on a run after continue-as-new: the apply already ran in the first run. */
  carried?: unknown;
}

/** The rollout's cluster-wide steps and the steps its nodes run. */
export interface ClusterObjects {
  /** The steps each nodeWorkflow runs: the playbook's, without the cluster-wide ones (all of them before the patch). */
  nodeSteps: Step[];
  /**
   * Applies the cluster-wide objects. When one fails, the rollout halts before any node: `progress` says why (its
   * nodes skipped), `report` shows it, and `RolloutHalted` is thrown, as for a halt after a wave.
   */
  beforeNodes(progress: RolloutProgress, report: () => unknown): Promise<void>;
  /** Deletes the cluster-wide objects the playbook removes, once no node needs them. Never throws: its failure is a summary line. */
  afterNodes(): Promise<void>;
  /**
   * After a halt or a rollback: deletes each RuntimeClass this rollout created itself (never one that existed
   * before it) while no node carries its labels. Never throws: its failure is a summary line.
   */
  takeBack(): Promise<void>;
  /** One line per cluster-wide step that ran, for the rollout's progress. */
  summaries: string[];
}

const isClusterStep = (step: Step): step is RuntimeClassStep => step.kind === 'runtime-class';

/** Splits the playbook into cluster-wide and per-node steps (behind {@link clusterObjectsPatch}). Call once, at the top of the rollout. */
export function clusterObjectsOnce(input: ClusterObjectsInput): ClusterObjects {
  const summaries: string[] = [];
  const clusterSteps = input.steps.filter(isClusterStep);
  if (clusterSteps.length === 0 || !input.kubernetes || !patched(clusterObjectsPatch)) {
    return { nodeSteps: input.steps, beforeNodes: async () => undefined, afterNodes: async () => undefined, takeBack: async () => undefined, summaries };
  }
  const kubernetes = input.kubernetes;
  const run = async (step: RuntimeClassStep, activity: 'clusterStep' | 'clusterTakeBack' = 'clusterStep'): Promise<void> => {
    const activities = proxyActivities<ReturnType<typeof createClusterActivities>>({
      startToCloseTimeout: parseDuration(step.timeout),
      summary: activity === 'clusterStep' ? `${step.kind} ${step.id} (once for the cluster)` : `${step.kind} ${step.id}: take back what this rollout created`,
      retry: { maximumAttempts: step.retry?.max_attempts ?? 3, initialInterval: parseDuration(step.retry?.initial_interval ?? '5s'), backoffCoefficient: step.retry?.backoff ?? 2 },
    });
    const outcome = await activities[activity]({ rolloutId: input.rolloutId, kubernetes, step });
    summaries.push(`${step.id}: ${outcome.summary}`);
  };
  return {
    nodeSteps: input.steps.filter((step) => !isClusterStep(step)),
    summaries,
    async beforeNodes(progress, report) {
      if (input.carried !== undefined) return;
      for (const step of clusterSteps.filter((candidate) => candidate.action === 'apply')) {
        try {
          await run(step);
        } catch (err) {
          const cause = err instanceof ActivityFailure && err.cause ? err.cause.message : (err as Error).message;
          const reason = `${step.kind} "${step.id}" failed before the first node: ${cause}; no node was started`;
          summaries.push(`${step.id}: failed: ${cause}`);
          Object.assign(progress, { phase: 'halted', reason });
          for (const node of progress.nodes) if (node.status === 'pending') Object.assign(node, { status: 'skipped', reason });
          report();
          throw ApplicationFailure.create({ type: 'RolloutHalted', message: reason, nonRetryable: true, details: [progress] });
        }
      }
    },
    async afterNodes() {
      for (const step of clusterSteps.filter((candidate) => candidate.action === 'delete')) {
        try {
          await run(step);
        } catch (err) {
          const cause = err instanceof ActivityFailure && err.cause ? err.cause.message : (err as Error).message;
          summaries.push(`${step.id}: failed after the last node: ${cause}`);
        }
      }
    },
    async takeBack() {
      const applied = clusterSteps.filter((candidate) => candidate.action === 'apply');
      if (applied.length === 0 || !patched(clusterTakeBackPatch)) return;
      for (const step of applied) {
        try {
          await run(step, 'clusterTakeBack');
        } catch (err) {
          const cause = err instanceof ActivityFailure && err.cause ? err.cause.message : (err as Error).message;
          summaries.push(`${step.id}: not taken back: ${cause}`);
        }
      }
    },
  };
}
