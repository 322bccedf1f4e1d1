// Every sentence of README.md's "How a rollout runs", and the tests that prove it through the public CLI or
// HTTP API (or, for the node level and the upgrade promise, the real workflows on the simulated fleet and the
// recorded histories). This file checks that the table is complete: each sentence of the section contains one
// of the phrases below, and each named test exists in its file. The tests themselves run in their own files.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isNonSuccess, type NodeStatus } from '../workflows/rollout-messages';
import { fold, missingProofTests, unprovenSentences, type Proof } from './helpers/proof-table';

export const proofs: Proof[] = [
  { sentence: 'plans waves from `[rollout]`: the canary first, then waves by count or percent', tests: { 'rollout-waves.test.ts': ['rolls out to 10 nodes with a canary of 1 and waves of 3, wave after wave'] } },
  {
    sentence: 'never work on one node at once',
    tests: {
      'rollout-phase.test.ts': ['never works on one node from both at once: each node changed once, its nodeWorkflow runs one after another'],
      'rollout-canary.test.ts': ['halts when the canary stays busy (a drift repair holds its lock): tried again, then halted, busy-2 never started'],
      'drift.test.ts': ['skips a node that a rollout is working on and says so, and the rollout finishes undisturbed'],
    },
  },
  { sentence: 'It runs each node as a child `nodeWorkflow`', tests: { 'rollout-waves.test.ts': ['rolls out to 10 nodes with a canary of 1 and waves of 3, wave after wave'] } },
  {
    sentence: 'Any canary outcome other than succeeded halts the rollout, whatever `failure_budget` says',
    tests: {
      'rollout-canary.test.ts': [
        'halts when the canary is rolled back, with --failure-budget 1: exit 1, phase halted, nodes 2-4 untouched, the reason in status, API and UI',
        'halts when the canary stays busy (a drift repair holds its lock): tried again, then halted, busy-2 never started',
      ],
      'rollout-readme.test.ts': ['counts every outcome but succeeded as a non-success'],
    },
  },
  {
    sentence: '`katafleet rollout --follow` then exits 1, and the reason is in `katafleet status`',
    tests: { 'rollout-canary.test.ts': ['halts when the canary is rolled back, with --failure-budget 1: exit 1, phase halted, nodes 2-4 untouched, the reason in status, API and UI'] },
  },
  {
    sentence: 'the rollout stops starting nodes once more nodes did not succeed than `failure_budget` allows',
    tests: { 'rollout-waves.test.ts': ['halts after the wave in which the failure budget is exceeded and never touches a later node'] },
  },
  {
    sentence: 'Every outcome other than succeeded counts',
    tests: {
      'rollout-readme.test.ts': ['counts every outcome but succeeded as a non-success'],
      'rollout-canary.test.ts': ['is tried again at the end of its wave and once more after the last wave, then counts against the budget'],
    },
  },
  {
    sentence: 'is tried again at the end of its wave and once more after the last wave',
    tests: { 'rollout-canary.test.ts': ['is tried again at the end of its wave and once more after the last wave, then counts against the budget'] },
  },
  { sentence: 'It counts against the budget only if it is still busy then', tests: { 'rollout-canary.test.ts': ['is tried again at the end of its wave and once more after the last wave, then counts against the budget'] } },
  {
    sentence: 'Pause, resume and abort are Temporal updates, with signal fallbacks',
    tests: {
      'rollout-waves.test.ts': ['holds new node starts while paused (update or signal) and goes on after resume; resume when not paused is refused with a reason'],
      'rollout-phase.test.ts': ['upgrades an abort without rollback to one with rollback (by the abort signal) while a node still runs'],
    },
  },
  {
    sentence: 'A pause holds new node starts; a pause while the rollout waits between waves shows `paused`',
    tests: { 'rollout-phase.test.ts': ['shows paused when paused while waiting between waves, refuses a second pause as paused, and goes on after resume'] },
  },
  { sentence: 'With `approval_after_canary` the rollout waits after the canary', tests: { 'rollout-phase.test.ts': ['waits for approval after the canary; resume approves the next waves'] } },
  {
    sentence: '`abort --rollback` lets running nodes finish, then undoes every node the rollout changed, newest wave first',
    tests: {
      'rollout-abort-bounded.test.ts': ['restores every changed node byte for byte, newest wave first, never more than max_parallel_rollback undos at once'],
      'rollout-abort.test.ts': ['stops new work and returns every node the rollout changed to its original bytes, without the label'],
    },
  },
  { sentence: 'An abort without rollback can still be upgraded', tests: { 'rollout-phase.test.ts': ['upgrades an abort without rollback to one with rollback (by the abort signal) while a node still runs'] } },
  { sentence: 'A cancel of the rollout does not cut an undo in half', tests: { 'rollout-phase.test.ts': ['lets an undo finish when the aborting rollout is cancelled through Temporal'] } },
  {
    sentence: 'A rollout cancelled through Temporal',
    tests: {
      'rollout-phase.test.ts': ['ends with KatafleetPhase cancelled, not running, when the rollout is cancelled through Temporal'],
      'rollback-cluster-objects.test.ts': ['deletes the RuntimeClass it created: kubectl get runtimeclass kata is NotFound after the cancel'],
    },
  },
  {
    sentence: 'After a node succeeded, the rollout records on it which playbook it applied',
    tests: {
      'drift-desired.test.ts': [
        'records the playbook on each node a rollout succeeded on, and repairs a drifted node back to it',
        'records the desired state in the node run\'s own commit (no activity of the rollout per node); a node whose record cannot be written still succeeds, and says so',
      ],
    },
  },
  {
    sentence: 'An abort that rolls the node back marks the record `rolled-back`.',
    tests: {
      'drift-desired.test.ts': ['does not re-apply a playbook to a node an abort rolled back'],
      'rollout-abort-bounded.test.ts': ['restores every changed node byte for byte, newest wave first, never more than max_parallel_rollback undos at once'],
    },
  },
  { sentence: 'Drift repair follows this record', tests: { 'drift-desired.test.ts': ['reports a conflict and repairs nothing when the drift run holds another playbook than the node recorded'] } },
  {
    sentence: '`nodeWorkflow` runs the playbook\'s steps in order over SSH, each idempotent',
    tests: { 'node-workflow.test.ts': ['rolls out end to end: kata handler in containerd, Node labeled, RuntimeClass, a pod in a VM', 'changes nothing when rolled out again, and succeeds'] },
  },
  {
    sentence: 'The steps run in one `runSteps` activity per node (a run of steps)',
    tests: {
      'rollout-waves.test.ts': ['rolls out to 10 nodes with a canary of 1 and waves of 3, wave after wave', 'starts one rollout for two simultaneous POSTs with the same request id, and reports it through the API to the end'],
      'node-step-runs.test.ts': ['the whole kata playbook on a fresh node is one activity: every step done, with its own summary and duration'],
    },
  },
  {
    sentence: 'After each step that changed something it keeps an undo',
    tests: { 'node-workflow.test.ts': ['containerd refuses the new config: config restored byte for byte, containerd active, Node Ready, no label'] },
  },
  {
    sentence: 'Progress: the Temporal UI shows',
    tests: {
      'rollout-waves.test.ts': ['rolls out to 10 nodes with a canary of 1 and waves of 3, wave after wave'],
      'rollout-canary.test.ts': ['halts when the canary is rolled back, with --failure-budget 1: exit 1, phase halted, nodes 2-4 untouched, the reason in status, API and UI'],
      'rollout-view.test.ts': ['shows at most 100 rows in the Temporal UI\'s current details, failures first, and says where the rest is'],
    },
  },
  { sentence: 'since workflow histories were first kept is behind Temporal\'s `patched()`', tests: { 'replay.test.ts': ['replay without a nondeterminism error on the current workflow code'] } },
  // "When things fail": the node level, proved on the real workflows and the simulated fleet.
  { sentence: 'Every run leaves its node either converged, or byte-exact as it was before, or quarantined', tests: { 'node-journal.test.ts': ['cancelled after the swap: the run recovers from its journal, the config is byte-exact as before, no journal left', 'an undo refused because the config changed since katafleet wrote it quarantines the node, with the exact fix'] } },
  { sentence: 'How (test/node-journal.test.ts, test/node-cordon.test.ts', tests: { 'node-journal.test.ts': ['terminated after the swap: the next run finds the journal and restores the config byte-exact before doing anything'] } },
  { sentence: '**A journal on the node.** Before a step changes anything it writes its intent', tests: { 'node-journal.test.ts': ['cancelled after the swap: the run recovers from its journal, the config is byte-exact as before, no journal left'] } },
  { sentence: 'the run\'s recovery reads that journal and takes back what is there', tests: { 'node-journal.test.ts': ['cancelled after the swap: the run recovers from its journal, the config is byte-exact as before, no journal left', 'cancelled while an undo\'s containerd restart hangs: every undo still runs, the config is byte-exact as before'] } },
  { sentence: 'A run cancelled through Temporal right after containerd-patch swapped the config ends `rolled-back`', tests: { 'node-journal.test.ts': ['cancelled after the swap: the run recovers from its journal, the config is byte-exact as before, no journal left'] } },
  { sentence: 'A run that succeeds turns its journal into a record under', tests: { 'node-journal.test.ts': ['the rollback step takes back the newest applied run (its backup, sha-checked), and leaves other runs\' package markers'] } },
  {
    sentence: '**A failed step in a run of steps.** A step that fails inside the run with a failure a retry may fix',
    tests: { 'node-step-runs.test.ts': ['a step whose command runs past the step\'s own timeout in the run: its second attempt alone, after its retry interval, then the steps after it as a run again'] },
  },
  { sentence: 'A run lost as a whole (its worker SIGKILLed: its heartbeat times out)', tests: { 'cluster-two-workers.test.ts': ['a worker SIGKILLed while it runs an activity: the rollout completes on the other, each node patched exactly once'] } },
  { sentence: '**Termination, reset, a lost result.**', tests: { 'node-journal.test.ts': ['terminated after the swap: the next run finds the journal and restores the config byte-exact before doing anything'] } },
  {
    sentence: '**A lock on the node.**',
    tests: {
      'node-overlap.test.ts': ['attempt 2 neither overlaps attempt 1 (still running on the node) nor reports rolled-back while it finishes'],
      'node-workflow-crash.test.ts': ['in the middle of containerd-patch: the workflow finishes, the config is patched once, one backup equal to the original'],
    },
  },
  {
    sentence: 'The lease is taken by the step\'s first command (in the same SSH command), and a step that succeeds hands it to the',
    tests: {
      'rollout-outside-cli.test.ts': ['a CLI rollout of three steps: each step takes the node\'s lease over from the one before, and only the run\'s last activity removes it'],
      'ssh-batch.test.ts': [
        'the lease is taken by the first command itself: one SSH command, the lease file names the owner and its rank',
        'a step that succeeds hands its lease over: no release command, and the run\'s next step takes it at once',
        'no other run, and no late attempt of an earlier step, takes a lease that was handed over; they run nothing (NodeBusy)',
        'the next attempt of a step takes over at once; the earlier attempt\'s next command is refused (NodeLockLost)',
        'even the same run does not take over while a command of the previous owner still runs on the node',
      ],
    },
  },
  { sentence: 'Temporary and candidate files are per attempt.', tests: { 'node-overlap.test.ts': ['attempt 2 neither overlaps attempt 1 (still running on the node) nor reports rolled-back while it finishes'] } },
  {
    sentence: '**Timeouts that nest.**',
    tests: {
      'node-overlap.test.ts': ['attempt 2 neither overlaps attempt 1 (still running on the node) nor reports rolled-back while it finishes'],
      'node-activities.test.ts': ['another process holding the dpkg lock: apt waits a bounded time, then DpkgLockBusy names the holder, nothing installed'],
    },
  },
  { sentence: 'An attempt\'s time counts from its start', tests: { 'node-lock-queued.test.ts': ['a step that waited in the task queue longer than its timeout still has its whole timeout once it starts'] } },
  { sentence: '**Quarantine.**', tests: { 'node-journal.test.ts': ['an undo refused because the config changed since katafleet wrote it quarantines the node, with the exact fix'] } },
  {
    sentence: 'Every later rollout, undo and drift repair refuses it with `NodeQuarantined`',
    tests: {
      'node-journal.test.ts': [
        'a later run is refused with nothing changed: NodeQuarantined with the reason and the fix',
        'katafleet node release: bad input is refused with exit 2, an unknown node names the inventory',
        'katafleet node release lifts it; the next run works on the node again',
        'POST /v1/nodes/{name}/release: 400 for bad input, 200 for a node that is not quarantined',
      ],
    },
  },
  { sentence: 'A rollback keeps being retried with backoff', tests: { 'node-journal.test.ts': ['is retried visibly ("rollback attempt N, next in …") for rollbackFor, then the node needs attention'], 'rollout-canary.test.ts': ['halts when the canary is rolled back, with --failure-budget 1: exit 1, phase halted, nodes 2-4 untouched, the reason in status, API and UI'] } },
  {
    sentence: '**Cordon ownership.**',
    tests: {
      'node-cordon.test.ts': [
        'a worker SIGKILLed between cordon and uncordon: the retry knows the cordon is its run\'s and the node ends uncordoned',
        'a node someone else cordoned stays cordoned: katafleet neither uncordons it nor claims it',
      ],
    },
  },
  {
    sentence: 'The release-tarball row (kata.toml\'s install; the matrix measured package-install before) was measured alone',
    tests: {
      'release-tarball-journal.test.ts': ['terminated mid release-tarball: the next run finds the journal and takes the install back before doing anything'],
      'release-tarball.test.ts': ['a re-run after a crash between extracting and switching finishes the job and still owns the version directory'],
    },
  },
  {
    sentence: 'Fault matrix (`npx tsx bench/faults.ts`',
    tests: {
      'node-workflow-crash.test.ts': [
        'in the middle of service-restart: the workflow finishes, containerd runs the kata handler, one backup',
        'a hanging restart is cut by its timeout and retried per the policy; the next attempt succeeds',
        'a connection dropped mid-command (its sshd killed) is recovered: the outcome-unknown attempt is retried',
      ],
      'node-journal.test.ts': ['terminated after the swap: the next run finds the journal and restores the config byte-exact before doing anything'],
    },
  },
];

/** The sentences of the README's "How a rollout runs" section, whitespace folded. */
function sectionSentences(): string[] {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
  const start = readme.indexOf('## How a rollout runs');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end).split('\n').slice(1).join('\n');
  return section.split(/\n- /).map(fold).flatMap((bullet) => bullet.replace(/^- /, '').split(/(?<=\.)(?<!e\.g\.)\s+(?=[A-Z`])/)).filter(Boolean);
}

describe('README "How a rollout runs"', () => {
  it('has a proving test named for every sentence', () => {
    expect(unprovenSentences(sectionSentences(), proofs)).toEqual([]);
  });

  it('names only tests that exist, in the files named', () => {
    expect(missingProofTests(proofs)).toEqual([]);
  });

  it('counts every outcome but succeeded as a non-success', () => {
    const statuses: NodeStatus[] = ['pending', 'running', 'busy', 'succeeded', 'failed', 'skipped', 'rolled-back', 'rollback-failed', 'needs-attention'];
    expect(Object.fromEntries(statuses.map((status) => [status, isNonSuccess({ status })]))).toEqual({
      pending: false,
      running: false,
      // Not final: tried again later.
      busy: false,
      succeeded: false,
      failed: true,
      // Not started (the rollout stopped before it): not the node's outcome.
      skipped: false,
      'rolled-back': true,
      'rollback-failed': true,
      'needs-attention': true,
    });
    expect(isNonSuccess({ status: 'skipped', busy: true })).toBe(true);
  });
});
