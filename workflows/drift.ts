import { WorkflowExecutionAlreadyStartedError, type Duration } from '@temporalio/common';
import {
  ActivityFailure,
  ApplicationFailure,
  ChildWorkflowFailure,
  condition,
  continueAsNew,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  defineQuery,
} from '@temporalio/workflow';
import type { createDriftActivities, NodeDriftCheck } from '../activities/drift-check';
import type { createDriftScheduleActivities } from '../activities/drift-schedule';
import type { createInventoryActivities, RunRef } from '../activities/inventory-history';
import type { DriftCheck, KubernetesTarget, NodeTarget } from '../activities/node-types';
import type { Step } from '../playbooks/schema';
import { gatherInventory, inventoryPieceSignal, receiveInventoryPieces, type InventoryManifest } from './inventory-pieces';
import { nodeWorkflow, nodeWorkflowId } from './node';
import { searchAttributes } from './search-attributes';

const { checkDrift } = proxyActivities<ReturnType<typeof createDriftActivities>>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '30s',
  // An unreachable node is a finding, not a reason to wait: the check reports it instead of failing.
  retry: { maximumAttempts: 2, initialInterval: '2s' },
});

const { driftScheduleExists } = proxyActivities<ReturnType<typeof createDriftScheduleActivities>>({
  startToCloseTimeout: '1m',
  // The server away for a while is no reason to end: asked again until it answers.
  retry: { initialInterval: '10s', maximumInterval: '10m' },
});

const { readInventoryPiece } = proxyActivities<ReturnType<typeof createInventoryActivities>>({
  startToCloseTimeout: '2m',
  retry: { maximumAttempts: 10, initialInterval: '2s', maximumInterval: '30s', nonRetryableErrorTypes: ['InventoryPieceMissing'] },
});

/**
 * Input of {@link driftWorkflow}: the playbook's desired state and the nodes to hold to it. The nodes come either
 * inline (`nodes`: drift runs and schedules made before the inventory travelled in pieces) or in pieces
 * (`inventory`, patch `drift-inventory-pieces`): as `inventoryPiece` signals (`katafleet drift check`, signalWithStart),
 * or read back from `inventoryFrom` (a schedule's {@link driftInventoryWorkflow}, or the run before a continue-as-new).
 */
export interface DriftInput {
  playbook: { name: string; file: string; sha256: string };
  steps: Step[];
  drain: boolean;
  /** The nodes inline (the shape before the pieces; at most 2,000 nodes then). */
  nodes?: NodeTarget[];
  /** The inventory in pieces: node count, piece count and sha256 (docs/scale.md, "Drift in pieces"). */
  inventory?: InventoryManifest;
  /** The workflow run whose history holds the pieces; none: they arrive as signals. */
  inventoryFrom?: RunRef;
  kubernetes?: KubernetesTarget;
  /** Only report; start no repair. */
  reportOnly: boolean;
  /** Nodes checked at once. @default 10 */
  parallelism?: number;
  /** Lower per-run limits, for tests that cross them with a small fleet (the API and CLI never set it). */
  limits?: { historyEvents?: number };
  /** What the runs before found, carried across continue-as-new (compact: one character a node). */
  carried?: DriftCarried;
}

/** A drift run's state across continue-as-new: bounded whatever the fleet size (≤ 10 KB + 200 capped details at 10,000 nodes). */
export interface DriftCarried {
  phase: 'checking' | 'repairing';
  /** One {@link outcomeCodes} character per node in inventory order; `.`: not checked yet. */
  outcomes: string;
  /** What drifted and why, of at most {@link carriedDetailsCap} nodes (non-in-sync, in inventory order), each capped. */
  details: { index: number; drifted: string[]; detail?: string }[];
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
  /** The inventory in pieces (signals, or read back), continue-as-new, a bounded report (issue 13). */
  inventoryPieces: 'drift-inventory-pieces',
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
  /**
   * Every node in inventory order up to {@link reportNodesCap} nodes; a larger run lists the nodes that are not in
   * sync first (in inventory order), at most {@link reportNodesCap} and 192 KiB of them (`nodesOmitted` says how many
   * are left out).
   */
  nodes: DriftNodeResult[];
  /** Nodes of the run (runs with the inventory in pieces). */
  nodesTotal?: number;
  /** Nodes per outcome (runs with the inventory in pieces); nodes not checked yet are not counted. */
  counts?: Partial<Record<DriftOutcome, number>>;
  /** Nodes not listed in `nodes` (their outcome is in `counts`). */
  nodesOmitted?: number;
}

export const driftReportQuery = defineQuery<DriftReport>('driftReport');

/**
 * Checks every node against the playbook's desired state without changing anything, then (unless
 * report-only) starts a nodeWorkflow for each drifted node. A node whose lock is held (a rollout is
 * working on it) is skipped this round and reported as busy: drift repair never races a rollout.
 */
export async function driftWorkflow(input: DriftInput): Promise<DriftReport> {
  if (input.nodes !== undefined || input.inventory === undefined) return driftInline({ ...input, nodes: input.nodes ?? [] });
  // Registered before the first await: the signals of signalWithStart arrive with the start.
  const received = receiveInventoryPieces();
  if (!patched(driftPatches.inventoryPieces)) throw ApplicationFailure.nonRetryable('an inventory in pieces needs a worker with the drift-inventory-pieces change', 'InventoryIncomplete');
  const manifest = input.inventory;
  setHandler(driftReportQuery, () => ({ playbook: input.playbook.name, reportOnly: input.reportOnly, phase: 'checking', nodes: [], nodesTotal: manifest.nodes, counts: {} }));
  const from = input.inventoryFrom;
  const assembled = await gatherInventory(manifest, received, from, readInventoryPiece, inventoryPiecesWait);
  if ('problem' in assembled) {
    throw ApplicationFailure.create({ type: 'InventoryIncomplete', nonRetryable: true, message: `drift run ${workflowInfo().workflowId}: ${assembled.problem}; ${from ? `the pieces were read from ${from.workflowId} (a drift schedule's inventory workflow must run as long as its schedule: create the schedule again)` : 'run the drift check again'}` });
  }
  received.clear();
  return driftInPieces(input, assembled.nodes);
}

/** How long a drift run waits for the inventory's pieces after it started. */
const inventoryPiecesWait = '10m';
/** History events of one drift run at most before it continues as new (a check is about 4, a repair about 6). */
const defaultHistoryEvents = 8_000;
/** Details (what drifted, why) carried across continue-as-new at most; the rest: on each repair's nodeWorkflow. */
export const carriedDetailsCap = 200;
const carriedTextCap = 500;
/** Nodes a drift report lists at most (the query and the result). */
export const reportNodesCap = 500;
const reportBytesCap = 192 * 1024;

/** The character of each outcome in {@link DriftCarried.outcomes}; `.` is a node not checked yet. */
export const outcomeCodes: Record<DriftOutcome, string> = {
  'in-sync': 's', drifted: 'd', repaired: 'r', 'repair-failed': 'f', busy: 'b', unreachable: 'u', 'check-failed': 'c', conflict: 'x', 'needs-attention': 'a',
};
const codeOutcomes = new Map(Object.entries(outcomeCodes).map(([outcome, code]) => [code, outcome as DriftOutcome]));
const unchecked = '.';

/** A drift run whose nodes came in pieces: checks in batches, then repairs, continuing as new when its history fills up. */
async function driftInPieces(input: DriftInput, nodes: NodeTarget[]): Promise<DriftReport> {
  const carried = input.carried;
  const codes = carried && carried.outcomes.length === nodes.length ? carried.outcomes.split('') : Array<string>(nodes.length).fill(unchecked);
  const details = new Map<number, { drifted: string[]; detail?: string }>((carried?.details ?? []).map(({ index, ...rest }) => [index, rest]));
  let phase: DriftReport['phase'] = carried?.phase ?? 'checking';
  const historyLimit = input.limits?.historyEvents ?? defaultHistoryEvents;
  const parallelism = input.parallelism ?? 10;
  const resultOf = (index: number): DriftNodeResult => {
    const outcome = codeOutcomes.get(codes[index]) ?? 'check-failed';
    const detail = details.get(index);
    return { node: nodes[index].name, outcome, drifted: detail?.drifted ?? [], ...(detail?.detail !== undefined ? { detail: detail.detail } : {}) };
  };
  const set = (index: number, result: DriftNodeResult) => {
    codes[index] = outcomeCodes[result.outcome];
    if (result.drifted.length > 0 || result.detail !== undefined) details.set(index, { drifted: result.drifted, ...(result.detail !== undefined ? { detail: result.detail } : {}) });
    else details.delete(index);
  };
  const report = (): DriftReport => boundedDriftReport(input, phase, nodes.length, codes, resultOf);
  setHandler(driftReportQuery, report);
  const show = () => {
    const counts = outcomeCounts(codes);
    upsertSearchAttributes([
      { key: searchAttributes.phase, value: phase },
      { key: searchAttributes.playbook, value: input.playbook.name },
      { key: searchAttributes.drift, value: driftAttributeValuesOfCounts(counts) },
      { key: searchAttributes.nodesTotal, value: nodes.length },
      { key: searchAttributes.nodesDone, value: (counts['in-sync'] ?? 0) + (counts.repaired ?? 0) },
      { key: searchAttributes.nodesFailed, value: Object.entries(counts).filter(([outcome]) => !['in-sync', 'repaired', 'drifted'].includes(outcome)).reduce((sum, [, count]) => sum + count, 0) },
    ]);
    setCurrentDetails(formatDriftDetails(report()));
  };
  // A run does at least one batch before it may continue as new (a limit below what reading the pieces takes must not loop).
  let batchesThisRun = 0;
  const full = () => batchesThisRun > 0 && (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength + parallelism * 8 >= historyLimit);
  const carryOn = () => {
    const kept: DriftCarried['details'] = [];
    for (const [index, detail] of [...details].sort(([a], [b]) => a - b)) {
      if (kept.length >= carriedDetailsCap) break;
      kept.push({ index, drifted: detail.drifted.map((item) => capText(item)).slice(0, 20), ...(detail.detail !== undefined ? { detail: capText(detail.detail) } : {}) });
    }
    const { workflowId, runId } = workflowInfo();
    return continueAsNew<typeof driftWorkflow>({ ...input, nodes: undefined, inventoryFrom: { workflowId, runId }, carried: { phase: phase === 'repairing' ? 'repairing' : 'checking', outcomes: codes.join(''), details: kept } });
  };
  show();

  if (phase === 'checking') {
    for (;;) {
      const batch = pendingIndexes(codes, unchecked, parallelism);
      if (batch.length === 0) break;
      if (full()) await carryOn();
      const results = await Promise.all(batch.map(async (index) => {
        try {
          const check = await checkDrift({ node: nodes[index], kubernetes: input.kubernetes, steps: input.steps });
          return toResultFollowingDesiredState(check, input.playbook);
        } catch (err) {
          return { node: nodes[index].name, outcome: 'check-failed' as const, drifted: [], detail: failureMessage(err) };
        }
      }));
      batch.forEach((index, i) => set(index, results[i]));
      batchesThisRun++;
      show();
    }
    if (!input.reportOnly && codes.includes(outcomeCodes.drifted)) {
      phase = 'repairing';
      show();
    }
  }
  if (phase === 'repairing') {
    for (;;) {
      const batch = pendingIndexes(codes, outcomeCodes.drifted, parallelism);
      if (batch.length === 0) break;
      if (full()) await carryOn();
      await Promise.all(batch.map(async (index) => {
        const result = resultOf(index);
        await repair(result, nodes[index], input);
        set(index, result);
      }));
      batchesThisRun++;
      show();
    }
  }
  phase = 'done';
  show();
  return report();
}

/** The first `count` indexes whose code is `code`. Pure. */
function pendingIndexes(codes: readonly string[], code: string, count: number): number[] {
  const found: number[] = [];
  for (let index = 0; index < codes.length && found.length < count; index++) if (codes[index] === code) found.push(index);
  return found;
}

function capText(text: string): string {
  return text.length > carriedTextCap ? `${text.slice(0, carriedTextCap - 1)}…` : text;
}

/** Nodes per outcome of `codes` (unchecked nodes are not counted). Pure. */
export function outcomeCounts(codes: readonly string[]): Partial<Record<DriftOutcome, number>> {
  const counts: Partial<Record<DriftOutcome, number>> = {};
  for (const code of codes) {
    const outcome = codeOutcomes.get(code);
    if (outcome) counts[outcome] = (counts[outcome] ?? 0) + 1;
  }
  return counts;
}

/**
 * The drift report of a run in pieces, bounded: every node when there are at most {@link reportNodesCap}, else the
 * nodes not in sync first (inventory order), at most {@link reportNodesCap} of them and 192 KiB. Pure.
 */
export function boundedDriftReport(input: Pick<DriftInput, 'playbook' | 'reportOnly'>, phase: DriftReport['phase'], total: number, codes: readonly string[], resultOf: (index: number) => DriftNodeResult): DriftReport {
  const counts = outcomeCounts(codes);
  const listed: DriftNodeResult[] = [];
  let bytes = 0;
  const order = total <= reportNodesCap
    ? Array.from({ length: total }, (_, index) => index)
    : [...codes.keys()].filter((index) => codes[index] !== outcomeCodes['in-sync'] && codes[index] !== unchecked);
  for (const index of order) {
    if (listed.length >= reportNodesCap) break;
    if (codes[index] === unchecked) continue;
    const result = resultOf(index);
    const capped = { ...result, drifted: result.drifted.map(capText), ...(result.detail !== undefined ? { detail: capText(result.detail) } : {}) };
    bytes += JSON.stringify(capped).length;
    if (bytes > reportBytesCap) break;
    listed.push(capped);
  }
  const checked = codes.filter((code) => code !== unchecked).length;
  return { playbook: input.playbook.name, reportOnly: input.reportOnly, phase, nodes: listed, nodesTotal: total, counts, nodesOmitted: checked - listed.length };
}

/** The inline drift run (its input carries every node): runs started before the inventory travelled in pieces. */
async function driftInline(input: DriftInput & { nodes: NodeTarget[] }): Promise<DriftReport> {
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
  const counts: Partial<Record<DriftOutcome, number>> = {};
  for (const result of results) counts[result.outcome] = (counts[result.outcome] ?? 0) + 1;
  return driftAttributeValuesOfCounts(counts);
}

/** {@link driftAttributeValues} from the counts per outcome. Pure. */
export function driftAttributeValuesOfCounts(counts: Partial<Record<DriftOutcome, number>>): string[] {
  return Object.entries(counts).filter(([, count]) => (count ?? 0) > 0).sort(([a], [b]) => a.localeCompare(b)).flatMap(([outcome, count]) => [outcome, `${outcome}=${count}`]);
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
  const count = (outcome: DriftOutcome) => (report.counts ? (report.counts[outcome] ?? 0) : report.nodes.filter((result) => result.outcome === outcome).length);
  const extra = (['conflict', 'needs-attention'] as const).filter((outcome) => count(outcome) > 0).map((outcome) => `, ${count(outcome)} ${outcome}`).join('');
  const header = `**drift check of ${report.playbook}**${report.reportOnly ? ' (report only)' : ''}: ${report.phase} — ${count('in-sync')} in sync, ${count('drifted')} drifted, ${count('repaired')} repaired, ${count('repair-failed')} repair failed, ${count('busy')} busy, ${count('unreachable')} unreachable, ${count('check-failed')} check failed${extra}`;
  const rows = report.nodes.map((result) => {
    const what = [...result.drifted, result.detail ?? ''].filter(Boolean).join('; ').replace(/\s*\n\s*/g, ' ⏎ ');
    return `- **${result.node}** — ${result.outcome}${what ? `: ${what}` : ''}`;
  });
  const omitted = (report.nodesOmitted ?? 0) > 0 ? [`- … ${report.nodesOmitted} more nodes${report.nodesTotal ? ` of ${report.nodesTotal}` : ''} not listed (in sync, or past the report's ${reportNodesCap} lines; counts above)`] : [];
  return [header, '', ...rows, ...omitted].join('\n');
}

/** What a drift schedule's inventory workflow needs besides the manifest (holders started before the patch had none). */
export interface DriftInventoryHolding {
  /** The schedule whose nodes it holds. */
  scheduleId: string;
  /** How often it asks whether the schedule still exists (a Temporal duration). @default '24h' */
  checkScheduleEvery?: Duration;
}

/**
 * Holds a drift schedule's inventory for as long as the schedule exists: its pieces arrive as `inventoryPiece`
 * signals and stay in this workflow's history, which the schedule's runs read back (readInventoryPiece), so the
 * schedule's start action carries only the manifest and this run's id. It never continues as new (the runs read this
 * very run). Deleting the schedule with katafleet terminates it; a schedule deleted another way (straight through
 * Temporal) is noticed at the holder's next check (patch `drift-holder-ends-with-schedule`: every 24 h, about 11
 * events, so 51,200 events would take 12 years), and the holder completes.
 */
export async function driftInventoryWorkflow(manifest: InventoryManifest, holding?: DriftInventoryHolding): Promise<void> {
  setHandler(inventoryPieceSignal, () => undefined);
  setCurrentDetails(`the inventory of a drift schedule: ${manifest.nodes} nodes in ${manifest.pieces} pieces (sha256 ${manifest.sha256.slice(0, 12)}…), read by its runs; it ends when the schedule is deleted (katafleet drift unschedule)`);
  // Holders started before the patch wait forever, as they did (and had no schedule id).
  if (holding === undefined || !patched('drift-holder-ends-with-schedule')) {
    await condition(() => false);
    return;
  }
  for (;;) {
    await sleep(holding.checkScheduleEvery ?? '24h');
    if (!(await driftScheduleExists(holding.scheduleId))) return;
  }
}
