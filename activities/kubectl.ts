/**
 * kubectl on the control-plane host, over SSH: how Kubernetes steps reach the API without any
 * agent in the cluster. Manifests and patches travel on stdin, never in the command line.
 */
import { cmd, flag, sh, type Command, type CommandResult, type Flag, type RunOptions, type SshPool } from './ssh';
import type { KubernetesTarget, NodeTarget } from './node-types';
import { NodeShell } from './steps/node-shell';
import { permanentFailure } from './steps/step-runtime';

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

/** kubectl commands on one control-plane host. */
export class Kubectl {
  private readonly shell: NodeShell;

  constructor(pool: SshPool, readonly target: KubernetesTarget) {
    this.shell = new NodeShell(pool, target.host);
  }

  /** `kubectl ARGS` as a command; kubeconfig from the inventory when set. */
  command(args: readonly KubectlArg[]): Command {
    const kubeconfig = this.target.kubeconfig ? [flag('--kubeconfig'), this.target.kubeconfig] : [];
    return cmd(this.target.kubectl, [...kubeconfig, ...args]);
  }

  /** Runs `kubectl ARGS` on the control-plane host. */
  run(args: readonly KubectlArg[], options: RunOptions = {}): Promise<CommandResult> {
    return this.shell.run(this.command(args), options);
  }

  /** Runs `kubectl exec -n NS POD -- COMMAND`. */
  exec(namespace: string, pod: string, command: Command, options: RunOptions = {}): Promise<CommandResult> {
    return this.shell.run(sh`${this.command(['exec', flag('-n'), namespace, pod])} -- ${command}`, options);
  }

  /** `kubectl ARGS -o json`, parsed; undefined when the object does not exist. */
  async getJson<T>(args: readonly KubectlArg[]): Promise<T | undefined> {
    const result = await this.run([...args, flag('--ignore-not-found'), flag('-o'), 'json']);
    const text = result.stdout.trim();
    if (text === '') return undefined;
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw permanentFailure('KubectlOutputInvalid', `kubectl ${args.join(' ')} on ${this.target.host.name} did not print JSON: ${text.slice(0, 200)}`, err);
    }
  }

  /** The Node named like the inventory node; a missing Node is a permanent failure. */
  async getNode(node: NodeTarget): Promise<KubeNode> {
    const found = await this.getJson<KubeNode>(['get', 'node', node.name]);
    if (!found) {
      throw permanentFailure('NodeNotInCluster',
        `Kubernetes has no Node named ${node.name} (kubectl get node ${node.name} on ${this.target.host.name}): the inventory's node name must be the name \`kubectl get nodes\` shows`);
    }
    return found;
  }

  /** Sends a JSON object on stdin to `kubectl ARGS -f -` (apply, create) or `--patch-file /dev/stdin`. */
  withStdin(args: readonly KubectlArg[], body: unknown, options: RunOptions = {}): Promise<CommandResult> {
    return this.run(args, { ...options, stdin: `${JSON.stringify(body)}\n` });
  }
}

/** The Kubernetes target, or a permanent failure naming the step that needs it. */
export function requireKubernetes(kubernetes: KubernetesTarget | undefined, what: string): KubernetesTarget {
  if (!kubernetes) {
    throw permanentFailure('KubernetesNotConfigured',
      `${what} needs the Kubernetes API, but the inventory has no [kubernetes] table: add one with control_plane = "<node that runs kubectl>"`);
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
