/**
 * What every step activity needs besides SSH: heartbeats while it waits, the time left in the
 * current attempt, cancellation-aware sleeps, and failures typed for retry policies.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';

/** How often a step heartbeats while it waits; well below the workflow's 30 s heartbeat timeout. */
export const HEARTBEAT_INTERVAL_MS = 5_000;

/** The current activity's context, or undefined outside an activity (drift checks, scripts). */
export function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** When each running attempt started on this worker (the worker's clock), keyed by its context. */
const attemptStarts = new WeakMap<Context, number>();

/**
 * Notes that the attempt of `context` starts now. The worker calls it (an activity interceptor) as it begins an
 * attempt; outside such a worker the attempt's first question about its time counts as its start.
 */
export function markAttemptStarted(context: Context): void {
  if (!attemptStarts.has(context)) attemptStarts.set(context, Date.now());
}

/**
 * The end of the current attempt (worker clock): its start-to-close timeout after the attempt started, which is when
 * a worker took it from the task queue, not when it was scheduled. An attempt that waited in the queue behind others
 * (a wave wider than the worker's activity slots) still has its whole budget. `fallbackMs` from now outside an activity.
 */
export function attemptDeadline(fallbackMs: number): number {
  const context = activityContext();
  if (!context) return Date.now() + fallbackMs;
  markAttemptStarted(context);
  return (attemptStarts.get(context) as number) + (context.info.startToCloseTimeoutMs || fallbackMs);
}

/**
 * Awaits `promise`, heartbeating every {@link HEARTBEAT_INTERVAL_MS} until it settles, so that a
 * long command (apt-get, a drain) keeps the activity alive and a dead worker is still noticed.
 */
export async function whileHeartbeating<T>(promise: Promise<T>, details?: unknown): Promise<T> {
  const context = activityContext();
  if (!context) return promise;
  context.heartbeat(details);
  const timer = setInterval(() => context.heartbeat(details), HEARTBEAT_INTERVAL_MS);
  try {
    return await promise;
  } finally {
    clearInterval(timer);
  }
}

/** Sleeps `ms`, heartbeating first; rejects at once when the activity is cancelled. */
export async function pause(ms: number): Promise<void> {
  const context = activityContext();
  if (!context) return new Promise((resolve) => setTimeout(resolve, ms));
  context.heartbeat();
  await context.sleep(ms);
}

/** The activity's cancellation signal, to stop a running remote command when the workflow cancels. */
export function cancellationSignal(): AbortSignal | undefined {
  return activityContext()?.cancellationSignal;
}

/**
 * Milliseconds this attempt may still spend waiting, keeping `reserveMs` (at most a quarter of the
 * budget) for the work after the wait: clean-up, a final read. The budget is the attempt's
 * start-to-close timeout, or `fallbackMs` outside an activity.
 */
export function timeLeftMs(startedAt: number, fallbackMs: number, reserveMs = 0): number {
  const budget = activityContext()?.info.startToCloseTimeoutMs || fallbackMs;
  return Math.max(0, startedAt + budget - Math.min(reserveMs, budget / 4) - Date.now());
}

/** First wait of {@link pollUntil}: most conditions on the critical path hold within a second. */
const FIRST_POLL_INTERVAL_MS = 250;

/**
 * Polls `probe` until it returns a value (not undefined) or `timeoutMs` passes; heartbeats between
 * polls, which back off from 250 ms, doubling, to `intervalMs`. Returns undefined on timeout so the caller can say what it last saw.
 */
export async function pollUntil<T>(probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = Math.min(FIRST_POLL_INTERVAL_MS, intervalMs); ; wait = Math.min(wait * 2, intervalMs)) {
    const value = await probe();
    if (value !== undefined) return value;
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    await pause(Math.min(wait, left));
  }
}

/** A failure no retry can fix: the node or the playbook must change first. */
export function permanentFailure(type: string, message: string, cause?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true, cause: cause instanceof Error ? cause : undefined });
}

/** A failure that a later attempt may not hit (a lock, a slow daemon). */
export function transientFailure(type: string, message: string, cause?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: false, cause: cause instanceof Error ? cause : undefined });
}

/** The `type` of an ApplicationFailure-like error (checked by shape, not `instanceof`). */
export function failureType(err: unknown): string | undefined {
  const type = (err as { type?: unknown } | null)?.type;
  return typeof type === 'string' ? type : undefined;
}

/** The first line of a failure's message, for one-line summaries. */
export function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0];
}
