// The control plane on its own: real etcd, kube-apiserver, kube-scheduler, kube-controller-manager and
// kwok, driven through the real kubectl. The nodes' runtime state is set by the test here (the same
// function sim/fleet.ts passes reads it from the real nodes); test/kube-fleet.test.ts runs on the real fleet.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane, type KubeSimNode } from '../sim/control-plane';
import type { NodeRuntimeState } from '../sim/kube-sandbox';
import { eventually, kataRuntimeClass, kubectlRunner, podManifest } from './kube-helpers';

const hostKernel = '6.1.0-28-amd64';
const guestKernel = '6.12.28-kata';
let dir: string;
let cp: ControlPlane;
let kubectl: ReturnType<typeof kubectlRunner>;
const nodes: KubeSimNode[] = ['node-1', 'node-2'].map((name) => ({
  name, address: '127.0.0.1', role: 'worker', dir: '', containerdSocket: '/run/containerd/containerd.sock', hostKernel,
}));
const state = new Map<string, NodeRuntimeState>();
const runcOnly = (): NodeRuntimeState => ({ containerdActive: true, handlers: ['runc'], shims: ['containerd-shim-runc-v2'], hostKernel });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'katafleet-kube-'));
  for (const n of nodes) state.set(n.name, runcOnly());
  cp = await startControlPlane({ dir, nodes, readNodeRuntimeState: async (n) => state.get(n.name)! });
  kubectl = kubectlRunner(cp.kubectlPath, cp.kubeconfig);
}, 180_000);

afterAll(async () => {
  await cp?.stop();
  await rm(dir, { recursive: true, force: true });
});

const jsonpath = async (args: string[], path: string): Promise<string> => (await kubectl([...args, '-o', `jsonpath=${path}`])).stdout;

describe('the simulated fleet\'s Kubernetes control plane', () => {
  it('shows one Ready node per worker, with the running containerd\'s runtime handlers', async () => {
    const out = await kubectl(['get', 'nodes', '--no-headers']);
    expect(out.stdout).toMatch(/^node-1\s+Ready\s/m);
    expect(out.stdout).toMatch(/^node-2\s+Ready\s/m);
    expect(await jsonpath(['get', 'node', 'node-1'], '{.status.runtimeHandlers[*].name}')).toBe('runc');
    expect(await jsonpath(['get', 'node', 'node-1'], '{.status.nodeInfo.kernelVersion}')).toBe(hostKernel);
  });

  it('rejects a node.k8s.io/v1beta1 RuntimeClass and accepts a v1 one with scheduling.nodeSelector', async () => {
    const beta = await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'node.k8s.io/v1beta1', kind: 'RuntimeClass', metadata: { name: 'kata-beta' }, handler: 'kata' }));
    expect(beta.code).not.toBe(0);
    expect(beta.stderr).toContain('no matches for kind "RuntimeClass" in version "node.k8s.io/v1beta1"');
    const v1 = await kubectl(['apply', '-f', '-'], kataRuntimeClass({ 'katacontainers.io/kata-runtime': 'true' }));
    expect(v1.stderr).toBe('');
    expect(await jsonpath(['get', 'runtimeclass', 'kata'], '{.scheduling.nodeSelector}')).toContain('katacontainers.io/kata-runtime');
  });

  it('keeps a kata pod from running until the node\'s containerd has the kata handler, then runs it with the guest kernel', async () => {
    await kubectl(['label', 'node', 'node-1', 'katacontainers.io/kata-runtime=true']);
    expect((await kubectl(['apply', '-f', '-'], podManifest('kata-pod', { runtimeClassName: 'kata' }))).code).toBe(0);
    // The real scheduler applies the RuntimeClass's nodeSelector.
    expect(await eventually('kata-pod scheduled', async () => (await jsonpath(['get', 'pod', 'kata-pod'], '{.spec.nodeName}')) || undefined)).toBe('node-1');
    const event = await eventually('FailedCreatePodSandBox event', async () =>
      (await jsonpath(['get', 'events', '--field-selector', 'involvedObject.name=kata-pod,reason=FailedCreatePodSandBox'], '{.items[0].message}')) || undefined);
    expect(event).toBe('Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for "kata" is configured');
    expect(await jsonpath(['get', 'pod', 'kata-pod'], '{.status.phase}')).toBe('Pending');
    expect(await jsonpath(['get', 'pod', 'kata-pod'], '{.status.containerStatuses[0].state.waiting.reason}')).toBe('ContainerCreating');

    state.set('node-1', { ...runcOnly(), handlers: ['runc', 'kata'], shims: ['containerd-shim-runc-v2', 'containerd-shim-kata-v2'], guestKernel });
    await eventually('kata-pod Running', async () => (await jsonpath(['get', 'pod', 'kata-pod'], '{.status.phase}')) === 'Running' || undefined);
    expect(await jsonpath(['get', 'node', 'node-1'], '{.status.runtimeHandlers[*].name}')).toBe('runc kata');

    const inside = await kubectl(['exec', 'kata-pod', '--', 'uname', '-r']);
    expect(inside).toMatchObject({ code: 0, stdout: `${guestKernel}\n` });
    expect(inside.stdout.trim()).not.toBe(hostKernel);
  });

  it('runs a runc pod whose uname -r is the node\'s host kernel', async () => {
    await kubectl(['apply', '-f', '-'], podManifest('runc-pod', { nodeName: 'node-2' }));
    await eventually('runc-pod Running', async () => (await jsonpath(['get', 'pod', 'runc-pod'], '{.status.phase}')) === 'Running' || undefined);
    expect((await kubectl(['exec', 'runc-pod', '--', 'uname', '-r'])).stdout).toBe(`${hostKernel}\n`);
  });

  it('turns a node NotReady within 60 s when its containerd stops, and Ready again when it starts', async () => {
    state.set('node-2', { ...runcOnly(), containerdActive: false });
    const started = Date.now();
    await eventually('node-2 NotReady', async () =>
      (await jsonpath(['get', 'node', 'node-2'], '{.status.conditions[?(@.type=="Ready")].status}')) === 'False' || undefined, 60_000);
    expect(Date.now() - started).toBeLessThan(60_000);
    state.set('node-2', runcOnly());
    await eventually('node-2 Ready', async () =>
      (await jsonpath(['get', 'node', 'node-2'], '{.status.conditions[?(@.type=="Ready")].status}')) === 'True' || undefined, 60_000);
  });
});
