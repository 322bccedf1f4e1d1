// README promises that were proven below the public surface (activity level, the lock called directly, the node over
// SSH), proven here from the outside: `katafleet rollout --follow` against a small simulated fleet (two nodes, no
// Kubernetes), judged by what a user sees (the CLI's exit status and table, `katafleet status`, the node workflow's
// details as the Temporal UI shows them) and by the node itself (its files, its containers, its containerd).
//   - "A rollback restarts containerd too, ... with the same two checks" (README "Verification, readiness and restarts")
//   - "a step that succeeds hands it to the run's next activity ... the run's last activity ... releases it" (README
//     "When things fail": the lock on the node), watched on the node's own file system during a rollout
//   - "a fresh node's apt sources offer no Kata package" (README "Real nodes")
//   - `--follow`, `status` and the HTTP API's live view label the first wave "canary" only when the rollout has one
//     (README "The HTTP API": `GET /v1/rollouts/{id}` carries the rollout's `canary`)
import { watch } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { killModeRefusal } from '../activities/steps/service-restart';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId } from '../workflows/node';
import { nodeProgressQuery, type NodeProgress } from '../workflows/node-messages';
import { formatRolloutLive } from '../cli/rollout-view';
import type { RolloutProgress } from '../workflows/rollout-messages';
import { startTestApi, testToken } from './helpers/api';
import { runKatafleet, writeFleetInventory, type CliResult } from './helpers/cli';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { configHashes, onNode, waitFor } from './rollout-helpers';

// Titles named by the proof tables of test/kube-readme.test.ts and test/rollout-readme.test.ts.
const restoreRefusedTitle = 'a CLI rollout that fails after containerd-patch on a node whose unit lost KillMode=process: the restore is refused and retried, the container runs; with the drop-in it finishes byte-exact';
const leaseHandedOverTitle = 'a CLI rollout of three steps: each step takes the node\'s lease over from the one before, and only the run\'s last activity removes it';
const noKataPackageTitle = 'a CLI rollout that installs kata-containers with package-install and no package-repo fails at that step with apt\'s message, exit 1, the node unchanged';
const canaryLabelTitle = '--follow, status and GET /v1/rollouts/{id} label the first wave "canary" only when the rollout has a canary';

let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let work: string;

const katafleet = (...args: string[]) => runKatafleet(env.address, args, 600_000);
const on = (node: string, command: string) => onNode(fleet, node, command);
const containers = async (node: string) => (await on(node, '/usr/local/sbin/katafleet-sim-container list')).trim().split('\n').filter(Boolean).sort();
const mainPid = async (node: string) => (await on(node, 'systemctl show -p MainPID --value containerd')).trim();
const nodeProgress = (node: string) => env.client.workflow.getHandle(nodeWorkflowId(node)).query(nodeProgressQuery);

/** What a user can compare before and after on a node: its containerd config, its packages, its apt sources, /opt. */
async function nodeState(node: string): Promise<Record<string, string>> {
  return {
    ...(await configHashes(fleet, [node])),
    packages: await on(node, 'dpkg-query -W -f \'${Package} ${Version} ${Status}\\n\' | sha256sum'),
    kata: await on(node, 'dpkg-query -W kata-containers 2>&1; echo $?'),
    sources: await on(node, 'ls -A /etc/apt/sources.list.d /etc/apt/keyrings 2>&1'),
    opt: await on(node, 'ls -A /opt'),
  };
}

async function playbook(name: string, lines: string[]): Promise<string> {
  const file = join(work, `playbook-${name}.toml`);
  await writeFile(file, [`[playbook]`, `name = "${name}"`, '', ...lines, ''].join('\n'));
  return file;
}

const installKata = ['[[steps]]', 'id = "kata"', 'kind = "package-install"', 'packages = [{ name = "kata-containers", version = "3.2.0" }]', ''];
const patchPlain = ['[[steps]]', 'id = "containerd"', 'kind = "containerd-patch"', '[[steps.runtimes]]', 'name = "plain"', 'runtime_type = "io.containerd.runc.v2"', ''];

/** Exit 0 and nothing on stderr; on failure the whole output shows in the test's message. */
function expectSuccess(run: CliResult): void {
  expect({ code: run.code, stderr: run.stderr, output: run.code === 0 ? '' : run.stdout }).toEqual({ code: 0, stderr: '', output: '' });
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-outside-cli-'));
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: [{ name: 'node-1', containerd: '1.6' }, { name: 'node-2', containerd: '1.6' }], dir: join(work, 'fleet') }),
  ]);
  worker = await runKatafleetWorker(env, taskQueue);
}, 300_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('README promises, proven through katafleet rollout', () => {
  it(noKataPackageTitle, async () => {
    const before = await nodeState('node-1');
    expect(before.kata).toMatch(/no packages found matching kata-containers\n1\n$/);
    const run = await katafleet('rollout', await playbook('kata-package', ['[rollout]', 'canary = 0', '', ...installKata]),
      '--inventory', await writeFleetInventory(fleet, work, 'fresh', ['node-1']), '--failure-budget', '0', '--follow', '--request-id', 'outside-no-package');
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^node-1\s+1\s+failed\s.*package-install "kata" failed on node node-1/m);
    const progress = await nodeProgress('node-1');
    // apt on the node knows no kata-containers (sim-node.test.ts shows apt-get's own "E: Unable to locate package").
    expect(progress.failure).toMatchObject({ stepId: 'kata', type: 'PackageNotAvailable', reason: expect.stringContaining('kata-containers=3.2.0 not offered by its apt sources after apt-get update') });
    expect(progress.phase).toBe('failed');
    expect(await nodeState('node-1')).toEqual(before);
  }, 400_000);

  it(leaseHandedOverTitle, async () => {
    // Every take of the lease writes lock-<node>.tmp and renames it over lock-<node>; a release removes the file. Seen
    // on the node's /var (its overlay's upper layer on this machine): a rename of the lock not right after one of the
    // .tmp is a removal.
    await on('node-1', 'mkdir -p /var/lib/katafleet');
    const events: string[] = [];
    const watcher = watch(join(fleet.nodes.find((node) => node.name === 'node-1')!.dir, 'overlay', 'var', 'upper', 'lib', 'katafleet'), (type, name) => {
      if (type === 'rename' && (name === 'lock-node-1' || name === 'lock-node-1.tmp')) events.push(name);
    });
    let run: CliResult | undefined;
    try {
      run = await katafleet('rollout', await playbook('lease', [
        '[rollout]', 'canary = 0', '',
        '[[steps]]', 'id = "prereq"', 'kind = "prereq-check"', 'cpu_flags = []', 'require_kvm = false', '',
        ...patchPlain,
        '[[steps]]', 'id = "restart"', 'kind = "service-restart"', 'wait_for_handlers = ["plain"]', '',
      ]), '--inventory', await writeFleetInventory(fleet, work, 'lease', ['node-1']), '--follow', '--request-id', 'outside-lease');
      expectSuccess(run);
      await waitFor('the removal of the lock to be seen', async () => (events.at(-1) === 'lock-node-1' && events.at(-2) !== 'lock-node-1.tmp' ? true : undefined), 10_000, 100)
        .catch((err: Error) => { throw new Error(`${err.message}; the lock's renames: ${events.join(' ')}`); });
    } finally {
      watcher.close();
    }
    const takes = events.filter((name, index) => name === 'lock-node-1' && events[index - 1] === 'lock-node-1.tmp').length;
    const removals = events.filter((name, index) => name === 'lock-node-1' && events[index - 1] !== 'lock-node-1.tmp').length;
    // One take per activity that runs on the node (the three steps at least), and one removal: the last activity's.
    expect({ takesAtLeastSteps: takes >= 3, removals }).toEqual({ takesAtLeastSteps: true, removals: 1 });
    expect(await on('node-1', 'test -e /var/lib/katafleet/lock-node-1; echo $?')).toBe('1\n');
  }, 400_000);

  it(restoreRefusedTitle, async () => {
    const original = await configHashes(fleet, ['node-2']);
    await on('node-2', '/usr/local/sbin/katafleet-sim-container run web-1');
    await fleet.setFault('node-2', 'containerd-killmode-default', true);
    const dropIn = '/etc/systemd/system/containerd.service.d/10-killmode.conf';
    try {
      const running = await containers('node-2');
      expect(running).toHaveLength(1);
      const pid = await mainPid('node-2');
      const follow = katafleet('rollout', await playbook('restore-refused', ['[rollout]', 'canary = 0', 'rollback_for = "10m"', '', ...patchPlain, ...installKata]),
        '--inventory', await writeFleetInventory(fleet, work, 'refused', ['node-2']), '--failure-budget', '0', '--follow', '--request-id', 'outside-restore-refused');

      // package-install failed after containerd-patch; the restore's restart would kill web-1: refused, retried.
      const refused = await waitFor('the rollback to be refused and retried', async () => {
        const progress: NodeProgress = await nodeProgress('node-2').catch(() => ({}) as NodeProgress);
        return progress.rolloutId === 'outside-restore-refused' && progress.rollbackRetry ? progress : undefined;
      }, 300_000, 500);
      expect(refused.phase).toBe('rolling-back');
      expect(refused.rollbackRetry!.lastError).toContain(killModeRefusal('node-2', 'control-group', 1, 'rollback'));
      // Refused before it changed anything: the patched config is still there, containerd not restarted, web-1 runs.
      expect(await configHashes(fleet, ['node-2'])).not.toEqual(original);
      expect(await mainPid('node-2')).toBe(pid);
      expect(await containers('node-2')).toEqual(running);

      // The fix the message names; the next try finishes: config back byte for byte, containerd restarted, web-1 kept.
      await on('node-2', `mkdir -p /etc/systemd/system/containerd.service.d && printf '[Service]\\nKillMode=process\\n' | tee ${dropIn} >/dev/null && systemctl daemon-reload`);
      const run = await follow;
      expect(run.code).toBe(1);
      expect(run.stdout).toMatch(/^node-2\s+1\s+rolled-back\s/m);
      expect((await nodeProgress('node-2')).rollback).toEqual(expect.arrayContaining([
        expect.objectContaining({ ok: true, stepId: 'containerd', summary: expect.stringContaining('1 running container shim(s) kept (KillMode=process)') }),
      ]));
      expect(await configHashes(fleet, ['node-2'])).toEqual(original);
      expect(await mainPid('node-2')).not.toBe(pid);
      expect(await containers('node-2')).toEqual(running);
    } finally {
      await on('node-2', `rm -f ${dropIn}; systemctl daemon-reload`);
      await fleet.setFault('node-2', 'containerd-killmode-default', false);
    }
  }, 600_000);

  it(canaryLabelTitle, async () => {
    const prereq = await playbook('labels', ['[rollout]', 'canary = 1', '', '[[steps]]', 'id = "prereq"', 'kind = "prereq-check"', 'cpu_flags = []', 'require_kvm = false', '']);
    const inventory = await writeFleetInventory(fleet, work, 'labels', ['node-1', 'node-2']);
    const labels = (text: string) => [...text.matchAll(/^ {2}(canary|wave \d+) +\[/gm)].map((match) => match[1]);

    const noCanary = await katafleet('rollout', prereq, '--inventory', inventory, '--canary', '0', '--wave-size', '1', '--pause', '0s', '--follow', '--request-id', 'outside-no-canary');
    expectSuccess(noCanary);
    expect(labels(noCanary.stdout).slice(-2)).toEqual(['wave 1', 'wave 2']);
    expect(noCanary.stdout).not.toMatch(/^ {2}canary /m);
    const status = await katafleet('status', 'outside-no-canary');
    expectSuccess(status);
    expect(labels(status.stdout)).toEqual(['wave 1', 'wave 2']);

    const canary = await katafleet('rollout', prereq, '--inventory', inventory, '--wave-size', '1', '--pause', '0s', '--follow', '--request-id', 'outside-canary');
    expectSuccess(canary);
    expect(labels(canary.stdout).slice(-2)).toEqual(['canary', 'wave 2']);
    expect(labels((await katafleet('status', 'outside-canary')).stdout)).toEqual(['canary', 'wave 2']);

    // The HTTP API's answer carries the canary size, so the demo's live view (the same formatter, fed by the API,
    // with nothing else to go on) labels the waves as the CLI does: two waves of one node each, canary or not.
    const { app, baseUrl } = await startTestApi(env.client);
    try {
      for (const [id, size, expected] of [['outside-no-canary', 0, ['wave 1', 'wave 2']], ['outside-canary', 1, ['canary', 'wave 2']]] as const) {
        const response = await fetch(`${baseUrl}/v1/rollouts/${id}`, { headers: { authorization: `Bearer ${testToken}` } });
        expect(response.status).toBe(200);
        const answer = (await response.json()) as RolloutProgress;
        expect({ id, canary: answer.canary, waveSizes: answer.waveSizes }).toEqual({ id, canary: size, waveSizes: [1, 1] });
        expect(labels(formatRolloutLive(answer))).toEqual(expected);
      }
    } finally {
      await app.close();
    }
  }, 400_000);
});
