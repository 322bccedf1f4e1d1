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

/** `failed`: a step failed before anything had changed, so there was nothing to roll back. */
export type NodePhase = 'running' | 'succeeded' | 'failed' | 'rolling-back' | 'rolled-back' | 'rollback-failed';

/** What nodeWorkflow reports through {@link nodeProgressQuery} and returns when it succeeds. */
export interface NodeProgress {
  node: string;
  rolloutId: string;
  phase: NodePhase;
  currentStep?: string;
  steps: StepProgress[];
  /** The step that failed and why, if one did. */
  failure?: { stepId: string; reason: string; type?: string };
  /** Undos run after a failure (or in undo mode), newest first. */
  rollback?: UndoOutcome[];
  /** Findings of the steps: hostKernel, guestKernel, backupPath, ... */
  facts: Record<string, string>;
  /** On success: how to take back what this run changed, newest first (used by abort with rollback). */
  undos: Undo[];
}

export const nodeProgressQuery = defineQuery<NodeProgress>('nodeProgress');
