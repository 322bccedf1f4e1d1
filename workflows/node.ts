import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { createNodeActivities } from '../activities/node-activities';
import type { KubernetesTarget, NodeTarget, StepOutcome, Undo } from '../activities/node-types';
import type { Step } from '../playbooks/schema';
import { parseDuration } from './duration';
import { activityByKind } from './step-activities';
import { nodeProgressQuery, type NodeProgress, type StepProgress } from './node-messages';
import { searchAttributes } from './search-attributes';

type NodeActivities = ReturnType<typeof createNodeActivities>;

/** Input of {@link nodeWorkflow}: plain data, validated before it gets here. */
export interface NodeRolloutInput {
  rolloutId: string;
  node: NodeTarget;
  kubernetes?: KubernetesTarget;
  steps: Step[];
  /** `rollout.drain` of the playbook. */
  drain: boolean;
  /** `"apply"` runs the steps; `"undo"` only runs {@link undos} (abort with rollback of a finished node). */
  mode?: 'apply' | 'undo';
  undos?: Undo[];
  /**
   * How long a step activity may go without a heartbeat before Temporal gives its attempt to
   * another worker: how soon a dead worker is noticed. Above the activities' 5 s heartbeat interval.
   * @default "30s"
   */
  heartbeatTimeout?: string;
}

/** The per-node lock: one workflow id per node, so two rollouts never work on one node at once. */
export function nodeWorkflowId(node: string): string {
  return `katafleet-node-${node}`;
}

/** Failure types that no retry can fix, whatever the playbook says. */
const permanentFailures = ['HostKeyMismatch', 'HostKeyUnknown', 'SshAuthFailed', 'NodeNotCapable', 'ContainerdConfigConflict', 'ContainerdCriDisabled', 'ContainerdConfigUnsupported', 'ContainerdConfigInvalid', 'ContainerdPatchVerificationFailed', 'UnsafeValue'];


/** Activity options of a step: its timeout and retry policy from the playbook. */
function stepActivityOptions(step: Step, heartbeatTimeout: string): ActivityOptions {
  const retry = step.retry;
  return {
    startToCloseTimeout: parseDuration(step.timeout),
    // Activities heartbeat while they wait; a dead worker is noticed after this, not after the step's timeout.
    heartbeatTimeout: parseDuration(heartbeatTimeout),
    // On cancellation (a rollout abort) wait for the step to end: a step that still completes reports
    // its undo, so the rollback takes back what it changed instead of leaving it behind.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    summary: `${step.kind} ${step.id}`,
    retry: {
      maximumAttempts: retry?.max_attempts ?? 3,
      initialInterval: parseDuration(retry?.initial_interval ?? '5s'),
      backoffCoefficient: retry?.backoff ?? 2,
      nonRetryableErrorTypes: [...permanentFailures, ...(retry?.non_retryable ?? [])],
    },
  };
}

const defaultHeartbeatTimeout = '30s';

/** The undo activity, with the same heartbeat timeout as the steps. */
function undoActivity(input: NodeRolloutInput): NodeActivities['undoStep'] {
  return proxyActivities<NodeActivities>({
    startToCloseTimeout: '10m',
    heartbeatTimeout: parseDuration(input.heartbeatTimeout ?? defaultHeartbeatTimeout),
    retry: { maximumAttempts: 5, initialInterval: '2s', nonRetryableErrorTypes: ['HostKeyMismatch', 'HostKeyUnknown', 'SshAuthFailed'] },
  }).undoStep;
}

/**
 * Takes one node from its current state to the playbook's, step by step, or back to exactly
 * where it was: after each step that changed something its undo is kept, and on any failure the
 * undos run newest first (not cancellable), then the workflow fails with the step and the reason.
 * Run again on a node that is done, every step finds its effect in place and changes nothing.
 */
export async function nodeWorkflow(input: NodeRolloutInput): Promise<NodeProgress> {
  const progress: NodeProgress = {
    node: input.node.name,
    rolloutId: input.rolloutId,
    phase: 'running',
    steps: input.mode === 'undo' ? [] : input.steps.map((step) => ({ id: step.id, kind: step.kind, status: 'pending' })),
    facts: {},
    undos: [],
  };
  setHandler(nodeProgressQuery, () => progress);
  upsertSearchAttributes([
    { key: searchAttributes.node, value: input.node.name },
    { key: searchAttributes.rolloutId, value: input.rolloutId },
    { key: searchAttributes.phase, value: 'running' },
  ]);

  if (input.mode === 'undo') {
    await rollBack(progress, [...(input.undos ?? [])].reverse(), input);
    return finish(progress, progress.rollback?.every((outcome) => outcome.ok) ? 'rolled-back' : 'rollback-failed');
  }

  const undos: Undo[] = [];
  for (const [index, step] of input.steps.entries()) {
    const entry = progress.steps[index];
    try {
      const outcome = await runStep(step, entry, progress, input);
      if (outcome.undo) undos.unshift(outcome.undo);
    } catch (err) {
      entry.status = 'failed';
      const reason = failureReason(err);
      progress.failure = { stepId: step.id, ...reason };
      entry.summary = reason.reason;
      for (const later of progress.steps.slice(index + 1)) later.status = 'skipped';
      await CancellationScope.nonCancellable(() => rollBack(progress, undos, input));
      finish(progress, undos.length === 0 ? 'failed' : progress.rollback?.every((outcome) => outcome.ok) ? 'rolled-back' : 'rollback-failed');
      throw ApplicationFailure.create({
        type: isCancellation(err) ? 'NodeRolloutCancelled' : 'NodeRolloutFailed',
        message: `${step.kind} "${step.id}" failed on node ${input.node.name}: ${reason.reason}; ${rollbackSummary(progress)}`,
        nonRetryable: true,
        details: [progress],
      });
    }
  }
  progress.undos = undos;
  return finish(progress, 'succeeded');
}

async function runStep(step: Step, entry: StepProgress, progress: NodeProgress, input: NodeRolloutInput): Promise<StepOutcome> {
  entry.status = 'running';
  progress.currentStep = step.id;
  showDetails(progress);
  const started = Date.now();
  const activity = proxyActivities<NodeActivities>(stepActivityOptions(step, input.heartbeatTimeout ?? defaultHeartbeatTimeout))[activityByKind[step.kind]] as (request: unknown) => Promise<StepOutcome>;
  const outcome = await activity({ runId: workflowInfo().runId, rolloutId: input.rolloutId, node: input.node, kubernetes: input.kubernetes, step, drain: input.drain });
  entry.status = outcome.changed ? 'changed' : 'unchanged';
  entry.summary = outcome.summary;
  entry.durationMs = Date.now() - started;
  Object.assign(progress.facts, outcome.facts);
  progress.currentStep = undefined;
  return outcome;
}

async function rollBack(progress: NodeProgress, undos: Undo[], input: NodeRolloutInput): Promise<void> {
  progress.rollback = [];
  if (undos.length === 0) return;
  progress.phase = 'rolling-back';
  showDetails(progress);
  const undoStep = undoActivity(input);
  for (const undo of undos) {
    try {
      progress.rollback.push(await undoStep({ node: input.node, kubernetes: input.kubernetes, undo }));
    } catch (err) {
      progress.rollback.push({ stepId: undo.stepId, kind: undo.kind, ok: false, summary: failureReason(err).reason });
    }
    showDetails(progress);
  }
}

function failureReason(err: unknown): { reason: string; type?: string } {
  const cause = err instanceof ActivityFailure && err.cause ? err.cause : err;
  if (cause instanceof ApplicationFailure) return { reason: cause.message, type: cause.type ?? undefined };
  return { reason: cause instanceof Error ? cause.message : String(cause) };
}

function rollbackSummary(progress: NodeProgress): string {
  const rollback = progress.rollback ?? [];
  if (rollback.length === 0) return 'nothing had changed, so nothing was rolled back';
  const failed = rollback.filter((outcome) => !outcome.ok);
  if (failed.length === 0) return `rolled back: ${rollback.map((outcome) => outcome.summary).join('; ')}`;
  return `ROLLBACK INCOMPLETE (${failed.map((outcome) => `${outcome.stepId}: ${outcome.summary}`).join('; ')})`;
}

function finish(progress: NodeProgress, phase: NodeProgress['phase']): NodeProgress {
  progress.phase = phase;
  progress.currentStep = undefined;
  upsertSearchAttributes([{ key: searchAttributes.phase, value: phase }]);
  showDetails(progress);
  return progress;
}

/**
 * A Markdown table cell: one line (a failure's reason may carry the service's last log lines) of
 * bounded length, pipes escaped.
 */
function tableCell(text: string): string {
  const line = text.replace(/\s*\n\s*/g, ' ⏎ ');
  return (line.length > 300 ? `${line.slice(0, 299)}…` : line).replace(/\|/g, '\\|');
}

/** The "current details" pane of the Temporal UI: a Markdown table of the steps. */
function showDetails(progress: NodeProgress): void {
  const rows = progress.steps.map((step) => `| ${step.id} | ${step.kind} | ${step.status} | ${tableCell(step.summary ?? '')} |`);
  const rollback = (progress.rollback ?? []).map((outcome) => `- ${outcome.ok ? 'undone' : 'FAILED'} ${outcome.stepId}: ${outcome.summary}`);
  setCurrentDetails(
    [`**${progress.node}**: ${progress.phase}${progress.currentStep ? ` (step ${progress.currentStep})` : ''}`, '', '| step | kind | status | result |', '|---|---|---|---|', ...rows, ...(rollback.length ? ['', '**Rollback**', ...rollback] : [])].join('\n'),
  );
}
