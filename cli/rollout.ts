import type { ParseArgsConfig } from 'node:util';
import { controlRollout, getRolloutAllPages, listRollouts, rolloutWorkflowId, runInputOf, startRollout, type RolloutServiceError } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import { withTemporalClient } from '../worker/connection';
import type { Client } from '@temporalio/client';
import type { RolloutProgress } from '../workflows/rollout-messages';
import { RolloutOverrides } from '../playbooks/schema';
import { parseCommandArgs, requireOption, UsageError, type Command } from './command';
import { formatResultTable, formatRolloutLive } from './rollout-view';

/**
 * Polls a rollout until its workflow closes, redrawing the live view (in place on a terminal, each
 * changed view once in a log); returns its final progress. `read` fetches it (Temporal client or HTTP API).
 */
export async function followRollout<P extends RolloutProgress & { status: string }>(read: () => Promise<P>, out: NodeJS.WriteStream = process.stdout, intervalMs = 1000): Promise<P> {
  let drawn = 0;
  let last = '';
  for (;;) {
    const progress = await read();
    const view = formatRolloutLive(progress);
    if (view !== last) {
      if (out.isTTY && drawn > 0) out.write(`\x1b[${drawn}F\x1b[J`);
      out.write(`${view}\n`);
      drawn = view.split('\n').length;
      last = view;
    }
    if (progress.status !== 'RUNNING') return progress;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export const rolloutCommand: Command = {
  name: 'rollout',
  summary: 'start a rollout of a playbook on an inventory (--follow shows it live)',
  usage: `Usage: katafleet rollout PLAYBOOK --inventory FILE [--follow] [--request-id ID] [overrides]

  --follow             show live progress (a bar per wave, a line per node), then the result table
  --request-id ID      idempotency key and rollout id: the same id twice starts one rollout
Overrides of the playbook's [rollout] for this run:
  --canary N  --wave-size N|P%  --failure-budget N  --pause DURATION  --max-parallel N  --max-parallel-rollback N

Exit status with --follow: 0 when the rollout got through every wave (failures within the budget included),
1 when it halted (a canary that did not succeed, or the budget used up), was aborted or cancelled.`,
  async run(args) {
    const { values, positionals } = parseCommandArgs(
      this,
      args,
      {
        inventory: { type: 'string', short: 'i' },
        follow: { type: 'boolean', short: 'f' },
        'request-id': { type: 'string' },
        canary: { type: 'string' },
        'wave-size': { type: 'string' },
        'failure-budget': { type: 'string' },
        pause: { type: 'string' },
        'max-parallel': { type: 'string' },
        'max-parallel-rollback': { type: 'string' },
      },
      { min: 1, max: 1 },
    );
    const overrides = parseOverrides(this, values);
    const playbook = await loadPlaybook(positionals[0]);
    const inventory = await loadInventory(requireOption(this, values.inventory, '--inventory FILE'));
    return withTemporalClient(async (client) => {
      const started = await startRollout(client, playbook, inventory, { requestId: values['request-id'], overrides }).catch((err: unknown) => {
        // Too many nodes, or a value over one of Temporal's limits: the input's fault, exit 2 like other input errors.
        if (err instanceof Error && err.name === 'RolloutServiceError' && ['RolloutTooLarge', 'TemporalLimit'].includes((err as RolloutServiceError).type)) throw new UsageError(err.message);
        throw err;
      });
      process.stdout.write(`${started.started ? 'started' : 'already started'} rollout ${started.rolloutId}\n  ${started.uiLink}\n`);
      if (!values.follow) return 0;
      const progress = await followRollout(() => getRolloutAllPages(client, started.rolloutId), process.stdout, 1000);
      process.stdout.write(`\n${formatResultTable(progress)}\n`);
      return progress.phase === 'succeeded' || progress.phase === 'completed' ? 0 : 1;
    });
  },
};

/**
 * The canary size the rollout runs with, for a rollout whose progress does not carry it (a result saved before
 * `canary` was part of it): its input's `[rollout] canary`, overrides applied; undefined when its input cannot be read.
 */
async function rolloutCanary(client: Client, rolloutId: string, progress?: RolloutProgress): Promise<number | undefined> {
  if (progress?.canary !== undefined) return progress.canary;
  const input = await runInputOf(client, rolloutWorkflowId(rolloutId), '').catch(() => undefined);
  return input?.rollout.canary;
}

/** The [rollout] overrides given as flags, checked like the playbook's own keys. */
function parseOverrides(command: Command, values: Record<string, string | boolean | undefined>): RolloutOverrides {
  const number = (flag: string) => (values[flag] === undefined ? undefined : /^\d+$/.test(String(values[flag])) ? Number(values[flag]) : String(values[flag]));
  const waveSize = number('wave-size');
  const parsed = RolloutOverrides.safeParse({
    canary: number('canary'),
    wave_size: waveSize,
    failure_budget: number('failure-budget'),
    pause_between_waves: values.pause,
    max_parallel: number('max-parallel'),
    max_parallel_rollback: number('max-parallel-rollback'),
  });
  if (!parsed.success) {
    const flags: Record<string, string> = { canary: '--canary', wave_size: '--wave-size', failure_budget: '--failure-budget', pause_between_waves: '--pause', max_parallel: '--max-parallel', max_parallel_rollback: '--max-parallel-rollback' };
    throw new UsageError(parsed.error.issues.map((issue) => `katafleet rollout: ${flags[String(issue.path[0])] ?? String(issue.path[0])}: ${issue.message}`).join('\n'), command.usage);
  }
  return parsed.data;
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'list rollouts, or show one with its per-node results',
  usage: `Usage: katafleet status [ROLLOUT_ID]`,
  async run(args) {
    const { positionals } = parseCommandArgs(this, args, {}, { min: 0, max: 1 });
    return withTemporalClient(async (client) => {
      if (positionals.length === 0) {
        for (const rollout of await listRollouts(client)) {
          process.stdout.write(`${rollout.rolloutId}  ${rollout.status.padEnd(10)} ${(rollout.phase ?? '').padEnd(18)} ${rollout.playbook ?? ''}  ${rollout.nodesDone ?? 0}/${rollout.nodesTotal ?? 0} done, ${rollout.nodesFailed ?? 0} failed  ${rollout.startTime}\n`);
        }
        return 0;
      }
      const progress = await getRolloutAllPages(client, positionals[0]);
      process.stdout.write(`${formatRolloutLive(progress, await rolloutCanary(client, positionals[0], progress))}\n\n${formatResultTable(progress)}\n  ${progress.uiLink}\n`);
      return 0;
    });
  },
};

function controlCommand(action: 'pause' | 'resume' | 'abort', summary: string): Command {
  return {
    name: action,
    summary,
    usage: `Usage: katafleet ${action} ROLLOUT_ID${action === 'abort' ? ' [--rollback] [--reason TEXT]' : ''}`,
    async run(args) {
      const options: NonNullable<ParseArgsConfig['options']> = action === 'abort' ? { rollback: { type: 'boolean' }, reason: { type: 'string' } } : {};
      const { values, positionals } = parseCommandArgs(this, args, options, { min: 1, max: 1 });
      const request = values as { rollback?: boolean; reason?: string };
      const phase = await withTemporalClient((client) => controlRollout(client, positionals[0], action, { rollback: request.rollback, reason: request.reason }));
      process.stdout.write(`rollout ${positionals[0]}: ${phase}\n`);
      return 0;
    },
  };
}

export const pauseCommand = controlCommand('pause', 'pause a rollout: no new node starts until resume');
export const resumeCommand = controlCommand('resume', 'resume a paused rollout (or approve it after the canary)');
export const abortCommand = controlCommand('abort', 'abort a rollout; --rollback also undoes the nodes it changed');
