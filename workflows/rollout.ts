import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  ChildWorkflowCancellationType,
  ChildWorkflowFailure,
  condition,
  continueAsNew,
  isCancellation,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  type ChildWorkflowHandle,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { createDesiredStateActivities } from '../activities/desired-state';
import type { KubernetesTarget, NodeTarget } from '../activities/node-types';
import type { RolloutSettings, Step } from '../playbooks/schema';
import { parseDuration } from '../playbooks/duration';
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
  capText,
  isNonSuccess,
  progressPage,
  type AbortRequest,
  type NodeStatus,
  type RolloutNodeResult,
  type RolloutPhase,
  type RolloutProgress,
} from './rollout-messages';
import { clusterObjectsOnce } from './cluster-objects';
import { searchAttributes } from './search-attributes';
import { planWaves, waveSizeFor } from './waves';
import { gatherInventory, receiveInventoryPieces, type InventoryManifest } from './inventory-pieces';
import type { createInventoryActivities } from '../activities/inventory-history';

/** Input of {@link rolloutWorkflow}: a validated playbook and inventory as plain data. */
export interface RolloutInput {
  rolloutId: string;
  playbook: { name: string; file: string; sha256: string };
  steps: Step[];
  rollout: RolloutSettings;
  /**
   * The nodes, when they travel in the start input (rollouts started before issue 13's pieces, and tests). Absent
   * when {@link inventory} says they arrive in pieces: the API's rollouts.
   */
  nodes?: NodeTarget[];
  /**
   * The inventory arrives in pieces (issue 13): as `inventoryPiece` signals in the first run (signalWithStart,
   * then one signal a piece), read back from the run before by a readInventoryPiece activity after
   * continue-as-new. No payload grows with the fleet. docs/scale.md "The inventory in pieces".
   */
  inventory?: InventoryManifest;
  /** Which request started the run (a random id): two simultaneous requests with one request id start one rollout. */
  startToken?: string;
  kubernetes?: KubernetesTarget;
  /** Lower limits than Temporal's, for tests that show how a large fleet stays within them. */
  limits?: RolloutLimits;
  /** State carried across continue-as-new; absent on the first run. `abort`: the run was rolling back after an abort. */
  carried?: { nodes?: RolloutNodeResult[]; nextWave: number; abort?: AbortRequest; compact?: CompactCarried };
}

/**
 * The state a rollout whose inventory arrives in pieces carries across continue-as-new, bounded whatever the fleet
 * size: one character of status per node in plan order ({@link encodeStatuses}), at most {@link carriedReasonsCap}
 * capped reasons, and the run whose history holds the inventory pieces. The undos of a changed node are read back
 * from its nodeWorkflow when an abort with rollback needs them.
 */
export interface CompactCarried {
  statuses: string;
  /** [index in plan order, reason capped at {@link carriedReasonCap} characters]. */
  reasons: [number, string][];
  /** The run that continued as new: its history holds every piece (signals or readInventoryPiece results). */
  inventoryFrom: { workflowId: string; runId: string };
}

/** How much one run of rolloutWorkflow takes on; it continues as new before reaching either. */
export interface RolloutLimits {
  /** History events of one run. @default 8000 (Temporal warns at 10,240) */
  historyEvents?: number;
  /** Child nodeWorkflows in flight at once, whatever the wave size. @default 1000 (Temporal allows 2,000 pending children) */
  childrenInFlight?: number;
  /**
   * Wait before a node found busy (its lock held) is tried again at the end of its wave; the try after the
   * last wave waits twice this. @default "30s"
   */
  busyRetry?: string;
}

const defaultLimits: Required<RolloutLimits> = { historyEvents: 8_000, childrenInFlight: 1_000, busyRetry: '30s' };

/**
 * History events one node adds to the rollout's run at most: start initiated, started, closed, two
 * search-attribute upserts and two workflow tasks of three events each (often shared by several nodes).
 */
export const historyEventsPerNode = 11;

/** With the desired-state record after each node: its activity (scheduled, started, completed) and a workflow task. */
const historyEventsPerNodeWithRecord = historyEventsPerNode + 6;

/**
 * Ids of the changes made to rolloutWorkflow since histories were first kept (main at 0c4c69f): a run
 * that started on the older code replays it unchanged, a new run takes the new behaviour.
 */
export const rolloutPatches = {
  /** Any canary outcome but succeeded halts; the budget counts every non-success; busy nodes are retried. */
  canaryAndBudget: 'rollout-canary-and-budget',
  /** Abort with rollback in bounded batches, newest wave first, across continue-as-new, not cut by a cancel; abort upgradable. */
  boundedAbort: 'rollout-bounded-abort',
  /** The node's desired state (desired.json) recorded after it succeeded, marked rolled-back after an abort undid it. */
  desiredState: 'rollout-desired-state',
  /** The phase shows a pause while waiting between waves; a Temporal cancel ends with phase cancelled. */
  phaseDisplay: 'rollout-phase-display',
  /**
   * Bounded payloads (issue 13): the state carried across continue-as-new keeps of each node only what the
   * rollout still needs (status, wave, a capped reason, the undos of a node it changed), and the result holds
   * the first page of nodes, the counts and a capped list of failed nodes.
   */
  boundedPayloads: 'rollout-bounded-payloads',
  /**
   * The inventory in pieces (issue 13): the start input carries a manifest, the nodes arrive as signals, later
   * runs read them back with an activity, and continue-as-new carries the compact state ({@link CompactCarried}).
   */
  inventoryPieces: 'rollout-inventory-pieces',
  /**
   * A wave's children are started together (one workflow task starts up to `max_parallel` of them) instead of one
   * after the other, each waiting for the server's acknowledgement of the one before (issue 13: at most ~30 nodes
   * were in flight whatever the wave size).
   */
  batchedStarts: 'rollout-batched-starts',
  /**
   * A rollout cancelled through Temporal takes back the RuntimeClass it created, once its running nodes rolled back,
   * as a halted one does (the cluster as it found it).
   */
  cancelTakeBack: 'rollout-cancel-take-back',
  /**
   * A node's desired state is recorded by its own run's commit (nodeWorkflow's `commitRun`, the same activity and
   * lock) instead of an activity of the rollout after the child closed: one activity and one SSH connection use
   * fewer per node, and the rollout's workflow no longer serializes a record for each node (issue 14).
   */
  desiredAtCommit: 'rollout-desired-at-commit',
} as const;

/** Nodes in the workflow's result (and a halt's failure details): the rest are read page by page with the query. */
export const resultPageSize = 200;
/** Characters of a node's reason carried across continue-as-new. */
const carriedReasonCap = 500;
/** Reasons the compact carried state holds at most (the rest: on each node's nodeWorkflow). */
export const carriedReasonsCap = 200;
/** How long the first run waits for the inventory's pieces after it started. */
const inventoryPiecesWait = '10m';
/** `facts.undos` of a node whose undos were not carried: an abort with rollback reads them from its nodeWorkflow. */
export const undosOnNodeWorkflow = '@nodeWorkflow';

const { readInventoryPiece, readNodeUndos } = proxyActivities<ReturnType<typeof createInventoryActivities>>({
  startToCloseTimeout: '2m',
  retry: { maximumAttempts: 10, initialInterval: '2s', maximumInterval: '30s', nonRetryableErrorTypes: ['InventoryPieceMissing'] },
});

const { recordDesiredState } = proxyActivities<ReturnType<typeof createDesiredStateActivities>>({
  startToCloseTimeout: '1m',
  heartbeatTimeout: '30s',
  retry: { maximumAttempts: 10, initialInterval: '2s', maximumInterval: '30s', nonRetryableErrorTypes: ['HostKeyMismatch', 'HostKeyUnknown', 'SshAuthFailed'] },
});

/** Tries of a node's undo after an abort when its lock is held (a drift repair): then it is reported. */
const undoStartAttempts = 4;

/**
 * Rolls a playbook out to a fleet: a canary wave first, then waves, each node a child
 * nodeWorkflow (whose id is the node's lock). Any canary outcome other than succeeded halts it;
 * later, it stops starting nodes once more nodes did not succeed than the failure budget allows;
 * nodes already running finish or roll back. Pause / resume / abort arrive as updates (or signals).
 */
export async function rolloutWorkflow(input: RolloutInput): Promise<RolloutProgress> {
  if (input.nodes !== undefined || input.inventory === undefined) return rolloutRun(input, input.nodes ?? [], false);
  // Registered before the first await: the signals of signalWithStart arrive with the start.
  const received = receiveInventoryPieces();
  if (!patched(rolloutPatches.inventoryPieces)) throw ApplicationFailure.nonRetryable('an inventory in pieces needs a worker with the rollout-inventory-pieces change', 'InventoryIncomplete');
  const manifest = input.inventory;
  // A run that continued as new reads its inventory back first: meanwhile it answers with the counts it carried,
  // not with every node pending (a status poll saw "0/10000 done" at 9,245 done).
  const carried = input.carried?.compact;
  setHandler(rolloutProgressQuery, () => ({
    rolloutId: input.rolloutId, playbook: input.playbook.name, phase: 'running', currentWave: input.carried?.nextWave ?? 0, waves: [], nodes: [], failureBudget: input.rollout.failure_budget, canary: input.rollout.canary,
    counts: carried ? countsOfCarried(carried) : { total: manifest.nodes, succeeded: 0, failed: 0, running: 0, pending: manifest.nodes, skipped: 0 },
    reason: carried ? `continued as new: reading the inventory back (${manifest.pieces} pieces)` : `receiving the inventory: ${received.size} of ${manifest.pieces} pieces`, nodesPage: { pageSize: 0 },
  }));
  const from = carried?.inventoryFrom;
  const assembled = await gatherInventory(manifest, received, from, readInventoryPiece, inventoryPiecesWait);
  if ('problem' in assembled) {
    throw ApplicationFailure.create({ type: 'InventoryIncomplete', nonRetryable: true, message: `rollout ${input.rolloutId}: ${assembled.problem}; start the rollout again (katafleet rollout or POST /v1/rollouts with a new request id)` });
  }
  received.clear();
  return rolloutRun(input, assembled.nodes, true);
}

/** One run of a rollout, with its nodes (from the input or from the pieces). `pieces`: the inventory came in pieces. */
async function rolloutRun(input: RolloutInput, nodes: NodeTarget[], pieces: boolean): Promise<RolloutProgress> {
  const v = {
    canary: patched(rolloutPatches.canaryAndBudget),
    abort: patched(rolloutPatches.boundedAbort),
    desired: patched(rolloutPatches.desiredState),
    phase: patched(rolloutPatches.phaseDisplay),
    bounded: patched(rolloutPatches.boundedPayloads),
    batched: patched(rolloutPatches.batchedStarts),
    atCommit: patched(rolloutPatches.desiredAtCommit),
  };
  // The RuntimeClass once for the rollout, not per node (issue 12): workflows/cluster-objects.ts.
  const cluster = clusterObjectsOnce(input);
  /** What leaves the workflow (result, failure details): one page of nodes once payloads are bounded. */
  const outgoing = (): RolloutProgress => (v.bounded ? progressPage(progress, { pageSize: resultPageSize }) : progress);
  /** The node results continue-as-new carries: only what later runs use once payloads are bounded. */
  const carriedNodes = (): RolloutNodeResult[] => (v.bounded ? results.map(carriedResult) : results);
  /** What continue-as-new carries: the compact state when the inventory came in pieces (never the nodes themselves). */
  const carry = (rest: { nextWave: number; abort?: AbortRequest }): RolloutInput => {
    if (!pieces) return { ...input, carried: { nodes: carriedNodes(), ...rest } };
    const info = workflowInfo();
    return { ...input, nodes: undefined, carried: { ...rest, compact: { ...encodeStatuses(results), inventoryFrom: { workflowId: info.workflowId, runId: info.runId } } } };
  };
  const waves = planWaves(nodes.map((node) => node.name), input.rollout);
  const targets = new Map(nodes.map((node) => [node.name, node]));
  const planned = () => waves.flatMap((wave, index) => wave.map((name) => ({ name, wave: index + 1, status: 'pending' as const })));
  const results: RolloutNodeResult[] =
    input.carried?.nodes ?? (pieces && input.carried?.compact ? decodeStatuses(planned(), input.carried.compact) : planned());
  const byName = new Map(results.map((result) => [result.name, result]));
  const progress: RolloutProgress = {
    rolloutId: input.rolloutId,
    playbook: input.playbook.name,
    // An abort carried across continue-as-new is in force from the first moment: an update buffered for this run is
    // validated as soon as its handler is set, before the first report() (it read "running with rollback").
    phase: v.abort && input.carried?.abort ? 'aborting' : 'running',
    currentWave: input.carried?.nextWave ?? 1,
    waves,
    nodes: results,
    failureBudget: input.rollout.failure_budget,
    canary: input.rollout.canary,
    counts: { total: results.length, succeeded: 0, failed: 0, running: 0, pending: 0, skipped: 0 },
    ...(cluster.nodeSteps === input.steps ? {} : { cluster: cluster.summaries }),
  };
  let paused = false;
  let betweenWaves = false;
  let abort: AbortRequest | undefined = v.abort ? input.carried?.abort : undefined;
  const running = new Map<string, ChildWorkflowHandle<typeof nodeWorkflow>>();
  const limits = { ...defaultLimits, ...input.limits };
  const eventsPerNode = v.desired && !v.atCommit ? historyEventsPerNodeWithRecord : historyEventsPerNode;
  let startedThisRun = 0;
  /** Children whose start was asked for and not yet acknowledged (batched starts). */
  let starting = 0;
  // Before starting a node: would this run's history pass the limit once every node in flight has closed?
  const historyNearlyFull = () =>
    startedThisRun + starting > 0 && (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength + (running.size + starting + 1) * eventsPerNode >= limits.historyEvents);
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
    // An upgrade (abort --rollback after an abort without) keeps the first reason unless it gives one.
    abort = abort === undefined ? request : { rollback: request.rollback ?? abort.rollback, reason: request.reason ?? abort.reason };
    paused = false;
    return report();
  };
  const finished = () => ['halted', 'aborted', 'cancelled', 'completed', 'succeeded', 'aborting'].includes(progress.phase);
  const rejectIf = (refuse: boolean, reason: string) => {
    if (refuse) throw new Error(reason);
  };
  /** An abort is refused once the rollout has ended; an abort without rollback may still be upgraded to one. */
  const abortRefusal = (request: AbortRequest): string | undefined => {
    if (!v.abort) return finished() || abort !== undefined ? `cannot abort: the rollout is already ${progress.phase}` : undefined;
    if (abort === undefined) return finished() ? `cannot abort: the rollout is already ${progress.phase}` : undefined;
    if (abort.rollback) return `cannot abort: the rollout is already ${progress.phase} with rollback`;
    if (!request.rollback || progress.phase !== 'aborting') return `cannot abort: the rollout is already ${progress.phase}${progress.phase === 'aborting' ? ' (only abort --rollback can still be added)' : ''}`;
    return undefined;
  };
  setHandler(rolloutProgressQuery, (request) => progressPage(progress, request ?? {}));
  setHandler(pauseUpdate, pause, { validator: () => rejectIf(finished() || paused || abort !== undefined, `cannot pause: the rollout is ${progress.phase}`) });
  setHandler(resumeUpdate, resume, { validator: () => rejectIf(!paused, `cannot resume: the rollout is ${progress.phase}, not paused or awaiting approval`) });
  setHandler(abortUpdate, startAbort, { validator: (request: AbortRequest) => rejectIf(abortRefusal(request ?? {}) !== undefined, abortRefusal(request ?? {}) ?? '') });
  setHandler(pauseSignal, () => void (!finished() && abort === undefined && pause()));
  setHandler(resumeSignal, () => void (paused && resume()));
  setHandler(abortSignal, (request) => void (abortRefusal(request ?? {}) === undefined && startAbort(request ?? {})));

  /** The phase the pause/abort state implies; a pause during approval stays `awaiting-approval`. */
  function currentPhase(): RolloutPhase {
    if (abort) return 'aborting';
    if (paused) return progress.phase === 'awaiting-approval' ? 'awaiting-approval' : 'paused';
    if (v.phase && betweenWaves) return 'waiting-between-waves';
    return progress.phase === 'paused' || progress.phase === 'awaiting-approval' ? 'running' : progress.phase;
  }

  function report(): RolloutPhase {
    const counts = countNodes(results);
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

  /** Canary nodes that ended in anything but success (none without a canary wave). */
  const failedCanaries = () => (input.rollout.canary > 0 ? results.filter((r) => r.wave === 1 && isNonSuccess(r)) : []);
  const budgetExceeded = () =>
    v.canary
      ? progress.counts.failed > input.rollout.failure_budget || failedCanaries().length > 0
      : progress.counts.failed > input.rollout.failure_budget || results.some((r) => r.wave === 1 && input.rollout.canary > 0 && r.status === 'failed');

  async function runNode(name: string): Promise<void> {
    const result = byName.get(name)!;
    const started = Date.now();
    const childInput: NodeRolloutInput = {
      rolloutId: input.rolloutId, node: targets.get(name)!, kubernetes: input.kubernetes, steps: cluster.nodeSteps, drain: input.rollout.drain, rollbackFor: input.rollout.rollback_for,
      ...(v.desired && v.atCommit ? { desired: { playbook: { name: input.playbook.name, sha256: input.playbook.sha256 }, rolloutId: input.rolloutId } } : {}),
    };
    let handle: ChildWorkflowHandle<typeof nodeWorkflow>;
    starting++;
    try {
      handle = await startChild(nodeWorkflow, {
        workflowId: nodeWorkflowId(name),
        args: [childInput],
        // Cancelling the rollout asks each running node to stop and roll back; never kill one mid-change.
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        staticSummary: `${input.playbook.name} on ${name}`,
      });
      starting--;
    } catch (err) {
      starting--;
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        const reason = `node is busy: workflow ${nodeWorkflowId(name)} (another rollout or drift repair) holds its lock`;
        Object.assign(result, v.canary ? { status: 'busy', busy: true, reason: `${reason}; tried again later` } : { status: 'skipped', reason });
        report();
        return;
      }
      throw err;
    }
    running.set(name, handle);
    startedThisRun++;
    Object.assign(result, { status: 'running', reason: undefined });
    report();
    try {
      const outcome = await handle.result();
      Object.assign(result, { status: 'succeeded', busy: undefined, nodePhase: outcome.phase, facts: { ...outcome.facts, undos: JSON.stringify(outcome.undos) } });
      if (outcome.desired?.recorded === false) result.reason = notRecorded(outcome.desired.error ?? 'unknown error');
      else if (v.desired && !outcome.desired) await recordApplied(name, result);
    } catch (err) {
      const details = nodeFailureDetails(err);
      Object.assign(result, {
        status: v.canary ? nodeFailureStatus(err, details) : details?.phase === 'rolled-back' ? 'rolled-back' : 'failed',
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

  /** desired.json on the node: what it now runs. A failed record is shown, not fatal: the node did succeed. */
  async function recordApplied(name: string, result: RolloutNodeResult): Promise<void> {
    try {
      await recordDesiredState({ node: targets.get(name)!, desired: { playbook: { name: input.playbook.name, sha256: input.playbook.sha256 }, rolloutId: input.rolloutId, state: 'applied', since: new Date(Date.now()).toISOString() } });
    } catch (err) {
      result.reason = notRecorded(failureMessage(err));
    }
  }

  /** A succeeded node's reason when its desired state could not be written. Pure. */
  function notRecorded(why: string): string {
    return `succeeded, but its desired state was not recorded (drift will not repair it): ${why}`;
  }

  /**
   * Starts the pending nodes among `names`, at most `limit` at once, and waits for them.
   * `stopped`: an abort or the budget stopped it; `full`: this run's history is full (continue as new).
   */
  async function runNodes(names: readonly string[], limit: number): Promise<'stopped' | 'full' | undefined> {
    const inFlight: Promise<void>[] = [];
    let stop: 'stopped' | 'full' | undefined;
    for (const name of names) {
      if (byName.get(name)!.status !== 'pending') continue;
      // Pause takes effect here, at the next node start.
      await condition(() => (!paused && running.size + starting < limit) || abort !== undefined);
      if (abort || budgetExceeded()) {
        stop = 'stopped';
        break;
      }
      // A run's children close in the same run (continue-as-new would ask them to cancel): let them finish first.
      if (historyNearlyFull()) {
        stop = 'full';
        break;
      }
      inFlight.push(runNode(name));
      if (!v.batched) await condition(() => running.has(name) || byName.get(name)!.status !== 'pending');
    }
    await Promise.all(inFlight);
    return stop;
  }

  /** Tries the busy nodes among `names` once more after `delayMs`; `final`: those still busy are skipped for good. */
  async function retryBusy(names: readonly string[], limit: number, delayMs: number, final: boolean): Promise<'stopped' | 'full' | undefined> {
    const busy = names.filter((name) => byName.get(name)!.status === 'busy');
    if (busy.length === 0) return undefined;
    await Promise.race([sleep(delayMs), condition(() => abort !== undefined)]);
    if (abort) return 'stopped';
    for (const name of busy) byName.get(name)!.status = 'pending';
    const stop = await runNodes(busy, limit);
    for (const name of busy) {
      const result = byName.get(name)!;
      if (stop !== undefined && result.status === 'pending') result.status = 'busy';
      else if (final && result.status === 'busy') Object.assign(result, { status: 'skipped', reason: `${result.reason!.replace(/; tried again later$/, '')}, still after its retries` });
    }
    report();
    return stop;
  }

  const main = async (): Promise<RolloutProgress> => {
    report();
    await cluster.beforeNodes(progress, report);
    /** 1-based wave the next run starts with (its nodes that are no longer pending are skipped), once this run is full. */
    let continueAtWave: number | undefined;
    const busyRetryMs = parseDuration(limits.busyRetry);
    for (let waveIndex = progress.currentWave - 1; waveIndex < waves.length; waveIndex++) {
      if (abort || budgetExceeded()) break;
      progress.currentWave = waveIndex + 1;
      const limit = Math.min(input.rollout.max_parallel ?? waves[waveIndex].length, limits.childrenInFlight);
      let stop = await runNodes(waves[waveIndex], limit);
      // A node found busy is tried again at the end of its wave; a canary still busy then halts the rollout.
      if (v.canary && stop === undefined) stop = await retryBusy(waves[waveIndex], limit, busyRetryMs, waveIndex === 0 && input.rollout.canary > 0);
      if (stop === 'full') continueAtWave = waveIndex + 1;
      if (abort || budgetExceeded() || continueAtWave !== undefined) break;
      const isLast = waveIndex === waves.length - 1;
      if (!isLast && waveIndex === 0 && input.rollout.canary > 0 && input.rollout.approval_after_canary) {
        paused = true;
        progress.phase = 'awaiting-approval';
        report();
        await condition(() => !paused || abort !== undefined);
      } else if (!isLast && parseDuration(input.rollout.pause_between_waves) > 0) {
        progress.phase = 'waiting-between-waves';
        betweenWaves = true;
        report();
        await Promise.race([sleep(parseDuration(input.rollout.pause_between_waves)), condition(() => abort !== undefined)]);
        betweenWaves = false;
        if (!abort) {
          progress.phase = 'running';
          // A pause that arrived while waiting is still in force: show it (and refuse a second pause as "paused").
          if (v.phase) report();
        }
      }
      if (!isLast && historyNearlyFull()) {
        continueAtWave = waveIndex + 2;
        break;
      }
    }
    // The last try of the nodes that were busy in their wave (their lock may be free by now).
    if (v.canary && continueAtWave === undefined && !abort && !budgetExceeded()) {
      const limit = Math.min(input.rollout.max_parallel ?? waveSizeFor(input.rollout.wave_size, nodes.length), limits.childrenInFlight);
      const stop = await retryBusy(results.map((result) => result.name), limit, busyRetryMs * 2, true);
      if (stop === 'full') continueAtWave = waves.length;
    }
    if (continueAtWave !== undefined && !budgetExceeded()) {
      // Pause and abort are not carried over: a paused rollout continues as new once resumed, an aborted one does not.
      await condition(() => !paused || abort !== undefined);
      if (!abort) await continueAsNew<typeof rolloutWorkflow>(carry({ nextWave: continueAtWave }));
    }

    if (abort && v.abort) {
      progress.phase = 'aborting';
      report();
      // Nodes still running finish first (cancelling one mid-step could lose the undo of that step); an
      // abort without rollback may be upgraded meanwhile.
      await condition(() => running.size === 0);
      if (abort.rollback && (await rollBackInBatches()) === 'full') {
        await continueAsNew<typeof rolloutWorkflow>(carry({ nextWave: waves.length + 1, abort }));
      }
      progress.phase = 'aborted';
      progress.reason = abort.reason ?? 'aborted by request';
    } else if (abort) {
      progress.phase = 'aborting';
      report();
      if (abort.rollback) await rollBackChangedNodes(running, results, input, targets);
      else await condition(() => running.size === 0);
      progress.phase = 'aborted';
      progress.reason = abort.reason ?? 'aborted by request';
    } else if (budgetExceeded()) {
      await condition(() => running.size === 0);
      progress.phase = 'halted';
      progress.reason = v.canary ? haltReason() : `failure budget exceeded: ${progress.counts.failed} node(s) failed, budget ${input.rollout.failure_budget}; no further node was started`;
    } else {
      progress.phase = results.some((result) => result.status !== 'succeeded') ? 'completed' : 'succeeded';
    }
    if (progress.phase !== 'aborted') await cluster.afterNodes();
    // A halted or rolled-back rollout takes back the RuntimeClass it created (the cluster as it found it).
    if (progress.phase === 'halted' || (progress.phase === 'aborted' && abort?.rollback)) await cluster.takeBack();
    for (const result of results) {
      // A node waiting for its retry when the rollout stopped was not started: not a failure of its own.
      if (result.status === 'pending' || result.status === 'busy') Object.assign(result, { status: 'skipped', busy: undefined, reason: progress.reason ?? 'not started' });
    }
    report();
    if (progress.phase === 'halted') {
      throw ApplicationFailure.create({ type: 'RolloutHalted', message: progress.reason!, nonRetryable: true, details: [outgoing()] });
    }
    return outgoing();
  };

  /** Why the rollout halted: the canary that did not succeed, or the nodes over the budget. */
  function haltReason(): string {
    const canaries = failedCanaries();
    if (canaries.length > 0) {
      const which = canaries.map((node) => `${node.name} ${node.status === 'skipped' ? 'busy' : node.status}${node.reason ? ` (${firstLine(node.reason)})` : ''}`).join('; ');
      return `canary did not succeed: ${which}; a canary must succeed whatever the failure budget (${input.rollout.failure_budget}); no further node was started`;
    }
    const byStatus = new Map<string, number>();
    for (const result of results.filter(isNonSuccess)) {
      const key = result.status === 'skipped' ? 'busy' : result.status;
      byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
    }
    const detail = [...byStatus].map(([status, count]) => `${count} ${status}`).join(', ');
    return `failure budget exceeded: ${progress.counts.failed} node(s) did not succeed (${detail}), budget ${input.rollout.failure_budget}; no further node was started`;
  }

  /**
   * Abort with rollback, bounded: the nodes this rollout changed are undone newest wave first, at most
   * `max_parallel_rollback` (default: the wave size) at once and never more than `childrenInFlight`. Undo
   * children run in a non-cancellable scope and are abandoned, not cancelled, when the rollout closes: a
   * cancel of the rollout cannot cut a node's undo in half. `full`: the run's history is full, continue as new.
   */
  async function rollBackInBatches(): Promise<'full' | undefined> {
    const cap = Math.max(1, Math.min(input.rollout.max_parallel_rollback ?? waveSizeFor(input.rollout.wave_size, nodes.length), limits.childrenInFlight));
    const queue = results
      .map((result, index) => ({ result, index }))
      .filter(({ result }) => result.status === 'succeeded' && !result.undone && result.facts?.undos && result.facts.undos !== '[]')
      .sort((a, b) => b.result.wave - a.result.wave || b.index - a.index)
      .map(({ result }) => result);
    return CancellationScope.nonCancellable(async () => {
      const inFlight: Promise<void>[] = [];
      let full: 'full' | undefined;
      for (const result of queue) {
        await condition(() => running.size < cap);
        if (historyNearlyFull()) {
          full = 'full';
          break;
        }
        inFlight.push(undoNode(result));
        await condition(() => running.has(result.name) || result.undone === true);
      }
      await Promise.all(inFlight);
      return full;
    });
  }

  async function undoNode(result: RolloutNodeResult): Promise<void> {
    const node = targets.get(result.name)!;
    // Not carried across continue-as-new (compact state): read back from the node's own nodeWorkflow.
    const undos = result.facts!.undos === undosOnNodeWorkflow ? await readNodeUndos({ nodeWorkflowId: nodeWorkflowId(result.name), rolloutId: input.rolloutId }) : result.facts!.undos;
    const undoInput: NodeRolloutInput = { rolloutId: input.rolloutId, node, kubernetes: input.kubernetes, steps: [], drain: input.rollout.drain, rollbackFor: input.rollout.rollback_for, mode: 'undo', undos: [...JSON.parse(undos)].reverse() };
    for (let attempt = 1; ; attempt++) {
      let handle: ChildWorkflowHandle<typeof nodeWorkflow>;
      try {
        handle = await startChild(nodeWorkflow, {
          workflowId: nodeWorkflowId(result.name),
          args: [undoInput],
          parentClosePolicy: ParentClosePolicy.ABANDON,
          cancellationType: ChildWorkflowCancellationType.ABANDON,
          staticSummary: `undo of ${input.playbook.name} on ${result.name} (abort of ${input.rolloutId})`,
        });
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError && attempt < undoStartAttempts) {
          await sleep(parseDuration(limits.busyRetry) * attempt);
          continue;
        }
        Object.assign(result, { status: 'rollback-failed', undone: true, reason: `rollback after abort failed: ${err instanceof WorkflowExecutionAlreadyStartedError ? `node still busy after ${attempt} tries (${nodeWorkflowId(result.name)} holds its lock)` : failureMessage(err)}` });
        report();
        return;
      }
      running.set(result.name, handle);
      startedThisRun++;
      result.undone = true;
      try {
        const outcome = await handle.result();
        Object.assign(result, { status: 'rolled-back', nodePhase: outcome.phase, reason: 'rolled back by abort' });
        if (v.desired) await recordRolledBack(result);
      } catch (err) {
        const details = nodeFailureDetails(err);
        Object.assign(result, { status: nodeFailureStatus(err, details), nodePhase: details?.phase, reason: `rollback after abort failed: ${failureMessage(err)}` });
      } finally {
        running.delete(result.name);
        report();
      }
      return;
    }
  }

  async function recordRolledBack(result: RolloutNodeResult): Promise<void> {
    try {
      await recordDesiredState({ node: targets.get(result.name)!, desired: { playbook: { name: input.playbook.name, sha256: input.playbook.sha256 }, rolloutId: input.rolloutId, state: 'rolled-back', since: new Date(Date.now()).toISOString() } });
    } catch (err) {
      result.reason = `rolled back by abort, but desired.json still says applied (drift may re-apply it): ${failureMessage(err)}`;
    }
  }

  if (!v.phase) return main();
  try {
    return await main();
  } catch (err) {
    if (!isCancellation(err)) throw err;
    // Cancelled through Temporal (not abort): the running nodes were asked to stop and roll back; wait for
    // them, then say so in the phase instead of leaving "running" behind.
    await CancellationScope.nonCancellable(async () => {
      await condition(() => running.size === 0);
      progress.phase = 'cancelled';
      progress.reason = 'cancelled through Temporal (not by katafleet abort): running nodes rolled back, no further node was started';
      if (patched(rolloutPatches.cancelTakeBack)) await cluster.takeBack();
      for (const result of results) {
        if (result.status === 'pending' || result.status === 'busy') Object.assign(result, { status: 'skipped', busy: undefined, reason: progress.reason });
      }
      report();
    });
    throw err;
  }
}

/**
 * Abort with rollback as before issue 11 (runs recorded on that code replay it): nodes still running
 * finish first, then every node this rollout changed is undone, all at once.
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
      const undoInput: NodeRolloutInput = { rolloutId: input.rolloutId, node: targets.get(result.name)!, kubernetes: input.kubernetes, steps: [], drain: input.rollout.drain, rollbackFor: input.rollout.rollback_for, mode: 'undo', undos: [...JSON.parse(result.facts!.undos)].reverse() };
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

/**
 * A node's result as continue-as-new carries it: status, wave and flags, the reason capped, and of its facts only
 * the undos of a node that succeeded (an abort with rollback needs them); the rest is on its nodeWorkflow. Pure.
 */
export function carriedResult(result: RolloutNodeResult): RolloutNodeResult {
  const undos = result.status === 'succeeded' && result.facts?.undos && result.facts.undos !== '[]' ? { undos: result.facts.undos } : undefined;
  return { name: result.name, wave: result.wave, status: result.status, reason: result.reason && capText(result.reason, carriedReasonCap), busy: result.busy, undone: result.undone, facts: undos };
}

/** One character per status in the compact carried state (upper case: the node is changed and has undos). */
const statusCodes: Record<string, string> = { pending: 'p', running: 'p', busy: 'b', succeeded: 's', failed: 'f', skipped: 'k', 'rolled-back': 'r', 'rollback-failed': 'x', 'needs-attention': 'a' };
const codeStatuses = new Map(Object.entries(statusCodes).filter(([status]) => status !== 'running').map(([status, code]) => [code, status as NodeStatus]));

/**
 * The nodes' state in plan order as {@link CompactCarried} holds it: a status character each (`K`: skipped while
 * busy, `S`: succeeded and changed, its undos on its nodeWorkflow), the first {@link carriedReasonsCap} reasons,
 * non-successes first. Pure.
 */
export function encodeStatuses(results: readonly RolloutNodeResult[]): Pick<CompactCarried, 'statuses' | 'reasons'> {
  const statuses = results
    .map((result) => {
      if (result.status === 'skipped' && result.busy) return 'K';
      if (result.status === 'succeeded' && result.facts?.undos && result.facts.undos !== '[]') return 'S';
      return statusCodes[result.status] ?? 'p';
    })
    .join('');
  const withReason = results.map((result, index) => ({ result, index })).filter(({ result }) => result.reason);
  const ranked = [...withReason.filter(({ result }) => isNonSuccess(result)), ...withReason.filter(({ result }) => !isNonSuccess(result))];
  const reasons = ranked.slice(0, carriedReasonsCap).map(({ result, index }): [number, string] => [index, capText(result.reason!, carriedReasonCap)]);
  return { statuses, reasons };
}

/** The status a character of {@link CompactCarried.statuses} stands for. */
function statusOfCode(code: string): NodeStatus {
  return code === 'K' ? 'skipped' : code === 'S' ? 'succeeded' : (codeStatuses.get(code) ?? 'pending');
}

/** The counts of {@link RolloutProgress} for these nodes. Pure. */
export function countNodes(results: readonly Pick<RolloutNodeResult, 'status' | 'busy'>[]): RolloutProgress['counts'] {
  const counts = { total: results.length, succeeded: 0, failed: 0, running: 0, pending: 0, skipped: 0 };
  for (const result of results) {
    if (result.status === 'succeeded') counts.succeeded++;
    else if (isNonSuccess(result)) counts.failed++;
    else if (result.status === 'running') counts.running++;
    else if (result.status === 'pending' || result.status === 'busy') counts.pending++;
    else counts.skipped++;
  }
  return counts;
}

/** The counts the compact carried state holds (a node running when the run continued as new counts as pending). Pure. */
export function countsOfCarried(carried: Pick<CompactCarried, 'statuses'>): RolloutProgress['counts'] {
  return countNodes([...carried.statuses].map((code) => ({ status: statusOfCode(code), busy: code === 'K' })));
}

/** `planned` (every node pending, in plan order) with the state {@link encodeStatuses} carried. Pure. */
export function decodeStatuses(planned: RolloutNodeResult[], carried: Pick<CompactCarried, 'statuses' | 'reasons'>): RolloutNodeResult[] {
  const reasons = new Map(carried.reasons);
  return planned.map((node, index) => {
    const code = carried.statuses[index] ?? 'p';
    const status = statusOfCode(code);
    const reason = reasons.get(index) ?? (status === 'busy' ? 'node was busy (its lock held); tried again later' : isNonSuccess({ status, busy: code === 'K' }) || status === 'skipped' ? `see its nodeWorkflow ${nodeWorkflowId(node.name)} (reason not carried across continue-as-new)` : undefined);
    return { ...node, status, ...(code === 'K' ? { busy: true } : {}), ...(reason ? { reason } : {}), ...(code === 'S' ? { facts: { undos: undosOnNodeWorkflow } } : {}) };
  });
}

/** The rollout's status of a node whose child failed: from the phase it reported (or its failure type). */
function nodeFailureStatus(err: unknown, details: NodeProgress | undefined): NodeStatus {
  const phase: string | undefined = details?.phase;
  const type = err instanceof ChildWorkflowFailure && err.cause instanceof ApplicationFailure ? err.cause.type : undefined;
  if (phase === 'needs-attention' || type === 'NodeQuarantined') return 'needs-attention';
  if (phase === 'rollback-failed') return 'rollback-failed';
  if (phase === 'rolled-back') return 'rolled-back';
  return 'failed';
}

/** The innermost message of a child workflow or activity failure. */
function failureMessage(err: unknown): string {
  const cause = (err instanceof ChildWorkflowFailure || err instanceof ActivityFailure) && err.cause ? err.cause : err;
  return cause instanceof Error ? cause.message : String(cause);
}

function firstLine(text: string): string {
  const line = text.split('\n')[0];
  return line.length > 200 ? `${line.slice(0, 199)}…` : line;
}

function nodeFailureDetails(err: unknown): NodeProgress | undefined {
  if (err instanceof ChildWorkflowFailure && err.cause instanceof ApplicationFailure) {
    return err.cause.details?.[0] as NodeProgress | undefined;
  }
  return undefined;
}

/** Node lines of the Temporal UI's rollout details at most. */
export const detailsRowCap = 100;

/** The first `cap` items of `items` that `keep`. Pure. */
function firstMatching<T>(items: readonly T[], keep: (item: T) => boolean, cap: number): T[] {
  const found: T[] = [];
  for (const item of items) {
    if (found.length >= cap) break;
    if (keep(item)) found.push(item);
  }
  return found;
}

/**
 * The rollout for the Temporal UI's "current details": one list line per node (name, status, wave, detail). A list,
 * not a table: the UI draws tables without cell padding, so columns ran together (`node-1succeeded6.12.47-kata`).
 */
export function formatRolloutDetails(progress: RolloutProgress): string {
  const { counts } = progress;
  const header = `**${progress.playbook}** rollout ${progress.rolloutId}: ${progress.phase}, wave ${progress.currentWave}/${progress.waves.length} — ${counts.succeeded} done, ${counts.failed} failed (budget ${progress.failureBudget}), ${counts.running} running, ${counts.pending} pending${progress.reason ? `\n\n${progress.reason}` : ''}`;
  const oneLine = (text: string) => text.replace(/\s*\n\s*/g, ' ⏎ ');
  // At most detailsRowCap lines, those that need a look first (running, then not succeeded), so the text stays
  // bounded (and cheap to build on every change) whatever the fleet size.
  const rank = (node: RolloutProgress['nodes'][number]) => (node.status === 'running' ? 0 : isNonSuccess(node) ? 1 : 2);
  // One pass per rank, not a sort of the whole fleet: this runs on every change (a stable sort would give the same rows).
  const shown = progress.nodes.length <= detailsRowCap ? progress.nodes : [0, 1, 2].flatMap((wanted) => firstMatching(progress.nodes, (node) => rank(node) === wanted, detailsRowCap)).slice(0, detailsRowCap);
  const rows = shown.map((node) => {
    const detail = oneLine(capText(node.reason ?? node.facts?.guestKernel ?? '', 300));
    return `- **${node.name}** — ${node.status}, wave ${node.wave}${detail ? `: ${detail}` : ''}`;
  });
  const more = progress.nodes.length > shown.length ? [`- … ${progress.nodes.length - shown.length} more nodes: \`katafleet status ${progress.rolloutId}\` lists every node`] : [];
  // Quarantined nodes need a person: their reason and the exact fix, whole, under the list.
  const attention = progress.nodes.filter((node) => node.status === 'needs-attention').slice(0, 20).map((node) => `- **${node.name}**: ${capText(node.reason ?? 'quarantined', 2000)}`);
  return [header, '', ...rows, ...more, ...(attention.length ? ['', '**Needs attention**', '', ...attention] : [])].join('\n');
}
