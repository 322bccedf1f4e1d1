// The inventory file a fleet writes for itself (format: playbooks/schema.ts, `Inventory`).
import type { SimNode } from './fleet';

const str = (value: string) => JSON.stringify(value);

/** Labels every simulated node carries in the inventory, to select nodes by what they run. */
export function simLabels(node: Pick<SimNode, 'containerd' | 'labels'>): Record<string, string> {
  return { ...(node.containerd ? { 'sim.katafleet.dev/containerd': node.containerd } : {}), ...node.labels };
}

export function inventoryToml(o: {
  dir: string;
  user: string;
  port: number;
  identityFile: string;
  knownHostsPath: string;
  nodes: SimNode[];
  kubernetes: boolean;
}): string {
  const lines = [
    `# Inventory of the simulated fleet in ${o.dir}`,
    '# Written by startFleet (sim/fleet.ts) / `katafleet sim up`; removed by `katafleet sim down`.',
    '',
    '[ssh]',
    `user = ${str(o.user)}`,
    `port = ${o.port}`,
    `identity_file = ${str(o.identityFile)}`,
    `known_hosts = ${str(o.knownHostsPath)}`,
    `sudo = ${o.user !== 'root'}`,
    '',
  ];
  if (o.kubernetes) {
    lines.push('[kubernetes]', 'control_plane = "control-plane"', 'kubeconfig = "/root/.kube/config"', 'kubectl = "/usr/local/bin/kubectl"', '');
  }
  for (const node of o.nodes) {
    const labels = Object.entries(simLabels(node)).map(([k, v]) => `${str(k)} = ${str(v)}`);
    lines.push('[[nodes]]', `name = ${str(node.name)}`, `address = ${str(node.address)}`, `role = ${str(node.role)}`);
    if (labels.length > 0) lines.push(`labels = { ${labels.join(', ')} }`);
    lines.push('');
  }
  return lines.join('\n');
}
