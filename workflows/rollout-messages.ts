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
  counts: { total: number; succeeded: number; failed: number; running: number; pending: number; skipped: number };
  /** What the rollout's cluster-wide steps did (the RuntimeClass, once per rollout), one line each; absent without them. */
  cluster?: string[];
}

export const rolloutProgressQuery = defineQuery<RolloutProgress>('rolloutProgress');

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
