import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  ActivityFailure,
  ChildWorkflowFailure,
  ParentClosePolicy,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  defineQuery,
} from '@temporalio/workflow';
import type { createDriftActivities } from '../activities/drift-check';
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

/** `check-failed`: the read-only check itself failed (e.g. the API server did not answer); the other nodes are still reported. */
export type DriftOutcome = 'in-sync' | 'drifted' | 'repaired' | 'repair-failed' | 'busy' | 'unreachable' | 'check-failed';

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
  const report: DriftReport = { playbook: input.playbook.name, reportOnly: input.reportOnly, phase: 'checking', nodes: [] };
  setHandler(driftReportQuery, () => report);
  const show = () => {
    upsertSearchAttributes([
      { key: searchAttributes.phase, value: report.phase },
      { key: searchAttributes.playbook, value: input.playbook.name },
      { key: searchAttributes.drift, value: report.nodes.map((result) => `${result.outcome}:${result.node}`) },
    ]);
    setCurrentDetails(formatDriftDetails(report));
  };
  show();

  const parallelism = input.parallelism ?? 10;
  report.nodes = await inBatches(input.nodes, parallelism, async (node) => {
    try {
      return toResult(await checkDrift({ node, kubernetes: input.kubernetes, steps: input.steps }));
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

function toResult(check: DriftCheck): DriftNodeResult {
  if (check.state === 'unreachable') return { node: check.node, outcome: 'unreachable', drifted: [], detail: check.error };
  return { node: check.node, outcome: check.state, drifted: check.drifted };
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

/** The drift report as Markdown for the Temporal UI's "current details". */
export function formatDriftDetails(report: DriftReport): string {
  const count = (outcome: DriftOutcome) => report.nodes.filter((result) => result.outcome === outcome).length;
  const header = `**drift check of ${report.playbook}**${report.reportOnly ? ' (report only)' : ''}: ${report.phase} — ${count('in-sync')} in sync, ${count('drifted')} drifted, ${count('repaired')} repaired, ${count('repair-failed')} repair failed, ${count('busy')} busy, ${count('unreachable')} unreachable, ${count('check-failed')} check failed`;
  const rows = report.nodes.map((result) => `| ${result.node} | ${result.outcome} | ${[...result.drifted, result.detail ?? ''].filter(Boolean).join('; ').replace(/\|/g, '\\|')} |`);
  return [header, '', '| node | outcome | what |', '|---|---|---|', ...rows].join('\n');
}
