// A real Kubernetes control plane for the simulated fleet: etcd, kube-apiserver, kube-scheduler and
// kube-controller-manager (built once from the Go module proxy by scripts/setup/kubernetes.js), kwok as
// the kubelet of every simulated worker node, and sim/kubelet-controller.ts for the parts of a kubelet that
// depend on the node's real containerd. See sim/KUBERNETES.md for exactly what is real and what is simulated.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import versions from '../scripts/setup/kubernetes.json';
import { KubeApi } from './kube-api';
import { kwokConfigYaml, unameWrapper } from './kube-kwok-config';
import type { NodeRuntimeState } from './kube-sandbox';
import { KubeletController, unameEnv, type ControlledNode } from './kubelet-controller';
import { freeLoopbackPort } from './addresses';

export type { NodeRuntimeState } from './kube-sandbox';

/** The fields of a simulated node this module uses (structurally a subset of sim/fleet.ts's SimNode). */
export interface KubeSimNode extends ControlledNode {
  dir: string;
}

export interface ControlPlane {
  /** kubeconfig for the admin user (static token in system:masters), server https://127.0.0.1:PORT. */
  kubeconfig: string;
  apiServerUrl: string;
  kubectlPath: string;
  /**
   * kube-apiserver's audit log (JSON lines, one event per request and stage, `logs/audit.log` beside the kubeconfig):
   * the requests on pods in {@link verificationNamespace} as the server received them (see {@link auditPolicy}).
   */
  auditLog: string;
  /** Stops every process this control plane started; leaves none behind. */
  stop(): Promise<void>;
}

export interface StartControlPlaneOptions<N extends KubeSimNode = KubeSimNode> {
  /** Everything (data, certificates, logs, kubeconfig) lives here. */
  dir: string;
  /** One Kubernetes Node per worker; control-plane hosts are not registered. */
  nodes: N[];
  readNodeRuntimeState: (n: N) => Promise<NodeRuntimeState>;
  /** Progress and controller decisions; default: silent. */
  log?: (line: string) => void;
}

/** Where scripts/setup/kubernetes.js put the binaries (`KATAFLEET_CACHE` overrides ~/.cache/katafleet). */
export function kubernetesBinaries(): { version: string; binDir: string } {
  const cacheDir = process.env.KATAFLEET_CACHE ?? join(homedir(), '.cache', 'katafleet');
  return { version: versions.kubernetes, binDir: join(cacheDir, 'k8s', versions.kubernetes, 'bin') };
}

/** A control-plane binary is missing: setup has not run (or was interrupted). */
export class KubernetesNotInstalled extends Error {
  override readonly name = 'KubernetesNotInstalled';
}

/** A control-plane process exited or did not become ready in time; the message names its log file. */
export class ControlPlaneStartFailed extends Error {
  override readonly name = 'ControlPlaneStartFailed';
}

const startTimeoutMs = 90_000;

/** The namespace of verification pods (playbooks/schema.ts' default), labelled for PodSecurity `restricted`. */
export const verificationNamespace = 'katafleet-verify';
const stopGraceMs = 10_000;

interface Proc {
  name: string;
  child: ChildProcess;
  logFile: string;
  exited: Promise<void>;
  exitCode?: number | null;
}

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/** If the Node process exits without stop(), take the control plane down with it. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of liveChildren) c.kill('SIGKILL');
  });
}


function startProcess(name: string, binary: string, args: string[], logDir: string, env?: NodeJS.ProcessEnv): Proc {
  const logFile = join(logDir, `${name}.log`);
  const out = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  liveChildren.add(child);
  const proc: Proc = { name, child, logFile, exited: Promise.resolve() };
  proc.exited = new Promise<void>((resolve) => {
    child.once('exit', (code) => {
      proc.exitCode = code;
      liveChildren.delete(child);
      resolve();
    });
    child.once('error', (err) => {
      out.write(`failed to start ${binary}: ${err.message}\n`);
      proc.exitCode = -1;
      liveChildren.delete(child);
      resolve();
    });
  });
  return proc;
}

async function lastLines(file: string, n = 15): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Polls `check` until it returns true; fails early if one of `procs` exits. */
async function waitFor(what: string, check: () => Promise<boolean>, procs: Proc[], timeoutMs = startTimeoutMs): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  while (Date.now() < deadline) {
    const dead = procs.find((p) => p.exitCode !== undefined);
    if (dead) {
      throw new ControlPlaneStartFailed(`${dead.name} exited (code ${dead.exitCode}) while waiting for ${what}; see ${dead.logFile}:\n${await lastLines(dead.logFile)}`);
    }
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
    }
    await sleep(250);
  }
  throw new ControlPlaneStartFailed(`timed out after ${timeoutMs / 1000} s waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}; logs in ${procs.map((p) => p.logFile).join(', ')}`);
}

async function stopProcesses(procs: Proc[]): Promise<void> {
  for (const p of [...procs].reverse()) {
    if (p.exitCode !== undefined) continue;
    p.child.kill('SIGTERM');
    const killed = await Promise.race([p.exited.then(() => true), sleep(stopGraceMs, undefined, { ref: false }).then(() => false)]);
    if (!killed) {
      p.child.kill('SIGKILL');
      await p.exited;
    }
  }
}

function run(binary: string, args: string[], logDir: string, name: string): Promise<void> {
  const p = startProcess(name, binary, args, logDir);
  return p.exited.then(async () => {
    if (p.exitCode !== 0) throw new ControlPlaneStartFailed(`${binary} ${args.join(' ')} exited with ${p.exitCode}: see ${p.logFile}:\n${await lastLines(p.logFile)}`);
  });
}

function kubeconfigYaml(server: string, caPem: string, token: string): string {
  const ca = Buffer.from(caPem).toString('base64');
  return `apiVersion: v1
kind: Config
clusters:
- name: katafleet-sim
  cluster:
    server: ${server}
    certificate-authority-data: ${ca}
users:
- name: admin
  user:
    token: ${token}
contexts:
- name: katafleet-sim
  context:
    cluster: katafleet-sim
    user: admin
current-context: katafleet-sim
`;
}

/**
 * kube-apiserver's audit policy (upstream: kubernetes.io/docs/tasks/debug/debug-cluster/audit/, the
 * `audit.k8s.io/v1` Policy): request metadata (verb, user, object, status) of every request on pods and their exec
 * in {@link verificationNamespace}, nothing else; stage RequestReceived omitted, so a request is logged once as it
 * completes (a watch also once as its response starts).
 */
export const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  namespaces: ["katafleet-verify"]
  resources: [{ group: "", resources: ["pods", "pods/exec"] }]
- level: None
`;

/** Finds the host's real `uname`, for the exec wrapper to call. */
function realUname(): string {
  for (const dir of ['/usr/bin', '/bin']) if (existsSync(join(dir, 'uname'))) return join(dir, 'uname');
  throw new KubernetesNotInstalled('no uname in /usr/bin or /bin: coreutils is missing');
}

/**
 * Starts etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok and our kubelet controller,
 * all on 127.0.0.1 with free ports, all under `opts.dir`, and waits until every worker is a registered Node
 * with its first status and the `default` ServiceAccount exists in `default` and in {@link verificationNamespace}
 * (so pods can be created at once).
 */
export async function startControlPlane<N extends KubeSimNode>(opts: StartControlPlaneOptions<N>): Promise<ControlPlane> {
  const log = opts.log ?? (() => undefined);
  const { version, binDir } = kubernetesBinaries();
  const bin = (name: string): string => {
    const p = join(binDir, name);
    if (!existsSync(p)) throw new KubernetesNotInstalled(`${p} is missing: run \`node scripts/setup.js\` (builds Kubernetes ${version} once, cached)`);
    return p;
  };
  const binaries = {
    etcd: bin('etcd'), apiserver: bin('kube-apiserver'), scheduler: bin('kube-scheduler'),
    controllerManager: bin('kube-controller-manager'), kubectl: bin('kubectl'), kwok: bin('kwok'),
  };
  const execCrd = join(binDir, 'kwok-crds', 'kwok.x-k8s.io_execs.yaml');
  if (!existsSync(execCrd)) throw new KubernetesNotInstalled(`${execCrd} is missing: run \`node scripts/setup.js\``);

  const dir = opts.dir;
  const pki = join(dir, 'pki');
  const logs = join(dir, 'logs');
  const execBin = join(dir, 'exec-bin');
  for (const d of [pki, logs, execBin, join(dir, 'pods')]) await mkdir(d, { recursive: true });
  installExitHook();

  const token = randomBytes(24).toString('hex');
  await writeFile(join(pki, 'tokens.csv'), `${token},admin,admin,"system:masters"\n`, { mode: 0o600 });
  const sa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  await writeFile(join(pki, 'sa.key'), sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await writeFile(join(pki, 'sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }));
  await writeFile(join(dir, 'audit-policy.yaml'), auditPolicy);
  const auditLog = join(logs, 'audit.log');

  const [etcdClient, etcdPeer, apiPort, kwokPort] = [await freeLoopbackPort(), await freeLoopbackPort(), await freeLoopbackPort(), await freeLoopbackPort()];
  const procs: Proc[] = [];
  let controller: KubeletController<N> | undefined;
  let api: KubeApi | undefined;
  const stop = async (): Promise<void> => {
    await controller?.stop();
    api?.close();
    await stopProcesses(procs);
  };

  try {
    const t0 = Date.now();
    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    procs.push(startProcess('etcd', binaries.etcd, [
      '--name=katafleet', `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`, `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`, `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=katafleet=http://127.0.0.1:${etcdPeer}`,
      '--unsafe-no-fsync=true', '--log-level=warn',
    ], logs));
    await waitFor('etcd /health', async () => (await fetch(`${etcdUrl}/health`)).ok, procs);
    log(`etcd ready on ${etcdUrl} (${Date.now() - t0} ms)`);

    const apiServerUrl = `https://127.0.0.1:${apiPort}`;
    procs.push(startProcess('kube-apiserver', binaries.apiserver, [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1', '--advertise-address=127.0.0.1', `--secure-port=${apiPort}`,
      `--cert-dir=${pki}`,
      `--token-auth-file=${join(pki, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${join(pki, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
      '--service-cluster-ip-range=10.96.0.0/16',
      '--endpoint-reconciler-type=none',
      '--kubelet-preferred-address-types=InternalIP',
      '--allow-privileged=true',
      '--profiling=false',
      `--audit-policy-file=${join(dir, 'audit-policy.yaml')}`, `--audit-log-path=${auditLog}`, '--audit-log-format=json',
    ], logs));
    const caFile = join(pki, 'apiserver.crt');
    await waitFor(`kube-apiserver's self-signed certificate ${caFile}`, async () => existsSync(caFile), procs);
    const ca = await readFile(caFile, 'utf8');
    api = new KubeApi({ server: apiServerUrl, token, ca });
    const kube = api;
    await waitFor('kube-apiserver /readyz', async () => (await kube.getText('/readyz')).trim() === 'ok', procs);
    log(`kube-apiserver ${version} ready on ${apiServerUrl} (${Date.now() - t0} ms)`);

    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(kubeconfig, kubeconfigYaml(apiServerUrl, ca, token), { mode: 0o600 });

    await run(binaries.kubectl, [`--kubeconfig=${kubeconfig}`, 'apply', '-f', execCrd], logs, 'kubectl-apply-crds');
    await run(binaries.kubectl, [`--kubeconfig=${kubeconfig}`, 'wait', '--for=condition=Established', '--timeout=60s', 'crd/execs.kwok.x-k8s.io'], logs, 'kubectl-wait-crds');

    procs.push(startProcess('kube-scheduler', binaries.scheduler, [
      `--kubeconfig=${kubeconfig}`, '--leader-elect=false', '--bind-address=127.0.0.1', '--secure-port=0',
    ], logs));
    procs.push(startProcess('kube-controller-manager', binaries.controllerManager, [
      `--kubeconfig=${kubeconfig}`, '--leader-elect=false', '--bind-address=127.0.0.1', '--secure-port=0',
      `--service-account-private-key-file=${join(pki, 'sa.key')}`, `--root-ca-file=${caFile}`,
      '--use-service-account-credentials=false',
    ], logs));

    await writeFile(join(dir, 'kwok.yaml'), kwokConfigYaml());
    const uname = join(execBin, 'uname');
    await writeFile(uname, unameWrapper(realUname(), unameEnv));
    await chmod(uname, 0o755);
    procs.push(startProcess('kwok', binaries.kwok, [
      `--kubeconfig=${kubeconfig}`, `--config=${join(dir, 'kwok.yaml')}`,
      '--manage-all-nodes=false', '--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake',
      '--node-ip=127.0.0.1', `--node-port=${kwokPort}`, `--server-address=127.0.0.1:${kwokPort}`,
      '--cidr=10.244.0.1/16', '--node-lease-duration-seconds=40', '--enable-crds=Exec',
    ], logs, { ...process.env, PATH: `${execBin}:${process.env.PATH ?? '/usr/bin:/bin'}` }));

    controller = new KubeletController({
      api, nodes: opts.nodes, readNodeRuntimeState: opts.readNodeRuntimeState,
      podsDir: join(dir, 'pods'), kubeletVersion: version, log,
    });
    await controller.start();

    const workers = opts.nodes.filter((n) => n.role === 'worker').map((n) => n.name);
    await waitFor(`kwok to initialise nodes ${workers.join(', ')}`, async () => {
      const nodes = await kube.get<{ items: { metadata: { name: string }; status?: { phase?: string; conditions?: { type: string }[] } }[] }>('/api/v1/nodes');
      const done = new Set(nodes.items.filter((n) => n.status?.phase === 'Running' && n.status.conditions?.some((c) => c.type === 'Ready')).map((n) => n.metadata.name));
      return workers.every((w) => done.has(w));
    }, procs);
    // The verification pods' namespace, as deploy/rbac.yaml makes it on a real cluster: kube-apiserver's built-in
    // PodSecurity admission (enabled by default since v1.25) enforces "restricted" there from the namespace's label.
    await kube.create('/api/v1/namespaces', {
      apiVersion: 'v1', kind: 'Namespace',
      metadata: { name: verificationNamespace, labels: { 'pod-security.kubernetes.io/enforce': 'restricted', 'pod-security.kubernetes.io/enforce-version': 'latest' } },
    });
    for (const ns of ['default', verificationNamespace]) {
      await waitFor(`the ${ns}/default ServiceAccount (kube-controller-manager)`, async () =>
        (await kube.find(`/api/v1/namespaces/${ns}/serviceaccounts/default`)) !== undefined, procs);
    }
    log(`control plane ready with ${workers.length} nodes in ${Date.now() - t0} ms`);

    return { kubeconfig, apiServerUrl, kubectlPath: binaries.kubectl, auditLog, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
