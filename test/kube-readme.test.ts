// Every sentence of README.md's "Kubernetes access" and "Verification, readiness and restarts on real clusters", and
// the tests that prove it through the public CLI or HTTP API. The tests here drive `katafleet rollout` and
// `POST /v1/rollouts` against one small simulated fleet (node-1 with containerd 1.6, node-2 with 2.x, and a real kube-apiserver),
// with kubectl on the worker as the ServiceAccount of deploy/rbac.yaml; what they read back is what a user sees: the
// CLI's table, the API's answer, the node workflow's step summaries (the Temporal UI's details), the cluster itself.
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { killModeRefusal } from '../activities/steps/service-restart';
import { buildApi } from '../api/server';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId } from '../workflows/node';
import type { NodeProgress } from '../workflows/node-messages';
import type { RolloutNodeResult } from '../workflows/rollout-messages';
import { runKatafleet, writeFleetInventory, type CliResult } from './helpers/cli';
import { fold, missingProofTests, readmeSentences, unprovenSentences, type Proof } from './helpers/proof-table';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { kubectlRunner, serviceAccountKubeconfig } from './kube-helpers';
import { configHashes, onNode, waitFor } from './rollout-helpers';

const installs = 'rolls kata out through the CLI with kubectl on the worker: the readiness gate asks crictl where runtimeHandlers are not reported, the verification pod passes restricted admission hardened';
const profileApi = 'POST /v1/rollouts with [kubernetes] profile: kubectl runs on the worker with the kubeconfig of the server\'s credential profile';
const unusable = 'a kubeconfig that others can write is refused: the node fails with KubeconfigUnusable, naming the file and the fix, and the Node is untouched';
const kubectlOrder = 'kubectl on the worker is KATAFLEET_KUBECTL, else the inventory\'s kubectl, else kubectl on PATH';
const apiFromWorker = 'rolls labels out through the CLI with the kubeconfig on the worker: kubectl starts once to read the kubeconfig, again only when the file changes; the Node is patched through the API';
const execPlugin = 'a kubeconfig whose user authenticates with an exec plugin: the rollout works, with kubectl for every call';
const refusedToken = 'a kubeconfig whose token the API server refuses: the node fails with KubeApiUnauthorized, naming the server, the kubeconfig and the fix; the Node is untouched';
const pullFailure = 'an image that cannot be pulled: warn passes unverified and says so, fail fails the node with VerificationImagePullFailed and the kubelet\'s reason';
const notRunning = 'a verification pod whose handler containerd does not run never runs: VerificationPodNotRunning with its Warning event, the node rolled back';
const hostKernel = 'a verification pod that runs with the host\'s kernel (runc behind the class) is VerificationFailed: not in a VM, the node rolled back';
const killModeRefused = 'refuses the restart when containerd\'s unit lacks KillMode=process and containers run: the reason and the fix, nothing changed, the containers still run';
const killModeKept = 'restarts containerd with KillMode=process while containers run and says they were kept';

export const proofs: Proof[] = [
  { sentence: 'The Kubernetes steps (readiness-gate, node-label, runtime-class, verification-pod, cordon and drain) run `kubectl`', tests: { 'kube-readme.test.ts': [installs], 'kube-rbac.test.ts': ['rolls the kata playbook out to two nodes: the RuntimeClass applied once by the rollout, never by a node, a pod in a VM on each node'] } },
  { sentence: 'Where, the inventory\'s `[kubernetes]` table says', tests: { 'kube-readme.test.ts': [installs, profileApi], 'rollout-waves.test.ts': ['rolls out to 10 nodes with a canary of 1 and waves of 3, wave after wave'] } },
  { sentence: 'It is the inventory\'s, not the playbook\'s', tests: { 'kube-readme.test.ts': [installs, profileApi] } },
  { sentence: 'An inventory sent through the HTTP API cannot name a file on the worker', tests: { 'kube-access-input.test.ts': ['answers an inventory that names a kubeconfig on the worker with 400, the key and the fix, and starts nothing'], 'kube-readme.test.ts': [profileApi] } },
  { sentence: 'The worker uses a kubeconfig only if it is a regular file owned by its user', tests: { 'kube-readme.test.ts': [unusable, kubectlOrder] } },
  { sentence: '**The API from the worker.**', tests: { 'kube-readme.test.ts': [apiFromWorker, installs] } },
  { sentence: 'With a kubeconfig on the worker, readiness-gate, node-label, runtime-class and verification-pod start no kubectl per call', tests: { 'kube-readme.test.ts': [apiFromWorker], 'kube-api.test.ts': ['rolls the kata playbook out with deploy/rbac.yaml\'s ServiceAccount, starting kubectl once (to read the kubeconfig), and the pod proves a VM'] } },
  { sentence: 'kubectl starts once per kubeconfig (and again when the file changes), to read it', tests: { 'kube-readme.test.ts': [apiFromWorker] } },
  { sentence: 'The verification pod\'s `uname -r` runs through the API\'s exec over WebSocket', tests: { 'kube-readme.test.ts': [installs], 'kube-api.test.ts': ['rolls the kata playbook out with deploy/rbac.yaml\'s ServiceAccount, starting kubectl once (to read the kubeconfig), and the pod proves a VM'] } },
  {
    sentence: 'The worker watches the verification pod until it runs (one watch request, no polls)',
    tests: {
      'kube-api.test.ts': [
        'watches the verification pod until it runs (one watch request, no poll), as deploy/rbac.yaml grants',
        'polls the verification pod where RBAC grants no watch on pods (a deploy/rbac.yaml older than the watch), and still verifies',
      ],
      'kube-rbac.test.ts': ['lets the ServiceAccount read and patch nodes, manage RuntimeClasses and verification pods, and nothing else'],
      'verification-watch-cli.test.ts': ['a rollout through the CLI: kube-apiserver\'s audit log shows one watch of the verification pod and no GET of it'],
    },
  },
  { sentence: 'A kubeconfig whose user authenticates with an exec plugin or an auth-provider', tests: { 'kube-readme.test.ts': [execPlugin], 'kube-rbac.test.ts': ['uninstalls from node-1 only: the RuntimeClass stays, because node-2 still carries the label; the uninstall of node-2 then deletes it'] } },
  {
    sentence: 'A certificate the kubeconfig\'s CA does not sign is `KubeApiTlsFailed`',
    tests: {
      'kube-readme.test.ts': [refusedToken],
      'kube-api.test.ts': [
        'a server certificate the kubeconfig\'s CA does not sign is KubeApiTlsFailed, naming the server, the kubeconfig and the fix',
        'what deploy/rbac.yaml does not grant (a verification pod in namespace default) is KubeApiForbidden, naming deploy/rbac.yaml',
      ],
    },
  },
  { sentence: '[deploy/rbac.yaml](deploy/rbac.yaml) is the least privilege this needs', tests: { 'kube-rbac.test.ts': ['lets the ServiceAccount read and patch nodes, manage RuntimeClasses and verification pods, and nothing else'], 'kube-readme.test.ts': [installs] } },
  { sentence: 'It may not delete or create pods anywhere else, nor read secrets', tests: { 'kube-rbac.test.ts': ['lets the ServiceAccount read and patch nodes, manage RuntimeClasses and verification pods, and nothing else'] } },
  { sentence: 'The tests apply it to the simulated fleet\'s real kube-apiserver', tests: { 'kube-rbac.test.ts': ['rolls the kata playbook out to two nodes: the RuntimeClass applied once by the rollout, never by a node, a pod in a VM on each node', 'uninstalls from node-1 only: the RuntimeClass stays, because node-2 still carries the label; the uninstall of node-2 then deletes it'] } },
  {
    sentence: '**Cluster-wide objects once per rollout.**',
    tests: {
      'kube-rbac.test.ts': [
        'rolls the kata playbook out to two nodes: the RuntimeClass applied once by the rollout, never by a node, a pod in a VM on each node',
        'uninstalls from node-1 only: the RuntimeClass stays, because node-2 still carries the label; the uninstall of node-2 then deletes it',
        'halts before any node when the RuntimeClass cannot be applied (another handler holds the name): the reason in the CLI and the API',
      ],
    },
  },
  { sentence: '`katafleet status` and `GET /v1/rollouts/{id}` show what was done under `cluster`', tests: { 'kube-rbac.test.ts': ['uninstalls from node-1 only: the RuntimeClass stays, because node-2 still carries the label; the uninstall of node-2 then deletes it'], 'kube-readme.test.ts': [installs] } },
  { sentence: 'Rollouts started before this change keep doing it per node', tests: { 'replay.test.ts': ['replay without a nondeterminism error on the current workflow code'] } },
  // "Verification, readiness and restarts on real clusters"
  { sentence: '**Readiness gate.** The node must be Ready', tests: { 'kube-readme.test.ts': [installs] } },
  { sentence: 'Required handlers are checked in `status.runtimeHandlers` where the kubelet reports the field', tests: { 'kube-readme.test.ts': [installs] } },
  { sentence: '**The verification pod passes real admission.**', tests: { 'kube-readme.test.ts': [installs] } },
  { sentence: 'It goes to namespace `katafleet-verify` by default; image and `image_pull_policy` are set in the playbook', tests: { 'kube-readme.test.ts': [installs, pullFailure] } },
  { sentence: 'The simulated API server enforces PodSecurity `restricted` on that namespace', tests: { 'kube-readme.test.ts': [installs], 'node-activities-kube.test.ts': ['the API server enforces PodSecurity restricted on katafleet-verify: a pod without a securityContext is refused, the verification pod is admitted'] } },
  { sentence: '**An image that cannot be pulled is not a Kata failure.**', tests: { 'kube-readme.test.ts': [pullFailure] } },
  { sentence: 'With `on_image_pull_failure = "warn"` (the default) the step passes *unverified*', tests: { 'kube-readme.test.ts': [pullFailure] } },
  { sentence: 'A pod that ran with the host\'s kernel is `VerificationFailed`', tests: { 'kube-readme.test.ts': [hostKernel, notRunning] } },
  { sentence: '**Pods survive the restart.**', tests: { 'kube-readme.test.ts': [killModeKept], 'killmode.test.ts': ['has upstream\'s KillMode=process: a plain systemctl restart leaves the running containers\' shims alone'] } },
  { sentence: 'Before it restarts containerd, `service-restart` reads the unit\'s KillMode', tests: { 'kube-readme.test.ts': [killModeRefused] } },
  {
    sentence: 'A rollout that halts (its canary failed, or the failure budget ran out), is aborted with `--rollback` or is cancelled straight through Temporal (`temporal workflow cancel`) takes back the RuntimeClass it created itself',
    tests: {
      'rollback-cluster-objects.test.ts': [
        'deletes the RuntimeClass it created: kubectl get runtimeclass kata is NotFound after the cancel',
        'leaves a RuntimeClass that existed before the cancelled rollout as it was (same uid, resourceVersion, annotations)',
        'deletes the RuntimeClass it created when it halts: kubectl get runtimeclass kata is NotFound, node-2 untouched',
        'leaves a RuntimeClass that existed before the rollout as it was (same uid, resourceVersion, spec, annotations)',
        'deletes the RuntimeClass it created after an abort with rollback, once the rolled-back canary no longer carries the label',
      ],
    },
  },
  {
    sentence: 'A rollback restarts containerd too, after putting its config back, with the same two checks',
    tests: {
      'rollout-outside-cli.test.ts': ['a CLI rollout that fails after containerd-patch on a node whose unit lost KillMode=process: the restore is refused and retried, the container runs; with the drop-in it finishes byte-exact'],
      'killmode.test.ts': [
        'refuses the restore when the restart would kill running containers, before it changes anything; with the fix it finishes',
        'fails the undo with ContainersLostOnRestart when a container running before is gone after the restart',
      ],
    },
  },
  { sentence: 'The simulated node\'s unit is upstream\'s; the fault switch `containerd-killmode-default`', tests: { 'killmode.test.ts': ['with the fault switch, falls back to systemd\'s default control-group, and a restart kills them'], 'kube-readme.test.ts': [killModeRefused] } },
];

/**
 * Sentences no test proves yet, and why. The completeness check fails when one of them gets proved (move it to
 * `proofs`) or another sentence loses its proof.
 */
export const unproven: { sentence: string; why: string }[] = [
  { sentence: 'Not taken back: changes the rollout made to a RuntimeClass that already existed (an update of its overhead or nodeSelector stays).', why: 'a limitation: says what katafleet does not do' },
  {
    sentence: 'After the restart it checks that every container shim running before still runs (`ContainersLostOnRestart` otherwise).',
    why: 'only the passing side runs (the "kept" summary): losing a shim across a restart with KillMode=process needs a fault the simulation does not have yet',
  },
];

describe('README "Kubernetes access" and "Verification, readiness and restarts on real clusters"', () => {
  const sentences = [...readmeSentences('## Kubernetes access'), ...readmeSentences('## Verification, readiness and restarts on real clusters')];

  it('has a proving test named for every sentence, but the ones listed as unproven', () => {
    expect(unprovenSentences(sentences, proofs)).toEqual(unproven.map((entry) => fold(entry.sentence)));
  });

  it('names only tests that exist, in the files named', () => {
    expect(missingProofTests(proofs)).toEqual([]);
  });
});

const token = 'kube-readme-test-token-0123456789abcdef0123';
const root = join(__dirname, '..');
let env: TestWorkflowEnvironment;
let fleet: Fleet;
let worker: RunningTestWorker;
let api: FastifyInstance;
let apiUrl: string;
let work: string;
let kubectlPath: string;
let admin: ReturnType<typeof kubectlRunner>;
let saKubeconfig: string;
const previousKubectl = process.env.KATAFLEET_KUBECTL;
const previousPath = process.env.PATH;

const katafleet = (...args: string[]) => runKatafleet(env.address, args, 600_000);
const container = (node: string, command: string) => onNode(fleet, node, `/usr/local/sbin/katafleet-sim-container ${command}`);
const runningContainers = async (node: string) => (await container(node, 'list')).trim().split('\n').filter(Boolean).sort();

/** An inventory of `names` whose Kubernetes access is kubectl on the worker with `kubernetes` (TOML lines). */
async function inventory(name: string, names: string[], kubernetes = `kubeconfig = ${JSON.stringify(saKubeconfig)}`): Promise<string> {
  const file = await writeFleetInventory(fleet, work, name, names);
  await writeFile(file, `${await readFile(file, 'utf8')}\n[kubernetes]\n${kubernetes}\n`);
  return file;
}

/** `playbooks/kata.toml` with `edit` applied to its text, written as `<name>.toml`. */
async function kataVariant(name: string, edit: (text: string) => string): Promise<string> {
  const file = join(work, `${name}.toml`);
  const text = edit(await readFile(join(root, 'playbooks', 'kata.toml'), 'utf8'));
  await writeFile(file, text);
  return file;
}

/** A playbook of one node-label step: the cheapest rollout that needs kubectl. */
async function labelPlaybook(name: string, value: string): Promise<string> {
  const file = join(work, `${name}.toml`);
  await writeFile(file, `[playbook]\nname = "${name}"\n\n[rollout]\ncanary = 0\n\n[[steps]]\nid = "label"\nkind = "node-label"\nlabels = { "readme.katafleet.dev/case" = "${value}" }\n`);
  return file;
}

async function rolloutNodes(id: string): Promise<RolloutNodeResult[]> {
  const response = await fetch(`${apiUrl}/v1/rollouts/${id}`, { headers: { authorization: `Bearer ${token}` } });
  expect(response.status).toBe(200);
  return ((await response.json()) as { nodes: RolloutNodeResult[] }).nodes;
}

/**
 * The node workflow's last run as the Temporal UI shows it: its step summaries, or the failure type of the step that
 * failed (the workflow fails with NodeRolloutFailed and its progress, whose `failure` names the step's type).
 */
async function nodeRun(node: string): Promise<{ steps?: NodeProgress['steps']; failureType?: string }> {
  return env.client.workflow.getHandle(nodeWorkflowId(node)).result().then(
    (progress: NodeProgress) => ({ steps: progress.steps }),
    (err: { cause?: { type?: string; details?: unknown[] } }) => {
      expect(err.cause?.type).toBe('NodeRolloutFailed');
      return { failureType: (err.cause?.details?.[0] as NodeProgress | undefined)?.failure?.type };
    },
  );
}

const stepSummary = (steps: NodeProgress['steps'] | undefined, kind: string) => steps?.find((step) => step.kind === kind)?.summary ?? '';
const nodeLabel = async (node: string) => (await admin(['get', 'node', node, '-o', 'jsonpath={.metadata.labels.readme\\.katafleet\\.dev/case}'])).stdout;

/** Exit 0 and nothing on stderr; on failure the whole output shows in the test's message. */
function expectSuccess(run: CliResult): void {
  expect({ code: run.code, stderr: run.stderr, output: run.code === 0 ? '' : run.stdout }).toEqual({ code: 0, stderr: '', output: '' });
}

/** Every pod object `kubectl get pods -w -o json` shows in `namespace` until `stop()`, as the admin sees it. */
function watchPods(namespace: string): { stop(): Promise<{ metadata: { name: string; namespace: string }; spec: Record<string, unknown> }[]> } {
  const child = spawn(kubectlPath, [`--kubeconfig=${fleet.controlPlane!.kubeconfig}`, 'get', 'pods', '-n', namespace, '-w', '-o', 'json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString('utf8'); });
  return {
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('close', resolve));
      return out.split(/^\}$/m).map((part) => part.trim()).filter((part) => part.startsWith('{')).map((part) => JSON.parse(`${part}}`) as never);
    },
  };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'kf-kube-readme-'));
  [env, fleet] = await Promise.all([
    startTestTemporal(),
    startFleet({ nodes: [{ name: 'node-1', containerd: '1.6' }, { name: 'node-2', containerd: '2' }], kubernetes: true, dir: join(work, 'fleet') }),
  ]);
  kubectlPath = join(kubernetesBinaries().binDir, 'kubectl');
  process.env.KATAFLEET_KUBECTL = kubectlPath;
  admin = kubectlRunner(kubectlPath, fleet.controlPlane!.kubeconfig);
  saKubeconfig = join(work, 'katafleet-sa.kubeconfig');
  await serviceAccountKubeconfig(admin, join(root, 'deploy', 'rbac.yaml'), saKubeconfig);
  // The server's credentials: the fleet's profile, which also holds the ServiceAccount's kubeconfig for API inventories.
  const credentials = join(work, 'server-credentials.toml');
  await writeFile(credentials, `${await readFile(join(fleet.dir, 'credentials.toml'), 'utf8')}kubeconfig = ${JSON.stringify(saKubeconfig)}\n`, { mode: 0o600 });
  worker = await runKatafleetWorker(env, taskQueue);
  api = await buildApi({ client: env.client, token, credentialsFile: credentials });
  apiUrl = await api.listen({ host: '127.0.0.1', port: 0 });
}, 300_000);

afterAll(async () => {
  if (previousKubectl === undefined) delete process.env.KATAFLEET_KUBECTL;
  else process.env.KATAFLEET_KUBECTL = previousKubectl;
  process.env.PATH = previousPath;
  await api?.close();
  await worker?.stop();
  await Promise.all([fleet?.stop(), env?.teardown()]);
});

describe('Kubernetes access, through the CLI and the API', () => {
  it(profileApi, async () => {
    const response = await fetch(`${apiUrl}/v1/rollouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        request_id: 'readme-profile',
        playbook_toml: await readFile(await labelPlaybook('label-profile', 'profile'), 'utf8'),
        inventory_toml: `[ssh]\nprofile = "sim"\n\n[kubernetes]\nprofile = "sim"\n\n[[nodes]]\nname = "node-1"\naddress = "${fleet.nodes.find((n) => n.name === 'node-1')!.address}"\n`,
      }),
    });
    expect(response.status).toBe(202);
    const nodes = await waitFor('the API rollout to end', async () => {
      const current = await rolloutNodes('readme-profile');
      return current.every((node) => !['pending', 'running'].includes(node.status)) ? current : undefined;
    }, 180_000, 1000);
    expect(nodes.map((node) => [node.name, node.status])).toEqual([['node-1', 'succeeded']]);
    expect(await nodeLabel('node-1')).toBe('profile');
  }, 240_000);

  it(unusable, async () => {
    const loose = join(work, 'loose.kubeconfig');
    await writeFile(loose, await readFile(saKubeconfig, 'utf8'));
    await chmod(loose, 0o666);
    const run = await katafleet('rollout', await labelPlaybook('label-loose', 'loose'), '--inventory', await inventory('loose', ['node-2'], `kubeconfig = ${JSON.stringify(loose)}`),
      '--follow', '--request-id', 'readme-loose');
    expect(run.code).toBe(1);
    const [node] = await rolloutNodes('readme-loose');
    expect(node.status).toBe('failed');
    expect(node.reason).toContain(loose);
    expect(node.reason).toMatch(/others can write|group or others/);
    expect((await nodeRun('node-2')).failureType).toBe('KubeconfigUnusable');
    expect(await nodeLabel('node-2')).toBe('');
  }, 240_000);

  it(apiFromWorker, async () => {
    const calls = join(work, 'kubectl-calls.log');
    const wrapper = join(work, 'kubectl-logged');
    await writeFile(wrapper, `#!/bin/sh\necho "$*" >> '${calls}'\nexec '${kubectlPath}' "$@"\n`, { mode: 0o755 });
    const own = join(work, 'api.kubeconfig');
    await writeFile(own, await readFile(saKubeconfig, 'utf8'), { mode: 0o600 });
    process.env.KATAFLEET_KUBECTL = wrapper;
    try {
      const inv = await inventory('api', ['node-1', 'node-2'], `kubeconfig = ${JSON.stringify(own)}`);
      expectSuccess(await katafleet('rollout', await labelPlaybook('label-api-1', 'api-1'), '--inventory', inv, '--follow', '--request-id', 'readme-api-1'));
      expectSuccess(await katafleet('rollout', await labelPlaybook('label-api-2', 'api-2'), '--inventory', inv, '--follow', '--request-id', 'readme-api-2'));
      const read = `--kubeconfig ${own} config view --raw --minify --flatten -o json`;
      expect((await readFile(calls, 'utf8')).trim().split('\n')).toEqual([read]);
      // A changed file is read again.
      await writeFile(own, `${await readFile(own, 'utf8')}\n`);
      expectSuccess(await katafleet('rollout', await labelPlaybook('label-api-3', 'api-3'), '--inventory', inv, '--follow', '--request-id', 'readme-api-3'));
      expect((await readFile(calls, 'utf8')).trim().split('\n')).toEqual([read, read]);
      expect([await nodeLabel('node-1'), await nodeLabel('node-2')]).toEqual(['api-3', 'api-3']);
    } finally {
      process.env.KATAFLEET_KUBECTL = kubectlPath;
    }
  }, 600_000);

  it(execPlugin, async () => {
    const calls = join(work, 'kubectl-exec-plugin.log');
    const wrapper = join(work, 'kubectl-logged-exec');
    await writeFile(wrapper, `#!/bin/sh\necho "$*" >> '${calls}'\nexec '${kubectlPath}' "$@"\n`, { mode: 0o755 });
    const sa = await readFile(saKubeconfig, 'utf8');
    const credential = JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: /token: (\S+)/.exec(sa)![1] } });
    const plugin = join(work, 'exec-plugin.kubeconfig');
    await writeFile(plugin, sa.replace(/ {4}token: \S+/, ['    exec:', '      apiVersion: client.authentication.k8s.io/v1', '      interactiveMode: Never', '      command: /bin/sh',
      `      args: ["-c", ${JSON.stringify(`printf '%s' '${credential}'`)}]`].join('\n')), { mode: 0o600 });
    process.env.KATAFLEET_KUBECTL = wrapper;
    try {
      expectSuccess(await katafleet('rollout', await labelPlaybook('label-exec', 'exec'), '--inventory', await inventory('exec', ['node-1'], `kubeconfig = ${JSON.stringify(plugin)}`),
        '--follow', '--request-id', 'readme-exec'));
    } finally {
      process.env.KATAFLEET_KUBECTL = kubectlPath;
    }
    expect(await nodeLabel('node-1')).toBe('exec');
    expect((await readFile(calls, 'utf8')).trim().split('\n').map((call) => call.split(' ').slice(2, 4).join(' '))).toEqual(['config view', 'get node', 'patch node']);
  }, 600_000);

  it(refusedToken, async () => {
    const refused = join(work, 'refused.kubeconfig');
    await writeFile(refused, (await readFile(saKubeconfig, 'utf8')).replace(/token: \S+/, 'token: a-token-this-api-server-never-issued-0123456789'), { mode: 0o600 });
    // Its own inventory name and request id: the KillMode test below uses 'refused' and 'readme-refused'.
    const run = await katafleet('rollout', await labelPlaybook('label-refused', 'refused'), '--inventory', await inventory('token-refused', ['node-2'], `kubeconfig = ${JSON.stringify(refused)}`),
      '--follow', '--request-id', 'readme-token-refused');
    expect(run.code).toBe(1);
    const [node] = await rolloutNodes('readme-token-refused');
    expect(node.status).toBe('failed');
    expect(node.reason).toMatch(new RegExp(`refused the kubeconfig's credentials \\(401 Unauthorized.*\\) — renew the token or client certificate in ${refused.replace(/[.]/g, '\\.')}`));
    expect(node.reason).toMatch(/the Kubernetes API server https:\/\/[^ ]+ \(kubeconfig /);
    expect((await nodeRun('node-2')).failureType).toBe('KubeApiUnauthorized');
    expect(await nodeLabel('node-2')).not.toBe('refused');
  }, 240_000);

  it(kubectlOrder, async () => {
    // KATAFLEET_KUBECTL wins over the inventory's kubectl (which does not exist here).
    process.env.KATAFLEET_KUBECTL = kubectlPath;
    const viaEnv = await katafleet('rollout', await labelPlaybook('label-env', 'env'), '--inventory',
      await inventory('env', ['node-1'], `kubeconfig = ${JSON.stringify(saKubeconfig)}\nkubectl = "/nonexistent/kubectl"`), '--follow', '--request-id', 'readme-env');
    expectSuccess(viaEnv);
    expect(await nodeLabel('node-1')).toBe('env');
    try {
      // Without it, the inventory's kubectl.
      delete process.env.KATAFLEET_KUBECTL;
      const viaInventory = await katafleet('rollout', await labelPlaybook('label-inventory', 'inventory'), '--inventory',
        await inventory('inv', ['node-1'], `kubeconfig = ${JSON.stringify(saKubeconfig)}\nkubectl = ${JSON.stringify(kubectlPath)}`), '--follow', '--request-id', 'readme-inventory');
      expectSuccess(viaInventory);
      expect(await nodeLabel('node-1')).toBe('inventory');
      // Without both, kubectl on the worker's PATH.
      const bin = join(work, 'bin');
      await mkdir(bin, { recursive: true });
      await symlink(kubectlPath, join(bin, 'kubectl'));
      process.env.PATH = `${bin}:${previousPath}`;
      const viaPath = await katafleet('rollout', await labelPlaybook('label-path', 'path'), '--inventory', await inventory('path', ['node-1']), '--follow', '--request-id', 'readme-path');
      expectSuccess(viaPath);
      expect(await nodeLabel('node-1')).toBe('path');
    } finally {
      process.env.KATAFLEET_KUBECTL = kubectlPath;
      process.env.PATH = previousPath;
    }
  }, 600_000);
});

describe('verification, readiness and restarts, through the CLI', () => {
  it(notRunning, async () => {
    // containerd-patch without the restart: the config has kata, the running containerd does not.
    const playbook = await kataVariant('kata-no-restart', (text) => text.replace(/\n\[\[steps\]\]\nid = "restart"[\s\S]*?(?=\n\[\[steps\]\])/, '').replace(/\n\[\[steps\]\]\nid = "ready"[\s\S]*?(?=\n\[\[steps\]\])/, '').replace('timeout = "5m"\nexpect_kernel_differs', 'timeout = "40s"\nexpect_kernel_differs'));
    expect(await readFile(playbook, 'utf8')).not.toContain('kind = "service-restart"');
    const before = await configHashes(fleet, ['node-2']);
    const run = await katafleet('rollout', playbook, '--inventory', await inventory('not-running', ['node-2']), '--follow', '--request-id', 'readme-not-running');
    expect(run.code).toBe(1);
    const [node] = await rolloutNodes('readme-not-running');
    expect(node.status).toBe('rolled-back');
    expect(node.reason).toMatch(/did not reach Running within 40s: FailedCreatePodSandBox: .*kata/);
    expect((await nodeRun('node-2')).failureType).toBe('VerificationPodNotRunning');
    expect(await configHashes(fleet, ['node-2'])).toEqual(before);
  }, 400_000);

  it(installs, async () => {
    const plain = await admin(['run', '-n', 'katafleet-verify', 'plain', '--image=docker.io/library/busybox:1.36.1', '--restart=Never', '--', 'sleep', '1']);
    expect(plain.stderr).toContain('violates PodSecurity "restricted:latest"');
    expect((await admin(['get', 'namespace', 'katafleet-verify', '-o', 'jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}'])).stdout).toBe('restricted');

    const watch = watchPods('katafleet-verify');
    const run = await katafleet('rollout', 'kata', '--inventory', await inventory('install', ['node-1', 'node-2']), '--canary', '1', '--wave-size', '1', '--pause', '0s', '--follow', '--request-id', 'readme-install');
    const pods = await watch.stop();
    expectSuccess(run);
    expect(run.stdout).toMatch(/^node-1\s+1\s+succeeded\s+6\.1\.0-katafleet-sim\s+\S+-kata/m);
    expect(run.stdout).toMatch(/^node-2\s+2\s+succeeded\s+6\.1\.0-katafleet-sim\s+\S+-kata/m);
    expect(run.stdout).toMatch(/cluster \(once for the rollout\):\n  runtime-class: (created|updated) RuntimeClass kata|RuntimeClass kata already up to date/);

    // The readiness gate on containerd 1.6 (no runtimeHandlers): it says so and asks the node's CRI.
    const { steps } = await nodeRun('node-1');
    expect(stepSummary(steps, 'readiness-gate')).toMatch(/status\.runtimeHandlers not reported \(.+\), so kata checked on the node instead: crictl info lists .*kata/);
    expect(stepSummary(steps, 'readiness-gate')).toMatch(/^Ready; /);
    // containerd 2.x on Kubernetes 1.34: the kubelet reports the handlers, and the gate reads them there.
    expect(stepSummary((await nodeRun('node-2')).steps, 'readiness-gate')).toMatch(/^Ready; runtimeHandlers .*\bkata\b/);

    // The verification pods as the API server admitted them, in katafleet-verify, hardened.
    const verifyPods = pods.filter((pod) => pod.metadata.name !== 'plain');
    expect(verifyPods.length).toBeGreaterThan(0);
    for (const pod of verifyPods) {
      expect(pod.metadata.namespace).toBe('katafleet-verify');
      expect(pod.spec).toMatchObject({
        runtimeClassName: 'kata',
        activeDeadlineSeconds: 600,
        securityContext: { runAsNonRoot: true, runAsUser: 65534, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [expect.objectContaining({
          image: 'docker.io/library/busybox:1.36.1',
          imagePullPolicy: 'IfNotPresent',
          securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
          resources: { requests: expect.any(Object), limits: { cpu: expect.any(String), memory: expect.any(String) } },
        })],
      });
    }
  }, 600_000);

  it(pullFailure, async () => {
    const unpullable = (policy: string) => (text: string) => text
      .replace('image = "docker.io/library/busybox:1.36.1"', 'image = "registry.invalid/library/busybox:1.36.1"')
      .replace('on_image_pull_failure = "warn"', `on_image_pull_failure = "${policy}"`)
      .replace('timeout = "5m"\nexpect_kernel_differs', 'timeout = "90s"\nexpect_kernel_differs');
    const inv = await inventory('pull', ['node-1']);

    const warned = await katafleet('rollout', await kataVariant('kata-pull-warn', unpullable('warn')), '--inventory', inv, '--follow', '--request-id', 'readme-pull-warn');
    expectSuccess(warned);
    const [warnedNode] = await rolloutNodes('readme-pull-warn');
    expect(warnedNode).toMatchObject({ status: 'succeeded', facts: expect.objectContaining({ verification: 'image-pull-failed' }) });
    expect(stepSummary((await nodeRun('node-1')).steps, 'verification-pod'))
      .toMatch(/^not verified \(warning, on_image_pull_failure = "warn"\): Verification pod on node node-1: image registry\.invalid\/library\/busybox:1\.36\.1 could not be pulled \((ErrImagePull|ImagePullBackOff): /);

    const failed = await katafleet('rollout', await kataVariant('kata-pull-fail', unpullable('fail')), '--inventory', inv, '--follow', '--request-id', 'readme-pull-fail');
    expect(failed.code).toBe(1);
    const [failedNode] = await rolloutNodes('readme-pull-fail');
    expect(failedNode.status).toBe('failed');
    expect(failedNode.reason).toMatch(/registry\.invalid\/library\/busybox:1\.36\.1 could not be pulled \((ErrImagePull|ImagePullBackOff): /);
    expect((await nodeRun('node-1')).failureType).toBe('VerificationImagePullFailed');
  }, 600_000);

  it(hostKernel, async () => {
    // A RuntimeClass "plain" whose handler is runc: the pod runs, with the host's kernel.
    const playbook = join(work, 'playbook-plain.toml');
    await writeFile(playbook, [
      '[playbook]', 'name = "plain"', '', '[rollout]', 'canary = 0', '',
      '[[steps]]', 'id = "containerd"', 'kind = "containerd-patch"', '[[steps.runtimes]]', 'name = "plain"', 'runtime_type = "io.containerd.runc.v2"', '',
      '[[steps]]', 'id = "restart"', 'kind = "service-restart"', 'wait_for_handlers = ["plain"]', '',
      '[[steps]]', 'id = "rc"', 'kind = "runtime-class"', 'name = "plain"', 'handler = "plain"', '',
      '[[steps]]', 'id = "verify"', 'kind = "verification-pod"', 'runtime_class = "plain"', 'timeout = "90s"', '',
    ].join('\n'));
    const before = await configHashes(fleet, ['node-1']);
    try {
      const run = await katafleet('rollout', playbook, '--inventory', await inventory('plain', ['node-1']), '--follow', '--request-id', 'readme-plain');
      expect(run.code).toBe(1);
      const [node] = await rolloutNodes('readme-plain');
      expect(node.status).toBe('rolled-back');
      expect(node.reason).toMatch(/kernel/);
      expect((await nodeRun('node-1')).failureType).toBe('VerificationFailed');
      expect(await configHashes(fleet, ['node-1'])).toEqual(before);
    } finally {
      await admin(['delete', 'runtimeclass', 'plain', '--ignore-not-found']);
    }
  }, 400_000);

  it(killModeKept, async () => {
    await container('node-2', 'run web-1');
    const before = await runningContainers('node-2');
    await onNode(fleet, 'node-2', 'touch /etc/containerd/config.toml');
    const run = await katafleet('rollout', 'kata', '--inventory', await inventory('kept', ['node-2']), '--canary', '0', '--follow', '--request-id', 'readme-kept');
    expectSuccess(run);
    expect(stepSummary((await nodeRun('node-2')).steps, 'service-restart')).toContain('1 running container shim(s) kept (KillMode=process)');
    expect(await runningContainers('node-2')).toEqual(before);
  }, 400_000);

  it(killModeRefused, async () => {
    await fleet.setFault('node-2', 'containerd-killmode-default', true);
    try {
      const before = { containers: await runningContainers('node-2'), config: await configHashes(fleet, ['node-2']), pid: await onNode(fleet, 'node-2', 'systemctl show -p MainPID --value containerd') };
      expect(before.containers).toHaveLength(1);
      await onNode(fleet, 'node-2', 'touch /etc/containerd/config.toml');
      const run = await katafleet('rollout', 'kata', '--inventory', await inventory('refused', ['node-2']), '--canary', '0', '--follow', '--request-id', 'readme-refused');
      expect(run.code).toBe(1);
      const [node] = await rolloutNodes('readme-refused');
      expect(node.status).toBe('failed');
      expect(node.reason).toContain(killModeRefusal('node-2', 'control-group', 1));
      expect((await nodeRun('node-2')).failureType).toBe('RestartWouldKillContainers');
      expect({ containers: await runningContainers('node-2'), config: await configHashes(fleet, ['node-2']), pid: await onNode(fleet, 'node-2', 'systemctl show -p MainPID --value containerd') }).toEqual(before);
    } finally {
      await fleet.setFault('node-2', 'containerd-killmode-default', false);
    }
  }, 400_000);
});
