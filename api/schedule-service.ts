import { randomUUID } from 'node:crypto';
import { ScheduleNotFoundError, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import type { Duration } from '@temporalio/common';
import type { Inventory, Playbook } from '../playbooks/schema';
import { taskQueue } from '../worker/connection';
import { parseDuration } from '../playbooks/duration';
import type { NodeTarget } from '../activities/node-types';
import type { DriftInput } from '../workflows/drift';
import { releaseScheduleInventory, storeScheduleInventory } from './drift-service';
import { buildRolloutInput, RolloutServiceError } from './rollout-service';
import { scheduleEveryProblem } from './schemas';

const schedulePrefix = 'katafleet-drift-';

/**
 * The most nodes one drift run (or schedule) takes, as a rollout: the inventory travels in pieces of 500 nodes, the
 * state carried across continue-as-new is one character a node, and the report is a bounded list, so no payload of
 * a drift run, its schedule or its histories passes 256 KiB at this size (measured: test/scale-drift-payloads.test.ts).
 */
export const maxDriftNodes = 10_000;

/** A drift input with its nodes inline, as built from the files (the start input is made from it: {@link startDriftRun}). */
export type InlineDriftInput = DriftInput & { nodes: NodeTarget[] };

/**
 * The plain input of driftWorkflow, from validated files.
 * @throws RolloutServiceError `RolloutTooLarge` over {@link maxDriftNodes} nodes.
 */
export function buildDriftInput(playbook: Playbook, inventory: Inventory, reportOnly: boolean): InlineDriftInput {
  const rollout = buildRolloutInput(playbook, inventory, 'drift');
  if (rollout.nodes.length > maxDriftNodes) {
    throw new RolloutServiceError('RolloutTooLarge', `${inventory.source.file}: ${rollout.nodes.length} nodes to check for drift; one drift run takes at most ${maxDriftNodes}: split the inventory into several of at most ${maxDriftNodes} nodes, one drift schedule each`);
  }
  return { playbook: rollout.playbook, steps: rollout.steps, drain: rollout.rollout.drain, nodes: rollout.nodes, kubernetes: rollout.kubernetes, reportOnly };
}

export interface DriftScheduleSummary {
  scheduleId: string;
  every?: string;
  playbook?: string;
  reportOnly?: boolean;
  nextRun?: string;
  recentRuns: { startedAt: string; workflowId: string }[];
}

/**
 * Creates a Temporal Schedule that runs driftWorkflow every `every` (e.g. "15m"); overlapping runs
 * are skipped, so a slow repair never stacks up.
 */
export async function createDriftSchedule(client: Client, playbook: Playbook, inventory: Inventory, options: { every: string; reportOnly: boolean; scheduleId?: string; pieceNodes?: number; holderCheckEvery?: Duration }): Promise<string> {
  const problem = scheduleEveryProblem(options.every);
  if (problem !== undefined) throw new RolloutServiceError('RolloutRequestRejected', `--every ${problem}`);
  const { nodes, ...input } = buildDriftInput(playbook, inventory, options.reportOnly);
  const scheduleId = `${schedulePrefix}${options.scheduleId ?? `${playbook.playbook.name}-${randomUUID().slice(0, 8)}`}`;
  // The schedule's start action carries only the manifest and where the pieces are: the schedule's own inventory
  // workflow, which runs as long as the schedule (docs/scale.md, "Drift in pieces").
  const { manifest, from } = await storeScheduleInventory(client, scheduleId, nodes, options.pieceNodes, options.holderCheckEvery);
  const runInput: DriftInput = { ...input, inventory: manifest, inventoryFrom: from };
  try {
    await client.schedule.create({
      scheduleId,
      spec: { intervals: [{ every: parseDuration(options.every) }] },
      action: { type: 'startWorkflow', workflowType: 'driftWorkflow', args: [runInput], taskQueue, workflowId: `${scheduleId}-run` },
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
      memo: { playbook: playbook.playbook.name, every: options.every, reportOnly: options.reportOnly },
      state: { note: `drift ${options.reportOnly ? 'report' : 'repair'} of ${manifest.nodes} nodes every ${options.every} (${playbook.source.file}); the nodes are held by ${from.workflowId}` },
    });
  } catch (err) {
    await releaseScheduleInventory(client, scheduleId, `creating schedule ${scheduleId} failed`).catch(() => undefined);
    throw err;
  }
  return scheduleId;
}

/** katafleet's drift schedules. */
export async function listDriftSchedules(client: Client): Promise<DriftScheduleSummary[]> {
  const summaries: DriftScheduleSummary[] = [];
  for await (const schedule of client.schedule.list()) {
    if (!schedule.scheduleId.startsWith(schedulePrefix)) continue;
    const memo = (schedule.memo ?? {}) as { playbook?: string; every?: string; reportOnly?: boolean };
    summaries.push({
      scheduleId: schedule.scheduleId,
      every: memo.every,
      playbook: memo.playbook,
      reportOnly: memo.reportOnly,
      nextRun: schedule.info.nextActionTimes[0]?.toISOString(),
      recentRuns: schedule.info.recentActions.map((action) => ({ startedAt: action.takenAt.toISOString(), workflowId: action.action.workflow.workflowId })),
    });
  }
  return summaries;
}

/** Deletes a drift schedule and ends its inventory workflow (runs already started go on: they read the pieces at their start). */
export async function deleteDriftSchedule(client: Client, scheduleId: string): Promise<void> {
  if (!scheduleId.startsWith(schedulePrefix)) {
    throw new RolloutServiceError('RolloutNotFound', `"${scheduleId}" is not a katafleet drift schedule (their ids start with ${schedulePrefix})`);
  }
  try {
    await client.schedule.getHandle(scheduleId).delete();
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) throw new RolloutServiceError('RolloutNotFound', `no schedule "${scheduleId}" (katafleet drift schedules lists them)`);
    throw err;
  }
  await releaseScheduleInventory(client, scheduleId, `drift schedule ${scheduleId} deleted`);
}
