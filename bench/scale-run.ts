// One rollout of N cloud-named nodes through the HTTP API on the embedded dev server, measured against Temporal's
// limits: the harness of test/scale-rollout.test.ts (CI size) and bench/scale.ts (up to 10,000 nodes).
//
// What is real: the dev server (`temporal server start-dev`, SQLite in memory), `katafleet worker` in its own
// process, the API (`POST /v1/rollouts`, `GET /v1/rollouts/{id}` page by page), kube-apiserver with N Nodes named
// `worker-node-0001.prod.example.internal` (kwok looks after them), and SSH to real simulated hosts. What is
// light: the N names are served by a few hosts (sim/fleet.ts `aliases`: each name its own loopback address on a
// shared host), so the playbook is one that is safe to share that way: prereq-check (read-only) and node-label
// (through the API server); the node lock and journal on a host are keyed by node name.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { simProfile } from '../sim/inventory';
import { registerKwokNodes } from '../sim/kube-kwok-config';
import { nodeWorkflowId } from '../workflows/node';
import type { RolloutNodeResult, RolloutProgress } from '../workflows/rollout-messages';
import { startTestApi, testToken } from '../test/helpers/api';
import { startTestTemporal } from '../test/helpers/temporal';
import { startWorkerProcess, type WorkerProcess } from '../test/helpers/worker-process';
import { childTimeline, historiesOfAllRuns } from '../test/rollout-helpers';
import { giveProfileTheKubeconfig, kubernetesThroughProfile, useBenchKubectl } from './kube-access';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** Temporal's default limits (server dynamic config) that the measurements are held against. */
export const temporalLimits = {
  /** limit.blobSize.error: one payload list (a workflow input, a result, an activity's input). */
  payloadBytes: 2 * 1024 * 1024,
  /** frontend.searchAttributesSizeOfValueLimit. */
  searchAttributeValueBytes: 2 * 1024,
  /** limit.historyCount.error. */
  historyEvents: 51_200,
  /** limit.historySize.error. */
  historyBytes: 50 * 1024 * 1024,
  /** limit.numPendingChildExecutions.error. */
  pendingChildren: 2_000,
  /** gRPC message size of a query answer and the API's answer built from it. */
  answerBytes: 4 * 1024 * 1024,
} as const;

export interface ScaleOptions {
  nodes: number;
  /** Real simulated hosts serving the names. @default ceil(nodes / 100), at least 2 */
  hosts?: number;
  dir: string;
  log?: (line: string) => void;
  /** Wave size of the rollout. @default "25%" */
  waveSize?: string | number;
  /**
   * How node-label reaches Kubernetes: `kubectl` over SSH on the control plane (one kubectl process per label), or
   * `api`, the API server from the worker with the kubeconfig of the credential profile (bench/kube-access.ts).
   * @default "kubectl"
   */
  kube?: 'api' | 'kubectl';
}

export interface ScaleMeasurement {
  nodes: number;
  hosts: number;
  wallSeconds: number;
  phase: string;
  status: string;
  counts: RolloutProgress['counts'];
  /** Every node, read page by page through the API. */
  allNodes: RolloutNodeResult[];
  pages: number;
  /** Nodes labelled katacontainers.io/kata-runtime=true in the API server afterwards. */
  labelled: number;
  rolloutRuns: number;
  rolloutEventsPerRun: number[];
  largestRolloutHistoryBytes: number;
  largestNodeHistoryEvents: number;
  largestPayload: { bytes: number; where: string };
  largestSearchAttribute: { bytes: number; where: string };
  largestAnswerBytes: number;
  pendingChildrenPeak: number;
  worker: { cpuSeconds: number; peakRssMb: number };
  /** Activity scheduled → started in the node workflows' histories, ms. */
  engineOverheadMs: { median: number; p99: number; samples: number };
}

/** `worker-node-0001.prod.example.internal`, …: names as a cloud provider gives them. */
export function cloudNodeName(index: number, total: number): string {
  return `worker-node-${String(index + 1).padStart(Math.max(4, String(total).length), '0')}.prod.example.internal`;
}

/**
 * The playbook every name can share a host with: read-only prerequisites, then the node label (through the API
 * server). A runtime-class step is not in it: the playbook check requires a containerd-patch step adding its
 * handler, and that patch would change the shared host's containerd config once per name.
 */
export const sharedHostPlaybook = (waveSize: string | number) => `
[playbook]
name = "kata-scale"
description = "prerequisites, node label and RuntimeClass: the steps a host shared by many node names can take"

[rollout]
canary = 1
wave_size = ${JSON.stringify(waveSize)}
failure_budget = 0
pause_between_waves = "0s"

[[steps]]
id = "prereq"
kind = "prereq-check"
cpu_flags = ["vmx", "svm"]
require_kvm = true
modules = []
persist_modules = false

[[steps]]
id = "label"
kind = "node-label"
labels = { "katacontainers.io/kata-runtime" = "true" }
`;

/** The inventory TOML of the control plane and `names`, each at `addressOf(its index)`. */
export function inventoryToml(fleet: Fleet, names: string[], addressOf: (index: number) => string, kube: 'api' | 'kubectl' = 'kubectl'): string {
  const controlPlane = fleet.controlPlane!.host!;
  const kubernetes = kube === 'api' ? [kubernetesThroughProfile] : ['[kubernetes]', 'control_plane = "control-plane"', 'kubeconfig = "/root/.kube/config"', 'kubectl = "/usr/local/bin/kubectl"', ''];
  const lines = ['[ssh]', `profile = "${simProfile}"`, '', ...kubernetes];
  lines.push('[[nodes]]', 'name = "control-plane"', `address = "${controlPlane.address}"`, 'role = "control-plane"', '');
  names.forEach((name, index) => lines.push('[[nodes]]', `name = "${name}"`, `address = "${addressOf(index)}"`, ''));
  return lines.join('\n');
}

/** Bytes of the largest payload list in `events` (what limit.blobSize checks), and the event type holding it. */
export function largestPayloadList(events: HistoryEvent[]): { bytes: number; where: string } {
  let largest = { bytes: 0, where: '' };
  const visit = (value: unknown, where: string, depth: number): void => {
    if (!value || typeof value !== 'object' || depth > 8 || ArrayBuffer.isView(value)) return;
    const payloads = (value as { payloads?: unknown }).payloads;
    if (Array.isArray(payloads)) {
      const bytes = payloads.reduce((sum: number, payload: { data?: Uint8Array | null }) => sum + (payload?.data?.length ?? 0), 0);
      if (bytes > largest.bytes) largest = { bytes, where };
    }
    for (const [key, child] of Object.entries(value)) if (key !== 'payloads') visit(child, where, depth + 1);
  };
  for (const event of events) {
    const attributes = Object.keys(event).find((key) => key.endsWith('EventAttributes') && (event as Record<string, unknown>)[key]);
    visit(event, attributes ?? 'event', 0);
  }
  return largest;
}

/** Encoded size of a history, as the server counts it against limit.historySize. */
export function historyBytes(events: HistoryEvent[]): number {
  return events.reduce((sum, event) => sum + temporal.api.history.v1.HistoryEvent.encode(event).finish().length, 0);
}

const eventMs = (event: HistoryEvent) => Number(event.eventTime?.seconds ?? 0) * 1000 + (event.eventTime?.nanos ?? 0) / 1e6;

/** Activity scheduled → started delays (ms) in a history. */
export function scheduledToStarted(events: HistoryEvent[]): number[] {
  const scheduled = new Map<number, number>();
  const delays: number[] = [];
  for (const event of events) {
    if (event.activityTaskScheduledEventAttributes) scheduled.set(Number(event.eventId), eventMs(event));
    const started = event.activityTaskStartedEventAttributes;
    if (started) {
      const at = scheduled.get(Number(started.scheduledEventId));
      // Only first attempts: a retry's start waits for its backoff, which is not engine overhead.
      if (at !== undefined && (started.attempt ?? 1) <= 1) delays.push(eventMs(event) - at);
    }
  }
  return delays;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** The peak of children started and not yet closed, replayed from the rollout's histories. */
function pendingChildrenPeak(runs: HistoryEvent[][]): number {
  const marks = childTimeline(runs).flatMap((child) => [
    { order: child.initiatedOrder, delta: 1 },
    ...(child.closedOrder === undefined ? [] : [{ order: child.closedOrder, delta: -1 }]),
  ]);
  let open = 0;
  let peak = 0;
  for (const mark of marks.sort((a, b) => a.order - b.order || a.delta - b.delta)) {
    open += mark.delta;
    peak = Math.max(peak, open);
  }
  return peak;
}

/** CPU seconds (user + system) and peak RSS (VmHWM) of a process, from /proc. */
async function processUsage(pid: number): Promise<{ cpuSeconds: number; peakRssMb: number }> {
  const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  const ticks = Number(stat[11]) + Number(stat[12]);
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const hwmKb = Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  return { cpuSeconds: ticks / 100, peakRssMb: Math.round(hwmKb / 1024) };
}

/** Runs `work` on `items`, at most `limit` at once. */
async function inParallel<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]);
    }
  }));
  return results;
}

/** Search attribute values of a workflow, each as its JSON size in bytes. */
async function searchAttributeSizes(client: Client, workflowId: string): Promise<{ bytes: number; where: string }> {
  const description = await client.workflow.getHandle(workflowId).describe();
  let largest = { bytes: 0, where: '' };
  for (const [name, value] of Object.entries(description.searchAttributes)) {
    const bytes = Buffer.byteLength(JSON.stringify(value));
    if (bytes > largest.bytes) largest = { bytes, where: `${name} of ${workflowId}` };
  }
  return largest;
}

/**
 * Starts everything, rolls the shared-host playbook out to `nodes` names through the API, measures, and stops
 * everything it started (also when something fails).
 */
export async function runScaleRollout(options: ScaleOptions): Promise<ScaleMeasurement> {
  const log = options.log ?? (() => undefined);
  const hostCount = options.hosts ?? Math.max(2, Math.ceil(options.nodes / 100));
  const perHost = Math.ceil(options.nodes / hostCount);
  const names = Array.from({ length: options.nodes }, (_, i) => cloudNodeName(i, options.nodes));
  let env: TestWorkflowEnvironment | undefined;
  let fleet: Fleet | undefined;
  let worker: WorkerProcess | undefined;
  let app: FastifyInstance | undefined;
  let starting: Promise<unknown>[] = [];
  try {
    const t0 = Date.now();
    const fleetStarted = startFleet({ nodes: Array.from({ length: hostCount }, (_, i) => ({ name: `host-${i + 1}`, aliases: perHost })), kubernetes: true, dir: join(options.dir, 'fleet') });
    fleetStarted.then((started) => (fleet = started), () => undefined);
    env = await startTestTemporal();
    const kube = options.kube ?? 'kubectl';
    // The worker process takes KATAFLEET_KUBECTL from this environment: set before it starts.
    if (kube === 'api') useBenchKubectl();
    const workerStarted = startWorkerProcess(env.address, join(options.dir, 'worker.log'), 300_000);
    workerStarted.then((started) => (worker = started), () => undefined);
    starting = [fleetStarted, workerStarted];
    [fleet, worker] = await Promise.all([fleetStarted, workerStarted]);
    log(`fleet, dev server and worker up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const hosts = fleet.nodes.filter((node) => node.role === 'worker');
    const addressOf = (index: number) => hosts[index % hostCount].aliases[Math.floor(index / hostCount)];
    const kubectl = join(kubernetesBinaries().binDir, 'kubectl');
    await registerKwokNodes(kubectl, fleet.controlPlane!.kubeconfig, names.map((name, index) => ({ name, address: addressOf(index) })));
    if (kube === 'api') await giveProfileTheKubeconfig(fleet.dir, fleet.controlPlane!.kubeconfig, options.dir);
    let baseUrl: string;
    ({ app, baseUrl } = await startTestApi(env.client, { credentialsFile: join(fleet.dir, 'credentials.toml') }));
    log(`${options.nodes} names on ${hostCount} hosts (${perHost} each), ${options.nodes} kwok Nodes, dev server, worker and API up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const headers = { authorization: `Bearer ${testToken}`, 'content-type': 'application/json' };
    const rolloutId = `scale-${options.nodes}`;
    const started = Date.now();
    const response = await fetch(`${baseUrl}/v1/rollouts`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ playbook_toml: sharedHostPlaybook(options.waveSize ?? '25%'), inventory_toml: inventoryToml(fleet, names, addressOf, kube), request_id: rolloutId }),
    });
    const body = await response.text();
    if (response.status !== 202) throw new Error(`POST /v1/rollouts answered ${response.status}: ${body}`);

    let largestAnswerBytes = 0;
    const get = async (query: string, tries = 60): Promise<RolloutProgress & { status: string }> => {
      let answer: Response;
      try {
        answer = await fetch(`${baseUrl}/v1/rollouts/${rolloutId}${query}`, { headers: { authorization: headers.authorization } });
      } catch (err) {
        // The API closes a request its worker did not answer within its 30 s request timeout: ask again.
        if (tries <= 1) throw err;
        log(`  GET failed (${err instanceof Error ? err.message : String(err)}); asking again`);
        await new Promise((resolve) => setTimeout(resolve, 2_000));
        return get(query, tries - 1);
      }
      const text = await answer.text();
      // A worker too busy to answer the progress query in time (503) is asked again: the rollout goes on meanwhile.
      if (answer.status === 503 && tries > 1) {
        log(`  GET answered 503 (${text.slice(0, 160)}); asking again`);
        await new Promise((resolve) => setTimeout(resolve, 2_000));
        return get(query, tries - 1);
      }
      if (answer.status !== 200) throw new Error(`GET /v1/rollouts/${rolloutId}${query} answered ${answer.status}: ${text}`);
      largestAnswerBytes = Math.max(largestAnswerBytes, Buffer.byteLength(text));
      return JSON.parse(text) as RolloutProgress & { status: string };
    };
    // While the rollout runs, a starved worker may not answer for many minutes (10,000 nodes, waves of 1,000, at load
    // 25: every query for 6 minutes): keep asking (about an hour), the rollout goes on meanwhile.
    const patient = 1_200;
    let progress = await get('?page_size=50', patient);
    let lastLine = '';
    while (progress.status === 'RUNNING') {
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      progress = await get('?page_size=50', patient);
      const line = `${progress.phase}: ${progress.counts.succeeded}/${progress.counts.total} done, ${progress.counts.running} running, ${progress.counts.failed} failed`;
      if (line !== lastLine) log(`  ${((Date.now() - started) / 1000).toFixed(0)} s ${line}`);
      lastLine = line;
    }
    const wallSeconds = (Date.now() - started) / 1000;

    const allNodes: RolloutNodeResult[] = [];
    let pages = 0;
    for (let token: string | undefined = ''; token !== undefined; ) {
      const page = await get(`?page_size=1000${token ? `&page_token=${token}` : ''}`);
      allNodes.push(...page.nodes);
      pages++;
      token = page.nodesPage?.nextPageToken;
    }
    const workerUsage = await processUsage(worker.process.pid!);

    const client = env.client;
    const runs = await historiesOfAllRuns(client, `katafleet-rollout-${rolloutId}`);
    let largestPayload = { bytes: 0, where: '' };
    const consider = (candidate: { bytes: number; where: string }, whose: string) => {
      if (candidate.bytes > largestPayload.bytes) largestPayload = { bytes: candidate.bytes, where: `${candidate.where} in ${whose}` };
    };
    runs.forEach((events, run) => consider(largestPayloadList(events), `rollout run ${run + 1}`));
    const delays: number[] = [];
    let largestNodeHistoryEvents = 0;
    // A halted rollout never started its later nodes: only the nodes it reached have a history to measure.
    const reached = allNodes.filter((node) => node.status !== 'pending' && node.status !== 'skipped').map((node) => node.name);
    await inParallel(reached, 8, async (name) => {
      const events = (await client.workflow.getHandle(nodeWorkflowId(name)).fetchHistory()).events ?? [];
      largestNodeHistoryEvents = Math.max(largestNodeHistoryEvents, events.length);
      consider(largestPayloadList(events), nodeWorkflowId(name));
      delays.push(...scheduledToStarted(events));
    });
    delays.sort((a, b) => a - b);
    let largestSearchAttribute = await searchAttributeSizes(client, `katafleet-rollout-${rolloutId}`);
    for (const name of [reached[0], reached[reached.length - 1]].filter((name) => name !== undefined)) {
      const sizes = await searchAttributeSizes(client, nodeWorkflowId(name));
      if (sizes.bytes > largestSearchAttribute.bytes) largestSearchAttribute = sizes;
    }
    const labelledOut = await new Promise<string>((resolve, reject) => {
      execFile(kubectl, [`--kubeconfig=${fleet!.controlPlane!.kubeconfig}`, 'get', 'nodes', '-l', 'katacontainers.io/kata-runtime=true', '-o', 'name'], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });

    return {
      nodes: options.nodes,
      hosts: hostCount,
      wallSeconds,
      phase: progress.phase,
      status: progress.status,
      counts: progress.counts,
      allNodes,
      pages,
      labelled: labelledOut.split('\n').filter((line) => names.includes(line.replace(/^node\//, ''))).length,
      rolloutRuns: runs.length,
      rolloutEventsPerRun: runs.map((events) => events.length),
      largestRolloutHistoryBytes: Math.max(...runs.map(historyBytes)),
      largestNodeHistoryEvents,
      largestPayload,
      largestSearchAttribute,
      largestAnswerBytes,
      pendingChildrenPeak: pendingChildrenPeak(runs),
      worker: workerUsage,
      engineOverheadMs: { median: percentile(delays, 50), p99: percentile(delays, 99), samples: delays.length },
    };
  } catch (err) {
    // Said before the cleanup: a client call still retrying when the connection closes can end the process first.
    log(`scale run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    throw err;
  } finally {
    // What was still starting when something failed is stopped too, once it is up.
    await Promise.allSettled(starting);
    await app?.close();
    await worker?.stop().catch(() => worker?.kill());
    await Promise.all([fleet?.stop(), env?.teardown()]);
  }
}

/** Each measured figure as a share of its Temporal limit (0.5 = 50 %). */
export function shareOfLimits(m: ScaleMeasurement): Record<string, number> {
  return {
    payload: m.largestPayload.bytes / temporalLimits.payloadBytes,
    searchAttribute: m.largestSearchAttribute.bytes / temporalLimits.searchAttributeValueBytes,
    historyEvents: Math.max(...m.rolloutEventsPerRun, m.largestNodeHistoryEvents) / temporalLimits.historyEvents,
    historyBytes: m.largestRolloutHistoryBytes / temporalLimits.historyBytes,
    pendingChildren: m.pendingChildrenPeak / temporalLimits.pendingChildren,
    answer: m.largestAnswerBytes / temporalLimits.answerBytes,
  };
}
