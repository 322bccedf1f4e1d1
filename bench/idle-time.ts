// Idle time inside a step, from the benchmark's command trace: what bench/rollout-vs-floor.ts prints as "idle in
// activity" per step. Pure, so test/bench-idle-time.test.ts checks it on a trace made by hand.

/** A command of the trace: the step (activity type) that ran it, in which activity attempt, and when (ms). */
export interface IdleCommand {
  activity: string;
  workflowId: string;
  activityId: string;
  startedMs: number;
  endedMs: number;
}

/** A Kubernetes API request of the trace, with the same attribution. */
export interface IdleRequest {
  activity: string;
  workflowId: string;
  /** Absent (a trace kept before requests had it): the request counts for no attempt. */
  activityId?: string;
  atMs?: number;
}

/**
 * Idle ms per step: the gaps between one command's end and the next command's start within one execution of the
 * step, in which the step sent no Kubernetes API request (a gap with one is the step waiting on the API: the pod, the
 * Node). One execution: the step's consecutive commands in one activity attempt. A run of steps runs several steps in
 * one attempt, kata.toml's two prereq-checks among them; the time between two executions of a step is not its own.
 */
export function idleMsByStep(trace: readonly IdleCommand[], requests: readonly IdleRequest[]): Map<string, number> {
  const key = (item: { workflowId: string; activityId?: string }) => `${item.workflowId} ${item.activityId}`;
  const attempts = new Map<string, IdleCommand[]>();
  for (const command of trace) (attempts.get(key(command)) ?? attempts.set(key(command), []).get(key(command))!).push(command);
  const sent = new Map<string, IdleRequest[]>();
  for (const request of requests) {
    if (request.atMs !== undefined && request.activityId !== undefined) (sent.get(key(request)) ?? sent.set(key(request), []).get(key(request))!).push(request);
  }
  const idle = new Map<string, number>();
  for (const [attempt, commands] of attempts) {
    commands.sort((a, b) => a.startedMs - b.startedMs);
    const requestsOf = sent.get(attempt) ?? [];
    let end = commands[0].endedMs;
    for (const [i, command] of commands.entries()) {
      if (i > 0 && commands[i - 1].activity === command.activity && command.startedMs > end
        && !requestsOf.some((request) => request.activity === command.activity && request.atMs! >= end && request.atMs! <= command.startedMs)) {
        idle.set(command.activity, (idle.get(command.activity) ?? 0) + command.startedMs - end);
      }
      end = i > 0 && commands[i - 1].activity === command.activity ? Math.max(end, command.endedMs) : command.endedMs;
    }
  }
  return idle;
}
