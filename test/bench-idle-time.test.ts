// bench/rollout-vs-floor.ts's "idle in activity" per step (bench/idle-time.ts), on a trace made by hand. README
// "Performance": "it now counts it per execution of the step": in a run of steps, the time between kata.toml's two
// prereq-checks (another step runs there) is not prereqCheck's idle time.
import { idleMsByStep, type IdleCommand, type IdleRequest } from '../bench/idle-time';

const command = (activity: string, startedMs: number, endedMs: number, activityId = '1/1', workflowId = 'katafleet-node-a'): IdleCommand => ({ activity, workflowId, activityId, startedMs, endedMs });

it('counts the gaps inside each execution of a step, not the time between two executions in one run of steps', () => {
  const trace = [
    // One runSteps attempt: prereq (gap 100), install (gap 50), kata-check (gap 30), out of start order in the trace.
    command('prereqCheck', 0, 200),
    command('prereqCheck', 300, 400),
    command('releaseTarball', 1_000, 1_100),
    command('releaseTarball', 1_150, 2_000),
    command('prereqCheck', 2_130, 2_300),
    command('prereqCheck', 2_000, 2_100),
  ];
  expect(Object.fromEntries(idleMsByStep(trace, []))).toEqual({ prereqCheck: 100 + 30, releaseTarball: 50 });
});

it('counts no gap in which the step sent a Kubernetes API request, and only gaps within one activity attempt', () => {
  const trace = [
    command('readinessGate', 0, 100),
    command('readinessGate', 900, 1_000),
    command('readinessGate', 1_200, 1_300),
    // The same step in another attempt and in another node's workflow: no gap across them.
    command('readinessGate', 5_000, 5_100, '1/2'),
    command('readinessGate', 100, 200, '1/1', 'katafleet-node-b'),
  ];
  const requests: IdleRequest[] = [
    { activity: 'readinessGate', workflowId: 'katafleet-node-a', activityId: '1/1', atMs: 500 },
    // Another step's request, or one without a time, does not make the gap a wait on the API.
    { activity: 'nodeLabel', workflowId: 'katafleet-node-a', activityId: '1/1', atMs: 1_100 },
    { activity: 'readinessGate', workflowId: 'katafleet-node-a', activityId: '1/1' },
  ];
  expect(Object.fromEntries(idleMsByStep(trace, requests))).toEqual({ readinessGate: 200 });
});

it('leaves overlapping commands of one step without a gap', () => {
  expect(Object.fromEntries(idleMsByStep([command('containerdPatch', 0, 500), command('containerdPatch', 100, 200), command('containerdPatch', 450, 600)], []))).toEqual({});
});
