import { RolloutServiceError } from '../api/rollout-service';
import { startDriftRun } from '../api/drift-service';
import { buildDriftInput, createDriftSchedule, deleteDriftSchedule, listDriftSchedules, type InlineDriftInput } from '../api/schedule-service';
import { scheduleEveryProblem } from '../api/schemas';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import { withTemporalClient, workflowUiLink } from '../worker/connection';
import type { DriftReport } from '../workflows/drift';
import { parseCommandArgs, requireOption, UsageError, type Command } from './command';

/** The drift report as a table: node, outcome, what drifted. */
export function formatDriftReport(report: DriftReport): string {
  const width = Math.max(4, ...report.nodes.map((result) => result.node.length));
  const outcomeWidth = Math.max(13, ...report.nodes.map((result) => result.outcome.length + 1));
  const rows = report.nodes.map((result) => `${result.node.padEnd(width)}  ${result.outcome.padEnd(outcomeWidth)} ${[...result.drifted, result.detail ?? ''].filter(Boolean).join('; ')}`.trimEnd());
  // A large run's report lists the nodes not in sync first, bounded: say what is left out, and the counts.
  const omitted = (report.nodesOmitted ?? 0) > 0
    ? [`… ${report.nodesOmitted} more nodes not listed; all ${report.nodesTotal ?? '?'} by outcome: ${Object.entries(report.counts ?? {}).map(([outcome, count]) => `${count} ${outcome}`).join(', ')}`]
    : [];
  return [`${'node'.padEnd(width)}  ${'outcome'.padEnd(outcomeWidth)} what`, ...rows, ...omitted].join('\n');
}

/** Whether every node of the report ended in sync or repaired (the counts of a large run; its listed nodes otherwise). */
export function driftAllGood(report: DriftReport): boolean {
  if (report.counts) return Object.entries(report.counts).every(([outcome, count]) => !count || ['in-sync', 'repaired'].includes(outcome));
  return report.nodes.every((result) => ['in-sync', 'repaired'].includes(result.outcome));
}

export const driftCommand: Command = {
  name: 'drift',
  summary: 'check nodes against a playbook and repair drift, now or on a Temporal Schedule',
  usage: `Usage:
  katafleet drift check PLAYBOOK --inventory FILE [--report-only]     run one drift check (and repair) now
  katafleet drift schedule PLAYBOOK --inventory FILE --every 15m [--report-only]
  katafleet drift schedules                                         list drift schedules
  katafleet drift unschedule SCHEDULE_ID

A check is read-only. Drifted nodes are repaired by running the playbook on them through the same per-node lock as
rollouts, so a node busy in a rollout is skipped this round. A repair only re-applies the playbook (and version) the
node's last successful rollout recorded in /var/lib/katafleet/desired.json: another playbook, a node an abort rolled
back, or a downgrade is reported as conflict; a quarantined node as needs-attention. --report-only changes nothing. Schedules skip a run
while the previous one still runs, and show on the Temporal UI's Schedules page.`,
  async run(args) {
    const [sub, ...rest] = args;
    const options = { inventory: { type: 'string', short: 'i' }, every: { type: 'string' }, 'report-only': { type: 'boolean' } } as const;
    if (sub === 'check' || sub === 'schedule') {
      const { values, positionals } = parseCommandArgs(this, rest, options, { min: 1, max: 1 });
      const playbook = await loadPlaybook(positionals[0]);
      const inventory = await loadInventory(requireOption(this, values.inventory, '--inventory FILE'));
      const reportOnly = values['report-only'] ?? false;
      let input: InlineDriftInput;
      try {
        input = buildDriftInput(playbook, inventory, reportOnly);
      } catch (err) {
        // Too many nodes for one drift run: the request's fault, exit 2 with the limit and the fix.
        if (err instanceof RolloutServiceError && err.type === 'RolloutTooLarge') throw new UsageError(err.message);
        throw err;
      }
      if (sub === 'schedule') {
        const every = requireOption(this, values.every, '--every DURATION');
        // Bad input is refused before Temporal is contacted.
        const problem = scheduleEveryProblem(every);
        if (problem !== undefined) throw new UsageError(`katafleet drift schedule: --every ${problem}`, this.usage);
        const id = await withTemporalClient((client) => createDriftSchedule(client, playbook, inventory, { every, reportOnly }));
        process.stdout.write(`created schedule ${id}: drift ${reportOnly ? 'report' : 'repair'} every ${every}\n`);
        return 0;
      }
      const workflowId = `katafleet-drift-check-${Date.now()}`;
      process.stdout.write(`drift check ${workflowUiLink(workflowId)}\n`);
      // The inventory travels in pieces (start input: the manifest; then one signal a piece), as a rollout's.
      const report = await withTemporalClient(async (client) => (await startDriftRun(client, input, { workflowId })).result());
      process.stdout.write(`${formatDriftReport(report)}\n`);
      return driftAllGood(report) ? 0 : 1;
    }
    if (sub === 'schedules') {
      parseCommandArgs(this, rest, {}, { min: 0, max: 0 });
      const schedules = await withTemporalClient((client) => listDriftSchedules(client));
      for (const schedule of schedules) {
        process.stdout.write(`${schedule.scheduleId}  every ${schedule.every ?? '?'}  ${schedule.playbook ?? ''}${schedule.reportOnly ? ' (report only)' : ''}  next ${schedule.nextRun ?? '-'}  ${schedule.recentRuns.length} recent runs\n`);
      }
      if (schedules.length === 0) process.stdout.write('no drift schedules\n');
      return 0;
    }
    if (sub === 'unschedule') {
      const { positionals } = parseCommandArgs(this, rest, {}, { min: 1, max: 1 });
      await withTemporalClient((client) => deleteDriftSchedule(client, positionals[0]));
      process.stdout.write(`deleted schedule ${positionals[0]}\n`);
      return 0;
    }
    throw new UsageError(sub ? `katafleet drift: unknown sub-command "${sub}"` : 'katafleet drift: which sub-command?', this.usage);
  },
};
