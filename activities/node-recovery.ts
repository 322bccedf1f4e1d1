/**
 * The activities around the steps of a journaling nodeWorkflow: the node's lock for each step, the
 * check every run makes first (quarantine, a journal left behind), the recovery from the journal, the
 * quarantine marker, the end of a successful run (its journal deleted), and `katafleet node release`.
 * Each holds the node's lock for its whole remote work (activities/steps/node-lock.ts).
 */
import type { Step } from '../playbooks/schema';
import type { SshPool } from './ssh';
import { checkStep, checkTargets, checkUndo } from './step-policy';
import type { KubernetesTarget, NodeTarget, QuarantineMarker, RecoveryResult, StepOutcome, StepRequest, Undo } from './node-types';
import { desiredStatePath, desiredStateText, type DesiredState } from './desired-state';
import { commitJournal } from './steps/journal';
import { lockOwner, lockRank, withNodeLock, type LockedShell } from './steps/node-lock';
import { NodeShell } from './steps/node-shell';
import { prepareNode, quarantine, readQuarantine, recoverRun, releaseQuarantine } from './steps/recover';
import { activityContext, attemptDeadline } from './steps/step-runtime';

/** How long an activity may wait for the node's lock: two thirds of what its attempt has left (the rest is for its work). */
function lockWaitMs(fallbackMs: number): number {
  return Math.max(0, ((attemptDeadline(fallbackMs) - Date.now()) * 2) / 3);
}

/**
 * Runs a step's remote work holding the node's lock (owner: run, step, attempt). A step that succeeds hands the
 * lease over to the run's next activity (which takes it over at once) instead of spending a command on its release.
 */
export function withStepLock<T>(pool: SshPool, request: StepRequest, work: (shell: LockedShell) => Promise<T>): Promise<T> {
  // A last step that commits the run has no next activity to hand the lease to: it releases it.
  return withNodeLock(pool, request.node, lockOwner(request.runId, `step-${request.step.id}`), lockWaitMs(10 * 60_000), work, { handOver: !request.commitAfter, rank: lockRank(1 + (request.stepIndex ?? 0)) });
}

/**
 * The end of a successful run, under the node's lock: its journal becomes an applied record (its undos, for the
 * `rollback` step kind) and is deleted; with `desired`, the node's desired state (desired.json) is written next
 * (`desiredError` says why it could not be: the node did succeed, so a failed record is reported, not a failed run).
 */
export async function commitOnNode(shell: LockedShell, run: { runId: string; rolloutId: string; undos: Undo[]; desired?: DesiredState }): Promise<{ desiredError?: string }> {
  // One command: the applied record, the journal deleted, desired.json, the lease given back.
  const desired = run.desired && { path: desiredStatePath, content: desiredStateText(run.desired) };
  const { writeError } = await commitJournal(shell, { runId: run.runId, rolloutId: run.rolloutId, undos: run.undos }, desired, shell.releaseInLastCommand());
  return writeError === undefined ? {} : { desiredError: writeError };
}

/**
 * A last step's commit (patch `node-commit-in-last-step`), after the step succeeded: `committed` in its outcome, or
 * nothing when the commit failed (the step's work stands; the run's commitRun activity then commits, with its retries).
 * Only while the run's workflow still runs: a run terminated (or reset) while its last step finished leaves its
 * journal, so that the next run takes the step back, as when the commit was the workflow's own activity.
 */
export async function commitAfterLastStep(shell: LockedShell, request: StepRequest, outcome: StepOutcome): Promise<StepOutcome> {
  const commit = request.commitAfter;
  if (!commit) return outcome;
  const undos = [...(outcome.undo ? [outcome.undo] : []), ...commit.undos];
  try {
    if (!(await runStillRunning(request.runId))) return outcome;
    return { ...outcome, committed: await commitOnNode(shell, { runId: request.runId, rolloutId: request.rolloutId, undos, desired: commit.desired }) };
  } catch {
    return outcome;
  }
}

/** Whether the workflow run of this activity (run `runId`) is still running, asked of Temporal; false when unknown. */
async function runStillRunning(runId: string): Promise<boolean> {
  const context = activityContext();
  const execution = context?.info.workflowExecution;
  if (!context || !execution || execution.runId !== runId) return false;
  const description = await context.client.workflow.getHandle(execution.workflowId, execution.runId).describe();
  return description.status.name === 'RUNNING';
}

/** What the recovery activities receive: the node and the run. */
export interface RunOnNode {
  node: NodeTarget;
  kubernetes?: KubernetesTarget;
  runId: string;
  rolloutId: string;
}

export function createRecoveryActivities(pool: SshPool) {
  // prepare opens a run (rank 0, its lease handed to the first step); the closing activities rank after every step.
  const locked = <T>(request: { node: NodeTarget; runId: string }, what: string, work: (shell: LockedShell) => Promise<T>, handOver = false) =>
    withNodeLock(pool, request.node, lockOwner(request.runId, what), lockWaitMs(10 * 60_000), work, { handOver, rank: lockRank(handOver ? 0 : 1000) });
  return {
    /**
     * First thing of a run: checks the run's steps and undos like the step activities do (StepRefused, before
     * anything reaches the node), refuses a quarantined node (NodeQuarantined), recovers a journal another run left.
     */
    async prepareNode(request: RunOnNode & { steps?: Step[]; undos?: Undo[] }): Promise<string[]> {
      checkTargets(request.node, request.kubernetes);
      for (const step of request.steps ?? []) checkStep(step, request.node);
      for (const undo of request.undos ?? []) checkUndo(undo, request.node);
      return locked(request, 'prepare', (shell) => prepareNode(shell, pool, request.kubernetes, request), true);
    },
    /** Takes back what the run's journal (and `undos`) say it changed, newest step first. */
    async recoverRun(request: RunOnNode & { stepOrder: string[]; undos: Undo[] }): Promise<RecoveryResult> {
      return locked(request, 'recover', (shell) => recoverRun(shell, pool, request.kubernetes, request));
    },
    /** Writes the quarantine marker (the first one stays); returns the marker in force. */
    async quarantineNode(request: RunOnNode & { reason: string; fix: string }): Promise<QuarantineMarker> {
      return locked(request, 'quarantine', (shell) => quarantine(shell, { rolloutId: request.rolloutId, runId: request.runId, reason: request.reason, fix: request.fix, since: new Date().toISOString() }));
    },
    /**
     * A run succeeded: its journal becomes an applied record (its undos, for the `rollback` step kind; they
     * also live on in the rollout's result for an abort) and is deleted; with `desired`, the node's desired state
     * (desired.json) is written next, under the same lock (`desiredError` says why it could not be).
     */
    async commitRun(request: RunOnNode & { undos?: Undo[]; desired?: DesiredState }): Promise<{ desiredError?: string }> {
      const committed = await locked(request, 'commit', (shell) => commitOnNode(shell, { runId: request.runId, rolloutId: request.rolloutId, undos: request.undos ?? [], desired: request.desired }));
      // The run is over on this node: its connection is not kept for the idle sweep.
      pool.closeIfIdle(request.node.name);
      return committed;
    },
    /** `katafleet node release`: removes the quarantine marker and sets aside journals left on the node. */
    async releaseNode(request: RunOnNode): Promise<{ marker?: QuarantineMarker; journals: string[] }> {
      return locked(request, 'release', (shell) => releaseQuarantine(shell));
    },
    /** The node's quarantine marker, if any (read-only, no lock). */
    async readQuarantine(request: { node: NodeTarget }): Promise<QuarantineMarker | undefined> {
      return readQuarantine(new NodeShell(pool, request.node));
    },
  };
}
