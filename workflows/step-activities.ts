import type { createNodeActivities } from '../activities/node-activities';
import type { Step } from '../playbooks/schema';

/** The activity that runs each step kind (one activity per kind). Pure: workflows and tests share it. */
export const activityByKind = {
  'prereq-check': 'prereqCheck',
  'package-install': 'packageInstall',
  'release-tarball': 'releaseTarball',
  'package-repo': 'packageRepo',
  'containerd-patch': 'containerdPatch',
  'service-restart': 'serviceRestart',
  'readiness-gate': 'readinessGate',
  'node-label': 'nodeLabel',
  'runtime-class': 'runtimeClass',
  'verification-pod': 'verificationPod',
  rollback: 'rollback',
} as const satisfies Record<Step['kind'], keyof ReturnType<typeof createNodeActivities>>;

/**
 * Step kinds whose activity does not hold the node's lock (their work is on the Kubernetes API): such a step cannot
 * make a run's check before its first step, so a run that starts with one prepares the node with its own activity.
 */
export const kindsWithoutNodeLock: ReadonlySet<Step['kind']> = new Set(['readiness-gate', 'runtime-class']);

/**
 * The failure of a run's first step that found something to recover on the node (or could not check it): the run
 * then calls prepareNode and runs the step again. Thrown by the activities, recognised by nodeWorkflow.
 */
export const NodeNeedsPrepare = 'NodeNeedsPrepare';
