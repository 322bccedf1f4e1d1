// What the nodeWorkflow tests share: a simulated fleet with its targets, the workflow's input built
// the way the rollout service builds it, a snapshot of everything a rollout may change on a node,
// playbook steps with test-sized timeouts, and reading activity attempts out of a workflow history.
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { KubernetesTarget, NodeTarget, StepRunResult } from '../../activities/node-types';
import { toKubernetesTarget, toNodeTarget } from '../../api/rollout-service';
import { loadInventory, loadPlaybook } from '../../playbooks/load';
import type { Step } from '../../playbooks/schema';
import { startFleet, type Fleet, type FleetOptions, type SimNode } from '../../sim/fleet';
import { nodePaths } from '../../sim/node-files';
import { sshRun } from '../../sim/ssh-run';
import { taskQueue } from '../../worker/connection';
import { nodeWorkflowId, type NodeRolloutInput, type nodeWorkflow } from '../../workflows/node';
import { activityByKind } from '../../workflows/step-activities';
import { historyToJsonText } from './history-json';

export interface NodeFleet {
  fleet: Fleet;
  targets: Record<string, NodeTarget>;
  kubernetes?: KubernetesTarget;
  node(name: string): SimNode;
}

/** A fleet in a fresh temp directory, with the targets the rollout service would build from its inventory. */
export async function startNodeFleet(prefix: string, options: Omit<FleetOptions, 'dir'>): Promise<NodeFleet> {
  const fleet = await startFleet({ ...options, dir: join(await mkdtemp(join(tmpdir(), `kf-${prefix}-`)), 'fleet') });
  const inventory = await loadInventory(fleet.inventoryPath);
  return {
    fleet,
    targets: Object.fromEntries(inventory.nodes.map((node) => [node.name, toNodeTarget(inventory, node)])),
    kubernetes: toKubernetesTarget(inventory),
    node: (name) => {
      const found = fleet.nodes.find((n) => n.name === name);
      if (!found) throw new Error(`no node ${name} in the fleet`);
      return found;
    },
  };
}

/** The kata playbook's steps, optionally only some of them (by id, in playbook order), each edited by `edits[id]`. */
export async function kataSteps(only?: string[], edits: Record<string, Partial<Step>> = {}): Promise<Step[]> {
  const steps = (await loadPlaybook('kata')).steps.filter((step) => !only || only.includes(step.id));
  if (only && steps.length !== only.length) throw new Error(`kata.toml has no step(s) ${only.filter((id) => !steps.some((s) => s.id === id)).join(', ')}`);
  for (const id of Object.keys(edits)) if (!steps.some((s) => s.id === id)) throw new Error(`edit of step ${id}, which is not among ${steps.map((s) => s.id).join(', ')}`);
  return steps.map((step) => ({ ...step, ...edits[step.id] }) as Step);
}

/** nodeWorkflow's input, as rolloutWorkflow gives it to its children. */
export function nodeInput(nodes: NodeFleet, name: string, steps: Step[], extra: Partial<NodeRolloutInput> = {}): NodeRolloutInput {
  return { rolloutId: `test-${name}`, node: nodes.targets[name], kubernetes: nodes.kubernetes, steps, drain: false, ...extra };
}

/** Starts `name`'s nodeWorkflow on katafleet's task queue, with the input {@link nodeInput} builds. */
export function startNodeWorkflow(client: Client, nodes: NodeFleet, name: string, steps: Step[], extra: Partial<NodeRolloutInput>): Promise<WorkflowHandle<typeof nodeWorkflow>> {
  return client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', { taskQueue, workflowId: nodeWorkflowId(name), args: [nodeInput(nodes, name, steps, extra)] });
}

/** Runs `command` on a node as root through OpenSSH; fails on a non-zero exit. */
export async function onNode(nodes: NodeFleet, name: string, command: string): Promise<string> {
  const result = await sshRun(nodes.fleet, nodes.node(name), command, { timeoutMs: 60_000 });
  if (result.exitCode !== 0) throw new Error(`${command} on ${name} exited with ${result.exitCode}: ${result.stderr.trim()}`);
  return result.stdout;
}

/** kubectl on the fleet's control-plane host. */
export async function kubectl(nodes: NodeFleet, args: string): Promise<string> {
  const k = nodes.kubernetes;
  if (!k) throw new Error('this fleet has no Kubernetes');
  return onNode(nodes, 'control-plane', `${k.kubectl} --kubeconfig ${k.kubeconfig} ${args}`);
}

/** Everything a kata rollout may change on a node, in a form `toEqual` compares. */
export interface NodeSnapshot {
  configSha256: string;
  /** Files in /etc/containerd, katafleet's backups aside. */
  containerdFiles: string[];
  /** katafleet's backups in /etc/containerd: file name → sha256. */
  backups: Record<string, string>;
  /** Files in /etc/modules-load.d with their content. */
  modulesLoad: string;
  /** Every package with its version and dpkg status. */
  packages: string;
  containerd: string;
  /** The handlers of the running containerd (`crictl info`). */
  handlers: string[];
  /** The Node's labels and readiness, when the fleet has Kubernetes. */
  labels?: Record<string, string>;
  ready?: string;
}

// One SSH command for the whole node side (parallel logins can hit sshd's MaxStartups), sections split by markers.
const snapshotScript = [
  'sha256sum /etc/containerd/config.toml',
  'ls -A /etc/containerd',
  'cd /etc/containerd && for f in *.katafleet-*.bak; do test -e "$f" && sha256sum "$f"; done; true',
  'head -n 100 /etc/modules-load.d/* 2>/dev/null; true',
  "dpkg-query -W -f='${Package}=${Version} ${db:Status-Abbrev}\\n'",
  'systemctl is-active containerd; true',
  "crictl --runtime-endpoint unix:///run/containerd/containerd.sock info 2>/dev/null || echo '{}'",
].join('; echo @@@; ');

export async function nodeSnapshot(nodes: NodeFleet, name: string): Promise<NodeSnapshot> {
  const [configSha256, files, backups, modulesLoad, packages, containerd, crictl] = (await onNode(nodes, name, snapshotScript)).split('@@@\n');
  const snapshot: NodeSnapshot = {
    configSha256: configSha256.split(/\s+/)[0],
    containerdFiles: files.split('\n').filter((file) => file && !/\.katafleet-.*\.bak$/.test(file)).sort(),
    backups: Object.fromEntries(backups.split('\n').filter(Boolean).map((line) => line.split(/\s+/).reverse())),
    modulesLoad,
    packages,
    containerd: containerd.trim(),
    handlers: Object.keys((JSON.parse(crictl) as { config?: { containerd?: { runtimes?: Record<string, unknown> } } }).config?.containerd?.runtimes ?? {}).sort(),
  };
  if (nodes.kubernetes) {
    const node = JSON.parse(await kubectl(nodes, `get node ${name} -o json`)) as { metadata: { labels: Record<string, string> }; status: { conditions: { type: string; status: string }[] } };
    snapshot.labels = node.metadata.labels;
    snapshot.ready = node.status.conditions.find((c) => c.type === 'Ready')?.status;
  }
  return snapshot;
}

/** One started attempt of an activity, from the workflow history. */
export interface ActivityAttempt {
  /** The activity, or for a step inside a run of steps (runSteps), the activity its step kind has of its own. */
  activityType: string;
  /**
   * Attempt number of the attempt that ended the activity (Temporal records only the last one's start); for a step
   * retried alone after its run of steps, counted with the attempt it had there (StepRequest.attemptsBefore).
   */
  attempt: number;
  /** The failure type of the attempt before it, if it was a retry. */
  lastFailureType?: string;
  result: 'completed' | 'failed' | 'timed-out' | 'running';
  failureType?: string;
  /** The step ran inside a run of steps: the runSteps activity that ran it completed, with this step's outcome. */
  inRun?: boolean;
}

/** The activities of a workflow run, in order, with their final attempt numbers; the steps of a run of steps one by one. */
export async function activityAttempts(handle: WorkflowHandle): Promise<ActivityAttempt[]> {
  return activitiesInHistory(await handle.fetchHistory());
}

/** A payload of the default data converter (JSON), decoded. */
function decoded(payloads: { data?: Uint8Array | null }[] | null | undefined): unknown {
  const data = payloads?.[0]?.data;
  return data ? JSON.parse(Buffer.from(data).toString('utf8')) : undefined;
}

export function activitiesInHistory(history: Awaited<ReturnType<WorkflowHandle['fetchHistory']>>): ActivityAttempt[] {
  const byScheduled = new Map<string, ActivityAttempt>();
  /** The input of each runSteps activity, by its scheduled event, and what it reported. */
  const runs = new Map<string, { steps: Step[]; result?: StepRunResult }>();
  /** Attempts a step had in a run of steps before its activity of its own, by the activity's scheduled event. */
  const attemptsBefore = new Map<string, number>();
  for (const event of history.events ?? []) {
    const scheduled = event.activityTaskScheduledEventAttributes;
    if (scheduled) {
      const type = scheduled.activityType?.name ?? '?';
      const input = decoded(scheduled.input?.payloads) as { steps?: Step[]; attemptsBefore?: number } | undefined;
      byScheduled.set(String(event.eventId), { activityType: type, attempt: 0, result: 'running' });
      attemptsBefore.set(String(event.eventId), input?.attemptsBefore ?? 0);
      if (type === 'runSteps') runs.set(String(event.eventId), { steps: input?.steps ?? [] });
    }
    const started = event.activityTaskStartedEventAttributes;
    if (started) {
      const entry = byScheduled.get(String(started.scheduledEventId))!;
      entry.attempt = (started.attempt ?? 0) + (attemptsBefore.get(String(started.scheduledEventId)) ?? 0);
      entry.lastFailureType = started.lastFailure?.applicationFailureInfo?.type ?? started.lastFailure?.timeoutFailureInfo?.timeoutType?.toString() ?? undefined;
    }
    const completed = event.activityTaskCompletedEventAttributes;
    if (completed) {
      byScheduled.get(String(completed.scheduledEventId))!.result = 'completed';
      const run = runs.get(String(completed.scheduledEventId));
      if (run) run.result = decoded(completed.result?.payloads) as StepRunResult;
    }
    const failed = event.activityTaskFailedEventAttributes;
    if (failed) Object.assign(byScheduled.get(String(failed.scheduledEventId))!, { result: 'failed', failureType: failed.failure?.applicationFailureInfo?.type ?? undefined });
    const timedOut = event.activityTaskTimedOutEventAttributes;
    if (timedOut) byScheduled.get(String(timedOut.scheduledEventId))!.result = 'timed-out';
  }
  return [...byScheduled.entries()].flatMap(([id, activity]) => {
    const run = runs.get(id);
    if (!run?.result) return [activity];
    const { outcomes, failed } = run.result;
    const stepAttempt = (index: number, result: ActivityAttempt['result'], failureType?: string): ActivityAttempt =>
      ({ activityType: activityByKind[run.steps[index].kind], attempt: 1, result, ...(failureType ? { failureType } : {}), inRun: true });
    return [
      ...outcomes.map((_, index) => stepAttempt(index, 'completed')),
      ...(failed && !failed.cancelled ? [stepAttempt(outcomes.length, 'failed', failed.type)] : []),
    ];
  });
}

/**
 * The step a node run is running now, seen from outside: the pending activity, or, for a run of steps (runSteps), the
 * step its last recorded heartbeat names (heartbeats reach Temporal throttled: it may lag behind by seconds).
 */
export async function runningStep(handle: WorkflowHandle): Promise<{ activityType: string; stepId?: string } | undefined> {
  const activity = (await handle.describe().catch(() => undefined))?.raw.pendingActivities?.[0];
  const type = activity?.activityType?.name;
  if (!type) return undefined;
  if (type !== 'runSteps') return { activityType: type };
  const details = decoded(activity.heartbeatDetails?.payloads) as { step: string; kind: Step['kind'] } | undefined;
  return details ? { activityType: activityByKind[details.kind], stepId: details.step } : undefined;
}

/** Polls `probe` every `intervalMs` until it returns a value other than undefined; fails after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Resolves as soon as katafleet's backup of the containerd config appears on the node: containerd-patch is mid-step. */
export async function backupAppears(nodes: NodeFleet, name: string): Promise<void> {
  // The backup is the step's first write; the candidate, its validation and the swap come after it.
  // Watched on the host side of the node's /etc overlay, so whatever follows lands within milliseconds.
  const containerdDir = join(nodePaths(nodes.node(name).dir).etc, 'containerd');
  await waitFor('the backup of the original config', async () => {
    return existsSync(containerdDir) && readdirSync(containerdDir).some((file) => /\.katafleet-.*\.bak$/.test(file)) ? true : undefined;
  }, 60_000, 2);
}

/** `systemctl restart containerd` is running (hanging, with the node's `command-hangs` fault) on the node. */
export async function restartHanging(nodes: NodeFleet, name: string): Promise<true | undefined> {
  const out = await onNode(nodes, name, "pgrep -f '^(/bin/bash |bash )?/usr/local/sbin/systemctl restart containerd' || true");
  return out.trim() ? true : undefined;
}

/**
 * With KATAFLEET_RECORD_HISTORIES set, saves the workflow's history as test/histories/`name`.json for
 * test/replay.test.ts: `1` saves them all, a comma-separated list only those named (a new one, without re-recording
 * the older versions).
 */
export async function keepHistory(handle: WorkflowHandle, name: string): Promise<void> {
  const wanted = process.env.KATAFLEET_RECORD_HISTORIES;
  if (!wanted || (wanted !== '1' && !wanted.split(',').includes(name))) return;
  writeFileSync(join(__dirname, '..', 'histories', `${name}.json`), `${historyToJsonText(await handle.fetchHistory())}\n`);
}
