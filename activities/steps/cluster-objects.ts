/**
 * Cluster-wide objects, handled once per rollout rather than on every node: today the RuntimeClass of the
 * playbook's `runtime-class` steps. The rollout applies them before its first node and deletes them after its last
 * (workflows/cluster-objects.ts), so an uninstall's canary never takes the class away from nodes still running Kata;
 * a rollout that halts or is rolled back takes back the class it created itself.
 */
import type { SshPool } from '../ssh';
import type { RuntimeClassStep } from '../../playbooks/schema';
import type { KubernetesTarget, StepOutcome } from '../node-types';
import { checkClusterRequest } from '../step-policy';
import { runtimeClassOnCluster, takeBackRuntimeClass } from './runtime-class';

/** What the rollout asks for: one cluster-wide step of its playbook. */
export interface ClusterStepRequest {
  rolloutId: string;
  kubernetes: KubernetesTarget;
  step: RuntimeClassStep;
}

/** The cluster activities; registered with the node activities. */
export function createClusterActivities(pool: SshPool) {
  return {
    /** `runtime-class`, once for the rollout: apply (before the first node) or delete (after the last, unless a node still carries its labels). */
    async clusterStep(request: ClusterStepRequest): Promise<StepOutcome> {
      const step = checkClusterRequest(request.kubernetes, request.step);
      return runtimeClassOnCluster(pool, request.kubernetes, step, request.rolloutId);
    },
    /**
     * After a halt or a rollback of the rollout: deletes the RuntimeClass of an apply step if this rollout created it
     * and no node carries its labels; one that existed before the rollout stays as it is.
     */
    async clusterTakeBack(request: ClusterStepRequest): Promise<StepOutcome> {
      const step = checkClusterRequest(request.kubernetes, request.step);
      return takeBackRuntimeClass(pool, request.kubernetes, step, request.rolloutId);
    },
  };
}
