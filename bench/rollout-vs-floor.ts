// Benchmark (prints figures, asserts nothing): the full `kata` playbook in one wave (no canary, no pause) on fresh
// simulated fleets of N nodes with the Kubernetes control plane, three ways, one after the other:
//   floor      the commands katafleet ran on each node (recorded from the katafleet run), replayed with no engine:
//              one SSH session per node running that node's commands, then one SSH session per node to the control
//              plane running that node's kubectl commands; all nodes at once
//   katafleet  POST /v1/rollouts (canary 0, wave_size 100%, pause 0s) to an in-process API + worker on a fresh
//              Temporal dev server, until the rollout's workflow closes
//   ansible    bench/ansible/kata.yml (forks 50, pipelining, ControlPersist), Debian's `ansible` (installed with
//              apt-get when missing)
// For katafleet it also prints, from the pool's command trace and the node workflows' histories: SSH commands per
// node and per step, kubectl process starts and Kubernetes API requests per node, engine overhead per step, idle time
// inside activities (sleeps and polls), and the CPU and RSS of this process (worker + API + client).
// Kubernetes access (--kube): `api` (the default) gives the worker the control plane's kubeconfig through the
// credential profile, so the steps call the API server from the worker, and the floor sends the same requests from
// this process with no engine; `kubectl` keeps the fleet's own inventory (kubectl over SSH on the control plane).
//   npx tsx bench/rollout-vs-floor.ts [N] [--sim separate] [--kube api|kubectl] [--no-ansible] [--no-floor] [--ansible-only] [--keep-trace FILE] [--keep-histories DIR] [--floor-only TRACE]
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Context } from '@temporalio/activity';
import { Client, Connection } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { buildApi } from '../api/server';
import { expandReleaseUrl, mirroredUrl } from '../activities/steps/release-tarball';
import { loadPlaybook } from '../playbooks/load';
import type { ReleaseTarballStep } from '../playbooks/schema';
import { cmd, flag, SshPool, type CommandEvent } from '../activities/ssh';
import { KubeApi, kubeApiConfigFor, observeKubeApi, type KubeApiEvent } from '../activities/kube-api';
import { runOnWorker } from '../activities/kubectl';
import { kubernetesBinaries } from '../sim/control-plane';
import { giveProfileTheKubeconfig, kubernetesThroughProfile, workerKubeconfig } from './kube-access';
import { idleMsByStep } from './idle-time';
import { readFleetRecord, startFleet, stopFleetInDir, type Fleet, type SimNode } from '../sim/fleet';
import { freeLoopbackPort } from '../sim/addresses';
import { sshRun } from '../sim/ssh-run';
import { startDevServer } from '../worker/dev-server';
import { rolloutWorkflowId } from '../api/rollout-service';
import { installWorkerLogging } from '../worker/logging';
import { createWorker, prepareWorkerProcess } from '../worker/worker';
import { nodeWorkflowId } from '../workflows/node';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** One recorded command, with the activity (step kind) that ran it. */
interface TracedCommand extends CommandEvent {
  activity: string;
  /** The activity execution (one step attempt): idle time is measured inside it. */
  activityId: string;
  workflowId: string;
}

/** One Kubernetes API request the worker sent, with the activity that sent it. */
interface TracedRequest extends KubeApiEvent {
  activity: string;
  workflowId: string;
  /** The activity execution that sent it, and when (performance.now(), the command trace's clock). */
  activityId?: string;
  atMs?: number;
}

interface KatafleetRun {
  wallS: number;
  phase: string;
  trace: TracedCommand[];
  requests: TracedRequest[];
  histories: Map<string, HistoryEvent[]>;
  /** The rollout workflow's own history (all runs of this rollout are one run at this size). */
  rolloutHistory: HistoryEvent[];
  /** Wall-clock ms when the POST was sent and when its answer and the workflow's result arrived. */
  clock: { posted: number; answered: number; resulted: number };
  cpuS: number;
  serverCpuS: number;
  peakRssMiB: number;
  /** Delay of this process's main event loop (where the worker's activities, SSH and the core's callbacks run), ms. */
  loopDelayMs: { p50: number; p90: number; p99: number; max: number };
}

const seconds = (ms: number) => ms / 1000;
const fmt = (n: number, digits = 2) => n.toFixed(digits);

function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function statsMs(values: number[]): string {
  return values.length === 0 ? '-' : `median ${fmt(quantile(values, 0.5), 0)} ms, p90 ${fmt(quantile(values, 0.9), 0)}, p99 ${fmt(quantile(values, 0.99), 0)} (n=${values.length})`;
}

/** user + system CPU seconds of a process, from /proc (0 when it is gone). */
async function processCpuS(pid: number | undefined): Promise<number> {
  if (!pid) return 0;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / 100;
}

/** What the benchmark uses of a fleet, whether this process owns it or `katafleet sim up` does. */
type BenchFleet = Pick<Fleet, 'dir' | 'inventoryPath' | 'knownHostsPath' | 'identityFile' | 'nodes' | 'controlPlane' | 'stop'>;

/** `--sim separate`: each fleet in a process of its own (`katafleet sim up`) instead of this one. */
const simHere = !(process.argv.includes('--sim') && process.argv[process.argv.indexOf('--sim') + 1] === 'separate');

/**
 * A fresh fleet of `nodes` workers and the control plane, in this process (its simulated kubelets' controller shares
 * the worker's event loop: about 4.5 s of CPU in a 20-node run). `--sim separate` runs it in a process of its own, as
 * `katafleet sim up` does; measured in session 7 (N = 20, quiet machine), that made both ways slower (floor 14.0 s,
 * katafleet 19.2 s, against 12.1 s and 16.4 s in this process; the ratio 1.38× against 1.36×), most likely because
 * the detached fleet is a session of its own, and the kernel's autogroup scheduling (on here) gives all its nodes
 * together one share of the CPU.
 */
async function freshFleet(nodes: number, label: string): Promise<BenchFleet> {
  const dir = join(await mkdtemp(join(tmpdir(), `kf-bench-${label}-`)), 'fleet');
  const started = performance.now();
  const fleet = simHere ? await startFleet({ nodes, kubernetes: true, dir }) : await separateFleet(nodes, dir);
  process.stderr.write(`${label}: ${nodes} nodes + control plane up in ${fmt(seconds(performance.now() - started), 1)} s${simHere ? ' (in this process)' : ' (katafleet sim up)'}\n`);
  return fleet;
}

async function separateFleet(nodes: number, dir: string): Promise<BenchFleet> {
  await run(process.execPath, [join(__dirname, '..', 'bin', 'katafleet.js'), 'sim', 'up', '--nodes', String(nodes), '--dir', dir]);
  const record = await readFleetRecord(dir);
  if (!record) throw new Error(`katafleet sim up --dir ${dir}: no fleet.json`);
  const host = record.nodes.find((node) => node.role === 'control-plane');
  return {
    dir: record.dir, inventoryPath: record.inventoryPath, knownHostsPath: record.knownHostsPath, identityFile: record.identityFile, nodes: record.nodes,
    controlPlane: record.kubeconfig ? { kubeconfig: record.kubeconfig, host } : undefined,
    stop: async () => { await stopFleetInDir(dir); },
  };
}

const workerNodes = (fleet: BenchFleet) => fleet.nodes.filter((node) => node.role === 'worker');

const kubectlBinary = () => join(kubernetesBinaries().binDir, 'kubectl');

/** Points the fleet's inventory at the API from the worker: its credential profile gets the kubeconfig. */
async function useApiFromWorker(fleet: BenchFleet, dir: string): Promise<void> {
  await giveProfileTheKubeconfig(fleet.dir, fleet.controlPlane!.kubeconfig, dir);
  const inventory = join(fleet.dir, 'inventory.toml');
  const text = await readFile(inventory, 'utf8');
  const kubernetes = /\[kubernetes\]\n(?:[^[\n][^\n]*\n)*/;
  if (!kubernetes.test(text)) throw new Error(`${inventory} has no [kubernetes] table`);
  await writeFile(inventory, text.replace(kubernetes, `${kubernetesThroughProfile}\n`));
}

/** The activity that runs now, or `(none)`. */
function currentActivity(): { activity: string; activityId: string; workflowId: string } {
  try {
    const info = Context.current().info;
    return { activity: info.activityType, activityId: `${info.activityId}/${info.attempt}`, workflowId: info.workflowExecution?.workflowId ?? '' };
  } catch {
    return { activity: '(none)', activityId: '', workflowId: '' };
  }
}

async function runKatafleet(nodes: number, kube: 'api' | 'kubectl'): Promise<KatafleetRun> {
  const dir = await mkdtemp(join(tmpdir(), 'kf-bench-temporal-'));
  const port = await freeLoopbackPort();
  const server = await startDevServer({ dbFile: join(dir, 'temporal.db'), port, uiPort: await freeLoopbackPort() });
  const fleet = await freshFleet(nodes, 'katafleet');
  if (kube === 'api') await useApiFromWorker(fleet, dir);
  const trace: TracedCommand[] = [];
  const requests: TracedRequest[] = [];
  observeKubeApi((event) => {
    const { activity, activityId, workflowId } = currentActivity();
    requests.push({ ...event, activity, activityId, workflowId, atMs: performance.now() });
  });
  const pool = new SshPool({
    onCommand: (event) => trace.push({ ...event, ...currentActivity() }),
  });
  process.stderr.write(`katafleet: worker log in ${installWorkerLogging({ file: join(dir, 'worker.log'), level: 'warn' })}\n`);
  const target = { address: server.address, namespace: 'default', external: true };
  // As `katafleet worker` does when it starts (process-wide V8 flags; createWorker leaves them alone).
  prepareWorkerProcess();
  const { worker, close } = await createWorker({ target, pool });
  const running = worker.run();
  const connection = await Connection.connect({ address: server.address });
  const client = new Client({ connection });
  const token = 'b'.repeat(40);
  const api = await buildApi({ client, token, inventoriesDir: join(fleet.dir), credentialsFile: join(fleet.dir, 'credentials.toml') });
  await api.listen({ host: '127.0.0.1', port: 0 });
  const baseUrl = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
  try {
    const cpuBefore = process.cpuUsage();
    const serverCpuBefore = await processCpuS(server.process.pid);
    let peakRss = process.memoryUsage().rss;
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 200);
    const started = performance.now();
    const posted = Date.now();
    const response = await fetch(`${baseUrl}/v1/rollouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ playbook: 'kata', inventory: 'inventory', request_id: `bench-${Date.now()}`, options: { canary: 0, wave_size: '100%', pause_between_waves: '0s', failure_budget: nodes } }),
    });
    const body = (await response.json()) as { rollout_id?: string; message?: string };
    if (response.status !== 202 || !body.rollout_id) throw new Error(`POST /v1/rollouts: HTTP ${response.status}: ${body.message}`);
    const answered = Date.now();
    const handle = client.workflow.getHandle(rolloutWorkflowId(body.rollout_id));
    await handle.result().catch(() => undefined);
    const wallS = seconds(performance.now() - started);
    const resulted = Date.now();
    clearInterval(sampler);
    loop.disable();
    const loopDelayMs = { p50: loop.percentile(50) / 1e6, p90: loop.percentile(90) / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 };
    const cpu = process.cpuUsage(cpuBefore);
    const serverCpuS = (await processCpuS(server.process.pid)) - serverCpuBefore;
    const progress = (await (await fetch(`${baseUrl}/v1/rollouts/${body.rollout_id}`, { headers: { authorization: `Bearer ${token}` } })).json()) as { phase: string; nodes: { name: string; status: string; reason?: string }[] };
    const notOk = progress.nodes.filter((node) => node.status !== 'succeeded');
    if (notOk.length > 0) process.stderr.write(`katafleet: ${notOk.length} nodes did not succeed: ${notOk.map((n) => `${n.name} ${n.status} ${n.reason ?? ''}`).join(', ')}\n`);
    const histories = new Map<string, HistoryEvent[]>();
    for (const node of workerNodes(fleet)) {
      histories.set(node.name, (await client.workflow.getHandle(nodeWorkflowId(node.name)).fetchHistory()).events ?? []);
    }
    const rolloutHistory = (await handle.fetchHistory()).events ?? [];
    return { wallS, phase: progress.phase, trace, requests, histories, rolloutHistory, clock: { posted, answered, resulted }, cpuS: (cpu.user + cpu.system) / 1e6, serverCpuS, peakRssMiB: peakRss / 2 ** 20, loopDelayMs };
  } finally {
    observeKubeApi(undefined);
    await api.close();
    worker.shutdown();
    await running.catch(() => undefined);
    await close();
    await connection.close();
    await fleet.stop();
    await server.stop();
  }
}

/** A command as one line of a bash script, its stdin (base64) piped in; failures do not stop the script. */
function scriptLine(command: CommandEvent): string {
  const stdin = command.stdin === undefined ? '</dev/null' : `< <(printf %s '${Buffer.from(command.stdin).toString('base64')}' | base64 -d)`;
  // A subshell: the commands `exec` their timeout(1) wrapper.
  return `(\n${command.text}\n) ${stdin} >/dev/null 2>&1 || failed=$((failed+1))`;
}

function script(commands: CommandEvent[]): string {
  return ['failed=0', ...commands.map(scriptLine), 'echo "$failed"'].join('\n');
}

const isKubectl = (command: CommandEvent) => /\bkubectl\b/.test(command.text);

/** A pod or a Node as far as a wait reads it. */
type WaitedObject = { status?: { phase?: string; conditions?: { type: string; status: string }[] } } | undefined;

/**
 * The objects a GET of which katafleet waits on (polls, or watches), and what it waits for: a pod that left Pending
 * (it runs, or it ended), a Node that is Ready.
 */
const waitedKinds: { path: RegExp; done(object: WaitedObject): boolean }[] = [
  { path: /\/pods\/[^/]+$/, done: (pod) => pod?.status?.phase !== undefined && pod.status.phase !== 'Pending' },
  { path: /^\/api\/v1\/nodes\/[^/]+$/, done: (node) => node?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false },
];

const waitedKind = (path: string) => waitedKinds.find((kind) => kind.path.test(path));

/** Whether a GET answer shows what a poll of it waits for; anything not waited on (a RuntimeClass, a 404) counts as done: it was read. */
function pollDone(path: string, body: unknown): boolean {
  return waitedKind(path)?.done(body as WaitedObject) ?? true;
}

/**
 * Sends the recorded requests one after the other with no engine; how many failed. A GET of a pod or a Node (and
 * the same GET recorded again right after it: a poll) is one wait here: GET every 50 ms until the answer shows what
 * katafleet waited for (at most 120 s; 10 s for one that stays missing), so the floor, like katafleet, execs in a pod
 * that runs and reads a Node that is Ready. (A blind replay of the
 * recorded polls, as sessions 4 and 5 measured, does not wait for the cluster: its exec then fails on a pod that is
 * still Pending, and its floor is a job not done.)
 */
async function replayRequests(api: KubeApi, requests: TracedRequest[]): Promise<number> {
  let failed = 0;
  for (let index = 0; index < requests.length; index++) {
    const request = requests[index];
    try {
      if (request.exec) {
        const [, namespace, pod] = /\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec/.exec(request.path) ?? [];
        await api.exec(decodeURIComponent(namespace), decodeURIComponent(pod), request.container ?? '', request.exec);
      } else if (request.method === 'GET' && /[?&]watch=1(&|$)/.test(request.path)) {
        // katafleet's watch of its verification pod: the same watch, until the pod is what it waited for.
        const url = new URL(request.path, 'http://x');
        const name = /^metadata\.name=(.+)$/.exec(url.searchParams.get('fieldSelector') ?? '')?.[1] ?? '';
        const watched = await api.watchOne(url.pathname, name, (object) => pollDone(`${url.pathname}/${name}`, object), { timeoutMs: 120_000 });
        if (!watched.done) {
          failed += 1;
          process.stderr.write(`floor: the watch of ${url.pathname}/${name} ended before it was done\n`);
        }
      } else if (request.method === 'GET' && waitedKind(request.path)) {
        while (requests[index + 1]?.method === 'GET' && requests[index + 1].path === request.path && !requests[index + 1].exec) index++;
        const waitStarted = performance.now();
        const until = waitStarted + 120_000;
        let missingSince: number | undefined;
        for (;;) {
          const response = await api.request(request.method, request.path, { allow: [404] });
          if (pollDone(request.path, response.body)) {
            if (performance.now() - waitStarted > 5_000) process.stderr.write(`floor: waited ${fmt(seconds(performance.now() - waitStarted), 1)} s for ${request.path}\n`);
            break;
          }
          // An object still missing after 10 s was not created (its POST failed): nothing to wait for.
          missingSince = response.status === 404 ? (missingSince ?? performance.now()) : undefined;
          if (performance.now() > until || (missingSince !== undefined && performance.now() - missingSince > 10_000)) {
            process.stderr.write(`floor: gave up waiting on ${request.path}: HTTP ${response.status}, ${JSON.stringify((response.body as { status?: unknown } | undefined)?.status ?? null).slice(0, 300)}\n`);
            failed += 1;
            break;
          }
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      } else {
        const response = await api.request(request.method, request.path, {
          body: request.body === undefined ? undefined : JSON.parse(request.body), contentType: request.contentType, allow: [...Array(300).keys()].map((n) => n + 300),
        });
        // A GET that finds nothing (404) is an answer katafleet read too (the RuntimeClass before it creates it).
        if (response.status >= 300 && !(request.method === 'GET' && response.status === 404)) {
          failed += 1;
          process.stderr.write(`floor: ${request.method} ${request.path}: HTTP ${response.status} ${JSON.stringify(response.body ?? null).slice(0, 300)}\n`);
        }
      }
    } catch (err) {
      failed += 1;
      process.stderr.write(`floor: ${request.method} ${request.exec ? `exec ${request.exec.join(' ')}` : request.path}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}\n`);
    }
  }
  return failed;
}

/** A trace as --keep-trace writes it (stdin in base64), for --floor-only. */
interface SavedTrace {
  commands: (Omit<TracedCommand, 'stdin'> & { stdin?: string })[];
  requests: TracedRequest[];
}

/** What the floor measured. */
interface Floor {
  wallS: number;
  /** Replayed SSH commands that exited non-zero (reads of absent files and polls do in katafleet's run too). */
  failedCommands: number;
  /** Kubernetes requests that failed, or waits that did not end. */
  failedRequests: number;
}

/**
 * The floor: each node's recorded commands in one SSH session, then its kubectl commands on the control plane, or
 * its Kubernetes API requests from this process (one after the other, as the node's steps sent them).
 */
async function runFloor(nodes: number, trace: TracedCommand[], requests: TracedRequest[]): Promise<Floor> {
  const fleet = await freshFleet(nodes, 'floor');
  try {
    const controlPlane = fleet.controlPlane?.host;
    if (!controlPlane) throw new Error('the fleet has no control-plane host');
    let api: KubeApi | undefined;
    if (requests.length > 0) {
      const kubeconfig = await workerKubeconfig(fleet.controlPlane!.kubeconfig, await mkdtemp(join(tmpdir(), 'kf-bench-floor-')));
      const config = await kubeApiConfigFor(kubeconfig, async () => (await runOnWorker(cmd(kubectlBinary(), [flag('--kubeconfig'), kubeconfig, 'config', 'view', flag('--raw'), flag('--minify'), flag('--flatten'), flag('-o'), 'json']))).stdout);
      if ('kubectlOnly' in config) throw new Error(`the fleet's kubeconfig needs kubectl: ${config.kubectlOnly}`);
      api = new KubeApi(config);
    }
    let failedCommands = 0;
    let failedRequests = 0;
    const replay = async (host: SimNode, commands: CommandEvent[]) => {
      if (commands.length === 0) return;
      const result = await sshRun(fleet, host, 'bash -s', { input: script(commands), timeoutMs: 600_000 });
      failedCommands += Number(result.stdout.trim().split('\n').pop() ?? 0) || 0;
    };
    const started = performance.now();
    // The rollout's own cluster step first (the RuntimeClass, once), as katafleet does before any node starts: without
    // it the verification pods are refused at creation, and the floor would not do the job.
    const nodeRuns = new Set(workerNodes(fleet).map((node) => nodeWorkflowId(node.name)));
    await replay(controlPlane, trace.filter((command) => command.workflowId !== '' && !nodeRuns.has(command.workflowId) && isKubectl(command)));
    if (api) failedRequests += await replayRequests(api, requests.filter((request) => request.workflowId !== '' && !nodeRuns.has(request.workflowId)));
    await Promise.all(workerNodes(fleet).map(async (node) => {
      const own = trace.filter((command) => command.workflowId === nodeWorkflowId(node.name));
      await replay(node, own.filter((command) => command.node === node.name));
      await replay(controlPlane, own.filter((command) => command.node !== node.name && isKubectl(command)));
      if (api) failedRequests += await replayRequests(api, requests.filter((request) => request.workflowId === nodeWorkflowId(node.name)));
    }));
    return { wallS: seconds(performance.now() - started), failedCommands, failedRequests };
  } finally {
    await fleet.stop();
  }
}

async function ensureAnsible(): Promise<void> {
  if (existsSync('/usr/bin/ansible-playbook')) return;
  process.stderr.write('ansible: not installed; apt-get install -y ansible ...\n');
  await run('apt-get', ['install', '-y', 'ansible'], { DEBIAN_FRONTEND: 'noninteractive' });
}

function run(file: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(output) : reject(new Error(`${file} exited ${code}:\n${output.slice(-4000)}`))));
  });
}

/** kata.toml's release for the Ansible playbook (-e): version, the URL as the worker would fetch it (the fleet's mirror), the pin. */
async function kataReleaseVars(cache: string): Promise<string[]> {
  const install = (await loadPlaybook('kata')).steps.find((step): step is ReleaseTarballStep => step.kind === 'release-tarball');
  if (!install?.version || !install.sha256?.amd64) throw new Error('playbooks/kata.toml has no release-tarball step with a version and an amd64 sha256');
  const vars = { kata_version: install.version, kata_url: mirroredUrl(expandReleaseUrl(install.url, install.version, 'amd64')), kata_sha256: install.sha256.amd64, kata_cache: cache };
  return ['-e', JSON.stringify(vars)];
}

async function runAnsible(nodes: number): Promise<{ wallS: number; ok: boolean }> {
  await ensureAnsible();
  const fleet = await freshFleet(nodes, 'ansible');
  const work = await mkdtemp(join(tmpdir(), 'kf-ans-'));
  try {
    const controlPlane = fleet.controlPlane?.host;
    if (!controlPlane) throw new Error('the fleet has no control-plane host');
    const hostLine = (node: SimNode) => `${node.name} ansible_host=${node.address} ansible_port=${node.port}`;
    await writeFile(join(work, 'hosts.ini'), [
      '[nodes]', ...workerNodes(fleet).map(hostLine), '', '[control]', hostLine(controlPlane), '',
      '[all:vars]', 'ansible_user=root', 'ansible_python_interpreter=/usr/bin/python3',
      `ansible_ssh_private_key_file=${fleet.identityFile}`, '',
    ].join('\n'));
    const env = {
      ANSIBLE_CONFIG: join(__dirname, 'ansible', 'ansible.cfg'),
      ANSIBLE_SSH_ARGS: `-F /dev/null -o UserKnownHostsFile=${fleet.knownHostsPath} -o StrictHostKeyChecking=yes -o KexAlgorithms=curve25519-sha256 -o ControlMaster=auto -o ControlPersist=120s`,
      ANSIBLE_SSH_CONTROL_PATH_DIR: join(work, 'cp'),
      ANSIBLE_LOCAL_TEMP: join(work, 'tmp'),
    };
    const started = performance.now();
    let ok = true;
    try {
      await run('ansible-playbook', ['-i', join(work, 'hosts.ini'), ...(await kataReleaseVars(work)), join(__dirname, 'ansible', 'kata.yml')], env);
    } catch (err) {
      ok = false;
      process.stderr.write(`ansible: ${(err as Error).message}\n`);
    }
    return { wallS: seconds(performance.now() - started), ok };
  } finally {
    await fleet.stop();
  }
}

/** Engine overhead in one node workflow's history: scheduled → started, and completed → next scheduled. */
interface Gaps {
  queueMs: number[];
  betweenMs: number[];
  byStep: Map<string, { queueMs: number[]; betweenMs: number[] }>;
  /** The workflow task that scheduled the next activity: completed → task scheduled, scheduled → started (on the worker), started → completed. */
  taskScheduleMs: number[];
  taskQueueMs: number[];
  taskRunMs: number[];
}

/** An event's time, wall-clock ms. */
const time = (event: HistoryEvent) => Number(event.eventTime?.seconds ?? 0) * 1000 + Math.floor((event.eventTime?.nanos ?? 0) / 1e6);

/**
 * Where the wall time went, from the histories and this process's clock: the POST, the rollout's start, its children's
 * starts, each node workflow's start → first activity, its activities (running, and the gaps between them), its last
 * activity → close, the last node's close → the rollout's close → the result here. One line per phase, in ms.
 */
function timeline(run: KatafleetRun): string[] {
  const first = (events: HistoryEvent[], has: (event: HistoryEvent) => unknown) => events.find((event) => has(event));
  const last = (events: HistoryEvent[], has: (event: HistoryEvent) => unknown) => [...events].reverse().find((event) => has(event));
  const rollout = run.rolloutHistory;
  const at = (event: HistoryEvent | undefined) => (event ? time(event) : NaN);
  const rolloutStarted = at(rollout[0]);
  const childStarts = rollout.filter((event) => event.childWorkflowExecutionStartedEventAttributes).map(time);
  const childEnds = rollout.filter((event) => event.childWorkflowExecutionCompletedEventAttributes || event.childWorkflowExecutionFailedEventAttributes).map(time);
  const rolloutClosed = at(last(rollout, (event) => event.workflowExecutionCompletedEventAttributes || event.workflowExecutionFailedEventAttributes));
  const nodes = [...run.histories.values()].filter((events) => events.length > 0).map((events) => {
    const started = at(events[0]);
    const closed = at(last(events, (event) => event.workflowExecutionCompletedEventAttributes || event.workflowExecutionFailedEventAttributes));
    const firstScheduled = at(first(events, (event) => event.activityTaskScheduledEventAttributes));
    const lastDone = at(last(events, (event) => event.activityTaskCompletedEventAttributes || event.activityTaskFailedEventAttributes));
    const startedById = new Map<number, number>();
    let running = 0;
    for (const event of events) {
      const started = event.activityTaskStartedEventAttributes;
      if (started) startedById.set(Number(started.scheduledEventId), time(event));
      const done = event.activityTaskCompletedEventAttributes ?? event.activityTaskFailedEventAttributes;
      if (done) running += time(event) - (startedById.get(Number(done.scheduledEventId)) ?? time(event));
    }
    return { total: closed - started, toFirst: firstScheduled - started, running, between: lastDone - firstScheduled - running, toClose: closed - lastDone, started, closed };
  });
  const line = (label: string, values: number[]) => `  ${label.padEnd(58)} ${statsMs(values.filter(Number.isFinite))}`;
  return [
    'timeline (wall clock, from the histories):',
    `  POST sent → answered ${fmt(run.clock.answered - run.clock.posted, 0)} ms; → rollout workflow started ${fmt(rolloutStarted - run.clock.posted, 0)} ms; → first node workflow started ${fmt(Math.min(...childStarts) - run.clock.posted, 0)} ms, last ${fmt(Math.max(...childStarts) - run.clock.posted, 0)} ms`,
    line('node workflow: started → closed', nodes.map((n) => n.total)),
    line('  started → first activity scheduled', nodes.map((n) => n.toFirst)),
    line('  activities running (started → completed, summed)', nodes.map((n) => n.running)),
    line('  between activities (summed)', nodes.map((n) => n.between)),
    line('  last activity done → node workflow closed', nodes.map((n) => n.toClose)),
    `  last node workflow closed → rollout closed ${fmt(rolloutClosed - Math.max(...nodes.map((n) => n.closed)), 0)} ms (its children's completions recorded up to ${fmt(Math.max(...childEnds) - Math.max(...nodes.map((n) => n.closed)), 0)} ms after); → result here ${fmt(run.clock.resulted - rolloutClosed, 0)} ms`,
    `  POST sent → result here ${fmt(run.clock.resulted - run.clock.posted, 0)} ms`,
  ];
}

function engineGaps(events: HistoryEvent[]): Gaps {
  const scheduled = new Map<number, { at: number; type: string }>();
  const queueMs: number[] = [];
  const betweenMs: number[] = [];
  const byStep = new Map<string, { queueMs: number[]; betweenMs: number[] }>();
  const step = (type: string) => byStep.get(type) ?? byStep.set(type, { queueMs: [], betweenMs: [] }).get(type)!;
  let lastCompleted: number | undefined;
  const taskScheduleMs: number[] = [];
  const taskQueueMs: number[] = [];
  const taskRunMs: number[] = [];
  let task: { scheduled?: number; started?: number } = {};
  for (const event of events) {
    if (event.workflowTaskScheduledEventAttributes) task = { scheduled: time(event) };
    if (event.workflowTaskStartedEventAttributes) task.started = time(event);
    if (event.workflowTaskCompletedEventAttributes && lastCompleted !== undefined && task.scheduled !== undefined && task.started !== undefined && task.scheduled >= lastCompleted) {
      taskScheduleMs.push(task.scheduled - lastCompleted);
      taskQueueMs.push(task.started - task.scheduled);
      taskRunMs.push(time(event) - task.started);
    }
    const attrs = event.activityTaskScheduledEventAttributes;
    if (attrs) {
      const type = attrs.activityType?.name ?? '?';
      scheduled.set(Number(event.eventId), { at: time(event), type });
      if (lastCompleted !== undefined) {
        betweenMs.push(time(event) - lastCompleted);
        step(type).betweenMs.push(time(event) - lastCompleted);
      }
    }
    const startedAttrs = event.activityTaskStartedEventAttributes;
    if (startedAttrs) {
      const source = scheduled.get(Number(startedAttrs.scheduledEventId));
      if (source) {
        queueMs.push(time(event) - source.at);
        step(source.type).queueMs.push(time(event) - source.at);
      }
    }
    if (event.activityTaskCompletedEventAttributes || event.activityTaskFailedEventAttributes) lastCompleted = time(event);
  }
  return { queueMs, betweenMs, byStep, taskScheduleMs, taskQueueMs, taskRunMs };
}

function report(nodes: number, katafleet: KatafleetRun, floor: Floor | undefined, ansible: { wallS: number; ok: boolean } | undefined): void {
  const out: string[] = [];
  const base = floor?.wallS;
  const ratio = (wallS: number) => (base ? `${fmt(wallS / base)}×` : '-');
  out.push(`## ${nodes} nodes, kata.toml in one wave (canary 0, wave 100%, pause 0s)`, '');
  out.push('| how | wall time | relative to the floor |', '|---|---|---|');
  if (floor) out.push(`| floor: recorded commands, one SSH session per node, no engine | ${fmt(floor.wallS, 1)} s | 1.00× |`);
  out.push(`| katafleet through the API (${katafleet.phase}) | ${fmt(katafleet.wallS, 1)} s | ${ratio(katafleet.wallS)} |`);
  if (ansible) out.push(`| Ansible (forks 50, pipelining, ControlPersist)${ansible.ok ? '' : ' FAILED'} | ${fmt(ansible.wallS, 1)} s | ${ratio(ansible.wallS)} |`);
  if (floor) {
    const recorded = katafleet.trace.filter((command) => command.exitCode !== 0).length;
    out.push('', `(floor: ${floor.failedCommands} replayed SSH commands exited non-zero, against ${recorded} in katafleet's run: reads of absent files, polls; ${floor.failedRequests} Kubernetes requests failed)`);
  }
  out.push('');

  const perNode = (filter: (c: TracedCommand) => boolean) => katafleet.trace.filter(filter).length / nodes;
  out.push(`katafleet SSH commands (= round trips: one channel and exec each) per node: ${fmt(perNode(() => true), 1)}; kubectl process starts per node: ${fmt(perNode(isKubectl), 1)}; Kubernetes API requests from the worker per node: ${fmt(katafleet.requests.length / nodes, 1)}`);
  const gaps = [...katafleet.histories.values()].map(engineGaps);
  const allQueue = gaps.flatMap((g) => g.queueMs);
  const allBetween = gaps.flatMap((g) => g.betweenMs);
  out.push(`engine: activity scheduled → started: ${statsMs(allQueue)}`);
  out.push(`engine: activity completed → next activity scheduled: ${statsMs(allBetween)}`);
  out.push(`  of which: completed → workflow task scheduled ${statsMs(gaps.flatMap((g) => g.taskScheduleMs))}`);
  out.push(`            workflow task scheduled → started ${statsMs(gaps.flatMap((g) => g.taskQueueMs))}`);
  out.push(`            workflow task started → completed ${statsMs(gaps.flatMap((g) => g.taskRunMs))}`);
  out.push(...timeline(katafleet));
  out.push('');
  out.push('| step (activity) | commands/node | kubectl/node | API requests/node | time in commands/node | idle in activity/node (sleeps, polls) | scheduled→started median | completed→next scheduled median |', '|---|---|---|---|---|---|---|---|');
  const activities = [...new Set([...katafleet.trace.map((c) => c.activity), ...katafleet.requests.map((r) => r.activity)])];
  let idleTotal = 0;
  const idleByStep = idleMsByStep(katafleet.trace, katafleet.requests);
  for (const activity of activities) {
    const commands = katafleet.trace.filter((c) => c.activity === activity);
    const busyMs = commands.reduce((sum, c) => sum + (c.endedMs - c.startedMs), 0);
    const idleMs = idleByStep.get(activity) ?? 0;
    idleTotal += idleMs;
    const queue = gaps.flatMap((g) => g.byStep.get(activity)?.queueMs ?? []);
    const between = gaps.flatMap((g) => g.byStep.get(activity)?.betweenMs ?? []);
    out.push(`| ${activity} | ${fmt(commands.length / nodes, 1)} | ${fmt(commands.filter(isKubectl).length / nodes, 1)} | ${fmt(katafleet.requests.filter((r) => r.activity === activity).length / nodes, 1)} | ${fmt(busyMs / nodes / 1000)} s | ${fmt(idleMs / nodes / 1000)} s | ${queue.length ? `${fmt(quantile(queue, 0.5), 0)} ms` : '-'} | ${between.length ? `${fmt(quantile(between, 0.5), 0)} ms` : '-'} |`);
  }
  out.push('');
  out.push(`idle inside activities (fixed sleeps, polls, local work; not waits on the Kubernetes API): ${fmt(idleTotal / nodes / 1000)} s per node`);
  out.push(`this process (worker + API + client): CPU ${fmt(katafleet.cpuS, 1)} s over ${fmt(katafleet.wallS, 1)} s wall (${fmt((100 * katafleet.cpuS) / katafleet.wallS, 0)} % of one core), peak RSS ${fmt(katafleet.peakRssMiB, 0)} MiB; Temporal dev server CPU ${fmt(katafleet.serverCpuS, 1)} s`);
  const loop = katafleet.loopDelayMs;
  out.push(`this process's main event loop delay (activities, SSH, the worker's core callbacks): p50 ${fmt(loop.p50, 0)} ms, p90 ${fmt(loop.p90, 0)}, p99 ${fmt(loop.p99, 0)}, max ${fmt(loop.max, 0)}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const nodes = Number(args.find((arg) => /^\d+$/.test(arg)) ?? 20);
  const traceFile = args.includes('--keep-trace') ? args[args.indexOf('--keep-trace') + 1] : undefined;
  if (args.includes('--ansible-only')) {
    const ansible = await runAnsible(nodes);
    process.stdout.write(`Ansible, ${nodes} nodes: ${fmt(ansible.wallS, 1)} s${ansible.ok ? '' : ' (FAILED)'}\n`);
    return;
  }
  if (args.includes('--floor-only')) {
    // A trace of --keep-trace: { commands, requests } (or, from before the requests were kept, the commands alone).
    const saved = JSON.parse(await readFile(args[args.indexOf('--floor-only') + 1], 'utf8')) as SavedTrace | SavedTrace['commands'];
    const { commands, requests } = Array.isArray(saved) ? { commands: saved, requests: [] } : saved;
    const floor = await runFloor(nodes, commands.map((c) => ({ ...c, stdin: c.stdin === undefined ? undefined : Buffer.from(c.stdin, 'base64') })), requests);
    process.stdout.write(`floor, ${nodes} nodes: ${fmt(floor.wallS, 1)} s (${floor.failedCommands} commands exited non-zero, ${floor.failedRequests} requests failed)\n`);
    return;
  }
  const kube = args.includes('--kube') ? args[args.indexOf('--kube') + 1] : 'api';
  if (kube !== 'api' && kube !== 'kubectl') throw new Error(`--kube ${kube}: expected api or kubectl`);
  const katafleet = await runKatafleet(nodes, kube);
  const historiesDir = args.includes('--keep-histories') ? args[args.indexOf('--keep-histories') + 1] : undefined;
  if (historiesDir) {
    await mkdir(historiesDir, { recursive: true });
    await writeFile(join(historiesDir, 'rollout.json'), JSON.stringify(katafleet.rolloutHistory));
    for (const [node, events] of katafleet.histories) await writeFile(join(historiesDir, `node-${node}.json`), JSON.stringify(events));
  }
  if (traceFile) {
    const saved: SavedTrace = { commands: katafleet.trace.map((c) => ({ ...c, stdin: c.stdin === undefined ? undefined : Buffer.from(c.stdin).toString('base64') })), requests: katafleet.requests };
    await writeFile(traceFile, JSON.stringify(saved));
  }
  const floor = args.includes('--no-floor') ? undefined : await runFloor(nodes, katafleet.trace, katafleet.requests);
  const ansible = args.includes('--no-ansible') ? undefined : await runAnsible(nodes);
  report(nodes, katafleet, floor, ansible);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
