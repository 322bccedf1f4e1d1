import {
  ApplicationFailure,
  ChildWorkflowFailure,
  condition,
  continueAsNew,
  ParentClosePolicy,
  setCurrentDetails,
  setHandler,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  type ChildWorkflowHandle,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { KubernetesTarget, NodeTarget } from '../activities/node-types';
import type { RolloutSettings, Step } from '../playbooks/schema';
import { parseDuration } from './duration';
import type { NodeProgress } from './node-messages';
import { nodeWorkflow, nodeWorkflowId, type NodeRolloutInput } from './node';
import {
  abortSignal,
  abortUpdate,
  pauseSignal,
  pauseUpdate,
  resumeSignal,
  resumeUpdate,
  rolloutProgressQuery,
  type AbortRequest,
  type RolloutNodeResult,
  type RolloutPhase,
  type RolloutProgress,
} from './rollout-messages';
import { searchAttributes } from './search-attributes';
import { planWaves } from './waves';

/** Input of {@link rolloutWorkflow}: a validated playbook and inventory as plain data. */
export interface RolloutInput {
  rolloutId: string;
  playbook: { name: string; file: string; sha256: string };
  steps: Step[];
  rollout: RolloutSettings;
  nodes: NodeTarget[];
  kubernetes?: KubernetesTarget;
  /** Lower limits than Temporal's, for tests that show how a large fleet stays within them. */
  limits?: RolloutLimits;
  /** State carried across continue-as-new; absent on the first run. */
  carried?: { nodes: RolloutNodeResult[]; nextWave: number };
}

/** How much one run of rolloutWorkflow takes on; it continues as new before reaching either. */
export interface RolloutLimits {
  /** History events of one run. @default 8000 (Temporal warns at 10,240) */
  historyEvents?: number;
  /** Child nodeWorkflows in flight at once, whatever the wave size. @default 1000 (Temporal allows 2,000 pending children) */
  childrenInFlight?: number;
}

const defaultLimits: Required<RolloutLimits> = { historyEvents: 8_000, childrenInFlight: 1_000 };

/**
 * History events one node adds to the rollout's run at most: start initiated, started, closed, two
 * search-attribute upserts and two workflow tasks of three events each (often shared by several nodes).
 */
export const historyEventsPerNode = 11;

/**
 * Rolls a playbook out to a fleet: a canary wave first, then waves, each node a child
 * nodeWorkflow (whose id is the node's lock). Stops starting nodes once more nodes failed than
 * the failure budget allows (a failed canary always stops it); nodes already running finish or
 * roll back. Pause / resume / abort arrive as updates (or signals).
 */
export async function rolloutWorkflow(input: RolloutInput): Promise<RolloutProgress> {
  const waves = planWaves(input.nodes.map((node) => node.name), input.rollout);
  const targets = new Map(input.nodes.map((node) => [node.name, node]));
  const results: RolloutNodeResult[] =
    input.carried?.nodes ?? waves.flatMap((wave, index) => wave.map((name) => ({ name, wave: index + 1, status: 'pending' as const })));
  const byName = new Map(results.map((result) => [result.name, result]));
  const progress: RolloutProgress = {
    rolloutId: input.rolloutId,
    playbook: input.playbook.name,
    phase: 'running',
    currentWave: input.carried?.nextWave ?? 1,
    waves,
    nodes: results,
    failureBudget: input.rollout.failure_budget,
    counts: { total: results.length, succeeded: 0, failed: 0, running: 0, pending: 0, skipped: 0 },
  };
  let paused = false;
  let abort: AbortRequest | undefined;
  const running = new Map<string, ChildWorkflowHandle<typeof nodeWorkflow>>();
  const limits = { ...defaultLimits, ...input.limits };
  let startedThisRun = 0;
  // Before starting a node: would this run's history pass the limit once every node in flight has closed?
  const historyNearlyFull = () =>
    startedThisRun > 0 && (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength + (running.size + 1) * historyEventsPerNode >= limits.historyEvents);
  let lastAttributes = '';

  const pause = (): RolloutPhase => {
    paused = true;
    return report();
  };
  const resume = (): RolloutPhase => {
    paused = false;
    return report();
  };
  const startAbort = (request: AbortRequest): RolloutPhase => {
    abort = request;
    paused = false;
    return report();
  };
  const finished = () => ['halted', 'aborted', 'completed', 'succeeded', 'aborting'].includes(progress.phase);
  const rejectIf = (refuse: boolean, reason: string) => {
    if (refuse) throw new Error(reason);
  };
  setHandler(rolloutProgressQuery, () => progress);
  setHandler(pauseUpdate, pause, { validator: () => rejectIf(finished() || paused || abort !== undefined, `cannot pause: the rollout is ${progress.phase}`) });
  setHandler(resumeUpdate, resume, { validator: () => rejectIf(!paused, `cannot resume: the rollout is ${progress.phase}, not paused or awaiting approval`) });
  setHandler(abortUpdate, startAbort, { validator: (_request: AbortRequest) => rejectIf(finished() || abort !== undefined, `cannot abort: the rollout is already ${progress.phase}`) });
  setHandler(pauseSignal, () => void (!finished() && abort === undefined && pause()));
  setHandler(resumeSignal, () => void (paused && resume()));
  setHandler(abortSignal, (request) => void (!finished() && abort === undefined && startAbort(request ?? {})));

  /** The phase the pause/abort state implies; a pause during approval stays `awaiting-approval`. */
  function currentPhase(): RolloutPhase {
    if (abort) return 'aborting';
    if (paused) return progress.phase === 'awaiting-approval' ? 'awaiting-approval' : 'paused';
    return progress.phase === 'paused' || progress.phase === 'awaiting-approval' ? 'running' : progress.phase;
  }

  function report(): RolloutPhase {
    const counts = { total: results.length, succeeded: 0, failed: 0, running: 0, pending: 0, skipped: 0 };
    for (const result of results) {
      if (result.status === 'succeeded') counts.succeeded++;
      else if (result.status === 'failed' || result.status === 'rolled-back') counts.failed++;
      else if (result.status === 'running') counts.running++;
      else if (result.status === 'pending') counts.pending++;
      else counts.skipped++;
    }
    progress.counts = counts;
    if (!finished()) progress.phase = currentPhase();
    // Each upsert is a history event: only when a value the UI list shows has changed.
    const attributes = JSON.stringify([progress.phase, counts.succeeded, counts.failed]);
    if (attributes !== lastAttributes) {
      lastAttributes = attributes;
      upsertSearchAttributes([
        { key: searchAttributes.phase, value: progress.phase },
        { key: searchAttributes.playbook, value: input.playbook.name },
        { key: searchAttributes.nodesTotal, value: counts.total },
        { key: searchAttributes.nodesDone, value: counts.succeeded },
        { key: searchAttributes.nodesFailed, value: counts.failed },
      ]);
    }
    setCurrentDetails(formatRolloutDetails(progress));
    return progress.phase;
  }

  const budgetExceeded = () => progress.counts.failed > input.rollout.failure_budget || results.some((r) => r.wave === 1 && input.rollout.canary > 0 && r.status === 'failed');

  async function runNode(name: string): Promise<void> {
    const result = byName.get(name)!;
    const started = Date.now();
    const childInput: NodeRolloutInput = { rolloutId: input.rolloutId, node: targets.get(name)!, kubernetes: input.kubernetes, steps: input.steps, drain: input.rollout.drain };
    let handle: ChildWorkflowHandle<typeof nodeWorkflow>;
    try {
      handle = await startChild(nodeWorkflow, {
        workflowId: nodeWorkflowId(name),
        args: [childInput],
        // Cancelling the rollout asks each running node to stop and roll back; never kill one mid-change.
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        staticSummary: `${input.playbook.name} on ${name}`,
      });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        Object.assign(result, { status: 'skipped', reason: `node is busy: workflow ${nodeWorkflowId(name)} (another rollout or drift repair) holds its lock` });
        report();
        return;
      }
      throw err;
    }
    running.set(name, handle);
    startedThisRun++;
    result.status = 'running';
    report();
    try {
      const outcome = await handle.result();
      Object.assign(result, { status: 'succeeded', nodePhase: outcome.phase, facts: { ...outcome.facts, undos: JSON.stringify(outcome.undos) } });
    } catch (err) {
      const details = nodeFailureDetails(err);
      Object.assign(result, {
        status: details?.phase === 'rolled-back' ? 'rolled-back' : 'failed',
        nodePhase: details?.phase,
        facts: details?.facts,
        reason: err instanceof ChildWorkflowFailure && err.cause ? err.cause.message : String(err),
      });
    } finally {
      running.delete(name);
      result.durationMs = Date.now() - started;
      report();
    }
  }

  report();
  /** 1-based wave the next run starts with (its nodes that are no longer pending are skipped), once this run is full. */
  let continueAtWave: number | undefined;
  for (let waveIndex = progress.currentWave - 1; waveIndex < waves.length; waveIndex++) {
    if (abort || budgetExceeded()) break;
    progress.currentWave = waveIndex + 1;
    const limit = Math.min(input.rollout.max_parallel ?? waves[waveIndex].length, limits.childrenInFlight);
    const inFlight: Promise<void>[] = [];
    for (const name of waves[waveIndex]) {
      if (byName.get(name)!.status !== 'pending') continue;
      // Pause takes effect here, at the next node start.
      await condition(() => (!paused && running.size < limit) || abort !== undefined);
      if (abort || budgetExceeded()) break;
      // A run's children close in the same run (continue-as-new would ask them to cancel): let them finish first.
      if (historyNearlyFull()) {
        continueAtWave = waveIndex + 1;
        break;
      }
      inFlight.push(runNode(name));
      await condition(() => running.has(name) || byName.get(name)!.status !== 'pending');
    }
    await Promise.all(inFlight);
    if (abort || budgetExceeded() || continueAtWave !== undefined) break;
    const isLast = waveIndex === waves.length - 1;
    if (!isLast && waveIndex === 0 && input.rollout.canary > 0 && input.rollout.approval_after_canary) {
      paused = true;
      progress.phase = 'awaiting-approval';
      report();
      await condition(() => !paused || abort !== undefined);
    } else if (!isLast && parseDuration(input.rollout.pause_between_waves) > 0) {
      progress.phase = 'waiting-between-waves';
      report();
      await Promise.race([sleep(parseDuration(input.rollout.pause_between_waves)), condition(() => abort !== undefined)]);
      if (!abort) progress.phase = 'running';
    }
    if (!isLast && historyNearlyFull()) {
      continueAtWave = waveIndex + 2;
      break;
    }
  }
  if (continueAtWave !== undefined && !budgetExceeded()) {
    // Pause and abort are not carried over: a paused rollout continues as new once resumed, an aborted one does not.
    await condition(() => !paused || abort !== undefined);
    if (!abort) await continueAsNew<typeof rolloutWorkflow>({ ...input, carried: { nodes: results, nextWave: continueAtWave } });
  }

  if (abort) {
    progress.phase = 'aborting';
    report();
    if (abort.rollback) await rollBackChangedNodes(running, results, input, targets);
    else await condition(() => running.size === 0);
    progress.phase = 'aborted';
    progress.reason = abort.reason ?? 'aborted by request';
  } else if (budgetExceeded()) {
    await condition(() => running.size === 0);
    progress.phase = 'halted';
    progress.reason = `failure budget exceeded: ${progress.counts.failed} node(s) failed, budget ${input.rollout.failure_budget}; no further node was started`;
  } else {
    progress.phase = results.some((result) => result.status !== 'succeeded') ? 'completed' : 'succeeded';
  }
  for (const result of results) {
    if (result.status === 'pending') Object.assign(result, { status: 'skipped', reason: progress.reason ?? 'not started' });
  }
  report();
  if (progress.phase === 'halted') {
    throw ApplicationFailure.create({ type: 'RolloutHalted', message: progress.reason!, nonRetryable: true, details: [progress] });
  }
  return progress;
}

/**
 * Abort with rollback: nodes still running finish first (cancelling one mid-step could lose the undo of
 * that step), then every node this rollout changed is undone, newest change first.
 */
async function rollBackChangedNodes(
  running: Map<string, ChildWorkflowHandle<typeof nodeWorkflow>>,
  results: RolloutNodeResult[],
  input: RolloutInput,
  targets: Map<string, NodeTarget>,
): Promise<void> {
  await condition(() => running.size === 0);
  const undoRuns = results
    .filter((result) => result.status === 'succeeded' && result.facts?.undos && result.facts.undos !== '[]')
    .map(async (result) => {
      const undoInput: NodeRolloutInput = { rolloutId: input.rolloutId, node: targets.get(result.name)!, kubernetes: input.kubernetes, steps: [], drain: input.rollout.drain, mode: 'undo', undos: [...JSON.parse(result.facts!.undos)].reverse() };
      try {
        const handle = await startChild(nodeWorkflow, { workflowId: nodeWorkflowId(result.name), args: [undoInput], parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL });
        const outcome = await handle.result();
        Object.assign(result, { status: 'rolled-back', nodePhase: outcome.phase, reason: 'rolled back by abort' });
      } catch (err) {
        Object.assign(result, { reason: `rollback after abort failed: ${err instanceof ChildWorkflowFailure && err.cause ? err.cause.message : String(err)}` });
      }
    });
  await Promise.all(undoRuns);
}

function nodeFailureDetails(err: unknown): NodeProgress | undefined {
  if (err instanceof ChildWorkflowFailure && err.cause instanceof ApplicationFailure) {
    return err.cause.details?.[0] as NodeProgress | undefined;
  }
  return undefined;
}

/** The rollout as a Markdown table for the Temporal UI's "current details". */
export function formatRolloutDetails(progress: RolloutProgress): string {
  const { counts } = progress;
  const header = `**${progress.playbook}** rollout ${progress.rolloutId}: ${progress.phase}, wave ${progress.currentWave}/${progress.waves.length} — ${counts.succeeded} done, ${counts.failed} failed (budget ${progress.failureBudget}), ${counts.running} running, ${counts.pending} pending${progress.reason ? `\n\n${progress.reason}` : ''}`;
  const rows = progress.nodes.map((node) => `| ${node.wave} | ${node.name} | ${node.status} | ${(node.reason ?? node.facts?.guestKernel ?? '').replace(/\|/g, '\\|')} |`);
  return [header, '', '| wave | node | status | detail |', '|---|---|---|---|', ...rows].join('\n');
}
