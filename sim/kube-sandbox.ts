// What a real kubelet + containerd would do when asked to create a pod sandbox on a simulated node,
// decided from the node's real state (its running containerd's handlers, the shims installed on it).
// Pure: sim/kubelet-controller.ts applies the outcome to the API server.

/** What sim/ reads from a simulated node (see sim/node-state.ts). */
export interface NodeRuntimeState {
  containerdActive: boolean;
  /** Runtime handler names of the *running* containerd's CRI config. */
  handlers: string[];
  /** containerd-shim-* binaries installed on the node. */
  shims: string[];
  /** Kernel release of the guest kernel shipped by the installed Kata package, if any. */
  guestKernel?: string;
  hostKernel: string;
  /** handler → runtime_type (e.g. `io.containerd.kata.v2`), when the node state knows it. */
  runtimeTypes?: Record<string, string>;
  /** handler → its `runtime_path` and whether that file exists on the node, when the runtime sets one. */
  runtimePaths?: Record<string, { path: string; exists: boolean }>;
  /** Kernel each sandboxing shim shows its pods, by shim name, when the node state knows it. */
  guestKernels?: Record<string, string>;
}

/** The handler containerd uses for pods without a RuntimeClass (`default_runtime_name`). */
export const defaultHandler = 'runc';

/** gVisor's Sentry reports this kernel release to the sandboxed application. */
const gvisorKernelRelease = '4.4.0';

export type SandboxOutcome =
  | { ok: true; handler: string; shim: string; kernelRelease: string; vm: boolean }
  | { ok: false; handler: string; message: string };

/** The runtime_type containerd would use for a handler whose type is not known: by naming convention. */
export function guessRuntimeType(handler: string): string {
  if (handler === 'runc' || handler === '') return 'io.containerd.runc.v2';
  if (handler.startsWith('kata')) return 'io.containerd.kata.v2';
  if (handler === 'runsc' || handler.startsWith('gvisor')) return 'io.containerd.runsc.v1';
  return `io.containerd.${handler}.v2`;
}

/** containerd's rule: runtime_type `io.containerd.NAME.vN` runs the binary `containerd-shim-NAME-vN`. */
export function shimBinary(runtimeType: string): string {
  const m = /^io\.containerd\.([^.]+)\.(v\d+)$/.exec(runtimeType);
  if (!m) return runtimeType; // an absolute shim path, as containerd also accepts
  return `containerd-shim-${m[1]}-${m[2]}`;
}

/**
 * The sandbox a kubelet would get for a pod using `handler` on a node in `state`, or the error message
 * the kubelet reports in its `FailedCreatePodSandBox` event (the wording of kubelet + containerd 1.7/2.x).
 */
export function createSandbox(handler: string, state: NodeRuntimeState, containerdSocket: string, sandboxId: string): SandboxOutcome {
  const fail = (desc: string, code = 'Unknown'): SandboxOutcome => ({
    ok: false,
    handler,
    message: `Failed to create pod sandbox: rpc error: code = ${code} desc = ${desc}`,
  });
  if (!state.containerdActive) {
    return fail(`connection error: desc = "transport: Error while dialing: dial unix ${containerdSocket}: connect: connection refused"`, 'Unavailable');
  }
  if (!state.handlers.includes(handler)) {
    return fail(`failed to get sandbox runtime: no runtime for "${handler}" is configured`);
  }
  const runtimeType = state.runtimeTypes?.[handler] || guessRuntimeType(handler);
  const runtimePath = state.runtimePaths?.[handler];
  const shim = runtimePath ? runtimePath.path.slice(runtimePath.path.lastIndexOf('/') + 1) : shimBinary(runtimeType);
  if (runtimePath && !runtimePath.exists) {
    // containerd uses an absolute runtime_path as is (resolveRuntimePath), so the start itself fails (exec).
    return fail(`failed to start sandbox "${sandboxId}": failed to create containerd task: failed to create shim task: ` +
      `failed to start shim: start failed: fork/exec ${runtimePath.path}: no such file or directory: unknown`);
  }
  if (!runtimePath && !state.shims.includes(shim)) {
    return fail(`failed to start sandbox "${sandboxId}": failed to create containerd task: failed to create shim task: ` +
      `failed to start shim: failed to resolve runtime path: runtime "${runtimeType}" binary not installed "${shim}": file does not exist: unknown`);
  }
  const vm = shim === 'containerd-shim-kata-v2';
  const kernelRelease = state.guestKernels?.[shim] ?? (vm ? state.guestKernel : shim === 'containerd-shim-runsc-v1' ? gvisorKernelRelease : state.hostKernel);
  if (!kernelRelease) {
    return fail(`failed to start sandbox "${sandboxId}": failed to create containerd task: failed to create shim task: ` +
      'Kernel path for the guest not found: no such file or directory: unknown');
  }
  return { ok: true, handler, shim, kernelRelease, vm };
}
