// The new input of runs of steps (patch `node-step-runs`), as a workflow started straight on Temporal could send it:
// a run's first index and steps, a step's index and the attempts it had before. Each hostile value is refused with
// StepRefused naming the field, before a single command is sent to the node; the values katafleet sends pass.
import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { NodeTarget, StepRequest, StepRunRequest, StepRunResult } from '../activities/node-types';
import { SshPool, type CommandEvent } from '../activities/ssh';
import { loadPlaybook } from '../playbooks/load';
import type { Step } from '../playbooks/schema';

// Port 1 on loopback and a login that does not exist: a request that got past the checks fails at the login instead.
const node: NodeTarget = { name: 'worker-1.prod.example.internal', address: '127.0.0.1', port: 1, maxSessions: 4, connectTimeoutMs: 2_000, credentials: { inventory: '/nonexistent/inventory.toml', node: 'worker-1.prod.example.internal' } };
const runId = '7f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a4b';
const commands: CommandEvent[] = [];
const pool = new SshPool({ onCommand: (event) => commands.push(event) });
let steps: Step[];

beforeAll(async () => {
  steps = (await loadPlaybook('kata')).steps;
});
afterAll(() => pool.closeAll());

const activities = () => createNodeActivities({ pool });
const environment = () => new MockActivityEnvironment({ startToCloseTimeoutMs: 60_000 } as Partial<Info>, { logger: new DefaultLogger('ERROR') });
const failureOf = (promise: Promise<unknown>) => promise.then(() => undefined, (err: { type?: string; message: string }) => err);

async function refusalOfRun(request: Record<string, unknown>) {
  const before = commands.length;
  const run = { runId, rolloutId: 'hostile', node, drain: false, steps, firstIndex: 0, ...request } as StepRunRequest;
  const failure = await failureOf(environment().run(activities().runSteps, run) as Promise<StepRunResult>);
  expect(commands.length).toBe(before);
  return failure;
}

async function refusalOfStep(extra: Record<string, unknown>) {
  const before = commands.length;
  const label = steps.find((step) => step.kind === 'node-label')!;
  const request = { runId, rolloutId: 'hostile', node, step: label, drain: false, journal: true, stepIndex: 6, ...extra } as unknown as StepRequest;
  const failure = await failureOf(environment().run(activities().nodeLabel as (r: StepRequest) => Promise<unknown>, request));
  expect(commands.length).toBe(before);
  return failure;
}

describe('a run of steps (runSteps) refuses what katafleet never sends', () => {
  it.each([
    ['a negative first index', { firstIndex: -1 }, /firstIndex: .*(>=|at least|too small)/i],
    ['a fractional first index', { firstIndex: 1.5 }, /firstIndex: /],
    ['a huge first index', { firstIndex: 1e12 }, /firstIndex: /],
    ['a first index as a string', { firstIndex: '0' }, /firstIndex: /],
    ['a first index that places the last step out of bounds', { firstIndex: 9_995 }, /firstIndex: places the last step at index 10003/],
    ['no steps', { steps: [] }, /steps: /],
    ['a step kind no activity runs', { steps: [{ ...{ id: 'x', kind: 'shell' } }] as unknown as Step[] }, /steps\[0\]\.kind: expected one of .*got \"shell\"/],
    ['steps that are not a list', { steps: 'prereq' as unknown as Step[] }, /steps: /],
  ])('%s', async (_what, request, message) => {
    const failure = await refusalOfRun(request);
    expect(failure?.type).toBe('StepRefused');
    expect(failure?.message).toMatch(/^Refusing the run of steps on node "worker-1\.prod\.example\.internal": /);
    expect(failure?.message).toMatch(message);
    expect(failure?.message).toContain('Nothing was sent to the node');
  });

  it('the run\'s node check (firstOfRun) only at index 0 and only for the run\'s own steps', async () => {
    const later = await refusalOfRun({ firstIndex: 2, steps: steps.slice(2), firstOfRun: { steps } });
    expect(later?.type).toBe('StepRefused');
    expect(later?.message).toMatch(/firstIndex: must be 0 when the run checks the node first \(firstOfRun\), not 2/);
    const other = await refusalOfRun({ firstOfRun: { steps: [...steps].reverse() } });
    expect(other?.type).toBe('StepRefused');
    expect(other?.message).toMatch(/firstOfRun\.steps: must be the run's steps/);
  });

  it('a node target an attacker chose is refused before the run, as for a step', async () => {
    const failure = await refusalOfRun({ node: { ...node, address: '127.0.0.1; reboot' } });
    expect(failure?.type).toBe('StepRefused');
    expect(failure?.message).toMatch(/node\.address: /);
  });

  it('what katafleet sends passes the checks (then fails at the node\'s login, not as a refusal)', async () => {
    const result = await environment().run(activities().runSteps, { runId, rolloutId: 'fine', node, drain: false, steps, firstIndex: 0, firstOfRun: { steps } }) as StepRunResult;
    expect(result.outcomes).toEqual([]);
    expect(result.failed?.index).toBe(0);
    // Past the checks: the first step looked for the node's login (the inventory named here does not exist).
    expect(result.failed?.type).toBe('NodeNeedsPrepare');
    expect(result.failed?.message).toMatch(/no login: ENOENT/);
  }, 30_000);
});

describe('a step activity refuses a place in the run that katafleet never sends', () => {
  it.each([
    ['a negative attemptsBefore', { attemptsBefore: -1 }, /attemptsBefore: /],
    ['a fractional attemptsBefore', { attemptsBefore: 0.5 }, /attemptsBefore: /],
    ['an attemptsBefore above the step\'s max_attempts (3)', { attemptsBefore: 4 }, /attemptsBefore: must not exceed the step's retry\.max_attempts \(3\)/],
    ['a huge attemptsBefore', { attemptsBefore: Number.MAX_SAFE_INTEGER }, /attemptsBefore: /],
    ['an attemptsBefore as a string', { attemptsBefore: '1' }, /attemptsBefore: /],
    ['a negative stepIndex', { stepIndex: -3 }, /stepIndex: /],
    ['a fractional stepIndex', { stepIndex: 2.5 }, /stepIndex: /],
    ['a huge stepIndex', { stepIndex: 1e7 }, /stepIndex: /],
  ])('%s', async (_what, extra, message) => {
    const failure = await refusalOfStep(extra);
    expect(failure?.type).toBe('StepRefused');
    expect(failure?.message).toMatch(/^Refusing the place of step "label" \(node-label\) on node "worker-1\.prod\.example\.internal": /);
    expect(failure?.message).toMatch(message);
  });

  it.each([0, 1, 3])('attemptsBefore %d (up to the step\'s max_attempts) passes the checks', async (attemptsBefore) => {
    const failure = await failureOf(environment().run(activities().nodeLabel as (r: StepRequest) => Promise<unknown>, { runId, rolloutId: 'fine', node, step: steps.find((s) => s.kind === 'node-label')!, drain: false, journal: true, stepIndex: 6, attemptsBefore } as StepRequest));
    expect(failure?.type).not.toBe('StepRefused');
    expect(failure?.message).toMatch(/no login: ENOENT/);
  }, 30_000);
});
