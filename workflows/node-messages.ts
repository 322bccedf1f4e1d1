import { defineQuery } from '@temporalio/workflow';
import type { Undo, UndoOutcome } from '../activities/node-types';

export type StepStatus = 'pending' | 'running' | 'changed' | 'unchanged' | 'failed' | 'skipped';

/** One step's state in {@link NodeProgress}. */
export interface StepProgress {
  id: string;
  kind: string;
  status: StepStatus;
  summary?: string;
  durationMs?: number;
}

/**
 * `failed`: a step failed before anything had changed, so there was nothing to roll back.
 * `needs-attention`: the node is quarantined — its rollback failed, or its state is unknown, or it
 * already was quarantined when this run started. It carries `/var/lib/katafleet/quarantine.json`, and
 * every run refuses it (changing nothing) until `katafleet node release NODE`.
 */
export type NodePhase = 'running' | 'succeeded' | 'failed' | 'rolling-back' | 'rolled-back' | 'rollback-failed' | 'needs-attention';

/** What nodeWorkflow reports through {@link nodeProgressQuery} and returns when it succeeds. */
export interface NodeProgress {
  node: string;
  rolloutId: string;
  phase: NodePhase;
  currentStep?: string;
  /** While a run of steps runs in one activity (patch `node-step-runs`): its first and last step, `a … z`. */
  currentRun?: string;
  steps: StepProgress[];
  /** The step that failed and why, if one did. */
  failure?: { stepId: string; reason: string; type?: string };
  /** Undos run after a failure (or in undo mode), newest first. */
  rollback?: UndoOutcome[];
  /** Findings of the steps: hostKernel, guestKernel, backupPath, ... */
  facts: Record<string, string>;
  /** On success: how to take back what this run changed, newest first (used by abort with rollback). */
  undos: Undo[];
  /** Journals of earlier runs this run found on the node and took back before its first step. */
  recovered?: string[];
  /** While a rollback is retried: the attempt that failed last, why, and when the next one starts (ISO 8601). */
  rollbackRetry?: { attempt: number; lastError: string; nextAt: string; until: string };
  /** Phase `needs-attention`: why, and the exact manual fix (ends with `katafleet node release`). */
  quarantine?: { reason: string; fix: string; since: string; markedOnNode: boolean };
  /** When the rollout asked the run to record its desired state at commit: whether desired.json was written, or why not. */
  desired?: { recorded: boolean; error?: string };
}

export const nodeProgressQuery = defineQuery<NodeProgress>('nodeProgress');
