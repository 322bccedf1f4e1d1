// Each simulated node behaves like a real host, seen through real SSH (the OpenSSH client).
import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInventory } from '../playbooks/load';
import { resolveNodeSsh } from '../playbooks/schema';
import { startFleet, type Fleet } from '../sim/fleet';
import { manualKataInstallCommand } from '../sim/kata-release';
import { criInfoAsked, readNodeRuntimeState } from '../sim/node-state';
import { addObsSourceCommand } from '../sim/packages';
import { sshRun } from '../sim/ssh-run';

let fleet: Fleet;
const on = (i: number, command: string, input?: string) => sshRun(fleet, fleet.nodes[i], command, { input });

beforeAll(async () => {
  fleet = await startFleet({ nodes: [{ containerd: '1.6' }, { containerd: '1.6', hostKernel: '5.15.0-91-generic' }], dir: join(await mkdtemp(join(tmpdir(), 'kf-sim-node-')), 'fleet') });
}, 90_000);
afterAll(() => fleet?.stop());

const kataRuntime = `
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
`;

describe('a simulated node', () => {
  it('answers as itself over SSH: its host kernel, its hostname, its containerd config, an active containerd', async () => {
    const r = await on(1, 'uname -r; hostname; head -c 200 /etc/containerd/config.toml; systemctl is-active containerd');
    expect(r.exitCode).toBe(0);
    const [kernel, hostname] = r.stdout.split('\n');
    expect(kernel).toBe('5.15.0-91-generic');
    expect(hostname).toBe('node-2');
    expect(r.stdout).toContain('version = 2');
    expect(r.stdout.trimEnd().endsWith('active')).toBe(true);
  });

  it('writes an inventory that the playbook loader accepts, with a known_hosts that ssh verifies strictly', async () => {
    const inventory = await loadInventory(fleet.inventoryPath);
    expect(inventory.nodes.map((n) => [n.name, n.address])).toEqual(fleet.nodes.map((n) => [n.name, n.address]));
    const login = resolveNodeSsh(inventory, inventory.nodes[0]);
    expect(login.known_hosts).toBe(fleet.knownHostsPath);
    expect(login.identity_file).toBe(fleet.identityFile);
  });

  it('gives root a plain Debian profile of its own, not the machine\'s (whose pyenv costs 0.6 s per command)', async () => {
    const r = await on(0, 'echo $HOME; type pyenv >/dev/null 2>&1 && echo has-pyenv || echo no-pyenv; grep -c pyenv ~/.bashrc');
    expect(r.stdout).toBe('/root\nno-pyenv\n0\n');
  });

  it('loads a patched config with a kata runtime after `systemctl restart containerd`: its CRI reports the handler', async () => {
    const before = await readNodeRuntimeState(fleet.nodes[0]);
    expect(before.handlers).toEqual(['runc']);
    const r = await on(0, 'cat >> /etc/containerd/config.toml && systemctl restart containerd && systemctl is-active containerd && crictl info', kataRuntime);
    expect(r.exitCode).toBe(0);
    const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')));
    expect(info.config.containerd.runtimes.kata.runtimeType).toBe('io.containerd.kata.v2');
    const after = await readNodeRuntimeState(fleet.nodes[0]);
    expect(after).toMatchObject({ containerdActive: true, handlers: ['kata', 'runc'], runtimeTypes: { kata: 'io.containerd.kata.v2' } });
  });

  it('leaves containerd failed when it refuses a broken config, and active again once the config is restored', async () => {
    const broken = await on(1, 'cp /etc/containerd/config.toml /root/config.good && echo "[plugins" >> /etc/containerd/config.toml && systemctl restart containerd');
    expect(broken.exitCode).toBe(1);
    expect(broken.stderr).toContain('Job for containerd.service failed because the control process exited with error code.');
    const isActive = await on(1, 'systemctl is-active containerd');
    expect([isActive.exitCode, isActive.stdout]).toEqual([3, 'failed\n']);
    const status = await on(1, 'systemctl status containerd');
    expect(status.exitCode).toBe(3);
    expect(status.stdout).toContain('Active: failed (Result: exit-code)');
    expect(status.stdout).toContain('containerd: failed to load TOML');
    expect((await readNodeRuntimeState(fleet.nodes[1])).containerdActive).toBe(false);
    const restored = await on(1, 'cp /root/config.good /etc/containerd/config.toml && systemctl restart containerd && systemctl is-active containerd');
    expect(restored.stdout).toBe('active\n');
  });

  it('offers no Kata package in a fresh node\'s apt sources, as on real Debian and Ubuntu: apt-get install kata-containers fails with apt\'s own error', async () => {
    const r = await on(0, 'apt-get install -y kata-containers; echo "exit=$?"; apt-cache policy kata-containers | wc -l');
    expect(r.stderr).toContain('E: Unable to locate package kata-containers');
    expect(r.stdout).toMatch(/exit=100\n0\n$/);
    expect((await on(0, 'command -v kata-runtime || echo none; ls /opt/kata 2>&1 | head -1')).stdout).toBe('none\nls: cannot access \'/opt/kata\': No such file or directory\n');
  });

  it('installs Kata from the mirror\'s release tarball as upstream\'s manual install does; kata-runtime check passes; the guest kernel differs; removing /opt/kata takes it all away', async () => {
    const install = await on(0, `${manualKataInstallCommand(fleet.mirror.port)} && kata-runtime check && kata-runtime --version | head -1 && cat /opt/kata/share/kata-containers/guest-kernel-version`);
    expect(install.exitCode).toBe(0);
    expect(install.stdout).toContain('System is capable of running Kata Containers\nSystem can currently create Kata Containers\n');
    expect(install.stdout).toMatch(/kata-runtime\s*: 3\.32\.0/);
    const state = await readNodeRuntimeState(fleet.nodes[0]);
    expect(state.shims).toContain('containerd-shim-kata-v2');
    expect(state.guestKernel).toBe('6.12.47-kata');
    expect(state.guestKernel).not.toBe(state.hostKernel);

    const remove = await on(0, 'rm -rf /opt/kata /usr/local/bin/kata-runtime /usr/local/bin/containerd-shim-kata-v2 && (command -v kata-runtime || echo gone) && (ls /opt/kata 2>/dev/null || echo no-opt-kata)');
    expect(remove.stdout).toBe('gone\nno-opt-kata\n');
    expect((await readNodeRuntimeState(fleet.nodes[0])).shims).not.toContain('containerd-shim-kata-v2');
  });

  it('offers the Kata .deb once the OBS-style repository is added (the package-repo way), verified by apt with its key', async () => {
    const r = await on(1, `${addObsSourceCommand(fleet.mirror.port)} && apt-get install -y kata-containers=3.2.0 && dpkg-query -W -f='\${Version}\n' kata-containers`);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('Setting up kata-containers (3.2.0)');
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('3.2.0');
    await on(1, 'apt-get purge -y kata-containers >/dev/null && rm /etc/apt/sources.list.d/kata-obs.list /etc/apt/keyrings/kata-obs.asc && apt-get update -qq');
  });

  it('knows which shims a node has, wherever the node put them (its /usr layer included) and until it deletes them', async () => {
    const shims = async () => (await readNodeRuntimeState(fleet.nodes[1])).shims;
    expect(await shims()).toEqual(['containerd-shim-runc-v1', 'containerd-shim-runc-v2']);
    await on(1, 'printf "#!/bin/sh\\n" > /usr/bin/containerd-shim-probe-v2 && chmod +x /usr/bin/containerd-shim-probe-v2 && rm /usr/bin/containerd-shim-runc-v1');
    expect(await shims()).toEqual(['containerd-shim-probe-v2', 'containerd-shim-runc-v2']);
    expect(existsSync('/usr/bin/containerd-shim-runc-v1')).toBe(true);
    await on(1, 'rm /usr/bin/containerd-shim-probe-v2 && cp /usr/bin/containerd-shim-runc-v2 /usr/bin/containerd-shim-runc-v1');
  });

  it('keeps each node to itself: packages, config and modules of one node are not seen by another node or the machine', async () => {
    await on(0, 'apt-get install -y runsc >/dev/null && modprobe vhost_vsock && echo "# node-1 only" >> /etc/containerd/config.toml && touch /usr/bin/katafleet-sim-probe');
    const other = await on(1, 'command -v runsc || echo no-runsc; lsmod | grep -c "^vhost_vsock "; grep -c "node-1 only" /etc/containerd/config.toml; ls /usr/bin/katafleet-sim-probe 2>/dev/null || echo no-probe; dpkg -l runsc 2>&1 | tail -1');
    expect(other.stdout).toMatch(/^no-runsc\n0\n0\nno-probe\n/);
    expect(other.stdout).toContain('no packages found matching runsc');
    expect(existsSync('/usr/local/bin/runsc')).toBe(false);
    expect(existsSync('/usr/bin/katafleet-sim-probe')).toBe(false);
    const self = await on(0, 'runsc --version | head -1; lsmod | grep -c "^vhost_vsock "');
    expect(self.stdout).toBe('runsc version release-20240212.0\n1\n');
  });

  it('reports the CRI view of the containerd that runs: a config changed without a restart is not seen, a stop is, a restart loads it; an unchanged containerd is not asked again', async () => {
    const node = fleet.nodes[1];
    const before = await readNodeRuntimeState(node);
    expect(before).toMatchObject({ containerdActive: true, handlers: ['runc'] });
    // containerd reads its config only when it starts: a runtime added to the file is not in the running one's CRI.
    await on(1, 'cp /etc/containerd/config.toml /root/config.before-probe && cat >> /etc/containerd/config.toml', kataRuntime.replace(/kata/g, 'probe'));
    const asked = criInfoAsked.count;
    expect((await readNodeRuntimeState(node)).handlers).toEqual(['runc']);
    expect((await readNodeRuntimeState(node)).handlers).toEqual(['runc']);
    expect(criInfoAsked.count - asked).toBe(0);
    // Killed behind the service manager's back: its socket file stays but refuses, so the CRI is asked again and
    // the node's containerd is not active.
    await on(1, 'p=$(cat /run/katafleet-sim/services/containerd.pid) && kill -9 "$p" && while [ -e /proc/$p ] && ! grep -q "^State:.*Z" /proc/$p/status; do sleep 0.05; done');
    expect(await readNodeRuntimeState(node)).toMatchObject({ containerdActive: false, handlers: [] });
    expect(criInfoAsked.count - asked).toBe(1);
    // Started again: a new socket, a new CRI answer with the runtime the file now has.
    await on(1, 'systemctl restart containerd');
    expect(await readNodeRuntimeState(node)).toMatchObject({ containerdActive: true, handlers: ['probe', 'runc'], runtimeTypes: { probe: 'io.containerd.probe.v2' } });
    expect(criInfoAsked.count - asked).toBe(2);
    // Stopped: the service manager says so, and the node's containerd is not active.
    await on(1, 'systemctl stop containerd');
    expect((await readNodeRuntimeState(node)).containerdActive).toBe(false);
    // Started with the old file: the handler is gone again.
    await on(1, 'cp /root/config.before-probe /etc/containerd/config.toml && systemctl start containerd');
    expect(await readNodeRuntimeState(node)).toMatchObject({ containerdActive: true, handlers: ['runc'] });
    expect(criInfoAsked.count - asked).toBe(3);
  });

  it('gives kata-runtime check the real failure message when the node has no virtualization', async () => {
    await fleet.setFault('node-2', 'no-virtualization', true);
    const r = await on(1, `${manualKataInstallCommand(fleet.mirror.port)}; kata-runtime check`);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('level=error msg="CPU property not found" arch=amd64 description="Virtualization support" name=vmx');
    expect(r.stderr).toContain('msg="kernel property kvm_intel not found"');
    expect(r.stderr.trimEnd().split('\n').at(-1)).toBe('ERROR: System is not capable of running Kata Containers');
    await fleet.setFault('node-2', 'no-virtualization', false);
    expect((await on(1, 'kata-runtime check')).stdout).toContain('System is capable of running Kata Containers');
  });
});
