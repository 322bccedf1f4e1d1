/**
 * `verification-pod`: the proof that the node runs pods in VMs. A pod pinned to the node with the
 * playbook's RuntimeClass must reach Running, and `uname -r` inside it must differ from the host's
 * (a VM boots its own guest kernel; a plain container shares the host's). The pod is always deleted.
 *
 * The pod passes PodSecurity `restricted` and carries `activeDeadlineSeconds`. An image that cannot be pulled is
 * told apart from a pod that did not run in a VM: it says nothing about Kata, so by default the step passes,
 * unverified, saying so (`on_image_pull_failure = "warn"`), or fails with its own type (`"fail"`).
 */
import { Kubectl, requireKubernetes } from '../kubectl';
import type { SshPool } from '../ssh';
import type { VerificationPodStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest } from '../node-types';
import { parseDuration } from '../../playbooks/duration';
import type { NodeShell } from './node-shell';
import { activityContext, firstLine, permanentFailure, timeLeftMs, transientFailure } from './step-runtime';

/** The pod ran, but not in a VM (same kernel as the host). Never retried. */
export const VerificationFailed = 'VerificationFailed';
/** The pod did not reach Running in time; the message carries its latest Warning event. */
export const VerificationPodNotRunning = 'VerificationPodNotRunning';
/** The pod's image could not be pulled (with `on_image_pull_failure = "fail"`). Never retried: the pull was already retried by the kubelet. */
export const VerificationImagePullFailed = 'VerificationImagePullFailed';

/**
 * The kubelet's waiting reasons for an image it cannot get (kubernetes/kubernetes pkg/kubelet/images/types.go,
 * v1.34: ErrImagePull, ImagePullBackOff, ErrImageInspect, ErrImageNeverPull, InvalidImageName).
 */
export const imagePullReasons: readonly string[] = ['ErrImagePull', 'ImagePullBackOff', 'ErrImageInspect', 'ErrImageNeverPull', 'InvalidImageName'];

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

/** The verification pod's one container. */
const verificationContainer = 'verify';

/** Who the verification container runs as: `nobody` (65534), which busybox and distroless images know. */
const nonRootUser = 65534;

/**
 * The pod: pinned with spec.nodeName (no scheduler needed), the RuntimeClass, a container that just waits. It meets
 * PodSecurity `restricted` (kubernetes.io/docs/concepts/security/pod-security-standards: runAsNonRoot, no privilege
 * escalation, capabilities drop ALL, seccomp RuntimeDefault) and ends after `active_deadline` if nobody deletes it.
 */
export function verificationPodManifest(name: string, node: string, step: VerificationPodStep): { apiVersion: string; kind: string; metadata: { name: string; namespace: string; labels: Record<string, string> }; spec: Record<string, unknown> } {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: step.namespace, labels: { 'app.kubernetes.io/managed-by': 'katafleet', 'katafleet.dev/verify': 'true' } },
    spec: {
      nodeName: node,
      runtimeClassName: step.runtime_class,
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 0,
      activeDeadlineSeconds: Math.max(1, Math.ceil(parseDuration(step.active_deadline) / 1000)),
      automountServiceAccountToken: false,
      tolerations: [{ operator: 'Exists' }],
      securityContext: { runAsNonRoot: true, runAsUser: nonRootUser, runAsGroup: nonRootUser, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [{
        name: verificationContainer,
        image: step.image,
        imagePullPolicy: step.image_pull_policy,
        command: ['sleep', '3600'],
        securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
        resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { cpu: '100m', memory: '64Mi' } },
      }],
    },
  };
}

/** The kubelet's reason and message when the pod's image cannot be pulled, or undefined. */
export function imagePullProblem(pod: Pod | undefined): { reason: string; message: string } | undefined {
  const waiting = pod?.status?.containerStatuses?.find((status) => imagePullReasons.includes(status.state?.waiting?.reason ?? ''))?.state?.waiting;
  return waiting ? { reason: waiting.reason!, message: waiting.message ?? '' } : undefined;
}

/** The message for an image that could not be pulled: what, where, and the ways out. Pure. */
export function imagePullMessage(node: string, step: VerificationPodStep, problem: { reason: string; message: string }): string {
  return `Verification pod on node ${node}: image ${step.image} could not be pulled (${problem.reason}${problem.message ? `: ${problem.message}` : ''}); ` +
    'this says nothing about Kata on the node, which was not verified — make the image reachable from the node (a mirror: set image), ' +
    'or pre-load it on the nodes and set image_pull_policy = "Never"';
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
  const hostKernel = await shell.kernelRelease();

  await kubectl.createPod(verificationPodManifest(name, node.name, step));
  try {
    // Watched through the API (polled through kubectl, or where RBAC grants no watch): running, ended, or stuck pulling.
    const waited = await kubectl.waitForPod<Pod>(step.namespace, name, (pod) => {
      const phase = pod.status?.phase;
      return phase === 'Running' || phase === 'Failed' || phase === 'Succeeded' || imagePullProblem(pod) !== undefined;
    }, timeLeftMs(started, parseDuration(step.timeout), 20_000), 2_000);
    // done: the pod (waited.last) is Running, ended or stuck pulling; not done: the time ran out with it as last seen.
    const pull = waited.done ? imagePullProblem(waited.last) : undefined;
    if (pull) {
      const message = imagePullMessage(node.name, step, pull);
      if (step.on_image_pull_failure === 'fail') throw permanentFailure(VerificationImagePullFailed, message);
      return { changed: false, summary: `not verified (warning, on_image_pull_failure = "warn"): ${message}`, facts: { hostKernel, verification: 'image-pull-failed' } };
    }
    if (!waited.done || waited.last?.status?.phase !== 'Running') {
      const events = await kubectl.podEvents<EventList>(step.namespace, name).catch(() => undefined);
      const warning = latestWarning(events) ?? describePod(waited.last);
      throw transientFailure(VerificationPodNotRunning,
        `Verification pod ${step.namespace}/${name} on node ${node.name} (runtimeClassName ${step.runtime_class}) ` +
        `${waited.done ? `ended ${waited.last?.status?.phase}` : `did not reach Running within ${step.timeout}`}: ${warning}`);
    }

    const guestKernel = (await kubectl.exec(step.namespace, name, verificationContainer, ['uname', '-r'])).trim();
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
    await kubectl.deletePod(step.namespace, name).catch((err: unknown) => {
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
