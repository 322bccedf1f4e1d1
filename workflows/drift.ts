import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  ApplicationFailure,
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

export type DriftOutcome = 'in-sync' | 'drifted' | 'repaired' | 'repair-failed' | 'busy' | 'unreachable';

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

  const checks = await inBatches(input.nodes, input.parallelism ?? 10, (node) => checkDrift({ node, kubernetes: input.kubernetes, steps: input.steps }));
  report.nodes = checks.map(toResult);
  show();

  const drifted = report.nodes.filter((result) => result.outcome === 'drifted');
  if (!input.reportOnly && drifted.length > 0) {
    report.phase = 'repairing';
    show();
    const targets = new Map(input.nodes.map((node) => [node.name, node]));
    await Promise.all(drifted.map((result) => repair(result, targets.get(result.node)!, input)));
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
    const cause = err instanceof ChildWorkflowFailure ? err.cause : err;
    result.detail = cause instanceof ApplicationFailure || cause instanceof Error ? cause.message : String(cause);
  }
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
  const header = `**drift check of ${report.playbook}**${report.reportOnly ? ' (report only)' : ''}: ${report.phase} — ${count('in-sync')} in sync, ${count('drifted')} drifted, ${count('repaired')} repaired, ${count('repair-failed')} repair failed, ${count('busy')} busy, ${count('unreachable')} unreachable`;
  const rows = report.nodes.map((result) => `| ${result.node} | ${result.outcome} | ${[...result.drifted, result.detail ?? ''].filter(Boolean).join('; ').replace(/\|/g, '\\|')} |`);
  return [header, '', '| node | outcome | what |', '|---|---|---|', ...rows].join('\n');
}
