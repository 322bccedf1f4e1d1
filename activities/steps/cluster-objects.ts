/**
 * Cluster-wide objects, handled once per rollout rather than on every node: today the RuntimeClass of the
 * playbook's `runtime-class` steps. The rollout applies them before its first node and deletes them after its last
 * (workflows/cluster-objects.ts), so an uninstall's canary never takes the class away from nodes still running Kata.
 */
import type { SshPool } from '../ssh';
import type { RuntimeClassStep } from '../../playbooks/schema';
import type { KubernetesTarget, StepOutcome } from '../node-types';
import { checkClusterRequest } from '../step-policy';
import { runtimeClassOnCluster } from './runtime-class';

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
      return runtimeClassOnCluster(pool, request.kubernetes, step);
    },
  };
}
