/**
 * `readiness-gate`: waits until the Kubernetes Node is Ready and its runtime offers the handlers. Where the kubelet
 * reports `status.runtimeHandlers` (containerd ≥ 2.0 with Kubernetes ≥ 1.31; reality/KATA.md §6) the handlers must
 * be listed there; where it does not (containerd 1.x never sends them), the gate says so and asks the node's CRI
 * instead (`crictl info`, as service-restart does). Read-only.
 */
import { describeReady, isReady, Kubectl, requireKubernetes, type KubeNode } from '../kubectl';
import type { SshPool } from '../ssh';
import type { ReadinessGateStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest } from '../node-types';
import { parseDuration } from '../../playbooks/duration';
import type { NodeShell } from './node-shell';
import { readDaemonState, type DaemonState } from './service-restart';
import { pollUntil, timeLeftMs, transientFailure } from './step-runtime';

/** The Node did not become Ready (with the handlers) within the step's timeout. */
export const NodeNotReady = 'NodeNotReady';

/** Handlers of `status.runtimeHandlers`, or undefined when the kubelet does not report the field. */
export function reportedHandlers(node: KubeNode): string[] | undefined {
  return node.status?.runtimeHandlers?.map((h) => h.name);
}

/**
 * Whether the node passes: Ready, and every required handler listed by the kubelet when it reports the field,
 * else by the node's CRI (`cri`; undefined = not read, which passes only when nothing is required).
 */
export function passesGate(node: KubeNode, required: readonly string[], cri?: readonly string[]): boolean {
  const listed = reportedHandlers(node) ?? cri;
  return isReady(node) && (required.length === 0 || (listed !== undefined && required.every((h) => listed.includes(h))));
}

/** The summary's account of where the handlers were checked. Pure. */
export function describeHandlerCheck(node: KubeNode | undefined, required: readonly string[], cri: DaemonState | undefined): string {
  const reported = node && reportedHandlers(node);
  if (reported !== undefined) return `runtimeHandlers ${reported.join(', ') || 'none'}`;
  const why = 'status.runtimeHandlers not reported (it needs containerd >= 2.0 and Kubernetes >= 1.31)';
  if (required.length === 0) return `${why}; Ready checked only`;
  const listed = cri?.handlers ? `${cri.handlers.join(', ') || 'no handlers'}` : 'nothing readable';
  return `${why}, so ${required.join(', ')} checked on the node instead: ${cri?.handlerSource ?? 'the CRI'} lists ${listed}`;
}

export async function readinessGate(shell: NodeShell, pool: SshPool, request: StepRequest<ReadinessGateStep>): Promise<StepOutcome> {
  const started = Date.now();
  const { step, node } = request;
  const kubectl = new Kubectl(pool, requireKubernetes(request.kubernetes, `readiness-gate "${step.id}"`));
  const required = step.require_runtime_handlers;
  let last: KubeNode | undefined;
  let cri: DaemonState | undefined;
  const passed = await pollUntil(async () => {
    last = await kubectl.getNode(node);
    if (reportedHandlers(last) === undefined && required.length > 0) cri = await readDaemonState(shell, 'containerd');
    return passesGate(last, required, cri?.handlers) ? last : undefined;
  }, timeLeftMs(started, parseDuration(step.timeout), 5_000), 2_000);

  const handlers = describeHandlerCheck(last, required, cri);
  if (!passed) {
    const listed = (last && reportedHandlers(last)) ?? cri?.handlers ?? [];
    const missing = required.filter((h) => !listed.includes(h));
    throw transientFailure(NodeNotReady,
      `Node ${node.name} did not pass the readiness gate within ${step.timeout}: ${last ? describeReady(last) : 'not read'}; ${handlers}` +
      `${missing.length > 0 ? ` (missing ${missing.join(', ')})` : ''}`);
  }
  return { changed: false, summary: `Ready; ${handlers}` };
}
