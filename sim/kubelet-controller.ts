// The parts of a kubelet that kwok does not simulate, driven by each simulated node's real state:
// - registers one Node per worker (kwok then initialises addresses, capacity and the kubelet endpoint, and renews its Lease);
// - node status from the node's running containerd: Ready / NotReady, `status.runtimeHandlers`, the host kernel;
// - pod sandboxes: a scheduled pod is released to kwok's `pod-ready` stage (annotation below) only when the node's
//   running containerd has the pod's handler and its shim is installed; otherwise the pod stays Pending/ContainerCreating
//   and gets the `FailedCreatePodSandBox` Warning event a real kubelet emits. Re-evaluated until it succeeds;
// - `kubectl exec`: a kwok Exec per started pod whose environment makes `uname -r` print the sandbox's kernel;
// - image pulls: the simulated registry serves every image except those of a registry under `.invalid` (RFC 2606:
//   such a name never resolves), whose pull fails after the sandbox started, as a real kubelet reports it.
// kwok owns pod phases after release, node leases and deletions; this controller never writes what kwok writes.
import { mkdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { KubeApi, KubeApiError } from './kube-api';
import { createSandbox, defaultHandler, type NodeRuntimeState, type SandboxOutcome } from './kube-sandbox';

/** Set by this controller on a pod whose sandbox was created: kwok's pod-ready stage waits for it. */
export const sandboxAnnotation = 'katafleet.dev/sandbox';
/** Kernel release `uname -r` prints inside the pod. */
export const kernelAnnotation = 'katafleet.dev/kernel-release';
/** Environment variable the exec `uname` wrapper reads. */
export const unameEnv = 'KATAFLEET_UNAME_R';

export interface ControlledNode {
  name: string;
  address: string;
  role: 'worker' | 'control-plane';
  containerdSocket: string;
  hostKernel: string;
  labels?: Record<string, string>;
  /** The node's containerd: `2` reports `status.runtimeHandlers` (CRI ≥ 2.0), `1.6` does not. */
  containerd?: '' | '1.6' | '2';
}

export interface KubeletControllerOptions<N extends ControlledNode> {
  api: KubeApi;
  nodes: N[];
  readNodeRuntimeState: (n: N) => Promise<NodeRuntimeState>;
  /** Per-pod working directories for exec live here. */
  podsDir: string;
  kubeletVersion: string;
  log: (line: string) => void;
  /** @default 2000 */
  nodePollMs?: number;
  /** @default 1000 */
  podPollMs?: number;
}

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastHeartbeatTime?: string;
  lastTransitionTime?: string;
}

interface Pod {
  metadata: { name: string; namespace: string; uid: string; annotations?: Record<string, string>; deletionTimestamp?: string };
  spec: { nodeName?: string; runtimeClassName?: string; nodeSelector?: Record<string, string>; containers: { name: string; image: string }[] };
  status?: { phase?: string; containerStatuses?: unknown[] };
}

interface RuntimeClass {
  metadata: { name: string };
  handler: string;
}

interface NodeView {
  state?: NodeRuntimeState;
  readError?: string;
  readySince: string;
  ready?: boolean;
  lastPatchKey?: string;
  lastPatchAt: number;
}

interface PendingSandbox {
  message: string;
  eventName: string;
  count: number;
  lastEventAt: number;
}

const statusRefreshMs = 60_000;

/**
 * The registry host of an image reference, as containerd's reference parser (distribution/reference) takes it: the
 * first path component when it holds a "." or ":" or is `localhost`; otherwise Docker Hub.
 */
export function imageRegistryHost(image: string): string {
  const first = image.split('/')[0];
  return image.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost') ? first.replace(/:\d+$/, '') : 'docker.io';
}

/** Whether the simulated registry lacks the image: a registry under the `.invalid` top-level domain never resolves. */
export function imageUnpullable(image: string): boolean {
  return imageRegistryHost(image).endsWith('.invalid');
}
const nodeReadConcurrency = 4;
const eventRepeatMs = 10_000;

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class KubeletController<N extends ControlledNode> {
  private readonly api: KubeApi;
  private readonly workers: N[];
  private readonly views = new Map<string, NodeView>();
  private readonly pending = new Map<string, PendingSandbox>();
  /** Pods whose image pull failed: uid → pulls tried so far (the first is ErrImagePull, later ones ImagePullBackOff). */
  private readonly failedPulls = new Map<string, number>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly running = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly opts: KubeletControllerOptions<N>) {
    this.api = opts.api;
    this.workers = opts.nodes.filter((n) => n.role === 'worker');
    for (const n of this.workers) this.views.set(n.name, { readySince: now(), lastPatchAt: 0 });
  }

  /** Registers the Nodes, posts their first status, then keeps polling. */
  async start(): Promise<void> {
    for (const n of this.workers) await this.registerNode(n);
    await this.syncNodes();
    this.every(this.opts.nodePollMs ?? 2000, () => this.syncNodes());
    this.every(this.opts.podPollMs ?? 1000, () => this.syncPods());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await Promise.allSettled([...this.running]);
  }

  /** Runs `fn` every `ms`, never two at once, never after stop(). */
  private every(ms: number, fn: () => Promise<void>): void {
    let busy = false;
    const timer = setInterval(() => {
      if (busy || this.stopped) return;
      busy = true;
      const p = fn()
        .catch((err: unknown) => this.opts.log(`kubelet-controller: ${errorText(err)}`))
        .finally(() => {
          busy = false;
          this.running.delete(p);
        });
      this.running.add(p);
    }, ms);
    timer.unref();
    this.timers.push(timer);
  }

  private async registerNode(n: N): Promise<void> {
    const body = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: n.name,
        labels: {
          'kubernetes.io/hostname': n.name,
          'kubernetes.io/os': 'linux',
          'kubernetes.io/arch': 'amd64',
          'beta.kubernetes.io/os': 'linux',
          'beta.kubernetes.io/arch': 'amd64',
          ...n.labels,
        },
        annotations: {
          'kwok.x-k8s.io/node': 'fake',
          'katafleet.dev/ssh-address': n.address,
          'katafleet.dev/containerd-socket': n.containerdSocket,
          'node.alpha.kubernetes.io/ttl': '0',
        },
      },
      spec: {},
      status: {
        nodeInfo: {
          architecture: 'amd64',
          operatingSystem: 'linux',
          osImage: 'katafleet simulated node',
          kernelVersion: n.hostKernel,
          kubeletVersion: this.opts.kubeletVersion,
          kubeProxyVersion: '',
          containerRuntimeVersion: n.containerd === '2' ? 'containerd://2.2.9' : n.containerd === '1.6' ? 'containerd://1.6.20' : 'containerd://simulated',
          machineID: '',
          systemUUID: '',
          bootID: '',
        },
      },
    };
    try {
      await this.api.create('/api/v1/nodes', body);
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 409)) throw err;
    }
  }

  /** Reads every node's state, a few at a time: on a large fleet a sweep takes longer instead of overloading the machine. */
  private async syncNodes(): Promise<void> {
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < this.workers.length) {
        const node = this.workers[next++];
        await this.syncNode(node).catch((err: unknown) => this.opts.log(`kubelet-controller: node ${node.name}: ${errorText(err)}`));
      }
    };
    await Promise.all(Array.from({ length: Math.min(nodeReadConcurrency, this.workers.length) }, lane));
  }

  private async syncNode(n: N): Promise<void> {
    const view = this.views.get(n.name)!;
    try {
      view.state = await this.opts.readNodeRuntimeState(n);
      view.readError = undefined;
    } catch (err) {
      view.state = undefined;
      view.readError = errorText(err);
    }
    const ready = view.state?.containerdActive === true;
    if (view.ready !== ready) {
      if (view.ready !== undefined) this.opts.log(`node ${n.name}: ${ready ? 'Ready' : 'NotReady'} (containerd ${ready ? 'active' : 'not active'})`);
      view.ready = ready;
      view.readySince = now();
    }
    const handlers = view.state?.containerdActive ? view.state.handlers : [];
    const message = ready
      ? 'kubelet is posting ready status'
      : view.readError
        ? `container runtime status check may not have completed yet: cannot read node state: ${view.readError}`
        : `container runtime is down, PLEG is not healthy: container runtime not ready: RuntimeReady=false reason:ContainerdNotRunning ` +
          `message:dial unix ${n.containerdSocket}: connect: connection refused`;
    const patchKey = JSON.stringify([ready, message, handlers, view.state?.hostKernel ?? n.hostKernel]);
    if (patchKey === view.lastPatchKey && Date.now() - view.lastPatchAt < statusRefreshMs) return;

    const heartbeat = now();
    const pressure = (type: string, reason: string, msg: string): Condition => ({
      type, status: 'False', reason, message: msg, lastHeartbeatTime: heartbeat, lastTransitionTime: view.readySince,
    });
    const patch = {
      status: {
        conditions: [
          pressure('MemoryPressure', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
          pressure('DiskPressure', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
          pressure('PIDPressure', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
          {
            type: 'Ready',
            status: ready ? 'True' : 'False',
            reason: ready ? 'KubeletReady' : 'KubeletNotReady',
            message,
            lastHeartbeatTime: heartbeat,
            lastTransitionTime: view.readySince,
          },
        ],
        // Only containerd >= 2.0 sends handlers in its CRI status (1.7 and older never do; KATA.md §6); the apiserver
        // (v1.34, gate RecursiveReadOnlyMounts GA) keeps the field. Features are introspected for runc only (≤ v2.3).
        ...(n.containerd === '2' ? {
          runtimeHandlers: handlers.map((name) => ({ name, ...(name === 'runc' ? { features: { recursiveReadOnlyMounts: false, userNamespaces: false } } : {}) })),
        } : {}),
        nodeInfo: { kernelVersion: view.state?.hostKernel ?? n.hostKernel },
      },
    };
    await this.api.patch(`/api/v1/nodes/${n.name}/status`, patch, 'strategic');
    view.lastPatchKey = patchKey;
    view.lastPatchAt = Date.now();
  }

  private async syncPods(): Promise<void> {
    const workerNames = new Set(this.workers.map((n) => n.name));
    const pods = await this.api.get<{ items: Pod[] }>('/api/v1/pods');
    const waiting = pods.items.filter((p) =>
      p.spec.nodeName !== undefined && workerNames.has(p.spec.nodeName) && !p.metadata.deletionTimestamp &&
      (p.status?.phase ?? 'Pending') === 'Pending' && p.metadata.annotations?.[sandboxAnnotation] !== 'ready');
    const live = new Set(pods.items.map((p) => p.metadata.uid));
    for (const uid of this.pending.keys()) if (!live.has(uid)) this.pending.delete(uid);
    for (const uid of this.failedPulls.keys()) if (!live.has(uid)) this.failedPulls.delete(uid);
    if (waiting.length === 0) return;
    const classes = await this.api.get<{ items: RuntimeClass[] }>('/apis/node.k8s.io/v1/runtimeclasses');
    const handlerOf = new Map(classes.items.map((rc) => [rc.metadata.name, rc.handler]));
    const nodes = await this.api.get<{ items: { metadata: { name: string; labels?: Record<string, string> } }[] }>('/api/v1/nodes');
    const labelsOf = new Map(nodes.items.map((n) => [n.metadata.name, n.metadata.labels ?? {}]));
    for (const pod of waiting) {
      try {
        const labels = labelsOf.get(pod.spec.nodeName!) ?? {};
        if (Object.entries(pod.spec.nodeSelector ?? {}).some(([k, v]) => labels[k] !== v)) await this.rejectPod(pod, 'NodeAffinity');
        else await this.syncPod(pod, handlerOf);
      } catch (err) {
        if (err instanceof KubeApiError && (err.status === 404 || err.status === 409)) continue; // changed under us: next round
        throw err;
      }
    }
  }

  private async syncPod(pod: Pod, handlerOf: Map<string, string>): Promise<void> {
    const node = this.workers.find((n) => n.name === pod.spec.nodeName)!;
    const view = this.views.get(node.name)!;
    const rcName = pod.spec.runtimeClassName;
    const handler = rcName === undefined ? defaultHandler : handlerOf.get(rcName);
    const sandboxId = randomBytes(32).toString('hex');
    // containerd resolves the shim when it creates the sandbox: read the node now, not at the last node poll.
    view.state = await this.opts.readNodeRuntimeState(node).catch(() => view.state);
    let outcome: SandboxOutcome;
    if (handler === undefined) {
      outcome = { ok: false, handler: '', message: `Failed to create pod sandbox: failed to lookup RuntimeClass ${rcName}: runtimeclass.node.k8s.io "${rcName}" not found` };
    } else if (!view.state) {
      outcome = { ok: false, handler, message: `Failed to create pod sandbox: rpc error: code = Unavailable desc = ${view.readError ?? 'node state not read yet'}` };
    } else {
      outcome = createSandbox(handler, view.state, node.containerdSocket, sandboxId);
    }
    const unpullable = pod.spec.containers.find((c) => imageUnpullable(c.image));
    if (outcome.ok && unpullable) await this.reportImagePullFailure(pod, node.name, unpullable);
    else if (outcome.ok) await this.startSandbox(pod, node.name, outcome);
    else await this.reportSandboxFailure(pod, node.name, outcome.message);
  }

  private async startSandbox(pod: Pod, nodeName: string, sandbox: Extract<SandboxOutcome, { ok: true }>): Promise<void> {
    const { name, namespace, uid } = pod.metadata;
    const workDir = join(this.opts.podsDir, namespace, name);
    await mkdir(workDir, { recursive: true });
    const execPath = `/apis/kwok.x-k8s.io/v1alpha1/namespaces/${namespace}/execs`;
    const exec = {
      apiVersion: 'kwok.x-k8s.io/v1alpha1',
      kind: 'Exec',
      metadata: { name, namespace, ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name, uid }] },
      spec: {
        execs: [{
          local: {
            workDir,
            envs: [
              { name: unameEnv, value: sandbox.kernelRelease },
              { name: 'HOSTNAME', value: name },
              { name: 'KATAFLEET_RUNTIME_HANDLER', value: sandbox.handler },
            ],
          },
        }],
      },
    };
    try {
      await this.api.create(execPath, exec);
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 409)) throw err;
      // A previous pod of the same name left its Exec (garbage collection is asynchronous): replace it.
      await this.api.delete(`${execPath}/${name}`);
      await this.api.create(execPath, exec);
    }
    await this.api.patch(`/api/v1/namespaces/${namespace}/pods/${name}`, {
      metadata: { annotations: { [sandboxAnnotation]: 'ready', [kernelAnnotation]: sandbox.kernelRelease, 'katafleet.dev/runtime-handler': sandbox.handler } },
    });
    this.pending.delete(uid);
    for (const c of pod.spec.containers) {
      await this.podEvent(pod, nodeName, 'Normal', 'Pulled', `Container image "${c.image}" already present on machine`);
      await this.podEvent(pod, nodeName, 'Normal', 'Created', `Created container: ${c.name}`);
      await this.podEvent(pod, nodeName, 'Normal', 'Started', `Started container ${c.name}`);
    }
    this.opts.log(`pod ${namespace}/${name}: sandbox started with handler ${sandbox.handler} (${sandbox.shim}, kernel ${sandbox.kernelRelease})`);
  }

  /** Records a kubelet event on the pod; returns the event's name. */
  private async podEvent(pod: Pod, nodeName: string, type: 'Normal' | 'Warning', reason: string, message: string): Promise<string> {
    const { name, namespace, uid } = pod.metadata;
    const eventName = `${name}.${randomBytes(8).toString('hex')}`;
    const ts = now();
    await this.api.create(`/api/v1/namespaces/${namespace}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: eventName, namespace },
      involvedObject: { apiVersion: 'v1', kind: 'Pod', name, namespace, uid },
      reason,
      message,
      type,
      source: { component: 'kubelet', host: nodeName },
      reportingComponent: 'kubelet',
      reportingInstance: nodeName,
      firstTimestamp: ts,
      lastTimestamp: ts,
      count: 1,
    });
    return eventName;
  }

  /**
   * Kubelet admission: a pod bound to a node (spec.nodeName, bypassing the scheduler) whose nodeSelector the node
   * does not match is rejected and fails, e.g. a pod pinned to a node that lacks its RuntimeClass's label.
   */
  private async rejectPod(pod: Pod, predicate: string): Promise<void> {
    const { name, namespace } = pod.metadata;
    const nodeName = pod.spec.nodeName!;
    const message = `Pod was rejected: Predicate ${predicate} failed`;
    await this.api.patch(`/api/v1/namespaces/${namespace}/pods/${name}/status`, { status: { phase: 'Failed', reason: predicate, message } }, 'strategic');
    await this.podEvent(pod, nodeName, 'Warning', predicate, `Predicate ${predicate} failed`);
    this.opts.log(`pod ${namespace}/${name} on ${nodeName}: ${message}`);
  }

  /**
   * An image the registry lacks: the sandbox started, the pull of the container's image fails. Reasons, messages and
   * events as the kubelet writes them (kubernetes/kubernetes v1.34 pkg/kubelet/images/image_manager.go: "Pulling",
   * "Failed to pull image %q: %v", "Back-off pulling image %q"; pkg/kubelet/kuberuntime/kuberuntime_container.go:
   * "Error: ErrImagePull"), the error text as containerd's resolver gives it for a name that does not resolve. Retried
   * every eventRepeatMs, as the kubelet's back-off does (faster here), and never succeeds.
   */
  private async reportImagePullFailure(pod: Pod, nodeName: string, container: { name: string; image: string }): Promise<void> {
    const { name, namespace, uid } = pod.metadata;
    const tries = this.failedPulls.get(uid) ?? 0;
    const prev = this.pending.get(uid);
    if (prev && Date.now() - prev.lastEventAt < eventRepeatMs) return;
    const host = imageRegistryHost(container.image);
    const error = `failed to pull and unpack image "${container.image}": failed to resolve reference "${container.image}": ` +
      `failed to do request: Head "https://${host}/v2/": dial tcp: lookup ${host}: no such host`;
    const waiting = tries === 0
      ? { reason: 'ErrImagePull', message: `rpc error: code = NotFound desc = ${error}` }
      : { reason: 'ImagePullBackOff', message: `Back-off pulling image "${container.image}"` };
    const unready = `containers with unready status: [${pod.spec.containers.map((c) => c.name).join(' ')}]`;
    await this.api.patch(`/api/v1/namespaces/${namespace}/pods/${name}/status`, {
      status: {
        phase: 'Pending',
        conditions: [
          { type: 'PodReadyToStartContainers', status: 'True', lastTransitionTime: now() },
          { type: 'Initialized', status: 'True', lastTransitionTime: now() },
          { type: 'Ready', status: 'False', reason: 'ContainersNotReady', message: unready, lastTransitionTime: now() },
          { type: 'ContainersReady', status: 'False', reason: 'ContainersNotReady', message: unready, lastTransitionTime: now() },
        ],
        containerStatuses: pod.spec.containers.map((c) => ({
          name: c.name, image: c.image, imageID: '', ready: false, started: false, restartCount: 0,
          state: { waiting: c.name === container.name ? waiting : { reason: 'ContainerCreating' } },
        })),
        startTime: now(),
      },
    }, 'strategic');
    if (tries === 0) {
      await this.podEvent(pod, nodeName, 'Normal', 'Pulling', `Pulling image "${container.image}"`);
      await this.podEvent(pod, nodeName, 'Warning', 'Failed', `Failed to pull image "${container.image}": ${error}`);
      await this.podEvent(pod, nodeName, 'Warning', 'Failed', 'Error: ErrImagePull');
    } else {
      await this.podEvent(pod, nodeName, 'Normal', 'BackOff', `Back-off pulling image "${container.image}"`);
      await this.podEvent(pod, nodeName, 'Warning', 'Failed', 'Error: ImagePullBackOff');
    }
    this.failedPulls.set(uid, tries + 1);
    this.pending.set(uid, { message: waiting.message, eventName: '', count: tries + 1, lastEventAt: Date.now() });
    if (tries === 0) this.opts.log(`pod ${namespace}/${name} on ${nodeName}: image ${container.image} cannot be pulled (${host} does not resolve)`);
  }

  private async reportSandboxFailure(pod: Pod, nodeName: string, message: string): Promise<void> {
    const { name, namespace, uid } = pod.metadata;
    const prev = this.pending.get(uid);
    if (!prev) {
      const unready = `containers with unready status: [${pod.spec.containers.map((c) => c.name).join(' ')}]`;
      await this.api.patch(`/api/v1/namespaces/${namespace}/pods/${name}/status`, {
        status: {
          phase: 'Pending',
          conditions: [
            { type: 'Initialized', status: 'True', lastTransitionTime: now() },
            { type: 'Ready', status: 'False', reason: 'ContainersNotReady', message: unready, lastTransitionTime: now() },
            { type: 'ContainersReady', status: 'False', reason: 'ContainersNotReady', message: unready, lastTransitionTime: now() },
          ],
          containerStatuses: pod.spec.containers.map((c) => ({
            name: c.name, image: c.image, imageID: '', ready: false, started: false, restartCount: 0, state: { waiting: { reason: 'ContainerCreating' } },
          })),
          startTime: now(),
        },
      }, 'strategic');
    }
    const sameMessage = prev?.message === message;
    if (sameMessage && Date.now() - prev.lastEventAt < eventRepeatMs) return;
    const ts = now();
    if (prev && sameMessage) {
      prev.count += 1;
      prev.lastEventAt = Date.now();
      await this.api.patch(`/api/v1/namespaces/${namespace}/events/${prev.eventName}`, { count: prev.count, lastTimestamp: ts });
      return;
    }
    const eventName = await this.podEvent(pod, nodeName, 'Warning', 'FailedCreatePodSandBox', message);
    this.pending.set(uid, { message, eventName, count: 1, lastEventAt: Date.now() });
    this.opts.log(`pod ${namespace}/${name} on ${nodeName}: ${message}`);
  }
}
