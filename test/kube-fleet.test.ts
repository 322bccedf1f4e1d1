// The simulated fleet with its Kubernetes control plane: real nodes (sshd, containerd, apt) drive
// real Kubernetes objects, seen through the real kubectl, locally and over SSH on the control-plane host.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { manualKataInstallCommand } from '../sim/kata-release';
import { sshRun } from '../sim/ssh-run';
import { eventually, kataRuntimeClass, kubectlRunner, podManifest } from './kube-helpers';

let fleet: Fleet;
let kubectl: ReturnType<typeof kubectlRunner>;
const on = (node: string, command: string, input?: string) => sshRun(fleet, fleet.nodes.find((n) => n.name === node)!, command, { input });
const workers = () => fleet.nodes.filter((n) => n.role === 'worker');
const jsonpath = async (args: string[], path: string): Promise<string> => (await kubectl([...args, '-o', `jsonpath=${path}`])).stdout;
const readyOf = (node: string) => jsonpath(['get', 'node', node], '{.status.conditions[?(@.type=="Ready")].status}');

const kataRuntime = `
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
`;

beforeAll(async () => {
  fleet = await startFleet({ nodes: [{ containerd: '1.6' }, { containerd: '1.6' }], kubernetes: true, dir: join(await mkdtemp(join(tmpdir(), 'kf-kube-fleet-')), 'fleet') });
  kubectl = kubectlRunner(join(kubernetesBinaries().binDir, 'kubectl'), fleet.controlPlane!.kubeconfig);
}, 240_000);
afterAll(() => fleet?.stop());

describe('Kubernetes on the simulated fleet', () => {
  it('lists every worker as a Ready node, locally and with kubectl over SSH on the control-plane host', async () => {
    expect(workers().map((n) => n.name)).toEqual(['node-1', 'node-2']);
    const local = await kubectl(['get', 'nodes', '--no-headers']);
    expect(local.stdout.trimEnd().split('\n')).toHaveLength(2);
    for (const n of workers()) expect(local.stdout).toMatch(new RegExp(`^${n.name}\\s+Ready\\s`, 'm'));
    const remote = await on('control-plane', 'kubectl get nodes --no-headers');
    expect(remote.exitCode).toBe(0);
    for (const n of workers()) expect(remote.stdout).toMatch(new RegExp(`^${n.name}\\s+Ready\\s`, 'm'));
    // containerd 1.x never sends runtime handlers in its CRI status, so the kubelet reports none (reality/KATA.md §6).
    expect(await jsonpath(['get', 'node', 'node-1'], '{.status.runtimeHandlers[*].name}')).toBe('');
    expect(await jsonpath(['get', 'node', 'node-1'], '{.status.nodeInfo.containerRuntimeVersion}')).toBe('containerd://1.6.20');
  });

  it('rejects a node.k8s.io/v1beta1 RuntimeClass and accepts a v1 one with scheduling.nodeSelector', async () => {
    const beta = await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'node.k8s.io/v1beta1', kind: 'RuntimeClass', metadata: { name: 'kata' }, handler: 'kata' }));
    expect(beta.code).not.toBe(0);
    expect(beta.stderr).toContain('no matches for kind "RuntimeClass" in version "node.k8s.io/v1beta1"');
    const v1 = await kubectl(['apply', '-f', '-'], kataRuntimeClass({ 'katacontainers.io/kata-runtime': 'true' }));
    expect(v1).toMatchObject({ code: 0, stdout: 'runtimeclass.node.k8s.io/kata created\n' });
  });

  it('schedules a kata pod only onto a labelled node, never runs it there without Kata, and runs it once the runtime is patched in and containerd restarted', async () => {
    // The RuntimeClass admission plugin merges scheduling.nodeSelector into the pod; the scheduler finds no node for it…
    expect((await kubectl(['apply', '-f', '-'], podManifest('kata-pod', { runtimeClassName: 'kata' }))).code).toBe(0);
    expect(await jsonpath(['get', 'pod', 'kata-pod'], '{.spec.nodeSelector}')).toBe('{"katacontainers.io/kata-runtime":"true"}');
    const unschedulable = await eventually('FailedScheduling event', async () =>
      (await jsonpath(['get', 'events', '--field-selector', 'involvedObject.name=kata-pod,reason=FailedScheduling'], '{.items[0].message}')) || undefined);
    expect(unschedulable).toContain('0/2 nodes are available: 2 node(s) didn\'t match Pod\'s node affinity/selector');
    // …until a node carries the label.
    await kubectl(['label', 'node', 'node-1', 'katacontainers.io/kata-runtime=true']);
    expect(await eventually('kata-pod scheduled', async () => (await jsonpath(['get', 'pod', 'kata-pod'], '{.spec.nodeName}')) || undefined)).toBe('node-1');
    const event = await eventually('FailedCreatePodSandBox event', async () =>
      (await jsonpath(['get', 'events', '--field-selector', 'involvedObject.name=kata-pod,reason=FailedCreatePodSandBox'], '{.items[0].message}')) || undefined);
    expect(event).toBe('Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for "kata" is configured');

    // Kata installed alone is not enough (its release tarball, as upstream's manual install): the running containerd has no kata handler yet.
    expect((await on('node-1', manualKataInstallCommand(fleet.mirror.port))).exitCode).toBe(0);
    await new Promise((r) => setTimeout(r, 4_000)); // two polls of the node state
    expect(await jsonpath(['get', 'pod', 'kata-pod'], '{.status.phase}')).toBe('Pending');

    const patched = await on('node-1', 'cat >> /etc/containerd/config.toml && systemctl restart containerd', kataRuntime);
    expect(patched.exitCode).toBe(0);
    await eventually('kata-pod Running', async () => (await jsonpath(['get', 'pod', 'kata-pod'], '{.status.phase}')) === 'Running' || undefined);
    expect(await jsonpath(['get', 'node', 'node-1'], '{.status.runtimeHandlers[*].name}')).toBe(''); // containerd 1.6: never reported
  });

  it('shows the Kata guest kernel in uname -r inside the kata pod, and the node\'s kernel in a runc pod', async () => {
    const hostKernel = (await on('node-1', 'uname -r')).stdout.trim();
    const inKata = await kubectl(['exec', 'kata-pod', '--', 'uname', '-r']);
    expect(inKata.code).toBe(0);
    expect(inKata.stdout.trim()).toBe((await on('node-1', 'cat /opt/kata/share/kata-containers/guest-kernel-version')).stdout.trim());
    expect(inKata.stdout.trim()).not.toBe(hostKernel);

    await kubectl(['apply', '-f', '-'], podManifest('runc-pod', { onNode: 'node-1' }));
    await eventually('runc-pod Running', async () => (await jsonpath(['get', 'pod', 'runc-pod'], '{.status.phase}')) === 'Running' || undefined);
    expect((await kubectl(['exec', 'runc-pod', '--', 'uname', '-r'])).stdout.trim()).toBe(hostKernel);
  });

  it('fails a kata pod bound straight to a node without the RuntimeClass\'s label, as the kubelet\'s admission does', async () => {
    await kubectl(['apply', '-f', '-'], podManifest('pinned-kata-pod', { runtimeClassName: 'kata', bindTo: 'node-2' }));
    await eventually('pinned-kata-pod Failed', async () => (await jsonpath(['get', 'pod', 'pinned-kata-pod'], '{.status.phase}')) === 'Failed' || undefined);
    expect(await jsonpath(['get', 'pod', 'pinned-kata-pod'], '{.status.reason}: {.status.message}')).toBe('NodeAffinity: Pod was rejected: Predicate NodeAffinity failed');
  });

  it('turns a node NotReady within 60 s of its containerd stopping', async () => {
    expect(await readyOf('node-2')).toBe('True');
    expect((await on('node-2', 'systemctl stop containerd')).exitCode).toBe(0);
    const started = Date.now();
    await eventually('node-2 NotReady', async () => (await readyOf('node-2')) === 'False' || undefined, 60_000);
    expect(Date.now() - started).toBeLessThan(60_000);
    expect((await on('node-2', 'systemctl start containerd')).exitCode).toBe(0);
    await eventually('node-2 Ready again', async () => (await readyOf('node-2')) === 'True' || undefined, 60_000);
  });
});
