// The inventory file a fleet writes for itself (format: playbooks/schema.ts, `Inventory`).
import type { SimNode } from './sim-node';

const str = (value: string) => JSON.stringify(value);

/** Labels every simulated node carries in the inventory, to select nodes by what they run. */
export function simLabels(node: Pick<SimNode, 'containerd' | 'labels'>): Record<string, string> {
  return { ...(node.containerd ? { 'sim.katafleet.dev/containerd': node.containerd } : {}), ...node.labels };
}

/** The credential profile every simulated fleet's inventory names. */
export const simProfile = 'sim';

/**
 * The fleet's credentials file (`credentials.toml` next to its inventory, where `loadInventory` looks for it):
 * the profile `sim` with the fleet's key, known_hosts and login user.
 */
export function credentialsToml(o: { dir: string; user: string; identityFile: string; knownHostsPath: string }): string {
  return [
    `# Credential profiles of the simulated fleet in ${o.dir} (format: playbooks/credentials.ts)`,
    '# Written by startFleet (sim/fleet.ts) / `katafleet sim up`; removed by `katafleet sim down`.',
    '',
    `[profiles.${simProfile}]`,
    `user = ${str(o.user)}`,
    `identity_file = ${str(o.identityFile)}`,
    `known_hosts = ${str(o.knownHostsPath)}`,
    `sudo = ${o.user !== 'root'}`,
    '# The simulated nodes all live on loopback addresses (sim/addresses.ts).',
    'hosts = ["127.0.0.0/8"]',
    '',
  ].join('\n');
}

/** The fleet's inventory: nodes and addresses; the login comes from the credential profile `sim`. */
export function inventoryToml(o: { dir: string; port: number; nodes: SimNode[]; kubernetes: boolean }): string {
  const lines = [
    `# Inventory of the simulated fleet in ${o.dir}`,
    '# Written by startFleet (sim/fleet.ts) / `katafleet sim up`; removed by `katafleet sim down`.',
    '',
    '[ssh]',
    `profile = ${str(simProfile)}`,
    `port = ${o.port}`,
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
