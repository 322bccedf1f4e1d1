// Shared by the rollout tests (test/rollout-*.test.ts): playbooks cut from kata.toml, inventories of
// part of a simulated fleet, the child-workflow timeline read from a rollout's real history, node checks over SSH.
import type { Client } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import type { Inventory, Playbook } from '../playbooks/schema';
import type { Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';
import { nodeWorkflowId } from '../workflows/node';

/**
 * The kata playbook with only the steps `stepIds` (in kata.toml's order), renamed `name`. Every step
 * is kata.toml's own, parsed and validated by the real loader.
 */
export async function kataSubset(stepIds: string[], name: string): Promise<Playbook> {
  const kata = await loadPlaybook('kata');
  const missing = stepIds.filter((id) => !kata.steps.some((step) => step.id === id));
  if (missing.length > 0) throw new Error(`kata.toml has no step ${missing.join(', ')}`);
  return { ...kata, playbook: { ...kata.playbook, name }, steps: kata.steps.filter((step) => stepIds.includes(step.id)) };
}

/** The fleet's inventory with only the nodes `names`, in that order (the order waves are planned in). */
export async function inventoryOf(fleet: Fleet, names: string[]): Promise<Inventory> {
  const inventory = await loadInventory(fleet.inventoryPath);
  const nodes = names.map((name) => {
    const node = inventory.nodes.find((candidate) => candidate.name === name);
    if (!node) throw new Error(`${fleet.inventoryPath} has no node ${name}`);
    return node;
  });
  const controlPlane = inventory.nodes.filter((node) => node.role === 'control-plane');
  return { ...inventory, nodes: [...nodes, ...controlPlane] };
}

/** Runs a shell command on a node of the fleet through the real ssh client; fails unless it exits 0. */
export async function onNode(fleet: Fleet, name: string, command: string): Promise<string> {
  const node = fleet.nodes.find((candidate) => candidate.name === name);
  if (!node) throw new Error(`no node ${name} in the fleet`);
  const result = await sshRun(fleet, node, command);
  if (result.exitCode !== 0) throw new Error(`${command} on ${name} exited ${result.exitCode}: ${result.stderr}`);
  return result.stdout;
}

export const containerdConfig = '/etc/containerd/config.toml';

/** sha256 of each node's containerd config, by node name. */
export async function configHashes(fleet: Fleet, names: string[]): Promise<Record<string, string>> {
  const entries = await Promise.all(names.map(async (name) => [name, (await onNode(fleet, name, `sha256sum < ${containerdConfig}`)).split(' ')[0]] as const));
  return Object.fromEntries(entries);
}

/** The backups katafleet left next to the node's containerd config, with their sha256. */
export async function configBackups(fleet: Fleet, name: string): Promise<{ path: string; sha256: string }[]> {
  const out = await onNode(fleet, name, `for f in ${containerdConfig}.katafleet-*.bak; do [ -e "$f" ] && printf '%s %s\\n' "$f" "$(sha256sum < "$f" | cut -d' ' -f1)"; done; true`);
  return out.trim() ? out.trim().split('\n').map((line) => ({ path: line.split(' ')[0], sha256: line.split(' ')[1] })) : [];
}

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** The history of every run of a workflow (continue-as-new makes several), oldest run first. */
export async function historiesOfAllRuns(client: Client, workflowId: string): Promise<HistoryEvent[][]> {
  const runs: HistoryEvent[][] = [];
  let runId: string | undefined;
  for (;;) {
    const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    const events = history.events ?? [];
    runs.unshift(events);
    runId = events[0]?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId || undefined;
    if (!runId) return runs;
  }
}

/** One child workflow as the parent's history records it. `order` ranks events across runs. */
export interface ChildRecord {
  workflowId: string;
  run: number;
  initiatedOrder: number;
  closedOrder?: number;
  startedAt?: number;
  closedAt?: number;
  outcome?: 'completed' | 'failed' | 'canceled' | 'terminated' | 'timed-out';
}

const eventMs = (event: HistoryEvent) => Number(event.eventTime?.seconds ?? 0) * 1000 + Math.floor((event.eventTime?.nanos ?? 0) / 1e6);

/** The parent's children in the order it started them, with when each started and closed (from its history). */
export function childTimeline(runs: HistoryEvent[][]): ChildRecord[] {
  const children: ChildRecord[] = [];
  const open = new Map<string, ChildRecord>();
  runs.forEach((events, run) => {
    for (const event of events) {
      const order = run * 1_000_000 + Number(event.eventId);
      const initiated = event.startChildWorkflowExecutionInitiatedEventAttributes;
      if (initiated?.workflowId) {
        const record: ChildRecord = { workflowId: initiated.workflowId, run, initiatedOrder: order };
        children.push(record);
        open.set(record.workflowId, record);
        continue;
      }
      const started = event.childWorkflowExecutionStartedEventAttributes?.workflowExecution?.workflowId;
      if (started) open.get(started)!.startedAt = eventMs(event);
      const closes = [
        ['completed', event.childWorkflowExecutionCompletedEventAttributes],
        ['failed', event.childWorkflowExecutionFailedEventAttributes],
        ['canceled', event.childWorkflowExecutionCanceledEventAttributes],
        ['terminated', event.childWorkflowExecutionTerminatedEventAttributes],
        ['timed-out', event.childWorkflowExecutionTimedOutEventAttributes],
      ] as const;
      for (const [outcome, attributes] of closes) {
        const id = attributes?.workflowExecution?.workflowId;
        if (!id) continue;
        Object.assign(open.get(id)!, { closedOrder: order, closedAt: eventMs(event), outcome });
        open.delete(id);
      }
    }
  });
  return children;
}

/** The node a child workflow id belongs to (`katafleet-node-<name>`). */
export const nodeOf = (workflowId: string) => workflowId.slice(nodeWorkflowId('').length);

/** Whether a nodeWorkflow was ever started for the node (its id is the node's lock). */
export async function nodeWorkflowExists(client: Client, node: string): Promise<boolean> {
  try {
    await client.workflow.getHandle(nodeWorkflowId(node)).describe();
    return true;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/** Polls `probe` every `intervalMs` until it returns a value other than undefined; fails with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
