/**
 * Runs of steps (patch `node-step-runs`): several of a node's steps in one activity, each seeing the activity context
 * its own activity would give it (its type, its attempt, its start-to-close timeout), so the step code does not
 * know whether it runs alone or in a run. Also the attempt offset of a step retried alone after its run failed.
 */
import { asyncLocalStorage, Context, type Info } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure, defaultPayloadConverter } from '@temporalio/common';
import { parseDuration } from '../playbooks/duration';
import type { Step } from '../playbooks/schema';
import { activityByKind } from '../workflows/step-activities';
import type { StepOutcome, StepRequest, StepRunRequest, StepRunResult, Undo } from './node-types';
import { checkStepRun, checkTargets } from './step-policy';

/** The failure of a step that ran past its own timeout inside a run of steps (retried, as Temporal's timeout is). */
export const StepTimedOut = 'StepTimedOut';

/** What a step's context changes from the activity's. */
interface StepView {
  activityType: string;
  attempt: number;
  /** The step's start-to-close timeout; absent: the activity's. */
  startToCloseTimeoutMs?: number;
  /** What the step's heartbeats send instead of its own details (the run says which step runs). */
  heartbeatDetails?: unknown;
}

/** The parts of a Context its constructor takes that are not public. */
interface ContextInternals {
  _client: ConstructorParameters<typeof Context>[4];
  _cancellationDetails: ConstructorParameters<typeof Context>[7];
}

/**
 * Runs `work` in a context derived from `parent`: the view's type, attempt and timeout; cancelled when the parent is,
 * or when the step's own timeout passes (then `work` is abandoned with {@link StepTimedOut}: its commands are stopped
 * by the cancellation, and its lease never outlives the step's deadline).
 */
export async function inStepContext<T>(parent: Context, view: StepView, work: () => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let reject!: (err: unknown) => void;
  const cancelled = new Promise<never>((_, r) => (reject = r));
  cancelled.catch(() => undefined);
  const abort = (reason: unknown) => {
    if (controller.signal.aborted) return;
    controller.abort(reason);
    reject(reason);
  };
  const onParentAbort = () => abort(parent.cancellationSignal.reason instanceof CancelledFailure ? parent.cancellationSignal.reason : new CancelledFailure('the activity was cancelled'));
  if (parent.cancellationSignal.aborted) onParentAbort();
  else parent.cancellationSignal.addEventListener('abort', onParentAbort, { once: true });
  const info: Info = {
    ...parent.info,
    activityType: view.activityType,
    attempt: view.attempt,
    startToCloseTimeoutMs: view.startToCloseTimeoutMs ?? parent.info.startToCloseTimeoutMs,
  };
  const internals = parent as unknown as ContextInternals;
  const heartbeat = view.heartbeatDetails === undefined ? (details?: unknown) => parent.heartbeat(details) : () => parent.heartbeat(view.heartbeatDetails);
  const context = new Context(info, cancelled, controller.signal, heartbeat, internals._client, parent.log, parent.metricMeter, internals._cancellationDetails);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = view.startToCloseTimeoutMs === undefined ? undefined : new Promise<never>((_, r) => {
    timer = setTimeout(() => {
      const failure = ApplicationFailure.create({ type: StepTimedOut, message: `the step did not finish within its timeout (${Math.round(view.startToCloseTimeoutMs! / 1000)} s)`, nonRetryable: false });
      abort(new CancelledFailure(failure.message));
      r(failure);
    }, view.startToCloseTimeoutMs);
  });
  try {
    const running = asyncLocalStorage.run(context, work);
    return await (timedOut ? Promise.race([running, timedOut]) : running);
  } finally {
    clearTimeout(timer);
    parent.cancellationSignal.removeEventListener('abort', onParentAbort);
  }
}

/** A step activity as createNodeActivities builds it. */
type StepActivity = (request: StepRequest) => Promise<StepOutcome>;

/**
 * The step activity `activity`, taking {@link StepRequest.attemptsBefore} into account: the step sees its attempt as
 * the activity's plus the attempts it had in a run of steps.
 */
export function withAttemptsBefore(activity: StepActivity): StepActivity {
  return (request) => {
    const before = request.attemptsBefore ?? 0;
    if (before <= 0) return activity(request);
    const parent = Context.current();
    return inStepContext(parent, { activityType: parent.info.activityType, attempt: parent.info.attempt + before }, () => activity(request));
  };
}

/**
 * The `runSteps` activity: the steps one after the other, each through its own activity's code in a context of its
 * own; the first failure ends the run and is returned (not thrown), with the outcomes before it, so the workflow gets
 * every undo that came back and decides about the retry itself. Nothing runs after a cancellation.
 */
export async function runSteps(stepActivities: Record<string, StepActivity>, request: StepRunRequest): Promise<StepRunResult> {
  const parent = Context.current();
  const outcomes: StepOutcome[] = [];
  const durationsMs: number[] = [];
  /** The undos of this run of steps, newest first. */
  const undos: Undo[] = [];
  checkTargets(request.node, request.kubernetes);
  checkStepRun(request, request.node);
  for (const [offset, step] of request.steps.entries()) {
    const index = request.firstIndex + offset;
    const last = offset === request.steps.length - 1;
    const stepRequest: StepRequest = {
      runId: request.runId, rolloutId: request.rolloutId, node: request.node, kubernetes: request.kubernetes, step, drain: request.drain, journal: true, stepIndex: index,
      ...(offset === 0 && request.firstOfRun ? { firstOfRun: request.firstOfRun } : {}),
      ...(last && request.commitAfter ? { commitAfter: { undos: [...undos, ...request.commitAfter.undos], desired: request.commitAfter.desired && { ...request.commitAfter.desired, since: new Date().toISOString() } } } : {}),
    };
    const activityType = activityByKind[step.kind];
    const details = { step: step.id, kind: step.kind, index, done: outcomes.length, of: request.steps.length };
    parent.heartbeat(details);
    // Before each step: a rollout abort stops the run here, as it would have kept the step's own activity from
    // starting. Between two steps asked of Temporal now, not through the throttled heartbeats (seconds behind).
    if (parent.cancellationSignal.aborted || (offset > 0 && await cancelRequestedNow(parent, details))) {
      if (parent.cancellationSignal.aborted) notCancelledByTheWorkflow(parent);
      return { outcomes, durationsMs, failed: { index, message: 'the run of steps was cancelled before this step started', nonRetryable: true, cancelled: true } };
    }
    const started = Date.now();
    try {
      const outcome = await inStepContext(parent, { activityType, attempt: 1, startToCloseTimeoutMs: stepTimeoutMs(step), heartbeatDetails: details }, () => stepActivities[activityType](stepRequest));
      outcomes.push(outcome);
      durationsMs.push(Date.now() - started);
      if (outcome.undo) undos.unshift(outcome.undo);
    } catch (err) {
      if (parent.cancellationSignal.aborted) notCancelledByTheWorkflow(parent);
      return { outcomes, durationsMs, failed: { index, ...describeFailure(err) } };
    }
  }
  return { outcomes, durationsMs };
}

/**
 * Records a heartbeat with Temporal at once (the run's step in its details, so the UI shows it without delay) and
 * returns whether a cancellation of the activity was requested. No client (an activity run outside a worker): the
 * context's own signal. Temporal unreachable: the run fails as a whole (StepRunInterrupted), and the workflow runs the
 * steps left in activities of their own.
 */
async function cancelRequestedNow(parent: Context, details: unknown): Promise<boolean> {
  let client: Context['client'];
  try {
    client = parent.client;
  } catch {
    return false;
  }
  try {
    const response = await client.workflowService.recordActivityTaskHeartbeat({
      namespace: parent.info.activityNamespace, taskToken: parent.info.taskToken, identity: client.options.identity,
      details: { payloads: [defaultPayloadConverter.toPayload(details)] },
    });
    return response.cancelRequested === true;
  } catch (err) {
    throw ApplicationFailure.create({ type: 'StepRunInterrupted', message: `the run of steps could not ask Temporal whether it was cancelled (${err instanceof Error ? err.message : String(err)}); its steps go on in activities of their own`, nonRetryable: false });
  }
}

/**
 * A run of steps cancelled by anything but the workflow (this worker shutting down, its heartbeat timed out) fails as a
 * whole instead of reporting a cancelled step: the workflow then runs its steps in activities of their own, as a retry
 * of each, where only a cancellation it asked for (a rollout abort) rolls the node back.
 */
function notCancelledByTheWorkflow(parent: Context): void {
  const details = parent.cancellationDetails;
  if (details?.cancelRequested) return;
  throw ApplicationFailure.create({ type: 'StepRunInterrupted', message: `the run of steps was interrupted (${details?.workerShutdown ? 'the worker shut down' : details?.timedOut ? 'its attempt timed out' : 'cancelled'}); its steps go on in activities of their own`, nonRetryable: false });
}

/** The step's start-to-close timeout, as the workflow gives its own activity. */
export function stepTimeoutMs(step: Step): number {
  return parseDuration(step.timeout);
}

function describeFailure(err: unknown): Omit<NonNullable<StepRunResult['failed']>, 'index'> {
  if (err instanceof CancelledFailure) return { message: err.message, nonRetryable: true, cancelled: true };
  if (err instanceof ApplicationFailure) return { type: err.type ?? undefined, message: err.message, nonRetryable: err.nonRetryable === true };
  // As Temporal converts an error thrown by an activity: its name is the type, and it is retried.
  if (err instanceof Error) return { type: err.name, message: err.message, nonRetryable: false };
  return { type: 'Error', message: String(err), nonRetryable: false };
}
