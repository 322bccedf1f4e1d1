/**
 * How Kubernetes steps reach the API without any agent in the cluster: from the worker with a kubeconfig of its own
 * (e.g. a ServiceAccount bound by `deploy/rbac.yaml`), as HTTPS requests from the worker process (activities/kube-api.ts),
 * or with kubectl over SSH on a host of the inventory. kubectl's manifests and patches travel on stdin, never in the
 * command line.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cmd, flag, sh, SshFailureType, sshFailure, failureDetails, type Command, type CommandResult, type Flag, type RunOptions, type SshPool } from './ssh';
import { commandFailedMessage, commandTimedOutMessage } from './ssh/command-error';
import { kubeconfigFor } from '../playbooks/login';
import type { KubernetesTarget, NodeTarget } from './node-types';
import { NodeShell } from './steps/node-shell';
import { KubeApi, kubeApiConfigFor, KubeApiForbidden, type KubeApiConfig } from './kube-api';
import { cancellationSignal, failureType, permanentFailure, pollUntil, transientFailure, whileHeartbeating } from './steps/step-runtime';

/** The parts of a Node object the steps read. */
export interface KubeNode {
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: { unschedulable?: boolean };
  status?: {
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
    /** Kubernetes ≥ 1.30: the handlers the kubelet's runtime reports. */
    runtimeHandlers?: { name: string }[];
    nodeInfo?: { kubeletVersion?: string; containerRuntimeVersion?: string };
  };
}

export type KubectlArg = string | Flag;

/** Runs commands where kubectl runs: a host over SSH, or the worker itself. */
interface CommandRunner {
  /** For messages: `control-plane` or `the worker`. */
  readonly where: string;
  run(command: Command, options: RunOptions): Promise<CommandResult>;
}

/** Most bytes kept per stream of a kubectl on the worker (as the SSH pool's default). */
const localMaxOutputBytes = 16 * 1024 * 1024;

/**
 * Runs `command` on the worker through `/bin/sh -c` (its text quotes every value, as for a node; stdin a pipe), with the same
 * result record and failure types as a command over SSH: `CommandFailed`, `CommandTimedOut`.
 */
export function runOnWorker(command: Command, options: RunOptions = {}): Promise<CommandResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const allowed = options.allowExitCodes ?? [0];
  const started = Date.now();
  return new Promise<CommandResult>((resolve, reject) => {
    // Node gives a child a socket as stdin, which `open("/dev/stdin")` refuses (ENXIO): `cat |` makes it a pipe,
    // so `kubectl patch --patch-file /dev/stdin` reads it as it does over SSH.
    const child = spawn('/bin/sh', ['-c', `cat | {\n${command.text}\n}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const keep = (into: Buffer[]) => (chunk: Buffer) => {
      size += chunk.length;
      if (size <= localMaxOutputBytes) into.push(chunk);
    };
    child.stdout.on('data', keep(out));
    child.stderr.on('data', keep(err));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const onAbort = () => child.kill('SIGKILL');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      const result: CommandResult = {
        host: 'worker', address: 'local', command: command.display, exitCode: code, signal: signal ?? null,
        stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), durationMs: Date.now() - started,
      };
      if (options.signal?.aborted) reject(options.signal.reason);
      else if (timedOut) reject(sshFailure(SshFailureType.CommandTimedOut, commandTimedOutMessage(result, timeoutMs), { details: failureDetails(result) }));
      else if (signal !== null || code === null || !allowed.includes(code)) reject(sshFailure(SshFailureType.CommandFailed, commandFailedMessage(result), { details: failureDetails(result) }));
      else resolve(result);
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.stdin ?? '');
  });
}

/** kubectl on the worker, with the kubeconfig its reference names (checked on every construction). */
function workerRunner(target: KubernetesTarget): { runner: CommandRunner; kubectl: string; kubeconfig: string } {
  let found: { kubeconfig: string; kubectl?: string };
  try {
    found = kubeconfigFor(target.worker!);
  } catch (error) {
    throw permanentFailure('KubeconfigUnusable', `kubectl on the worker: ${(error as Error).message}`);
  }
  const kubectl = process.env.KATAFLEET_KUBECTL || found.kubectl || 'kubectl';
  const runner: CommandRunner = {
    where: 'the worker',
    run: (command, options) => whileHeartbeating(runOnWorker(command, { signal: cancellationSignal(), ...options })),
  };
  return { runner, kubectl, kubeconfig: found.kubeconfig };
}

const path = {
  node: (name: string) => `/api/v1/nodes/${encodeURIComponent(name)}`,
  runtimeClass: (name: string) => `/apis/node.k8s.io/v1/runtimeclasses/${encodeURIComponent(name)}`,
  pods: (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`,
  pod: (ns: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`,
};

/**
 * The API targets that refused to let the worker watch pods (403: RBAC older than deploy/rbac.yaml's `watch`), and
 * when: each is polled instead of asking again, until `retryMs` later (a fixed Role is then picked up). Process-wide,
 * since a step's {@link Kubectl} lives for one step; at most `limit` targets, the oldest refusal forgotten first.
 */
export class WatchRefusals {
  private readonly at = new Map<string, number>();

  constructor(readonly retryMs = 10 * 60_000, readonly limit = 256, private readonly now: () => number = Date.now) {}

  /** Whether `key` refused a watch less than `retryMs` ago. */
  refused(key: string): boolean {
    const at = this.at.get(key);
    if (at === undefined) return false;
    if (this.now() - at < this.retryMs) return true;
    this.at.delete(key);
    return false;
  }

  remember(key: string): void {
    this.at.delete(key);
    this.at.set(key, this.now());
    if (this.at.size > this.limit) this.at.delete(this.at.keys().next().value!);
  }

  get size(): number {
    return this.at.size;
  }
}

/** The worker's memory of refused pod watches (see {@link WatchRefusals}). */
export const refusedPodWatches = new WatchRefusals();

/** Who asks to watch in which namespace: RBAC answers per API server, credentials (the kubeconfig's) and namespace. */
export function watchRefusalKey(config: KubeApiConfig, namespace: string): string {
  // Hashed: the key holds no credential, and stays short (a certificate is kilobytes).
  return createHash('sha256').update(JSON.stringify([config.server, config.kubeconfig, config.cert ?? config.token ?? config.tokenFile ?? '', namespace])).digest('hex');
}

/**
 * The Kubernetes calls of the steps. With a kubeconfig on the worker they go to the API server from the worker
 * process ({@link KubeApi}: no kubectl process per call; kubeconfigs with an exec plugin or auth-provider keep
 * kubectl); with `control_plane` they run kubectl over SSH on that host. `run`, `getJson` and `withStdin` always
 * run kubectl (drain and the callers that build kubectl commands themselves).
 */
export class Kubectl {
  private readonly runner: CommandRunner;
  private readonly kubectl: string;
  private readonly kubeconfig?: string;
  /** kubectl's kubeconfig is on the worker: calls go through the API when the kubeconfig allows. */
  private readonly onWorker: boolean = false;
  /** On the worker: the API client once the kubeconfig is read (undefined when it needs kubectl); read at the first call. */
  private api?: Promise<KubeApi | undefined>;

  constructor(pool: SshPool, readonly target: KubernetesTarget) {
    if (target.host) {
      const shell = new NodeShell(pool, target.host);
      this.runner = { where: target.host.name, run: (command, options) => shell.run(command, options) };
      this.kubectl = target.kubectl;
      this.kubeconfig = target.kubeconfig;
    } else {
      ({ runner: this.runner, kubectl: this.kubectl, kubeconfig: this.kubeconfig } = workerRunner(target));
      this.onWorker = true;
    }
  }

  /** Where kubectl runs, for messages: the host's name, or `the worker`. */
  get where(): string {
    return this.runner.where;
  }

  /** `kubectl ARGS` as a command; the kubeconfig when one is set. */
  command(args: readonly KubectlArg[]): Command {
    const kubeconfig = this.kubeconfig ? [flag('--kubeconfig'), this.kubeconfig] : [];
    return cmd(this.kubectl, [...kubeconfig, ...args]);
  }

  /** Runs `kubectl ARGS`. */
  run(args: readonly KubectlArg[], options: RunOptions = {}): Promise<CommandResult> {
    return this.runner.run(this.command(args), options);
  }

  /** `kubectl ARGS -o json`, parsed; undefined when the object does not exist. */
  async getJson<T>(args: readonly KubectlArg[]): Promise<T | undefined> {
    const result = await this.run([...args, flag('--ignore-not-found'), flag('-o'), 'json']);
    const text = result.stdout.trim();
    if (text === '') return undefined;
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw permanentFailure('KubectlOutputInvalid', `kubectl ${args.join(' ')} on ${this.where} did not print JSON: ${text.slice(0, 200)}`, err);
    }
  }

  /** Sends a JSON object on stdin to `kubectl ARGS -f -` (apply, create) or `--patch-file /dev/stdin`. */
  withStdin(args: readonly KubectlArg[], body: unknown, options: RunOptions = {}): Promise<CommandResult> {
    return this.run(args, { ...options, stdin: `${JSON.stringify(body)}\n` });
  }

  /** The API client, when calls go from the worker to the API server. */
  private async client(): Promise<KubeApi | undefined> {
    if (!this.onWorker) return undefined;
    this.api ??= kubeApiConfigFor(this.kubeconfig!, async () => (await this.run(['config', 'view', flag('--raw'), flag('--minify'), flag('--flatten'), flag('-o'), 'json'])).stdout, this.kubectl)
      .then((config) => ('kubectlOnly' in config ? undefined : new KubeApi(config)));
    return whileHeartbeating(this.api);
  }

  /** GET through the API, or `kubectl get ... -o json`. */
  private async getObject<T>(apiPath: string, kubectlArgs: readonly KubectlArg[]): Promise<T | undefined> {
    const api = await this.client();
    return api ? whileHeartbeating(api.get<T>(apiPath, cancellationSignal())) : this.getJson<T>(kubectlArgs);
  }

  /** The Node named `name`, or undefined. */
  getNodeObject(name: string): Promise<KubeNode | undefined> {
    return this.getObject<KubeNode>(path.node(name), ['get', 'node', name]);
  }

  /** The Node named like the inventory node; a missing Node is a permanent failure. */
  async getNode(node: NodeTarget): Promise<KubeNode> {
    const found = await this.getNodeObject(node.name);
    if (!found) {
      throw permanentFailure('NodeNotInCluster',
        `Kubernetes has no Node named ${node.name} (${this.kubectlVia('get node', node.name)}): the inventory's node name must be the name \`kubectl get nodes\` shows`);
    }
    return found;
  }

  /** How a call was made, for messages: `kubectl get node x on cp-1`, or `GET /api/v1/nodes/x on the worker`. */
  private kubectlVia(verb: string, name: string): string {
    return this.onWorker ? `${verb} ${name} from the worker` : `kubectl ${verb} ${name} on ${this.where}`;
  }

  /** Merge-patches the Node; `cancellable: false` for patches that must finish (undo bookkeeping). */
  async patchNode(name: string, patch: unknown, cancellable = true): Promise<void> {
    const api = await this.client();
    if (api) await whileHeartbeating(api.request('PATCH', path.node(name), { body: patch, contentType: 'application/merge-patch+json', signal: cancellable ? cancellationSignal() : undefined }));
    else await this.withStdin(['patch', 'node', name, flag('--type'), 'merge', flag('--patch-file'), '/dev/stdin'], patch, cancellable ? {} : { signal: undefined });
  }

  /** Names of the Nodes that carry every label of `selector`. */
  async nodesWithLabels(selector: Record<string, string>): Promise<string[]> {
    const text = Object.entries(selector).map(([key, value]) => `${key}=${value}`).join(',');
    const api = await this.client();
    if (api) {
      const list = await whileHeartbeating(api.request<{ items?: { metadata: { name: string } }[] }>('GET', `/api/v1/nodes?labelSelector=${encodeURIComponent(text)}`, { signal: cancellationSignal() }));
      return (list.body?.items ?? []).map((item) => item.metadata.name);
    }
    return (await this.run(['get', 'nodes', flag(`--selector=${text}`), flag('-o'), 'name'])).stdout.split('\n').filter(Boolean).map((name) => name.replace(/^node\//, ''));
  }

  /** The RuntimeClass named `name`, or undefined. */
  getRuntimeClass<T>(name: string): Promise<T | undefined> {
    return this.getObject<T>(path.runtimeClass(name), ['get', 'runtimeclass', name]);
  }

  /**
   * Server-side apply of a RuntimeClass with field manager `katafleet`; resolves to the API server's conflict message
   * when another manager owns a field it would change (409), else undefined.
   */
  async applyRuntimeClass(manifest: { metadata: { name: string } }): Promise<string | undefined> {
    const api = await this.client();
    if (api) {
      const answer = await whileHeartbeating(api.request<{ message?: string }>('PATCH', `${path.runtimeClass(manifest.metadata.name)}?fieldManager=katafleet`,
        { body: manifest, contentType: 'application/apply-patch+yaml', allow: [409], signal: cancellationSignal() }));
      return answer.status === 409 ? answer.body?.message ?? 'conflict' : undefined;
    }
    const applied = await this.withStdin(['apply', flag('--server-side'), flag('--field-manager=katafleet'), flag('--filename=-')], manifest, { allowExitCodes: [0, 1] });
    if (applied.exitCode === 0) return undefined;
    const reason = applied.stderr.trim() || applied.stdout.trim();
    if (/conflict/i.test(reason)) return reason;
    throw transientFailure('KubectlFailed', `kubectl apply of RuntimeClass ${manifest.metadata.name} failed on ${this.where}: ${reason}`);
  }

  /** Deletes the RuntimeClass; one that is gone already is fine. */
  async deleteRuntimeClass(name: string): Promise<void> {
    const api = await this.client();
    if (api) await whileHeartbeating(api.request('DELETE', path.runtimeClass(name), { allow: [404], signal: cancellationSignal() }));
    else await this.run(['delete', 'runtimeclass', name, flag('--ignore-not-found'), flag('--wait=false')]);
  }

  /** Creates a Pod from its manifest (`metadata.namespace` set). */
  async createPod(manifest: { metadata: { namespace: string } }): Promise<void> {
    const api = await this.client();
    if (api) await whileHeartbeating(api.request('POST', path.pods(manifest.metadata.namespace), { body: manifest, signal: cancellationSignal() }));
    else await this.withStdin(['create', flag('-n'), manifest.metadata.namespace, flag('--filename=-')], manifest);
  }

  /** The Pod, or undefined. */
  getPod<T>(namespace: string, name: string): Promise<T | undefined> {
    return this.getObject<T>(path.pod(namespace, name), ['get', 'pod', flag('-n'), namespace, name]);
  }

  /**
   * Waits until the Pod is as `done` says, for at most `timeoutMs`; returns the Pod as last seen and whether it got
   * there. Through the API it watches the Pod (the change is seen as the server makes it); where RBAC grants no
   * `watch` on pods (a `deploy/rbac.yaml` older than this), or through kubectl, it polls with {@link pollUntil}'s
   * backoff from 250 ms to `pollMs`. A refused watch is remembered for the target ({@link refusedPodWatches}), so
   * the next verifications poll at once, until the memory expires.
   */
  async waitForPod<T>(namespace: string, name: string, done: (pod: T) => boolean, timeoutMs: number, pollMs: number): Promise<{ done: boolean; last?: T }> {
    const api = await this.client();
    const refusal = api && watchRefusalKey(api.config, namespace);
    if (api && refusal && !refusedPodWatches.refused(refusal)) {
      try {
        const watched = await whileHeartbeating(api.watchOne<T>(path.pods(namespace), name, done, { signal: cancellationSignal(), timeoutMs }));
        if (watched.done) return watched;
        // The watch ended first (its timeout, a deletion): one GET says how the Pod is now.
        const now = await this.getPod<T>(namespace, name);
        return { done: now !== undefined && done(now), last: now ?? watched.last };
      } catch (err) {
        if (failureType(err) !== KubeApiForbidden) throw err;
        refusedPodWatches.remember(refusal);
      }
    }
    let last: T | undefined;
    const settled = await pollUntil(async () => {
      last = await this.getPod<T>(namespace, name);
      return last !== undefined && done(last) ? last : undefined;
    }, timeoutMs, pollMs);
    return { done: settled !== undefined, last };
  }

  /** The events about the object `name` in `namespace`. */
  podEvents<T>(namespace: string, name: string): Promise<T | undefined> {
    const selector = `involvedObject.name=${name}`;
    return this.getObject<T>(`/api/v1/namespaces/${encodeURIComponent(namespace)}/events?fieldSelector=${encodeURIComponent(selector)}`,
      ['get', 'events', flag('-n'), namespace, flag(`--field-selector=${selector}`)]);
  }

  /** Deletes the Pod without waiting for it to go; one that is gone already is fine. Not cancellable: it cleans up. */
  async deletePod(namespace: string, name: string): Promise<void> {
    const api = await this.client();
    if (api) await whileHeartbeating(api.request('DELETE', path.pod(namespace, name), { allow: [404] }));
    else await this.run(['delete', 'pod', flag('-n'), namespace, name, flag('--wait=false'), flag('--ignore-not-found')], { signal: undefined });
  }

  /** Runs `command` in the pod's container (API exec over WebSocket, or `kubectl exec`); its stdout. */
  async exec(namespace: string, pod: string, container: string, command: readonly string[]): Promise<string> {
    const api = await this.client();
    if (!api) {
      // The command is the step's own (not input): its options are flags.
      const inPod = cmd(command[0], command.slice(1).map((part) => (part.startsWith('-') ? flag(part) : part)));
      return (await this.runner.run(sh`${this.command(['exec', flag('-n'), namespace, pod, flag('-c'), container])} -- ${inPod}`, {})).stdout;
    }
    const result = await whileHeartbeating(api.exec(namespace, pod, container, command, { signal: cancellationSignal() }));
    if (result.exitCode !== 0) {
      throw transientFailure('CommandFailed', `${command.join(' ')} in pod ${namespace}/${pod} exited ${result.exitCode} (through the API from the worker): ${result.stderr.trim().split('\n')[0]}`);
    }
    return result.stdout;
  }
}

/** The Kubernetes target, or a permanent failure naming the step that needs it. */
export function requireKubernetes(kubernetes: KubernetesTarget | undefined, what: string): KubernetesTarget {
  if (!kubernetes) {
    throw permanentFailure('KubernetesNotConfigured',
      `${what} needs the Kubernetes API, but the inventory has no [kubernetes] table: add one with kubeconfig = "<file on the worker>" (deploy/rbac.yaml grants what katafleet needs), or control_plane = "<node that runs kubectl>"`);
  }
  return kubernetes;
}

/** The Ready condition of a Node, in one line: `Ready=True`, `Ready=False (KubeletNotReady: ...)`. */
export function describeReady(node: KubeNode): string {
  const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
  if (!ready) return 'no Ready condition yet';
  const why = [ready.reason, ready.message].filter(Boolean).join(': ');
  return `Ready=${ready.status}${ready.status === 'True' || !why ? '' : ` (${why})`}`;
}

export function isReady(node: KubeNode): boolean {
  return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}
