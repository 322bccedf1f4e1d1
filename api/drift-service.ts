// Drift runs and schedules with the inventory in pieces (issue 13, docs/scale.md "Drift in pieces"): no payload of a
// drift run, of its schedule or of its history grows with the fleet.
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Duration } from '@temporalio/common';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { RunRef } from '../activities/inventory-history';
import { taskQueue } from '../worker/connection';
import type { DriftInput, driftWorkflow } from '../workflows/drift';
import { inventoryPieceSignal, splitInventory, type InventoryManifest } from '../workflows/inventory-pieces';
import { RolloutServiceError } from './rollout-service';

/** Options of {@link startDriftRun}. */
export interface DriftRunOptions {
  workflowId: string;
  /** Nodes per inventory piece. @default inventoryPieceNodes (500) */
  pieceNodes?: number;
  /** Lower per-run limits, for tests (the CLI never sets them). */
  limits?: DriftInput['limits'];
}

/**
 * Starts a drift run (`katafleet drift check`) with its inventory in pieces: the start input carries the manifest,
 * the first piece comes with the start (signalWithStart), the others one signal each. `handle.result()` follows the
 * run's continue-as-new chain to its report.
 */
export async function startDriftRun(client: Client, input: DriftInput & { nodes: DriftInput['nodes'] & object }, options: DriftRunOptions): Promise<WorkflowHandle<typeof driftWorkflow>> {
  const { manifest, pieces } = splitInventory(input.nodes, options.pieceNodes);
  const startInput: DriftInput = { ...input, nodes: undefined, inventory: manifest, ...(options.limits ? { limits: options.limits } : {}) };
  const handle = await client.workflow.signalWithStart<typeof driftWorkflow, [typeof pieces[number]]>('driftWorkflow', {
    taskQueue,
    workflowId: options.workflowId,
    args: [startInput],
    signal: inventoryPieceSignal,
    signalArgs: [pieces[0] ?? { index: 0, nodes: [] }],
    workflowIdReusePolicy: 'REJECT_DUPLICATE',
    staticSummary: `drift ${input.reportOnly ? 'report' : 'check and repair'} of ${input.playbook.name} on ${manifest.nodes} nodes`,
  });
  for (const piece of pieces.slice(1)) await handle.signal(inventoryPieceSignal, piece);
  return client.workflow.getHandle<typeof driftWorkflow>(options.workflowId);
}

/** The id of the workflow that holds a drift schedule's inventory. */
export function driftInventoryWorkflowId(scheduleId: string): string {
  return `${scheduleId}-inventory`;
}

/**
 * Stores a drift schedule's nodes in its inventory workflow (`driftInventoryWorkflow`, one signal a piece) and
 * returns the manifest and the run the schedule's drift runs read the pieces from. The workflow asks every
 * `checkScheduleEvery` (default 24 h) whether the schedule still exists, and ends when it does not.
 * @throws RolloutServiceError `RolloutConflict` when the schedule's inventory workflow already runs (the schedule exists).
 */
export async function storeScheduleInventory(client: Client, scheduleId: string, nodes: NonNullable<DriftInput['nodes']>, pieceNodes?: number, checkScheduleEvery?: Duration): Promise<{ manifest: InventoryManifest; from: RunRef }> {
  const { manifest, pieces } = splitInventory(nodes, pieceNodes);
  const workflowId = driftInventoryWorkflowId(scheduleId);
  let handle;
  try {
    handle = await client.workflow.start('driftInventoryWorkflow', {
      taskQueue,
      workflowId,
      args: [manifest, { scheduleId, ...(checkScheduleEvery === undefined ? {} : { checkScheduleEvery }) }],
      workflowIdConflictPolicy: 'FAIL',
      staticSummary: `inventory of drift schedule ${scheduleId}: ${manifest.nodes} nodes`,
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) throw new RolloutServiceError('RolloutConflict', `a drift schedule "${scheduleId}" already exists (its inventory workflow ${workflowId} runs): choose another schedule id, or delete that schedule first`);
    throw err;
  }
  for (const piece of pieces) await handle.signal(inventoryPieceSignal, piece);
  return { manifest, from: { workflowId, runId: handle.firstExecutionRunId } };
}

/** Ends a drift schedule's inventory workflow (after the schedule is deleted, or when creating it failed); gone already is fine. */
export async function releaseScheduleInventory(client: Client, scheduleId: string, reason: string): Promise<void> {
  try {
    await client.workflow.getHandle(driftInventoryWorkflowId(scheduleId)).terminate(reason);
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
}
