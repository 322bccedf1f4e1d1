// What a simulated host is, on its own so that the fleet (sim/fleet.ts), its inventory (sim/inventory.ts) and the
// node-state reader (sim/node-state.ts) share it without importing each other in a circle.
import type { CpuVendor } from './node-files';
import type { NodePackageManager } from './rpm-node';

/** One simulated host. */
export interface SimNode {
  name: string;
  /** Loopback address its sshd listens on (127.0.1.N unless asked otherwise). */
  address: string;
  role: 'worker' | 'control-plane';
  /** Host directory holding the node's private state (its /etc and /var layers, /run, /root, /opt, …). */
  dir: string;
  /** Host path of the node's containerd socket (the node sees it as /run/containerd/containerd.sock). */
  containerdSocket: string;
  /** What `uname -r` answers on the node. */
  hostKernel: string;
  /** SSH port of the node's sshd. */
  port: number;
  labels: Record<string, string>;
  /** `1.6` (Debian's containerd) or `2` (containerd 2.x built by setup). Empty on the control-plane host. */
  containerd: '1.6' | '2' | '';
  cpuVendor: CpuVendor;
  /**
   * More loopback addresses this host's sshd answers on (same host key): an inventory may give each its own node
   * name, so that a few real hosts serve the SSH steps of many named nodes (scale tests). Empty unless asked.
   */
  aliases: string[];
  /** `apt` (Debian-like), `dnf` (Fedora-like) or `zypper` (openSUSE-like): sim/rpm-node.ts. */
  packageManager: NodePackageManager;
}
