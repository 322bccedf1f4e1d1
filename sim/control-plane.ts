// A real Kubernetes control plane for the simulated fleet: etcd, kube-apiserver, kube-scheduler
// (built once from the Go module proxy by scripts/setup/kubernetes.js) and kwok as the kubelet of
// every simulated worker node. See sim/KUBERNETES.md for exactly what is real and what is simulated.

/** The fields of a simulated node this module uses (structurally a subset of sim/fleet.ts's SimNode). */
export interface KubeSimNode {
  name: string;
  address: string;
  role: 'worker' | 'control-plane';
  dir: string;
  containerdSocket: string;
  hostKernel: string;
}

export interface NodeRuntimeState {
  containerdActive: boolean;
  handlers: string[];
  shims: string[];
  guestKernel?: string;
  hostKernel: string;
}

export interface ControlPlane {
  kubeconfig: string;
  apiServerUrl: string;
  kubectlPath: string;
  stop(): Promise<void>;
}

export interface StartControlPlaneOptions<N extends KubeSimNode = KubeSimNode> {
  dir: string;
  nodes: N[];
  readNodeRuntimeState: (n: N) => Promise<NodeRuntimeState>;
}

export function kubernetesBinaries(): { version: string; binDir: string } {
  throw new Error('not implemented yet');
}

export async function startControlPlane<N extends KubeSimNode>(opts: StartControlPlaneOptions<N>): Promise<ControlPlane> {
  void opts;
  throw new Error('not implemented yet');
}
