// Determinism guard: the histories of real nodeWorkflow runs (test/histories, recorded by
// scripts/record-histories.ts) must replay on today's workflow code. A change that alters the
// commands nodeWorkflow issues for the same events (a step added before an activity, a timer, a
// different order of undos) fails here instead of breaking running rollouts after a deploy.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { activitiesInHistory } from './helpers/node-workflow';
import { historyFromJsonText } from './helpers/history-json';

Runtime.install({ logger: new DefaultLogger('WARN') });

const dir = join(__dirname, 'histories');
const histories = readdirSync(dir).filter((file) => file.endsWith('.json')).sort().map((file) => ({
  workflowId: file.replace(/\.json$/, ''),
  history: historyFromJsonText(readFileSync(join(dir, file), 'utf8')),
}));

describe('saved nodeWorkflow histories', () => {
  it('cover a success, a rollback, a retry and a cancellation', () => {
    const activities = Object.fromEntries(histories.map(({ workflowId, history }) => [workflowId, activitiesInHistory(history).map((a) => `${a.activityType}#${a.attempt}:${a.result}`)]));
    expect(activities).toEqual({
      'node-success': ['containerdPatch#1:completed', 'serviceRestart#1:completed'],
      'node-rollback': ['containerdPatch#1:completed', 'serviceRestart#1:failed', 'undoStep#1:completed'],
      'node-retry': ['serviceRestart#2:completed'],
      // Aborted mid containerd-patch: the step still completes (its undo is kept), the restart never starts, the undo runs.
      'node-cancel': ['containerdPatch#1:completed', 'undoStep#1:completed'],
      // Recorded with the journal (patched 'node-journal', test/node-journal.test.ts with KATAFLEET_RECORD_HISTORIES=1):
      // cancelled after containerd-patch's swap, the run's recovery takes it back from the journal on the node.
      'node-journal-recovery': ['prepareNode#1:completed', 'containerdPatch#1:running' /* cancelled: no completed/failed event */, 'recoverRun#1:completed'],
      // A run that first recovers the journal of a terminated run, then has nothing of its own to do.
      'node-journal-recovered-first': ['prepareNode#1:completed', 'commitRun#1:completed'],
      // Undo mode refused (the config changed since katafleet wrote it): the node is quarantined.
      'node-journal-quarantine': ['prepareNode#1:completed', 'recoverRun#1:completed', 'quarantineNode#1:completed'],
    });
  });

  it('replay without a nondeterminism error on the current workflow code', async () => {
    const results = [];
    for await (const result of Worker.runReplayHistories({ workflowsPath: require.resolve('../workflows') }, histories)) results.push(result);
    expect(results.map(({ workflowId, error }) => ({ workflowId, error: error?.message }))).toEqual(histories.map(({ workflowId }) => ({ workflowId, error: undefined })));
  }, 120_000);
});
