import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { NodePhase } from './node-messages';

/**
 * `completed`: every node was worked on, some did not succeed within the failure budget; `succeeded`: all did;
 * `cancelled`: the workflow was cancelled through Temporal (not through abort), running nodes rolled back.
 */
export type RolloutPhase = 'running' | 'paused' | 'awaiting-approval' | 'waiting-between-waves' | 'halted' | 'aborting' | 'aborted' | 'cancelled' | 'completed' | 'succeeded';

/**
 * A node's state in a rollout. Every final state but `succeeded` (which includes "nothing to change") is a
 * non-success that counts against the failure budget and halts the rollout in the canary wave:
 * `failed` (nothing had changed), `rolled-back`, `rollback-failed`, `needs-attention` (quarantined, see its
 * reason for the fix) and `skipped` with {@link RolloutNodeResult.busy} (still locked after its retries).
 * `busy` is not final: the node's lock was held, it is tried again later in the rollout.
 */
export type NodeStatus = 'pending' | 'running' | 'busy' | 'succeeded' | 'failed' | 'skipped' | 'rolled-back' | 'rollback-failed' | 'needs-attention';

/** The statuses that count against the failure budget (with a `skipped` node that was still busy). */
export const nonSuccessStatuses: readonly NodeStatus[] = ['failed', 'rolled-back', 'rollback-failed', 'needs-attention'];

/** Whether a node's outcome is a final non-success: it counts against the budget, and in the canary wave it halts the rollout. */
export function isNonSuccess(node: Pick<RolloutNodeResult, 'status' | 'busy'>): boolean {
  return nonSuccessStatuses.includes(node.status) || (node.status === 'skipped' && node.busy === true);
}

/** One node in {@link RolloutProgress}. */
export interface RolloutNodeResult {
  name: string;
  wave: number;
  status: NodeStatus;
  /** Phase reported by its nodeWorkflow, when it ran. */
  nodePhase?: NodePhase;
  /** Why it failed or was skipped; for `needs-attention` also the fix. */
  reason?: string;
  /** Its lock was held by another rollout or a drift repair when the rollout tried to start it. */
  busy?: boolean;
  /** An abort with rollback undid it (or tried to): its result then says how that went. */
  undone?: boolean;
  /** Findings (hostKernel, guestKernel, backupPath, ...). */
  facts?: Record<string, string>;
  durationMs?: number;
}

/** What {@link rolloutProgressQuery} returns, and rolloutWorkflow's result. */
export interface RolloutProgress {
  rolloutId: string;
  playbook: string;
  phase: RolloutPhase;
  /** Why the rollout halted, was aborted or cancelled. */
  reason?: string;
  /** 1-based number of the wave being worked on. */
  currentWave: number;
  waves: string[][];
  nodes: RolloutNodeResult[];
  failureBudget: number;
  /**
   * Nodes the rollout asked for in its canary wave (its `[rollout] canary`, overrides applied); 0: no canary, so the
   * first wave is an ordinary one. Absent in the results of rollouts started before this field existed.
   */
  canary?: number;
  counts: { total: number; succeeded: number; failed: number; running: number; pending: number; skipped: number };
  /** What the rollout's cluster-wide steps did (the RuntimeClass, once per rollout), one line each; absent without them. */
  cluster?: string[];
  /** Nodes in each wave (`waves` holds only the names on this page). */
  waveSizes?: number[];
  /** Names of the nodes that did not succeed, the first {@link failedNodesCap} of them (the rest: page through `nodes`). */
  failedNodes?: string[];
  /** Which part of `nodes` this answer holds: nodes are answered a page at a time, in plan order. */
  nodesPage?: { pageSize: number; nextPageToken?: string };
}

/** Which page of a rollout's nodes a {@link rolloutProgressQuery} (or `GET /v1/rollouts/{id}`) asks for. */
export interface ProgressPageRequest {
  /** From the previous answer's `nodesPage.nextPageToken`; absent: the first page. */
  pageToken?: string;
  /** Nodes per page. @default {@link defaultProgressPageSize} (at most {@link maxProgressPageSize}) */
  pageSize?: number;
}

/** Nodes per page when the caller does not say: a fleet up to this size is answered whole. */
export const defaultProgressPageSize = 500;
/** The most nodes one answer holds, so that no query result or API answer grows with the fleet. */
export const maxProgressPageSize = 1000;
/**
 * Characters of node results one page holds at most (its nodes, JSON): with the capped lists the answer stays under
 * 256 KiB, the bound every payload keeps (docs/scale.md); a page with long reasons ends early, its token goes on.
 */
export const maxProgressPageBytes = 192 * 1024;
/** The most failed node names an answer (and the workflow's result) lists. */
export const failedNodesCap = 100;
/** The most characters of a node's reason an answer carries (a quarantine's fix included). */
export const reasonCap = 2000;

/** A page token the rollout did not hand out; the message says what to do. */
export class InvalidPageToken extends Error {
  override name = 'InvalidPageToken';
}

/**
 * One page of `progress`: its nodes from the token's position (at most `pageSize`), the wave lists cut to those
 * nodes, counts and the capped list of failed nodes for the whole rollout. `facts.undos` (the rollout's own
 * bookkeeping) stays out and reasons are capped, so an answer is bounded whatever the fleet size. Pure.
 * @throws InvalidPageToken for a token that is not `n<index>` within the rollout.
 */
export function progressPage(progress: RolloutProgress, request: ProgressPageRequest = {}): RolloutProgress {
  const pageSize = Math.min(Math.max(1, Math.floor(request.pageSize ?? defaultProgressPageSize)), maxProgressPageSize);
  const start = request.pageToken === undefined || request.pageToken === '' ? 0 : Number(/^n(\d{1,9})$/.exec(request.pageToken)?.[1] ?? NaN);
  if (!Number.isInteger(start) || start > progress.nodes.length) {
    throw new InvalidPageToken(`page token ${JSON.stringify(request.pageToken)} was not handed out by this rollout: use the nextPageToken of the previous answer, or none for the first page`);
  }
  const nodes: RolloutNodeResult[] = [];
  let bytes = 0;
  for (const node of progress.nodes.slice(start, start + pageSize)) {
    const bounded = boundedNode(node);
    bytes += JSON.stringify(bounded).length;
    // A page ends early rather than pass the byte budget (long reasons), but always holds one node.
    if (nodes.length > 0 && bytes > maxProgressPageBytes) break;
    nodes.push(bounded);
  }
  const onPage = new Set(nodes.map((node) => node.name));
  const end = start + nodes.length;
  return {
    ...progress,
    reason: progress.reason && capText(progress.reason, reasonCap),
    waves: progress.waves.map((wave) => wave.filter((name) => onPage.has(name))),
    waveSizes: progress.waves.map((wave) => wave.length),
    nodes,
    failedNodes: progress.nodes.filter(isNonSuccess).slice(0, failedNodesCap).map((node) => node.name),
    nodesPage: { pageSize, nextPageToken: end < progress.nodes.length ? `n${end}` : undefined },
  };
}

function boundedNode(node: RolloutNodeResult): RolloutNodeResult {
  const facts = node.facts && Object.fromEntries(Object.entries(node.facts).filter(([key]) => key !== 'undos').map(([key, value]) => [key, capText(value, 500)]));
  return { ...node, reason: node.reason && capText(node.reason, reasonCap), facts };
}

/** `text` cut to `cap` characters, saying how much was cut. Pure. */
export function capText(text: string, cap: number): string {
  return text.length <= cap ? text : `${text.slice(0, cap - 40)}… (${text.length - cap + 40} more characters)`;
}

/** The rollout's progress, one page of nodes at a time (no argument: the first {@link defaultProgressPageSize}). */
export const rolloutProgressQuery = defineQuery<RolloutProgress, [ProgressPageRequest?]>('rolloutProgress');

/** Options of an abort. */
export interface AbortRequest {
  /** Also roll back the nodes this rollout already changed. */
  rollback?: boolean;
  reason?: string;
}

// Updates report acceptance or a reason for refusal to the caller; signals are the fallback for
// clients that cannot wait (they are validated the same way, and ignored when invalid).
export const pauseUpdate = defineUpdate<RolloutPhase, []>('pause');
export const resumeUpdate = defineUpdate<RolloutPhase, []>('resume');
export const abortUpdate = defineUpdate<RolloutPhase, [AbortRequest]>('abort');
export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const abortSignal = defineSignal<[AbortRequest]>('abort');
