import { z } from 'zod';
import { fileNamePattern, maxFileBytes } from '../playbooks/load';
import { RolloutOverrides } from '../playbooks/schema';
import { isDuration, parseDuration } from '../playbooks/duration';
import { defaultProgressPageSize, failedNodesCap, maxProgressPageSize } from '../workflows/rollout-messages';

/** Request and response bodies of the HTTP API; the OpenAPI document at /openapi.json is generated from them. */

export const ErrorBody = z
  .object({
    error: z.string().describe('failure type, e.g. PlaybookError, RolloutNotFound, RolloutConflict, Unauthorized'),
    message: z.string().describe('what is wrong and what to do'),
    problems: z.array(z.string()).optional().describe('every problem of an invalid playbook or inventory, as the CLI prints them'),
  })
  .meta({ id: 'Error' });

/** A playbook and an inventory, each by name/path or inline TOML. */
function exactlyOneSourceEach(context: z.core.ParsePayload<{ playbook?: string; playbook_toml?: string; inventory?: string; inventory_toml?: string }>): void {
  for (const [file, text] of [['playbook', 'playbook_toml'], ['inventory', 'inventory_toml']] as const) {
    if (Boolean(context.value[file]) === Boolean(context.value[text])) {
      context.issues.push({ code: 'custom', input: context.value, path: [file], message: `give exactly one of ${file} and ${text}` });
    }
  }
}

const name = (kind: string, folder: string) =>
  z
    .string()
    .regex(fileNamePattern, `a ${kind} name: lowercase letters, digits, ".", "_" and "-", at most 64, no "/" and no ".." (the API reads only the ${kind}s in ${folder})`)
    .optional();
const tomlText = z.string().min(1).max(maxFileBytes, `at most ${maxFileBytes} characters`).optional();

const FilesOrText = {
  playbook: name('playbook', 'its playbooks folder').describe('name of a playbook in the API\'s playbooks folder (--playbooks-dir; default the shipped ones: kata, kata-uninstall, gvisor)'),
  playbook_toml: tomlText.describe('the playbook itself, as TOML text (at most 1 MiB)'),
  inventory: name('inventory', 'its inventories folder').describe('name of an inventory in the API\'s inventories folder (--inventories-dir; default .katafleet/inventories), without .toml'),
  inventory_toml: tomlText.describe('the inventory itself, as TOML text (at most 1 MiB): nodes and addresses; SSH credentials come from a credential profile of the server'),
};

/** The body of `POST /v1/nodes/{name}/release`: the inventory the node belongs to, by name or inline. */
export const ReleaseNodeBody = z
  .strictObject({ inventory: FilesOrText.inventory, inventory_toml: FilesOrText.inventory_toml })
  .refine((body) => (body.inventory === undefined) !== (body.inventory_toml === undefined), { message: 'give exactly one of inventory and inventory_toml', path: ['inventory'] });

export const StartRolloutBody = z
  .strictObject({
    ...FilesOrText,
    options: RolloutOverrides.optional().describe("overrides of the playbook's [rollout] keys for this run, e.g. { failure_budget: 1 }"),
    request_id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, 'letters, digits, ".", "_" and "-", at most 100')
      .optional()
      .describe('idempotency key: the same request id twice starts one rollout; it becomes the rollout id'),
  })
  .check(exactlyOneSourceEach);

export const StartedRolloutBody = z
  .object({
    rollout_id: z.string(),
    workflow_id: z.string(),
    ui_link: z.string().describe('the rollout in the Temporal Web UI'),
    started: z.boolean().describe('false when this request id had already started a rollout'),
  })
  .meta({ id: 'StartedRollout' });

export const RolloutSummaryBody = z
  .object({
    rolloutId: z.string(),
    status: z.string().describe('Temporal execution status: RUNNING, COMPLETED, FAILED, ...'),
    phase: z.string().optional(),
    playbook: z.string().optional(),
    nodesTotal: z.number().optional(),
    nodesDone: z.number().optional(),
    nodesFailed: z.number().optional(),
    startTime: z.string(),
    closeTime: z.string().optional(),
    uiLink: z.string(),
  })
  .meta({ id: 'RolloutSummary' });

export const RolloutNodeBody = z.object({
  name: z.string(),
  wave: z.number(),
  status: z.enum(['pending', 'running', 'busy', 'succeeded', 'failed', 'skipped', 'rolled-back', 'rollback-failed', 'needs-attention']),
  nodePhase: z.string().optional(),
  reason: z.string().optional(),
  busy: z.boolean().optional(),
  undone: z.boolean().optional(),
  facts: z.record(z.string(), z.string()).optional(),
  durationMs: z.number().optional(),
});

export const RolloutBody = z
  .object({
    rolloutId: z.string(),
    playbook: z.string(),
    status: z.string(),
    phase: z.string(),
    reason: z.string().optional(),
    currentWave: z.number(),
    waves: z.array(z.array(z.string())),
    nodes: z.array(RolloutNodeBody),
    failureBudget: z.number(),
    canary: z.number().optional().describe("nodes the rollout asked for in its canary wave ([rollout] canary, overrides applied); 0: the first wave is no canary"),
    counts: z.object({ total: z.number(), succeeded: z.number(), failed: z.number(), running: z.number(), pending: z.number(), skipped: z.number() }),
    cluster: z.array(z.string()).optional().describe('what the cluster-wide steps did, once for the rollout (the RuntimeClass), one line each'),
    waveSizes: z.array(z.number()).optional().describe('nodes in each wave (waves lists only the names on this page)'),
    failedNodes: z.array(z.string()).optional().describe(`names of the nodes that did not succeed, at most ${failedNodesCap}`),
    nodesPage: z
      .object({ pageSize: z.number(), nextPageToken: z.string().optional().describe('pass as page_token for the next page; absent on the last page') })
      .optional()
      .describe('nodes holds one page of the rollout\'s nodes, in plan order'),
    uiLink: z.string(),
  })
  .meta({ id: 'Rollout' });

/** `GET /v1/rollouts/{id}?page_token=&page_size=`: which page of the rollout's nodes. */
export const RolloutPageQuery = z.strictObject({
  page_token: z.string().regex(/^n\d{1,9}$/, 'a page token from nodesPage.nextPageToken of the previous answer').optional(),
  page_size: z.coerce.number().int().min(1).max(maxProgressPageSize).optional().describe(`nodes per page, at most ${maxProgressPageSize} (default ${defaultProgressPageSize})`),
});

export const AbortBody = z
  .strictObject({
    rollback: z.boolean().default(false).describe('also roll back the nodes this rollout changed'),
    reason: z.string().max(500).optional(),
  })
  .default({ rollback: false });

export const PhaseBody = z.object({ rollout_id: z.string(), phase: z.string() }).meta({ id: 'Phase' });

export const RolloutIdParams = z.object({ id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/) });

/** Why `every` is no schedule interval (a duration of at least 1 s), or undefined. Pure. */
export function scheduleEveryProblem(every: string): string | undefined {
  return isDuration(every) && parseDuration(every) >= 1000 ? undefined : `${JSON.stringify(every)} must be a duration of at least 1s, such as "15m" or "1h"`;
}

export const CreateScheduleBody = z
  .strictObject({
    ...FilesOrText,
    every: z.string().refine((every) => scheduleEveryProblem(every) === undefined, { error: (issue) => scheduleEveryProblem(issue.input as string) }).describe('interval, e.g. "15m"'),
    report_only: z.boolean().default(false).describe('only report drift, repair nothing'),
    schedule_id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$/).optional().describe('suffix of the schedule id (katafleet-drift-<schedule_id>)'),
  })
  .check(exactlyOneSourceEach);

export const DriftScheduleBody = z
  .object({
    scheduleId: z.string(),
    every: z.string().optional(),
    playbook: z.string().optional(),
    reportOnly: z.boolean().optional(),
    nextRun: z.string().optional(),
    recentRuns: z.array(z.object({ startedAt: z.string(), workflowId: z.string() })),
  })
  .meta({ id: 'DriftSchedule' });
