// Determinism guard: the histories of real nodeWorkflow runs (test/histories, recorded by
// scripts/record-histories.ts) must replay on today's workflow code. A change that alters the
// commands nodeWorkflow issues for the same events (a step added before an activity, a timer, a
// different order of undos) fails here instead of breaking running rollouts after a deploy.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { temporal } from '@temporalio/proto';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { activitiesInHistory } from './helpers/node-workflow';
import { historyFromJsonText } from './helpers/history-json';

Runtime.install({ logger: new DefaultLogger('WARN') });

const dir = join(__dirname, 'histories');
const historiesOf = (prefixes: string[]) => readdirSync(dir).filter((file) => file.endsWith('.json') && prefixes.some((prefix) => file.startsWith(prefix))).sort().map((file) => ({
  workflowId: file.replace(/\.json$/, ''),
  history: historyFromJsonText(readFileSync(join(dir, file), 'utf8')),
}));
const histories = historiesOf(['node-']);

describe('saved nodeWorkflow histories', () => {
  it('cover a success, a rollback, a retry, a cancellation and runs of steps', () => {
    const activities = Object.fromEntries(histories.map(({ workflowId, history }) => [workflowId, activitiesInHistory(history).map((a) => `${a.activityType}#${a.attempt}:${a.result}${a.inRun ? ' in run' : ''}`)]));
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
      // Patched 'node-prepare-in-first-step' and 'node-commit-in-last-step': the first step checks the node itself (no
      // prepareNode activity), the last one commits the run (no commitRun activity) ...
      'node-prepare-in-first-step-clean': ['containerdPatch#1:completed', 'serviceRestart#1:completed'],
      // ... and when the first finds a terminated run's journal (NodeNeedsPrepare), the run recovers it, then runs the step again.
      'node-prepare-in-first-step-recovered': ['containerdPatch#1:failed', 'prepareNode#1:completed', 'containerdPatch#1:completed', 'serviceRestart#1:completed'],
      // Patched 'node-step-runs' (test/node-step-runs.test.ts): the whole kata playbook in one runSteps activity ...
      'node-step-runs-clean': [
        'prereqCheck#1:completed in run', 'releaseTarball#1:completed in run', 'prereqCheck#1:completed in run', 'containerdPatch#1:completed in run',
        'serviceRestart#1:completed in run', 'readinessGate#1:completed in run', 'nodeLabel#1:completed in run', 'runtimeClass#1:completed in run',
        'verificationPod#1:completed in run',
      ],
      // ... and a restart that ran past its timeout in the run: its second attempt alone, then the steps after it as a run again.
      'node-step-runs-retried': ['containerdPatch#1:completed in run', 'serviceRestart#1:failed in run', 'serviceRestart#2:completed', 'readinessGate#1:completed in run', 'nodeLabel#1:completed in run'],
    });
  });

  it('replay without a nondeterminism error on the current workflow code', async () => {
    const results = [];
    for await (const result of Worker.runReplayHistories({ workflowsPath: require.resolve('../workflows') }, histories)) results.push(result);
    expect(results.map(({ workflowId, error }) => ({ workflowId, error: error?.message }))).toEqual(histories.map(({ workflowId }) => ({ workflowId, error: undefined })));
  }, 120_000);
});

// rolloutWorkflow and driftWorkflow histories recorded by scripts/record-rollout-histories.ts. Those
// recorded on the code before issue 11 (main at 0c4c69f) are the previous version: every change since is
// behind patched(), so they must keep replaying.
const fleetHistories = historiesOf(['rollout-', 'drift-']);

describe('saved rolloutWorkflow and driftWorkflow histories', () => {
  it('cover a canary halt, pause and resume, approval, abort with rollback, continue-as-new, a drift repair, and the new behaviour', () => {
    const names = fleetHistories.map(({ workflowId }) => workflowId);
    expect(names).toEqual(expect.arrayContaining([
      'drift-repair',
      'rollout-abort-rollback',
      'rollout-approval',
      'rollout-canary-budget',
      'rollout-canary-halt',
      'rollout-continue-as-new-run1',
      'rollout-continue-as-new-run2',
      'rollout-pause-resume',
      // Recorded on the code of issue 11: the patch markers are in these.
      'drift-desired-state',
      'rollout-bounded-abort-run1',
      'rollout-bounded-abort-run2',
      'rollout-canary-rolled-back-halts',
      // Recorded on the code of issue 13 (bounded payloads and search attributes).
      'rollout-bounded-payloads-run1',
      'rollout-bounded-payloads-run2',
      'drift-bounded-attributes',
      // Recorded on the code of issue 13's inventory in pieces (signals, pieces read back, compact state, undos read back).
      'rollout-inventory-pieces-run1',
      'rollout-inventory-pieces-run2',
      // Recorded on the code of issue 12's take-back (test/rollback-cluster-objects.test.ts with KATAFLEET_RECORD_HISTORIES=1):
      // the canary failed after the RuntimeClass was applied, the halted rollout deleted the class it had created.
      'rollout-cluster-take-back',
    ]));
    const scheduled = fleetHistories.find(({ workflowId }) => workflowId === 'rollout-cluster-take-back')!.history.events!
      .map((event) => event.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    expect(scheduled).toEqual(['clusterStep', 'clusterTakeBack']);
    const lastEvent = (name: string) => fleetHistories.find(({ workflowId }) => workflowId === name)!.history.events!.at(-1)!.eventType;
    expect(lastEvent('rollout-continue-as-new-run1')).toBe(temporal.api.enums.v1.EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW);
    expect(lastEvent('rollout-canary-halt')).toBe(temporal.api.enums.v1.EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED);
    expect(lastEvent('rollout-canary-rolled-back-halts')).toBe(temporal.api.enums.v1.EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED);
    // The histories of before issue 11 hold no patch marker, the new ones hold one per change.
    const markers = (name: string) => fleetHistories.find(({ workflowId }) => workflowId === name)!.history.events!.filter((event) => event.markerRecordedEventAttributes).length;
    expect(markers('rollout-canary-budget')).toBe(0);
    expect(markers('rollout-canary-rolled-back-halts')).toBe(4);
    expect(markers('drift-desired-state')).toBe(1);
    expect(markers('rollout-bounded-payloads-run1')).toBe(5);
    expect(markers('drift-bounded-attributes')).toBe(2);
  });

  it('replay without a nondeterminism error on the current workflow code', async () => {
    const results = [];
    for await (const result of Worker.runReplayHistories({ workflowsPath: require.resolve('../workflows') }, fleetHistories)) results.push(result);
    expect(results.map(({ workflowId, error }) => ({ workflowId, error: error?.message }))).toEqual(fleetHistories.map(({ workflowId }) => ({ workflowId, error: undefined })));
  }, 180_000);
});
