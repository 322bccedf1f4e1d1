// startFleet({ kubernetes: true }): a real control plane (sim/control-plane.ts) and an SSH host
// `control-plane` on which kubectl talks to it, named in the inventory's [kubernetes] table.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInventory } from '../playbooks/load';
import { startFleet, type Fleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';

let fleet: Fleet;

beforeAll(async () => {
  fleet = await startFleet({ nodes: 1, kubernetes: true, dir: join(await mkdtemp(join(tmpdir(), 'kf-sim-k8s-')), 'fleet') });
}, 180_000);
afterAll(() => fleet?.stop());

describe('a fleet with Kubernetes', () => {
  it('names its control-plane host in the inventory, where kubectl sees the worker nodes', async () => {
    const inventory = await loadInventory(fleet.inventoryPath);
    expect(inventory.kubernetes).toMatchObject({ control_plane: 'control-plane', kubeconfig: '/root/.kube/config', kubectl: '/usr/local/bin/kubectl' });
    const host = fleet.controlPlane?.host;
    expect(host).toMatchObject({ name: 'control-plane', role: 'control-plane' });
    expect(inventory.nodes.find((n) => n.name === 'control-plane')).toMatchObject({ role: 'control-plane', address: host!.address });

    const r = await sshRun(fleet, host!, 'hostname; /usr/local/bin/kubectl get nodes -o name; test -e /run/containerd/containerd.sock || echo no-containerd');
    expect(r.stdout).toBe('control-plane\nnode/node-1\nno-containerd\n');
  });
});
