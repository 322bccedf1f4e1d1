/**
 * kubectl, the way Kubernetes steps reach the API without any agent in the cluster: on the worker with a
 * kubeconfig of its own (e.g. a ServiceAccount bound by `deploy/rbac.yaml`), or over SSH on a host of the
 * inventory. Manifests and patches travel on stdin, never in the command line.
 */
import { spawn } from 'node:child_process';
import { cmd, flag, sh, SshFailureType, sshFailure, failureDetails, type Command, type CommandResult, type Flag, type RunOptions, type SshPool } from './ssh';
import { commandFailedMessage, commandTimedOutMessage } from './ssh/command-error';
import { kubeconfigFor } from '../playbooks/login';
import type { KubernetesTarget, NodeTarget } from './node-types';
import { NodeShell } from './steps/node-shell';
import { cancellationSignal, permanentFailure, whileHeartbeating } from './steps/step-runtime';

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

/** kubectl commands, on the worker or on a control-plane host. */
export class Kubectl {
  private readonly runner: CommandRunner;
  private readonly kubectl: string;
  private readonly kubeconfig?: string;

  constructor(pool: SshPool, readonly target: KubernetesTarget) {
    if (target.host) {
      const shell = new NodeShell(pool, target.host);
      this.runner = { where: target.host.name, run: (command, options) => shell.run(command, options) };
      this.kubectl = target.kubectl;
      this.kubeconfig = target.kubeconfig;
    } else {
      ({ runner: this.runner, kubectl: this.kubectl, kubeconfig: this.kubeconfig } = workerRunner(target));
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

  /** Runs `kubectl exec -n NS POD -- COMMAND`. */
  exec(namespace: string, pod: string, command: Command, options: RunOptions = {}): Promise<CommandResult> {
    return this.runner.run(sh`${this.command(['exec', flag('-n'), namespace, pod])} -- ${command}`, options);
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

  /** The Node named like the inventory node; a missing Node is a permanent failure. */
  async getNode(node: NodeTarget): Promise<KubeNode> {
    const found = await this.getJson<KubeNode>(['get', 'node', node.name]);
    if (!found) {
      throw permanentFailure('NodeNotInCluster',
        `Kubernetes has no Node named ${node.name} (kubectl get node ${node.name} on ${this.where}): the inventory's node name must be the name \`kubectl get nodes\` shows`);
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
