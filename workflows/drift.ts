import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  ActivityFailure,
  ChildWorkflowFailure,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  defineQuery,
} from '@temporalio/workflow';
import type { createDriftActivities, NodeDriftCheck } from '../activities/drift-check';
import type { DriftCheck, KubernetesTarget, NodeTarget } from '../activities/node-types';
import type { Step } from '../playbooks/schema';
import { nodeWorkflow, nodeWorkflowId } from './node';
import { searchAttributes } from './search-attributes';

const { checkDrift } = proxyActivities<ReturnType<typeof createDriftActivities>>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '30s',
  // An unreachable node is a finding, not a reason to wait: the check reports it instead of failing.
  retry: { maximumAttempts: 2, initialInterval: '2s' },
});

/** Input of {@link driftWorkflow}: the playbook's desired state and the nodes to hold to it. */
export interface DriftInput {
  playbook: { name: string; file: string; sha256: string };
  steps: Step[];
  drain: boolean;
  nodes: NodeTarget[];
  kubernetes?: KubernetesTarget;
  /** Only report; start no repair. */
  reportOnly: boolean;
  /** Nodes checked at once. @default 10 */
  parallelism?: number;
}

/**
 * `check-failed`: the read-only check itself failed (e.g. the API server did not answer); the other nodes are
 * still reported. `conflict`: the node's desired state (desired.json, written by its last successful rollout)
 * names another playbook or version than this drift run's, an abort rolled it back, or a repair would
 * downgrade a package: reported, never repaired. `needs-attention`: the node is quarantined; nothing is done.
 */
export type DriftOutcome = 'in-sync' | 'drifted' | 'repaired' | 'repair-failed' | 'busy' | 'unreachable' | 'check-failed' | 'conflict' | 'needs-attention';

/** Ids of the changes made to driftWorkflow since histories were first kept (main at 0c4c69f). */
export const driftPatches = {
  /** Repair only back to the node's recorded desired state; skip quarantined nodes; no downgrade. */
  desiredState: 'drift-desired-state',
  /** KatafleetDrift holds the outcomes and their counts (bounded), not one entry per node. */
  boundedAttributes: 'drift-bounded-attributes',
} as const;

/** One node in a {@link DriftReport}. */
export interface DriftNodeResult {
  node: string;
  outcome: DriftOutcome;
  /** What drifted (for drifted, repaired and repair-failed nodes). */
  drifted: string[];
  detail?: string;
}

export interface DriftReport {
  playbook: string;
  reportOnly: boolean;
  phase: 'checking' | 'repairing' | 'done';
  nodes: DriftNodeResult[];
}

export const driftReportQuery = defineQuery<DriftReport>('driftReport');

/**
 * Checks every node against the playbook's desired state without changing anything, then (unless
 * report-only) starts a nodeWorkflow for each drifted node. A node whose lock is held (a rollout is
 * working on it) is skipped this round and reported as busy: drift repair never races a rollout.
 */
export async function driftWorkflow(input: DriftInput): Promise<DriftReport> {
  const followsDesiredState = patched(driftPatches.desiredState);
  const bounded = patched(driftPatches.boundedAttributes);
  const report: DriftReport = { playbook: input.playbook.name, reportOnly: input.reportOnly, phase: 'checking', nodes: [] };
  setHandler(driftReportQuery, () => report);
  const show = () => {
    upsertSearchAttributes([
      { key: searchAttributes.phase, value: report.phase },
      { key: searchAttributes.playbook, value: input.playbook.name },
      ...(bounded
        ? [
            { key: searchAttributes.drift, value: driftAttributeValues(report.nodes) },
            { key: searchAttributes.nodesTotal, value: input.nodes.length },
            { key: searchAttributes.nodesDone, value: report.nodes.filter((result) => result.outcome === 'in-sync' || result.outcome === 'repaired').length },
            { key: searchAttributes.nodesFailed, value: report.nodes.filter((result) => !['in-sync', 'repaired', 'drifted'].includes(result.outcome)).length },
          ]
        : [{ key: searchAttributes.drift, value: report.nodes.map((result) => `${result.outcome}:${result.node}`) }]),
    ]);
    setCurrentDetails(formatDriftDetails(report));
  };
  show();

  const parallelism = input.parallelism ?? 10;
  report.nodes = await inBatches(input.nodes, parallelism, async (node) => {
    try {
      const check = await checkDrift({ node, kubernetes: input.kubernetes, steps: input.steps });
      return followsDesiredState ? toResultFollowingDesiredState(check, input.playbook) : toResult(check);
    } catch (err) {
      return { node: node.name, outcome: 'check-failed' as const, drifted: [], detail: failureMessage(err) };
    }
  });
  show();

  const drifted = report.nodes.filter((result) => result.outcome === 'drifted');
  if (!input.reportOnly && drifted.length > 0) {
    report.phase = 'repairing';
    show();
    const targets = new Map(input.nodes.map((node) => [node.name, node]));
    // Repairs run in batches like checks: a new cluster of hundreds of drifted nodes is not restarted all at once.
    await inBatches(drifted, parallelism, (result) => repair(result, targets.get(result.node)!, input));
  }
  report.phase = 'done';
  show();
  return report;
}

/**
 * KatafleetDrift of a drift run: each outcome present, and `outcome=count`, e.g. `["drifted", "drifted=3",
 * "in-sync", "in-sync=97"]` — at most 18 short values whatever the fleet size (Temporal refuses a search
 * attribute value over 2 KiB). `KatafleetDrift = "drifted"` lists the runs that found drift; which nodes it
 * found is in the run's report (query `driftReport`) and on each repair's nodeWorkflow (`KatafleetNode`). Pure.
 */
export function driftAttributeValues(results: readonly DriftNodeResult[]): string[] {
  const counts = new Map<DriftOutcome, number>();
  for (const result of results) counts.set(result.outcome, (counts.get(result.outcome) ?? 0) + 1);
  return [...counts].sort(([a], [b]) => a.localeCompare(b)).flatMap(([outcome, count]) => [outcome, `${outcome}=${count}`]);
}

function toResult(check: DriftCheck): DriftNodeResult {
  if (check.state === 'unreachable') return { node: check.node, outcome: 'unreachable', drifted: [], detail: check.error };
  return { node: check.node, outcome: check.state, drifted: check.drifted };
}

/**
 * A check's result when repairs follow the node's own record: a quarantined node needs a person; a node
 * whose last successful rollout applied another playbook (or another version of this one), or that an
 * abort rolled back, is a conflict to report, not to repair; so is a repair that would downgrade.
 */
export function toResultFollowingDesiredState(check: NodeDriftCheck, playbook: DriftInput['playbook']): DriftNodeResult {
  const result = toResult(check);
  if (check.state === 'unreachable') return result;
  if (check.quarantine) {
    const marker = check.quarantine;
    const detail = [`quarantined${marker.since ? ` since ${marker.since}` : ''}${marker.rolloutId ? ` by rollout ${marker.rolloutId}` : ''}: ${marker.reason ?? 'no reason recorded'}`, `fix: ${marker.fix ?? `katafleet node release ${check.node} --inventory FILE`}`].join('; ');
    return { ...result, outcome: 'needs-attention', detail };
  }
  const desired = check.desired;
  const short = (sha: string) => sha.slice(0, 12);
  if (desired && (desired.playbook.name !== playbook.name || desired.playbook.sha256 !== playbook.sha256)) {
    return { ...result, outcome: 'conflict', detail: `not repaired: the node's last successful rollout ${desired.rolloutId} applied playbook ${desired.playbook.name} (sha256 ${short(desired.playbook.sha256)}), this drift run holds ${playbook.name} (sha256 ${short(playbook.sha256)}); drift only re-applies what the node's last rollout applied — roll this playbook out, or schedule drift with the node's playbook` };
  }
  if (desired?.state === 'rolled-back' && check.state === 'drifted') {
    return { ...result, outcome: 'conflict', detail: `not repaired: the abort of rollout ${desired.rolloutId} rolled this node back on purpose; roll the playbook out again to want it back` };
  }
  if (check.state === 'drifted' && (check.downgrades ?? []).length > 0) {
    return { ...result, outcome: 'conflict', detail: `not repaired: it would downgrade ${check.downgrades!.join(', ')}; roll out a playbook that pins the installed version` };
  }
  return result;
}

async function repair(result: DriftNodeResult, node: NodeTarget, input: DriftInput): Promise<void> {
  try {
    const handle = await startChild(nodeWorkflow, {
      workflowId: nodeWorkflowId(node.name),
      args: [{ rolloutId: `drift-${workflowInfo().workflowId}`, node, kubernetes: input.kubernetes, steps: input.steps, drain: input.drain }],
      parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      staticSummary: `drift repair of ${node.name}: ${result.drifted.join('; ')}`,
    });
    await handle.result();
    result.outcome = 'repaired';
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      result.outcome = 'busy';
      result.detail = `skipped this round: ${nodeWorkflowId(node.name)} is running (a rollout or another repair holds the node)`;
      return;
    }
    result.outcome = 'repair-failed';
    result.detail = failureMessage(err);
  }
}

/** The innermost message of a child workflow or activity failure. */
function failureMessage(err: unknown): string {
  const cause = (err instanceof ChildWorkflowFailure || err instanceof ActivityFailure) && err.cause ? err.cause : err;
  return cause instanceof Error ? cause.message : String(cause);
}

/** Runs `work` over `items` with at most `size` at once, keeping the order of results. */
async function inBatches<T, R>(items: T[], size: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let start = 0; start < items.length; start += size) {
    results.push(...(await Promise.all(items.slice(start, start + size).map(work))));
  }
  return results;
}

/** The drift report for the Temporal UI's "current details": a header, then one list line per node (a list reads well there; a table's columns run together). */
export function formatDriftDetails(report: DriftReport): string {
  const count = (outcome: DriftOutcome) => report.nodes.filter((result) => result.outcome === outcome).length;
  const extra = (['conflict', 'needs-attention'] as const).filter((outcome) => count(outcome) > 0).map((outcome) => `, ${count(outcome)} ${outcome}`).join('');
  const header = `**drift check of ${report.playbook}**${report.reportOnly ? ' (report only)' : ''}: ${report.phase} — ${count('in-sync')} in sync, ${count('drifted')} drifted, ${count('repaired')} repaired, ${count('repair-failed')} repair failed, ${count('busy')} busy, ${count('unreachable')} unreachable, ${count('check-failed')} check failed${extra}`;
  const rows = report.nodes.map((result) => {
    const what = [...result.drifted, result.detail ?? ''].filter(Boolean).join('; ').replace(/\s*\n\s*/g, ' ⏎ ');
    return `- **${result.node}** — ${result.outcome}${what ? `: ${what}` : ''}`;
  });
  return [header, '', ...rows].join('\n');
}
