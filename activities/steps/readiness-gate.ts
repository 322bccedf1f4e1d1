/**
 * `readiness-gate`: waits until the Kubernetes Node is Ready and, where the kubelet reports
 * `status.runtimeHandlers` (containerd ≥ 2.0 with Kubernetes ≥ 1.31; reality/KATA.md §6), lists the handlers. Read-only.
 */
import { describeReady, isReady, Kubectl, requireKubernetes, type KubeNode } from '../kubectl';
import type { SshPool } from '../ssh';
import type { ReadinessGateStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest } from '../node-types';
import { parseDuration } from '../../workflows/duration';
import { pollUntil, timeLeftMs, transientFailure } from './step-runtime';

/** The Node did not become Ready (with the handlers) within the step's timeout. */
export const NodeNotReady = 'NodeNotReady';

/** Handlers of `status.runtimeHandlers`, or undefined when the kubelet does not report the field. */
export function reportedHandlers(node: KubeNode): string[] | undefined {
  return node.status?.runtimeHandlers?.map((h) => h.name);
}

/** Whether the node passes: Ready, and every required handler listed (when the field is reported). */
export function passesGate(node: KubeNode, required: readonly string[]): boolean {
  const reported = reportedHandlers(node);
  return isReady(node) && (reported === undefined || required.every((h) => reported.includes(h)));
}

export async function readinessGate(pool: SshPool, request: StepRequest<ReadinessGateStep>): Promise<StepOutcome> {
  const started = Date.now();
  const { step, node } = request;
  const kubectl = new Kubectl(pool, requireKubernetes(request.kubernetes, `readiness-gate "${step.id}"`));
  const required = step.require_runtime_handlers;
  let last: KubeNode | undefined;
  const passed = await pollUntil(async () => {
    last = await kubectl.getNode(node);
    return passesGate(last, required) ? last : undefined;
  }, timeLeftMs(started, parseDuration(step.timeout), 5_000), 2_000);

  const reported = last && reportedHandlers(last);
  const handlers = reported === undefined
    ? `status.runtimeHandlers not reported (it needs containerd >= 2.0 and Kubernetes >= 1.31), so ${required.length > 0 ? `${required.join(', ')} not checked there: ` : ''}Ready checked only`
    : `runtimeHandlers ${reported.join(', ') || 'none'}`;
  if (!passed) {
    const missing = reported ? required.filter((h) => !reported.includes(h)) : [];
    throw transientFailure(NodeNotReady,
      `Node ${node.name} did not pass the readiness gate within ${step.timeout}: ${last ? describeReady(last) : 'not read'}; ${handlers}` +
      `${missing.length > 0 ? ` (missing ${missing.join(', ')})` : ''}`);
  }
  return { changed: false, summary: `Ready; ${handlers}` };
}
