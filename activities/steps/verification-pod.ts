/**
 * `verification-pod`: the proof that the node runs pods in VMs. A pod pinned to the node with the
 * playbook's RuntimeClass must reach Running, and `uname -r` inside it must differ from the host's
 * (a VM boots its own guest kernel; a plain container shares the host's). The pod is always deleted.
 */
import { Kubectl, requireKubernetes } from '../kubectl';
import { flag, sh, type SshPool } from '../ssh';
import type { VerificationPodStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest } from '../node-types';
import { parseDuration } from '../../workflows/duration';
import type { NodeShell } from './node-shell';
import { activityContext, firstLine, pollUntil, permanentFailure, timeLeftMs, transientFailure } from './step-runtime';

/** The pod ran, but not in a VM (same kernel as the host). Never retried. */
export const VerificationFailed = 'VerificationFailed';
/** The pod did not reach Running in time; the message carries its latest Warning event. */
export const VerificationPodNotRunning = 'VerificationPodNotRunning';

interface Pod {
  metadata: { name: string };
  status?: {
    phase?: string;
    reason?: string;
    message?: string;
    containerStatuses?: { state?: { waiting?: { reason?: string; message?: string }; terminated?: { reason?: string; exitCode?: number } } }[];
  };
}

interface EventList {
  items: { type?: string; reason?: string; message?: string; lastTimestamp?: string; eventTime?: string; metadata?: { creationTimestamp?: string } }[];
}

/** `katafleet-verify-<node>-<run>-<attempt>`: unique per attempt, so a pod still terminating never blocks a retry. */
export function verificationPodName(node: string, runId: string, attempt: number): string {
  const suffix = `-${runId.slice(0, 8).toLowerCase().replace(/[^a-z0-9]/g, '0')}-${attempt}`;
  return `katafleet-verify-${node}`.slice(0, 253 - suffix.length).replace(/[.-]+$/, '') + suffix;
}

/** The pod: pinned with spec.nodeName (no scheduler needed), the RuntimeClass, a container that just waits. */
export function verificationPodManifest(name: string, node: string, step: VerificationPodStep): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: step.namespace, labels: { 'app.kubernetes.io/managed-by': 'katafleet', 'katafleet.dev/verify': 'true' } },
    spec: {
      nodeName: node,
      runtimeClassName: step.runtime_class,
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 0,
      automountServiceAccountToken: false,
      tolerations: [{ operator: 'Exists' }],
      containers: [{ name: 'verify', image: step.image, command: ['sleep', '3600'] }],
    },
  };
}

/** The newest Warning event of a pod, as `Reason: message`. */
export function latestWarning(events: EventList | undefined): string | undefined {
  const warnings = (events?.items ?? []).filter((e) => e.type === 'Warning');
  const time = (e: EventList['items'][number]) => Date.parse(e.lastTimestamp ?? e.eventTime ?? e.metadata?.creationTimestamp ?? '') || 0;
  const newest = warnings.sort((a, b) => time(a) - time(b)).pop();
  return newest ? `${newest.reason}: ${newest.message}` : undefined;
}

export async function verificationPod(shell: NodeShell, pool: SshPool, request: StepRequest<VerificationPodStep>): Promise<StepOutcome> {
  const started = Date.now();
  const { step, node, runId } = request;
  const kubectl = new Kubectl(pool, requireKubernetes(request.kubernetes, `verification-pod "${step.id}"`));
  const name = verificationPodName(node.name, runId, activityContext()?.info.attempt ?? 1);
  const ns = [flag('-n'), step.namespace];
  const hostKernel = await shell.kernelRelease();

  await kubectl.withStdin(['create', ...ns, flag('--filename=-')], verificationPodManifest(name, node.name, step));
  try {
    let last: Pod | undefined;
    const running = await pollUntil(async () => {
      last = await kubectl.getJson<Pod>(['get', 'pod', ...ns, name]);
      const phase = last?.status?.phase;
      if (phase === 'Failed' || phase === 'Succeeded') return last;
      return phase === 'Running' ? last : undefined;
    }, timeLeftMs(started, parseDuration(step.timeout), 20_000), 2_000);

    if (running?.status?.phase !== 'Running') {
      const events = await kubectl.getJson<EventList>(['get', 'events', ...ns, flag(`--field-selector=involvedObject.name=${name}`)]).catch(() => undefined);
      const warning = latestWarning(events) ?? describePod(last);
      throw transientFailure(VerificationPodNotRunning,
        `Verification pod ${step.namespace}/${name} on node ${node.name} (runtimeClassName ${step.runtime_class}) ` +
        `${running ? `ended ${running.status?.phase}` : `did not reach Running within ${step.timeout}`}: ${warning}`);
    }

    const exec = await kubectl.exec(step.namespace, name, sh`uname -r`);
    const guestKernel = exec.stdout.trim();
    const facts = { guestKernel, hostKernel };
    if (guestKernel === hostKernel && step.expect_kernel_differs) {
      throw permanentFailure(VerificationFailed,
        `Node ${node.name}: pod did not run in a VM: kernel inside (${guestKernel}) equals the host's; RuntimeClass ${step.runtime_class} does not give VM isolation on this node`);
    }
    return {
      changed: false,
      summary: `pod ${name} ran with RuntimeClass ${step.runtime_class}: kernel inside ${guestKernel}, host ${hostKernel}${guestKernel === hostKernel ? '' : ' (runs in a VM)'}`,
      facts,
    };
  } finally {
    await kubectl.run(['delete', 'pod', ...ns, name, flag('--wait=false'), flag('--ignore-not-found')]).catch((err: unknown) => {
      activityContext()?.log.warn(`could not delete verification pod ${step.namespace}/${name}: ${firstLine(err)}`);
    });
  }
}

function describePod(pod: Pod | undefined): string {
  if (!pod) return 'the pod was not found';
  const waiting = pod.status?.containerStatuses?.[0]?.state?.waiting;
  const parts = [`phase ${pod.status?.phase ?? 'unknown'}`, pod.status?.reason, pod.status?.message, waiting && `${waiting.reason}: ${waiting.message ?? ''}`];
  return `${parts.filter(Boolean).join(', ')} (no Warning event)`;
}
