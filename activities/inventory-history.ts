// Reading back what a rollout's earlier run received (issue 13, docs/scale.md "The inventory in pieces"): after
// continue-as-new a run gets its inventory piece by piece from the history of the run before it (signals in the
// first run, this activity's own results in later ones), and the undos of a node it changed from that node's
// nodeWorkflow. Each answer is one piece or one node: bounded whatever the fleet size.
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { decodeFromPayloadsAtIndex } from '@temporalio/common/lib/internal-non-workflow';
import type { temporal } from '@temporalio/proto';
import { ApplicationFailure } from '@temporalio/common';
import { inventoryPieceSignalName, type InventoryPiece } from '../workflows/inventory-pieces';
import type { NodeTarget, Undo } from './node-types';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** Where an earlier run of a rollout is. */
export interface RunRef {
  workflowId: string;
  runId: string;
}

/** The type name of the activity whose results hold pieces in runs after the first. */
export const readInventoryPieceActivity = 'readInventoryPiece';

/**
 * The pieces recorded in one run's history: the `inventoryPiece` signals it received and the results of its
 * readInventoryPiece activities, by index (the first of an index wins, as in the workflow).
 */
export async function piecesInHistory(client: Client, run: RunRef): Promise<Map<number, NodeTarget[]>> {
  const converter = client.options.loadedDataConverter;
  const pieces = new Map<number, NodeTarget[]>();
  const readerScheduled = new Set<number>();
  const take = async (payloads: temporal.api.common.v1.IPayload[] | null | undefined) => {
    const piece = await decodeFromPayloadsAtIndex<InventoryPiece | undefined>(converter, 0, payloads);
    if (piece && Number.isInteger(piece.index) && Array.isArray(piece.nodes) && !pieces.has(piece.index)) pieces.set(piece.index, piece.nodes);
  };
  let nextPageToken: Uint8Array | undefined;
  do {
    const response = await client.workflowService.getWorkflowExecutionHistory({ namespace: client.options.namespace, execution: run, nextPageToken });
    for (const event of (response.history?.events ?? []) as HistoryEvent[]) {
      const signal = event.workflowExecutionSignaledEventAttributes;
      if (signal?.signalName === inventoryPieceSignalName) await take(signal.input?.payloads);
      if (event.activityTaskScheduledEventAttributes?.activityType?.name === readInventoryPieceActivity) readerScheduled.add(Number(event.eventId));
      const completed = event.activityTaskCompletedEventAttributes;
      if (completed && readerScheduled.has(Number(completed.scheduledEventId))) await take(completed.result?.payloads);
    }
    nextPageToken = response.nextPageToken?.length ? response.nextPageToken : undefined;
  } while (nextPageToken);
  return pieces;
}

/** The activities a rollout's later runs read their inventory and undos with; they use the worker's own client. */
export function createInventoryActivities(clientOf: () => Client = () => Context.current().client) {
  // The pieces of the last run read: a run asks for each of its pieces in turn, so its history is read once.
  let cached: { runId: string; pieces: Map<number, NodeTarget[]> } | undefined;
  return {
    /** Piece `index` of the inventory, from the history of the rollout's run `from`. */
    async [readInventoryPieceActivity](request: { from: RunRef; index: number }): Promise<InventoryPiece> {
      if (cached?.runId !== request.from.runId) cached = { runId: request.from.runId, pieces: await piecesInHistory(clientOf(), request.from) };
      const nodes = cached.pieces.get(request.index);
      if (!nodes) {
        throw ApplicationFailure.nonRetryable(`inventory piece ${request.index} is not in the history of run ${request.from.runId} of ${request.from.workflowId} (was the run deleted by the namespace's retention?)`, 'InventoryPieceMissing');
      }
      return { index: request.index, nodes };
    },

    /**
     * The undos of `node` recorded by its nodeWorkflow for `rolloutId` (its latest completed apply run), as the
     * rollout kept them before continue-as-new: JSON of Undo[]; `[]` when there is none.
     */
    async readNodeUndos(request: { nodeWorkflowId: string; rolloutId: string }): Promise<string> {
      const client = clientOf();
      const query = `WorkflowId = '${request.nodeWorkflowId.replace(/'/g, "\\'")}' AND KatafleetRolloutId = '${request.rolloutId.replace(/'/g, "\\'")}' AND ExecutionStatus = 'Completed'`;
      for await (const execution of client.workflow.list({ query })) {
        const result = (await client.workflow.getHandle(execution.workflowId, execution.runId).result()) as { undos?: Undo[] } | undefined;
        if (result?.undos && result.undos.length > 0) return JSON.stringify(result.undos);
      }
      return '[]';
    },
  };
}
