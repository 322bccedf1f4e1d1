import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { NodePhase } from './node-messages';

/** `completed`: every node was worked on, some failed within the failure budget; `succeeded`: none failed. */
export type RolloutPhase = 'running' | 'paused' | 'awaiting-approval' | 'waiting-between-waves' | 'halted' | 'aborting' | 'aborted' | 'completed' | 'succeeded';

export type NodeStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped' | 'rolled-back';

/** One node in {@link RolloutProgress}. */
export interface RolloutNodeResult {
  name: string;
  wave: number;
  status: NodeStatus;
  /** Phase reported by its nodeWorkflow, when it ran. */
  nodePhase?: NodePhase;
  /** Why it failed or was skipped. */
  reason?: string;
  /** Findings (hostKernel, guestKernel, backupPath, ...). */
  facts?: Record<string, string>;
  durationMs?: number;
}

/** What {@link rolloutProgressQuery} returns, and rolloutWorkflow's result. */
export interface RolloutProgress {
  rolloutId: string;
  playbook: string;
  phase: RolloutPhase;
  /** Why the rollout halted or was aborted. */
  reason?: string;
  /** 1-based number of the wave being worked on. */
  currentWave: number;
  waves: string[][];
  nodes: RolloutNodeResult[];
  failureBudget: number;
  counts: { total: number; succeeded: number; failed: number; running: number; pending: number; skipped: number };
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
