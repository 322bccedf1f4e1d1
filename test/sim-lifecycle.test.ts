// Starting and stopping simulated fleets: the CLI, what `sim down` leaves behind (nothing), fleets side by
// side, a login user with sudo, and containerd 2.x nodes with config version 3.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { loadInventory } from '../playbooks/load';
import { resolveNodeSsh } from '../playbooks/schema';
import { containerd2Path, startFleet } from '../sim/fleet';
import { readNodeRuntimeState } from '../sim/node-state';
import { sshRun } from '../sim/ssh-run';

const run = promisify(execFile);
const simCli = (...args: string[]) =>
  run(process.execPath, ['--require', require.resolve('tsx/cjs'), join(__dirname, '..', 'cli', 'sim.ts'), ...args], { timeout: 240_000 });

/** Everything on the machine that still mentions `dir`: processes, mounts (in any namespace), address leases. */
function tracesOf(dir: string): string[] {
  const traces: string[] = [];
  for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) traces.push(`process ${pid}`);
      if (readFileSync(`/proc/${pid}/mountinfo`, 'utf8').includes(dir)) traces.push(`mount seen by ${pid}`);
    } catch {
      // the process ended while we looked
    }
  }
  const leases = join(tmpdir(), 'katafleet-sim-leases');
  for (const lease of existsSync(leases) ? readdirSync(leases) : []) {
    if (readFileSync(join(leases, lease), 'utf8').includes(dir)) traces.push(`lease ${lease}`);
  }
  if (existsSync(dir)) traces.push(`directory ${dir}`);
  return traces;
}

const tempDir = async (name: string) => join(await mkdtemp(join(tmpdir(), `kf-sim-${name}-`)), 'fleet');

describe('katafleet sim', () => {
  it('up prints the inventory and each address; the node answers over ssh; kubectl sees the nodes Ready; down leaves no process, mount, lease or file', async () => {
    const dir = await tempDir('cli');
    const up = await simCli('up', '--nodes', '3', '--dir', dir);
    expect(up.stdout).toContain(`inventory: ${dir}/inventory.toml`);
    const inventory = await loadInventory(join(dir, 'inventory.toml'));
    for (const node of inventory.nodes) expect(up.stdout).toMatch(new RegExp(`${node.name}\\s+${node.address.replace(/\./g, '\\.')}\\s`));
    const fleet = { identityFile: join(dir, 'id_ed25519'), knownHostsPath: join(dir, 'known_hosts') };
    const r = await sshRun(fleet, { address: inventory.nodes[1].address, port: 22 }, 'uname -r; hostname; systemctl is-active containerd');
    expect(r.stdout).toBe('6.1.0-katafleet-sim\nnode-2\nactive\n');

    // The control plane came up with the nodes: kubectl over SSH on the control-plane host, and locally.
    const controlPlane = inventory.nodes.find((node) => node.role === 'control-plane')!;
    const readyNodes = (output: string) => output.trim().split('\n').filter((line) => / Ready /.test(line)).map((line) => line.split(/\s+/)[0]).sort();
    const [kubectlLine] = up.stdout.split('\n').filter((line) => line.startsWith('kubectl: '));
    const kubeconfig = /--kubeconfig (\S+)/.exec(kubectlLine)![1];
    const { kubernetesBinaries } = await import('../sim/control-plane');
    let remote = '';
    let local = '';
    for (let attempt = 0; attempt < 30 && (readyNodes(remote).length < 3 || readyNodes(local).length < 3); attempt++) {
      remote = (await sshRun(fleet, { address: controlPlane.address, port: 22 }, 'kubectl get nodes --no-headers')).stdout;
      local = (await run(join(kubernetesBinaries().binDir, 'kubectl'), ['--kubeconfig', kubeconfig, 'get', 'nodes', '--no-headers'])).stdout;
      if (readyNodes(remote).length < 3 || readyNodes(local).length < 3) await sleep(1000);
    }
    expect(readyNodes(remote)).toEqual(['node-1', 'node-2', 'node-3']);
    expect(readyNodes(local)).toEqual(['node-1', 'node-2', 'node-3']);
    expect(tracesOf(dir).length).toBeGreaterThan(0);

    const down = await simCli('down', '--dir', dir);
    expect(down.stdout).toBe(`stopped the simulated fleet in ${dir}\n`);
    expect(tracesOf(dir)).toEqual([]);
    expect(existsSync(`${dir}.log`)).toBe(false);
  });

  it('fault switches from the command line reach the running fleet', async () => {
    const dir = await tempDir('cli-fault');
    await simCli('up', '--nodes', '1', '--no-kubernetes', '--dir', dir, '--fault', 'node-1=sshd-down');
    try {
      expect((await simCli('status', '--dir', dir)).stdout).toContain('faults: sshd-down');
      await expect(simCli('up', '--nodes', '1', '--dir', dir)).rejects.toMatchObject({ stderr: expect.stringContaining(`a simulated fleet is already running in ${dir}`) });
      expect((await simCli('fault', 'node-1', 'sshd-down', 'off', '--dir', dir)).stdout).toBe('node-1: sshd-down off\n');
      const inventory = await loadInventory(join(dir, 'inventory.toml'));
      const r = await sshRun({ identityFile: join(dir, 'id_ed25519'), knownHostsPath: join(dir, 'known_hosts') }, { address: inventory.nodes[0].address, port: 22 }, 'hostname');
      expect(r.stdout).toBe('node-1\n');
    } finally {
      await simCli('down', '--dir', dir);
    }
    expect(tracesOf(dir)).toEqual([]);
  });
});

describe('startFleet', () => {
  it('takes its nodes down with it when the process that started it dies', async () => {
    const dir = await tempDir('orphan');
    const owner = spawn(process.execPath, ['--require', require.resolve('tsx/cjs'), '-e',
      `require(${JSON.stringify(join(__dirname, '..', 'sim', 'fleet.ts'))}).startFleet({ nodes: 1, dir: ${JSON.stringify(dir)} }).then(() => { console.log('up'); setInterval(() => undefined, 60_000); })`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => owner.stdout.on('data', (d: Buffer) => d.toString().includes('up') && resolve()));
    expect(tracesOf(dir).some((t) => t.startsWith('process'))).toBe(true);
    owner.kill('SIGKILL');
    for (let i = 0; i < 100 && tracesOf(dir).some((t) => t.startsWith('process') || t.startsWith('mount')); i++) await sleep(100);
    expect(tracesOf(dir).filter((t) => t.startsWith('process') || t.startsWith('mount'))).toEqual([]);
  });

  it('gives fleets running side by side different addresses, logs in a sudo user when asked, and can start a node without a containerd config', async () => {
    const [a, b] = await Promise.all([
      startFleet({ nodes: [{ containerd: '1.6', containerdConfig: null }], dir: await tempDir('side-a') }),
      startFleet({ nodes: 1, dir: await tempDir('side-b'), sshUser: 'deploy' }),
    ]);
    try {
      expect(a.nodes[0].address).not.toBe(b.nodes[0].address);
      const noConfig = await sshRun(a, a.nodes[0], 'test -e /etc/containerd/config.toml && echo config || echo no-config; systemctl is-active containerd');
      expect(noConfig.stdout).toBe('no-config\nactive\n');
      const inventory = await loadInventory(b.inventoryPath);
      expect(resolveNodeSsh(inventory, inventory.nodes[0])).toMatchObject({ user: 'deploy', sudo: true });
      const r = await sshRun(b, b.nodes[0], 'whoami; sudo -n systemctl is-active containerd; sudo -n cat /etc/containerd/config.toml | head -1; cat /etc/containerd/config.toml >/dev/null 2>&1 || echo not-readable-without-sudo', { user: 'deploy' });
      expect(r.stdout).toBe('deploy\nactive\ndisabled_plugins = []\n');
      expect((await sshRun(b, b.nodes[0], 'true')).stderr).toContain('Permission denied');
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  (existsSync(containerd2Path) ? it : it.skip)('runs containerd 2.x with a version 3 config, and its CRI reports a runtime added to it', async () => {
    const fleet = await startFleet({ nodes: [{ containerd: '2' }], dir: await tempDir('containerd2') });
    try {
      const node = fleet.nodes[0];
      const config = await readFile(join(node.dir, 'overlay', 'etc', 'upper', 'containerd', 'config.toml'), 'utf8');
      expect(config.startsWith('version = 3')).toBe(true);
      const patch = `
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]
  runtime_type = 'io.containerd.kata.v2'
`;
      const r = await sshRun(fleet, node, 'containerd --version; cat >> /etc/containerd/config.toml && systemctl restart containerd && systemctl is-active containerd', { input: patch });
      expect(r.stdout).toMatch(/^containerd github.com\/containerd\/containerd\/v2 2\.\d+\.\d+.*\nactive\n$/);
      const state = await readNodeRuntimeState(node);
      expect(state.handlers).toEqual(['kata', 'runc']);
      expect(state.runtimeTypes.kata).toBe('io.containerd.kata.v2');
    } finally {
      await fleet.stop();
    }
  });
});
