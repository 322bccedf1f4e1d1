// README "When things fail" (fault matrix, release-tarball row): the `release-tarball` step (kata.toml's
// `install`) "journals its undo before it changes anything", so a rollout terminated through Temporal in the
// middle of the step is taken back by the next run on the node (fixed in 2d8583a: before it, the step wrote
// no entry in the node's journal and such a node was left changed and unrecorded).
// One simulated node, a real Temporal dev server, a worker in this process; the tarball comes from the fleet's
// mirror (the fleet sets KATAFLEET_RELEASE_MIRROR while it runs). The step is caught mid-way by a test-side
// `ln` in the node's /usr/local/bin (before /usr/bin on root's PATH, activities/ssh/quote.ts ROOT_PATH; the
// simulator's /usr/local/sbin is read-only) that waits
// while a flag file exists: /run/kf-test-hang-switch holds the `ln` of the /opt/kata switch (the version's
// tree is extracted, /opt/kata not touched yet), /run/kf-test-hang-link the `ln` of the second link in
// /usr/local/bin (/opt/kata switched, the first link made).
// With 2d8583a reverted (release-tarball.ts and node-activities.ts), the test fails where it looks for the
// journal entry while the step is held at the switch: there is none.
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { JournalEntry } from '../activities/steps/journal';
import type { Step } from '../playbooks/schema';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId, type nodeWorkflow, type NodeRolloutInput } from '../workflows/node';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { kataSteps, nodeInput, onNode, startNodeFleet, waitFor, type NodeFleet } from './helpers/node-workflow';

const node = 'rt-term';
const tree = '/opt/kata-releases/3.32.0/opt/kata';
let env: TestWorkflowEnvironment;
let nodes: NodeFleet;
let worker: RunningTestWorker;
let install: Step[];

beforeAll(async () => {
  [env, nodes] = await Promise.all([startTestTemporal(), startNodeFleet('release-journal', { nodes: [{ name: node }] })]);
  worker = await runKatafleetWorker(env, taskQueue);
  install = await kataSteps(['install']);
  await onNode(nodes, node, `cat > /usr/local/bin/ln <<'EOF'
#!/bin/sh
case "$*" in
  *' /opt/kata.katafleet-new') flag=/run/kf-test-hang-switch ;;
  *' /usr/local/bin/containerd-shim-kata-v2') flag=/run/kf-test-hang-link ;;
  *) flag= ;;
esac
while [ -n "$flag" ] && [ -e "$flag" ]; do sleep 0.2; done
PATH=/usr/bin:/bin exec ln "$@"
EOF
chmod 0755 /usr/local/bin/ln`);
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

function start(steps: Step[], runName: string, extra: Partial<NodeRolloutInput> = {}): Promise<WorkflowHandle<typeof nodeWorkflow>> {
  return env.client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', {
    taskQueue,
    workflowId: nodeWorkflowId(node),
    args: [nodeInput(nodes, node, steps, { rolloutId: runName, heartbeatTimeout: '10s', ...extra })],
  });
}

/** Everything release-tarball changes: /opt/kata, the release trees, /usr/local/bin, its own state files. */
const kataState = () => onNode(nodes, node, [
  'if test -L /opt/kata; then echo "opt-kata -> $(readlink /opt/kata)"; elif test -e /opt/kata; then echo opt-kata; else echo no-opt-kata; fi',
  'if test -d /opt/kata-releases; then echo releases-dir:; ls -A /opt/kata-releases; else echo no-releases-dir; fi',
  'ls -A /usr/local/bin',
  'ls -A /var/lib/katafleet 2>/dev/null | grep release-',
  'true',
].join('; echo @@@; '));
const journalListing = async () => (await onNode(nodes, node, 'ls -1 /var/lib/katafleet/journal 2>/dev/null; true')).trim();
const hang = (which: 'switch' | 'link', on: boolean) => onNode(nodes, node, on ? `touch /run/kf-test-hang-${which}` : `rm -f /run/kf-test-hang-${which}`);
/** The step's `ln` waiting on the node: the /opt/kata switch, or the second link. */
const lnHanging = (which: 'switch' | 'link') => {
  const pattern = which === 'switch' ? '[/]usr/local/bin/ln .*/opt/kata[.]katafleet-new' : '[/]usr/local/bin/ln .*/usr/local/bin/containerd-shim-kata-v2';
  return waitFor(`the step's ln hanging (${which})`, async () => ((await onNode(nodes, node, `pgrep -f '${pattern}' || true`)).trim() ? true : undefined), 180_000, 200);
};

describe('README "When things fail": a rollout terminated mid release-tarball', () => {
  it('terminated mid release-tarball: the next run finds the journal and takes the install back before doing anything', async () => {
    const before = await kataState();
    expect(before.split('@@@\n')[0]).toBe('no-opt-kata\n');
    expect(await journalListing()).toBe('');

    await hang('switch', true);
    await hang('link', true);
    let terminatedRun: string;
    try {
      const handle = await start(install, 'terminate-mid-release');
      terminatedRun = (await handle.describe()).runId;

      // Held at the /opt/kata switch: the version's tree is extracted, /opt/kata is untouched, and the node's
      // journal already holds the step's undo (written before the first change).
      await lnHanging('switch');
      expect(await onNode(nodes, node, 'test -e /opt/kata || test -L /opt/kata && echo changed || echo untouched')).toBe('untouched\n');
      expect(await onNode(nodes, node, `test -f ${tree}/.katafleet-release && cat ${tree}/.katafleet-release`)).toMatch(/^version=3\.32\.0\n/);
      expect(await journalListing()).toBe(terminatedRun);
      const entries = (await onNode(nodes, node, `ls -1 /var/lib/katafleet/journal/${terminatedRun}`)).trim().split('\n');
      expect(entries).toEqual(['00-install.json']);
      const entry = JSON.parse(await onNode(nodes, node, `cat /var/lib/katafleet/journal/${terminatedRun}/00-install.json`)) as JournalEntry;
      expect(entry).toMatchObject({
        runId: terminatedRun, node, rolloutId: 'terminate-mid-release', stepId: 'install', index: 0,
        undo: { kind: 'remove-release', stepId: 'install', version: '3.32.0', createdVersionDir: true, createdLinks: ['/usr/local/bin/kata-runtime', '/usr/local/bin/containerd-shim-kata-v2'], createdReleasesDir: true },
      });
      expect(entry.undo).not.toHaveProperty('previous');

      // Let it go on to the second link: /opt/kata switched, the first link made.
      await hang('switch', false);
      await lnHanging('link');
      expect(await onNode(nodes, node, 'readlink /opt/kata; readlink /usr/local/bin/kata-runtime')).toBe(`${tree}\n/opt/kata/bin/kata-runtime\n`);
      expect(await journalListing()).toBe(terminatedRun);

      await handle.terminate('test: terminated mid release-tarball');
      const ended = await handle.result().then(() => undefined, (e: unknown) => e);
      expect(ended).toBeInstanceOf(WorkflowFailedError);
      expect((await handle.describe()).status.name).toBe('TERMINATED');
    } finally {
      await hang('switch', false);
      await hang('link', false);
    }
    // No workflow code ran after the termination: the node is changed, and its journal says so.
    expect(await kataState()).not.toBe(before);
    expect(await journalListing()).toBe(terminatedRun);

    // The next run (no steps of its own) takes the install back first, from the journal alone.
    const next = await start([], 'after-termination');
    const result = await next.result();
    expect(result.phase).toBe('succeeded');
    expect(result.recovered).toEqual([expect.stringMatching(new RegExp(`^recovered the journal of run ${terminatedRun} \\(terminate-mid-release\\): install: `))]);
    expect(result.recovered?.[0]).toContain('removed /opt/kata;');
    expect(result.recovered?.[0]).toContain('removed /usr/local/bin/kata-runtime');
    expect(result.recovered?.[0]).toContain('removed /opt/kata-releases/3.32.0');
    expect(result.recovered?.[0]).toContain('removed /opt/kata-releases (this run created it, and it is empty now)');
    // As before: no /opt/kata, no links in /usr/local/bin, no /opt/kata-releases (the run created it), no state
    // files, no journal (test/release-tarball.test.ts 'the first install\'s undo removes exactly what it created').
    expect(before.split('@@@\n')[1]).toBe('no-releases-dir\n');
    expect(await kataState()).toBe(before);
    expect(await journalListing()).toBe('');
  }, 600_000);
});
