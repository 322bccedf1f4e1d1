import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  isCancellation,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { createNodeActivities } from '../activities/node-activities';
import type { KubernetesTarget, NodeTarget, RecoveryResult, StepOutcome, StepRequest, StepRunResult, Undo } from '../activities/node-types';
import type { createRecoveryActivities } from '../activities/node-recovery';
import type { Step } from '../playbooks/schema';
import { parseDuration } from '../playbooks/duration';
import { activityByKind, kindsWithoutNodeLock, NodeNeedsPrepare } from './step-activities';
import { nodeProgressQuery, type NodeProgress, type StepProgress } from './node-messages';
import { searchAttributes } from './search-attributes';

type NodeActivities = ReturnType<typeof createNodeActivities>;
type RecoveryActivities = ReturnType<typeof createRecoveryActivities>;

/**
 * `patched()` ids of nodeWorkflow's behaviour changes, so that histories recorded before them still replay.
 * `node-journal`: the journal and lock on the node, the check of the quarantine marker and of journals left
 * behind before the first step, recovery from the journal (retried for `rollbackFor`, non-cancellable also in
 * undo mode), quarantine, and the journal deleted when the run succeeds.
 * `node-prepare-in-first-step`: the check before the first step (quarantine marker, journals left behind) is made by
 * the first step's activity, under its lock, instead of a prepareNode activity of its own; only when it finds
 * something (NodeNeedsPrepare) does the run call prepareNode, then run the step again.
 * `node-commit-in-last-step`: the last step's activity commits the run (journal to applied record, desired state) under
 * its lock once it succeeded, instead of a commitRun activity of its own; only when that commit fails does the run
 * call commitRun.
 * `node-step-runs`: the steps run in runs of steps, one activity (runSteps) for all the steps left, each step as its
 * own activity would run it; a step that fails there with a failure a retry may fix gets its remaining attempts in an
 * activity of its own (after its first retry interval), then the steps after it run as a run again. A run of steps
 * that fails as a whole (its worker lost, its timeout) leaves the steps from its first one to activities of their own.
 */
export const nodePatches = { journal: 'node-journal', prepareInFirstStep: 'node-prepare-in-first-step', commitInLastStep: 'node-commit-in-last-step', stepRuns: 'node-step-runs' } as const;

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
  /**
   * How long a failed rollback keeps being retried (with backoff, 2 s doubling up to 1 min) before the
   * node is quarantined (`[rollout] rollback_for`).
   * @default "1h"
   */
  rollbackFor?: string;
  /**
   * What the rollout applies, to be recorded as the node's desired state (desired.json, `state: applied`) by the
   * run's commit, in the same activity: no activity of the rollout's own after each node (patch
   * `rollout-desired-at-commit`). Absent: the rollout records it itself, as before.
   */
  desired?: { playbook: { name: string; sha256: string }; rolloutId: string };
}

/** The per-node lock: one workflow id per node, so two rollouts never work on one node at once. */
export function nodeWorkflowId(node: string): string {
  return `katafleet-node-${node}`;
}

/** Failure types that no retry can fix, whatever the playbook says. */
const permanentFailures = ['HostKeyMismatch', 'HostKeyUnknown', 'SshAuthFailed', 'NodeNotCapable', 'ContainerdConfigConflict', 'ContainerdCriDisabled', 'ContainerdConfigUnsupported', 'ContainerdConfigInvalid', 'ContainerdPatchVerificationFailed', 'UnsafeValue'];


/** Activity options of a step: its timeout and retry policy from the playbook. */
function stepActivityOptions(step: Step, heartbeatTimeout: string, attemptsBefore = 0): ActivityOptions {
  const retry = step.retry;
  const initialIntervalMs = parseDuration(retry?.initial_interval ?? '5s');
  const backoff = retry?.backoff ?? 2;
  return {
    startToCloseTimeout: parseDuration(step.timeout),
    // Activities heartbeat while they wait; a dead worker is noticed after this, not after the step's timeout.
    heartbeatTimeout: parseDuration(heartbeatTimeout),
    // On cancellation (a rollout abort) wait for the step to end: a step that still completes reports
    // its undo, so the rollback takes back what it changed instead of leaving it behind.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    summary: `${step.kind} ${step.id}`,
    // After attempts in a run of steps: the attempts left, with the waits they would have had.
    retry: {
      maximumAttempts: Math.max(1, (retry?.max_attempts ?? 3) - attemptsBefore),
      initialInterval: initialIntervalMs * backoff ** attemptsBefore,
      ...(attemptsBefore > 0 ? { maximumInterval: initialIntervalMs * 100 } : {}),
      backoffCoefficient: backoff,
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

/** The recovery activities; each holds the node's lock. Start-to-close above the lock wait plus the undos' inner timeouts. */
function recoveryActivities(input: NodeRolloutInput, maximumAttempts: number): RecoveryActivities {
  return proxyActivities<RecoveryActivities>({
    // An undo may wait for the lock, then restart containerd (2 + 2 min) or purge packages (up to 10 min).
    startToCloseTimeout: '30m',
    heartbeatTimeout: parseDuration(input.heartbeatTimeout ?? defaultHeartbeatTimeout),
    retry: { maximumAttempts, initialInterval: '2s', nonRetryableErrorTypes: ['NodeQuarantined', 'HostKeyMismatch', 'HostKeyUnknown', 'SshAuthFailed'] },
  });
}

/** The failure type every run that finds (or leaves) its node quarantined ends with. */
export const NodeQuarantined = 'NodeQuarantined';

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
  const journaled = patched(nodePatches.journal);
  // One activity less per node: the first step checks the node (it holds the node's lock, as prepareNode did).
  const firstStepPrepares = journaled && input.mode !== 'undo' && input.steps.length > 0 && !kindsWithoutNodeLock.has(input.steps[0].kind) && patched(nodePatches.prepareInFirstStep);
  if (journaled && !firstStepPrepares) await CancellationScope.nonCancellable(() => prepare(progress, input));
  const last = input.steps.length - 1;
  const lastStepCommits = journaled && input.mode !== 'undo' && last >= 0 && !kindsWithoutNodeLock.has(input.steps[last].kind) && patched(nodePatches.commitInLastStep);
  const desired = input.desired && { ...input.desired, state: 'applied' as const };

  if (input.mode === 'undo') {
    if (!journaled) {
      await rollBack(progress, [...(input.undos ?? [])].reverse(), input);
      return finish(progress, progress.rollback?.every((outcome) => outcome.ok) ? 'rolled-back' : 'rollback-failed');
    }
    // Not cancellable: a cancelled abort must not leave the node half restored (R11).
    const undos = [...(input.undos ?? [])].reverse();
    await CancellationScope.nonCancellable(() => recover(progress, undos, input));
    if (progress.quarantine) throw quarantinedFailure(progress, 'its undo');
    return finish(progress, 'rolled-back');
  }

  const undos: Undo[] = [];
  let committed: StepOutcome['committed'];
  const took = (outcome: StepOutcome) => {
    if (outcome.undo) undos.unshift(outcome.undo);
    committed = outcome.committed;
  };
  // Runs of steps: one activity for the steps left instead of one per step (fewer round trips through Temporal).
  let inRuns = journaled && input.steps.length > 1 && patched(nodePatches.stepRuns);
  /** The first step still makes the run's check (until prepareNode has made it). */
  let checkFirst = firstStepPrepares;
  /** Attempts the step at `index` already had in a run of steps. */
  let attemptsBefore = 0;
  /** A run of steps failed as a whole: any step from there on may have had an attempt in it. */
  let runLost = false;
  /** What the last step commits after it succeeded (patch node-commit-in-last-step): the undos so far, the desired state. */
  const commitAfter = (): StepExtra['commitAfter'] => lastStepCommits ? { undos: [...undos], desired: desired && { ...desired, since: new Date(Date.now()).toISOString() } } : undefined;
  let index = 0;
  while (index < input.steps.length) {
    try {
      const step = input.steps[index];
      const entry = progress.steps[index];
      const extra: StepExtra = {
        ...(index === 0 && checkFirst ? { firstOfRun: { steps: input.steps } } : {}),
        ...(index === last && lastStepCommits ? { commitAfter: commitAfter() } : {}),
        ...(attemptsBefore > 0 ? { attemptsBefore } : {}),
      };
      if (inRuns && attemptsBefore === 0 && index < last) {
        let result: StepRunResult;
        try {
          result = await runStepsFrom(index, progress, input, { firstOfRun: extra.firstOfRun, commitAfter: commitAfter() });
        } catch (err) {
          if (isCancellation(err)) throw err;
          // Refused before any step ran (StepRefused): the steps alone would be refused too.
          if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.nonRetryable) throw err;
          // The run of steps failed as a whole (its worker lost, its timeout): the steps from here on run in activities
          // of their own, each as a retry of an attempt (a step done already finds its effect and its undo in place).
          inRuns = false;
          runLost = true;
          attemptsBefore = 1;
          continue;
        }
        result.outcomes.forEach(took);
        index += result.outcomes.length;
        const failed = result.failed;
        if (!failed) continue;
        if (failed.cancelled) throw new CancelledFailure(failed.message);
        if (index === 0 && checkFirst && failed.type === NodeNeedsPrepare) {
          await prepareBeforeFirstStep(progress, input);
          checkFirst = false;
          continue;
        }
        const retry = retrySettings(input.steps[index]);
        if (failed.nonRetryable || retry.maximumAttempts <= 1 || retry.nonRetryableErrorTypes.includes(failed.type ?? '')) {
          throw ApplicationFailure.create({ type: failed.type, message: failed.message, nonRetryable: true });
        }
        // The step's first attempt was in the run: its other attempts in an activity of its own, after the wait its
        // retry policy puts before the second attempt.
        const failedEntry = progress.steps[index];
        failedEntry.status = 'running';
        failedEntry.summary = `attempt 1 failed: ${failed.message}; attempt 2 in ${retry.initialIntervalMs / 1000} s`;
        showDetails(progress);
        await sleep(retry.initialIntervalMs);
        attemptsBefore = 1;
        continue;
      }
      const outcome = extra.firstOfRun ? await runFirstStep(step, entry, progress, input, extra) : await runStep(step, index, entry, progress, input, journaled, extra);
      took(outcome);
      index++;
      attemptsBefore = runLost ? 1 : 0;
    } catch (err) {
      // The node could not be prepared: prepare() has set the progress, as when it ran before the first step.
      if (err instanceof PrepareFailed) throw err.failure;
      // The step that failed (in a run of steps, the one after the last that succeeded).
      const step = input.steps[index];
      const entry = progress.steps[index];
      entry.status = 'failed';
      const reason = failureReason(err);
      progress.failure = { stepId: step.id, ...reason };
      entry.summary = reason.reason;
      for (const later of progress.steps.slice(index + 1)) later.status = 'skipped';
      if (journaled) {
        // The journal on the node, not only the undos that came back, says what to take back (R3).
        await CancellationScope.nonCancellable(() => recover(progress, undos, input));
        if (progress.quarantine) throw quarantinedFailure(progress, `${step.kind} "${step.id}" failed (${reason.reason}) and its rollback`);
        finish(progress, (progress.rollback ?? []).length === 0 ? 'failed' : 'rolled-back');
      } else {
        await CancellationScope.nonCancellable(() => rollBack(progress, undos, input));
        finish(progress, undos.length === 0 ? 'failed' : progress.rollback?.every((outcome) => outcome.ok) ? 'rolled-back' : 'rollback-failed');
      }
      throw ApplicationFailure.create({
        type: isCancellation(err) ? 'NodeRolloutCancelled' : 'NodeRolloutFailed',
        message: `${step.kind} "${step.id}" failed on node ${input.node.name}: ${reason.reason}; ${rollbackSummary(progress)}`,
        nonRetryable: true,
        details: [progress],
      });
    }
  }
  progress.undos = undos;
  if (journaled) {
    // The run is done: its journal goes (a journal left on the node means a run that did not finish). The last
    // step did it already unless its commit failed.
    if (!committed) {
      const record = desired && { ...desired, since: new Date(Date.now()).toISOString() };
      committed = await CancellationScope.nonCancellable(() => recoveryActivities(input, 10).commitRun({ ...runOnNode(input), undos, desired: record }));
    }
    if (desired) progress.desired = committed?.desiredError === undefined ? { recorded: true } : { recorded: false, error: committed.desiredError };
  }
  return finish(progress, 'succeeded');
}

function runOnNode(input: NodeRolloutInput) {
  return { node: input.node, kubernetes: input.kubernetes, runId: workflowInfo().runId, rolloutId: input.rolloutId };
}

/**
 * Before the first step: a quarantined node is refused with nothing changed; a journal another run left
 * behind is taken back first (or the node is quarantined). Throws the run's failure in both cases.
 */
async function prepare(progress: NodeProgress, input: NodeRolloutInput): Promise<void> {
  try {
    const recovered = await recoveryActivities(input, 5).prepareNode({ ...runOnNode(input), steps: input.mode === 'undo' ? [] : input.steps, undos: input.undos ?? [] });
    if (recovered.length > 0) progress.recovered = recovered;
  } catch (err) {
    const reason = failureReason(err);
    for (const step of progress.steps) step.status = 'skipped';
    if (reason.type === NodeQuarantined) {
      const [why, fix] = splitFix(reason.reason);
      progress.quarantine = { reason: why, fix, since: new Date(Date.now()).toISOString(), markedOnNode: true };
      throw quarantinedFailure(progress, 'it');
    }
    progress.failure = { stepId: '(prepare)', ...reason };
    finish(progress, 'failed');
    throw ApplicationFailure.create({ type: 'NodeRolloutFailed', message: `node ${input.node.name} could not be checked before the first step: ${reason.reason}; nothing was changed`, nonRetryable: true, details: [progress] });
  }
}

/** "… Fix: …" of a NodeQuarantined message, split. */
function splitFix(message: string): [string, string] {
  const at = message.lastIndexOf(' Fix: ');
  return at < 0 ? [message, ''] : [message.slice(0, at), message.slice(at + ' Fix: '.length)];
}

function quarantinedFailure(progress: NodeProgress, what: string): ApplicationFailure {
  finish(progress, 'needs-attention');
  const q = progress.quarantine;
  return ApplicationFailure.create({
    type: NodeQuarantined,
    message: `node ${progress.node} needs attention: ${what === 'it' ? '' : `${what} could not finish: `}${(q?.reason ?? '?').replace(/\.$/, '')}. Fix: ${q?.fix ?? '?'}`,
    nonRetryable: true,
    details: [progress],
  });
}

/**
 * Takes back what this run changed: the recovery activity reads the run's journal on the node (merged
 * with the undos the workflow holds) and undoes it, newest step first. A failed attempt is retried with
 * backoff (2 s, doubling, at most 1 min) for `rollbackFor`, visibly in the details; a refused undo (the
 * node changed since katafleet wrote it, a backup gone) or the end of that time quarantines the node.
 */
async function recover(progress: NodeProgress, undos: Undo[], input: NodeRolloutInput): Promise<void> {
  progress.phase = 'rolling-back';
  progress.rollback = [];
  showDetails(progress);
  const until = Date.now() + parseDuration(input.rollbackFor ?? '1h');
  const activities = recoveryActivities(input, 1);
  let backoff = 2_000;
  let result: RecoveryResult | undefined;
  let lastError = '';
  for (let attempt = 1; ; attempt++) {
    try {
      result = await activities.recoverRun({ ...runOnNode(input), stepOrder: input.steps.map((step) => step.id), undos });
      break;
    } catch (err) {
      lastError = failureReason(err).reason;
      if (Date.now() + backoff > until) break;
      progress.rollbackRetry = { attempt, lastError, nextAt: new Date(Date.now() + backoff).toISOString(), until: new Date(until).toISOString() };
      showDetails(progress);
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 60_000);
    }
  }
  progress.rollbackRetry = undefined;
  progress.rollback = result?.outcomes ?? [];
  const refused = result?.refused;
  if (result && !refused) return;
  const reason = refused
    ? `the rollback was refused at step ${refused.stepId}: ${refused.reason}`
    : `the rollback kept failing for ${input.rollbackFor ?? '1h'} (last error: ${lastError})`;
  const fix = refused?.fix ?? `check what the run changed on ${input.node.name} (its journal is in /var/lib/katafleet/journal/${workflowInfo().runId}/, one JSON file per step with the undo), put it back by hand; then run: katafleet node release ${input.node.name} --inventory FILE`;
  let markedOnNode = true;
  try {
    await recoveryActivities(input, 3).quarantineNode({ ...runOnNode(input), reason, fix });
  } catch {
    // The node cannot be reached: Temporal still shows needs-attention, and the journal left on the node
    // makes the next run recover it (or quarantine it) before anything else.
    markedOnNode = false;
  }
  progress.quarantine = { reason, fix, since: new Date(Date.now()).toISOString(), markedOnNode };
}

/** prepare()'s failure, carried out of the step loop unchanged. */
class PrepareFailed extends Error {
  constructor(readonly failure: unknown) {
    super('the node could not be prepared');
  }
}

/**
 * The run's first step, which also makes the check before it (patch `node-prepare-in-first-step`). When the node
 * carries a quarantine marker or a journal to recover, the step fails with NodeNeedsPrepare before changing
 * anything; the run then prepares the node with the prepareNode activity (not cancellable, as before) and runs the
 * step again.
 */
async function runFirstStep(step: Step, entry: StepProgress, progress: NodeProgress, input: NodeRolloutInput, extra: StepExtra): Promise<StepOutcome> {
  try {
    return await runStep(step, 0, entry, progress, input, true, extra);
  } catch (err) {
    if (failureReason(err).type !== NodeNeedsPrepare) throw err;
  }
  entry.status = 'pending';
  await prepareBeforeFirstStep(progress, input);
  return runStep(step, 0, entry, progress, input, true, { ...extra, firstOfRun: undefined });
}

/** The first step found something to recover on the node (NodeNeedsPrepare): prepareNode, not cancellable, as before. */
async function prepareBeforeFirstStep(progress: NodeProgress, input: NodeRolloutInput): Promise<void> {
  progress.steps[0].status = 'pending';
  try {
    await CancellationScope.nonCancellable(() => prepare(progress, input));
  } catch (err) {
    throw new PrepareFailed(err);
  }
}

/**
 * The steps from `from` to the last in one runSteps activity (patch `node-step-runs`), each as its own activity would
 * run it; their outcomes go to the progress. Its start-to-close is the sum of the steps' timeouts (each step keeps its
 * own inside), plus a minute; it is not retried by Temporal: the workflow retries the step that failed.
 */
async function runStepsFrom(from: number, progress: NodeProgress, input: NodeRolloutInput, extra: Pick<StepExtra, 'firstOfRun' | 'commitAfter'>): Promise<StepRunResult> {
  const steps = input.steps.slice(from);
  progress.currentRun = `${steps[0].id} … ${steps[steps.length - 1].id}`;
  showDetails(progress);
  const startToCloseTimeout = steps.reduce((sum, step) => sum + parseDuration(step.timeout), 60_000);
  const { runSteps } = proxyActivities<NodeActivities>({
    startToCloseTimeout,
    heartbeatTimeout: parseDuration(input.heartbeatTimeout ?? defaultHeartbeatTimeout),
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    summary: `${steps.length} steps: ${steps[0].id} … ${steps[steps.length - 1].id}`,
    retry: { maximumAttempts: 1 },
  });
  const result = await runSteps({
    runId: workflowInfo().runId, rolloutId: input.rolloutId, node: input.node, kubernetes: input.kubernetes, drain: input.drain,
    steps, firstIndex: from,
    ...(extra.firstOfRun ? { firstOfRun: extra.firstOfRun } : {}),
    ...(extra.commitAfter ? { commitAfter: extra.commitAfter } : {}),
  });
  for (const [offset, outcome] of result.outcomes.entries()) {
    const entry = progress.steps[from + offset];
    entry.status = outcome.changed ? 'changed' : 'unchanged';
    entry.summary = outcome.summary;
    entry.durationMs = result.durationsMs?.[offset];
    Object.assign(progress.facts, outcome.facts);
  }
  progress.currentRun = undefined;
  return result;
}

/** The retry policy of a step as the workflow applies it (the playbook's `retry`, with the kinds' permanent failures). */
function retrySettings(step: Step): { maximumAttempts: number; initialIntervalMs: number; nonRetryableErrorTypes: string[] } {
  const retry = stepActivityOptions(step, defaultHeartbeatTimeout).retry!;
  return { maximumAttempts: retry.maximumAttempts ?? 3, initialIntervalMs: retry.initialInterval as number, nonRetryableErrorTypes: retry.nonRetryableErrorTypes ?? [] };
}

/** What a step's request carries beyond the step: the run's first check, or its commit (patches above). */
type StepExtra = Pick<StepRequest, 'firstOfRun' | 'commitAfter' | 'attemptsBefore'>;

async function runStep(step: Step, index: number, entry: StepProgress, progress: NodeProgress, input: NodeRolloutInput, journaled: boolean, extra: StepExtra = {}): Promise<StepOutcome> {
  entry.status = 'running';
  progress.currentStep = step.id;
  showDetails(progress);
  const started = Date.now();
  const activity = proxyActivities<NodeActivities>(stepActivityOptions(step, input.heartbeatTimeout ?? defaultHeartbeatTimeout, extra.attemptsBefore))[activityByKind[step.kind]] as (request: unknown) => Promise<StepOutcome>;
  const outcome = await activity({
    runId: workflowInfo().runId, rolloutId: input.rolloutId, node: input.node, kubernetes: input.kubernetes, step, drain: input.drain,
    ...(journaled ? { journal: true, stepIndex: index } : {}),
    ...(extra.firstOfRun ? { firstOfRun: extra.firstOfRun } : {}),
    ...(extra.commitAfter ? { commitAfter: extra.commitAfter } : {}),
    ...(extra.attemptsBefore ? { attemptsBefore: extra.attemptsBefore } : {}),
  });
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

/** One line (a failure's reason may carry the service's last log lines) of bounded length. */
function oneLine(text: string): string {
  const line = text.replace(/\s*\n\s*/g, ' ⏎ ');
  return line.length > 300 ? `${line.slice(0, 299)}…` : line;
}

/** The "current details" pane of the Temporal UI. */
function showDetails(progress: NodeProgress): void {
  setCurrentDetails(formatNodeDetails(progress, Date.now()));
}

/**
 * A node's steps for the Temporal UI's "current details": one list line per step (id, kind, status, result), then its
 * rollback and what needs a person. A list, not a table: the UI draws tables without cell padding.
 */
export function formatNodeDetails(progress: NodeProgress, now: number): string {
  const rows = progress.steps.map((step) => `- **${step.id}** (${step.kind}) — ${step.status}${step.summary ? `: ${oneLine(step.summary)}` : ''}`);
  const rollback = (progress.rollback ?? []).map((outcome) => `- ${outcome.ok ? 'undone' : 'FAILED'} ${outcome.stepId}: ${outcome.summary}`);
  const retry = progress.rollbackRetry;
  if (retry) rollback.push(`- rollback attempt ${retry.attempt} failed: ${oneLine(retry.lastError)}; next in ${Math.max(0, Math.round((Date.parse(retry.nextAt) - now) / 1000))} s (at ${retry.nextAt}), retried until ${retry.until}`);
  const extra = [
    ...(progress.quarantine ? ['', `**Needs attention**: ${oneLine(progress.quarantine.reason)}`, '', `**Fix**: ${oneLine(progress.quarantine.fix)}`] : []),
    ...(progress.recovered?.length ? ['', '**Recovered first**', '', ...progress.recovered.map((line) => `- ${oneLine(line)}`)] : []),
  ];
  const running = progress.currentRun ? ` (steps ${progress.currentRun} in one activity: its heartbeat names the step it runs)` : progress.currentStep ? ` (step ${progress.currentStep})` : '';
  return [`**${progress.node}**: ${progress.phase}${running}`, '', ...rows, ...(rollback.length ? ['', '**Rollback**', '', ...rollback] : []), ...extra].join('\n');
}

/** Input of {@link nodeReleaseWorkflow}. */
export interface NodeReleaseInput {
  node: NodeTarget;
  kubernetes?: KubernetesTarget;
}

/** What `katafleet node release` did. */
export interface NodeReleaseResult {
  node: string;
  /** The marker that was removed; absent when the node was not quarantined. */
  marker?: { rolloutId: string; runId: string; reason: string; fix: string; since: string };
  /** Runs whose journals were set aside (moved to /var/lib/katafleet/journal-released/). */
  journals: string[];
}

/**
 * `katafleet node release NODE`: lifts a node's quarantine under the node's lock (workflow id
 * {@link nodeWorkflowId}, so never while a run works on the node): removes the marker and sets aside the
 * journals left on the node, whose changes the operator has now dealt with by hand.
 */
export async function nodeReleaseWorkflow(input: NodeReleaseInput): Promise<NodeReleaseResult> {
  upsertSearchAttributes([
    { key: searchAttributes.node, value: input.node.name },
    { key: searchAttributes.phase, value: 'releasing' },
  ]);
  const released = await proxyActivities<RecoveryActivities>({
    startToCloseTimeout: '5m',
    heartbeatTimeout: '30s',
    retry: { maximumAttempts: 5, initialInterval: '2s', nonRetryableErrorTypes: ['HostKeyMismatch', 'HostKeyUnknown', 'SshAuthFailed'] },
  }).releaseNode({ node: input.node, kubernetes: input.kubernetes, runId: workflowInfo().runId, rolloutId: 'release' });
  upsertSearchAttributes([{ key: searchAttributes.phase, value: 'released' }]);
  setCurrentDetails(`**${input.node.name}**: ${released.marker ? `released (was quarantined: ${released.marker.reason})` : 'was not quarantined'}${released.journals.length ? `; set aside the journals of ${released.journals.join(', ')}` : ''}`);
  return { node: input.node.name, ...released };
}
