import { createSandbox, guessRuntimeType, shimBinary, type NodeRuntimeState } from '../sim/kube-sandbox';

const socket = '/run/containerd/containerd.sock';
const sandboxId = 'a'.repeat(64);
const plainNode: NodeRuntimeState = {
  containerdActive: true,
  handlers: ['runc'],
  shims: ['containerd-shim-runc-v2'],
  hostKernel: '6.1.0-28-amd64',
};
const kataNode: NodeRuntimeState = {
  ...plainNode,
  handlers: ['runc', 'kata'],
  shims: ['containerd-shim-runc-v2', 'containerd-shim-kata-v2'],
  guestKernel: '6.12.28-kata',
};

describe('pod sandbox creation on a simulated node', () => {
  it('reports a handler the running containerd lacks exactly as kubelet + containerd do', () => {
    expect(createSandbox('kata', plainNode, socket, sandboxId)).toEqual({
      ok: false,
      handler: 'kata',
      message: 'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for "kata" is configured',
    });
  });

  it('fails when the handler is configured but its shim binary is not installed', () => {
    const outcome = createSandbox('kata', { ...kataNode, shims: ['containerd-shim-runc-v2'] }, socket, sandboxId);
    expect(outcome.ok).toBe(false);
    expect(!outcome.ok && outcome.message).toContain('runtime "io.containerd.kata.v2" binary not installed "containerd-shim-kata-v2"');
  });

  it('fails with a connection error while containerd is not running', () => {
    const outcome = createSandbox('runc', { ...plainNode, containerdActive: false }, socket, sandboxId);
    expect(!outcome.ok && outcome.message).toContain(`dial unix ${socket}: connect: connection refused`);
  });

  it('starts a Kata sandbox with the guest kernel, a runc one with the host kernel', () => {
    expect(createSandbox('kata', kataNode, socket, sandboxId)).toMatchObject({ ok: true, vm: true, kernelRelease: '6.12.28-kata' });
    expect(createSandbox('runc', kataNode, socket, sandboxId)).toMatchObject({ ok: true, vm: false, kernelRelease: '6.1.0-28-amd64' });
  });

  it('uses the runtime_type the node reports to find the shim', () => {
    const node = { ...kataNode, handlers: ['runc', 'vm'], runtimeTypes: { vm: 'io.containerd.kata.v2' } };
    expect(createSandbox('vm', node, socket, sandboxId)).toMatchObject({ ok: true, shim: 'containerd-shim-kata-v2', vm: true });
  });

  it('maps runtime types to shim binaries by containerd\'s naming rule', () => {
    expect(shimBinary('io.containerd.runc.v2')).toBe('containerd-shim-runc-v2');
    expect(shimBinary(guessRuntimeType('kata-qemu'))).toBe('containerd-shim-kata-v2');
    expect(shimBinary(guessRuntimeType('runsc'))).toBe('containerd-shim-runsc-v1');
  });
});

describe('the kernel a sandbox shows its pod', () => {
  it('prefers the kernel the node reports for the shim', () => {
    const node = { ...kataNode, guestKernels: { 'containerd-shim-kata-v2': '6.6.0-kata-guest' } };
    expect(createSandbox('kata', node, socket, sandboxId)).toMatchObject({ ok: true, kernelRelease: '6.6.0-kata-guest' });
  });

  it('fails a Kata sandbox when no guest kernel is installed', () => {
    const outcome = createSandbox('kata', { ...kataNode, guestKernel: undefined }, socket, sandboxId);
    expect(!outcome.ok && outcome.message).toContain('Kernel path for the guest not found');
  });
});
