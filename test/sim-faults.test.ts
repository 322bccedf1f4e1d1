// Every fault switch of the simulated fleet, on at start or switched while running, seen through real SSH.
import { spawn } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startFleet, type Fleet } from '../sim/fleet';
import { manualKataInstallCommand } from '../sim/kata-release';
import { readNodeRuntimeState } from '../sim/node-state';
import { sshArgs, sshRun, type SshRunOptions } from '../sim/ssh-run';

let fleet: Fleet;
const node = (name: string) => fleet.nodes.find((n) => n.name === name)!;
const on = (name: string, command: string, o?: SshRunOptions) => sshRun(fleet, node(name), command, o);

beforeAll(async () => {
  fleet = await startFleet({
    nodes: [{ containerd: '1.6' }, { containerd: '1.6' }, { containerd: '1.6' }],
    dir: join(await mkdtemp(join(tmpdir(), 'kf-sim-faults-')), 'fleet'),
    faults: { 'node-1': ['no-virtualization'], 'node-3': ['sshd-frozen'] },
  });
  const install = await sshRun(fleet, node('node-2'), manualKataInstallCommand(fleet.mirror.port), { timeoutMs: 110_000 });
  if (install.exitCode !== 0) throw new Error(`installing Kata's release tarball on node-2 failed: ${install.stderr}`);
}, 120_000);
afterAll(() => fleet?.stop());

describe('fault switches', () => {
  it('no-virtualization (set at start): no vmx, kvm_intel does not load, no /dev/kvm', async () => {
    const r = await on('node-1', 'grep -cw vmx /proc/cpuinfo; lsmod | grep -c "^kvm_intel "; test -e /dev/kvm && echo kvm || echo no-kvm; modprobe kvm_intel');
    expect(r.stdout).toBe('0\n0\nno-kvm\n');
    expect(r.stderr).toBe("modprobe: ERROR: could not insert 'kvm_intel': Operation not supported\n");
    expect(r.exitCode).toBe(1);
    expect(await fleet.faultsOf('node-1')).toEqual(['no-virtualization']);
  });

  it('no-kvm-device: /dev/kvm disappears; kata-runtime check says the system is capable but cannot create VMs', async () => {
    await fleet.setFault('node-2', 'no-kvm-device', true);
    const r = await on('node-2', 'test -c /dev/kvm && echo kvm || echo no-kvm; kata-runtime check');
    expect(r.stdout).toBe('no-kvm\nSystem is capable of running Kata Containers\n');
    expect(r.stderr.trimEnd().split('\n').at(-1)).toBe('no such file or directory');
    expect(r.exitCode).toBe(1);
    await fleet.setFault('node-2', 'no-kvm-device', false);
    expect((await on('node-2', 'test -c /dev/kvm && echo kvm')).stdout).toBe('kvm\n');
  });

  it('vhost-vsock-busy: modprobe vhost_vsock fails with "Device or resource busy"; kata-runtime check reports it', async () => {
    await fleet.setFault('node-2', 'vhost-vsock-busy', true);
    const modprobe = await on('node-2', 'modprobe vhost_vsock');
    expect(modprobe.exitCode).toBe(1);
    expect(modprobe.stderr).toBe("modprobe: ERROR: could not insert 'vhost_vsock': Device or resource busy\n");
    const check = await on('node-2', 'kata-runtime check');
    expect(check.stderr).toContain('msg="kernel property vhost_vsock not found"');
    // vhost_vsock is not a required module for the real kata-runtime either.
    expect(check.exitCode).toBe(0);
    await fleet.setFault('node-2', 'vhost-vsock-busy', false);
    expect((await on('node-2', 'modprobe vhost_vsock && lsmod | grep -c "^vhost_vsock "')).stdout).toBe('1\n');
  });

  it('package-repo-unreachable: apt-get install fails as with a dead mirror, and works again afterwards', async () => {
    await fleet.setFault('node-2', 'package-repo-unreachable', true);
    const r = await on('node-2', 'apt-get install -y runsc');
    expect(r.exitCode).toBe(100);
    expect(r.stderr).toMatch(/E: Failed to fetch http:\/\/packages\.katafleet\.test:\d+\/\.\/pool\/runsc_20240212\.0_amd64\.deb/);
    expect(r.stdout + r.stderr).toContain('Connection refused');
    await fleet.setFault('node-2', 'package-repo-unreachable', false);
    expect((await on('node-2', 'apt-get install -y runsc')).exitCode).toBe(0);
  });

  it('containerd-refuses-start: the next restart fails and leaves the unit failed; the one after succeeds', async () => {
    await fleet.setFault('node-2', 'containerd-refuses-start', true);
    const restart = await on('node-2', 'systemctl restart containerd');
    expect(restart.exitCode).toBe(1);
    expect((await on('node-2', 'systemctl is-active containerd')).stdout).toBe('failed\n');
    expect((await readNodeRuntimeState(node('node-2'))).containerdActive).toBe(false);
    expect(await fleet.faultsOf('node-2')).toEqual([]);
    expect((await on('node-2', 'systemctl restart containerd && systemctl is-active containerd')).stdout).toBe('active\n');
  });

  it('command-hangs: systemctl restart hangs until the switch is turned off, then completes', async () => {
    await fleet.setFault('node-2', 'command-hangs', true);
    // Cut on the node itself, as katafleet's command layer does (timeout -k): killing only the local ssh
    // client would leave the restart waiting on the node, and once the switch is off the two restarts would race.
    const hung = await on('node-2', 'timeout -k 1 2 systemctl restart containerd; echo cut=$?', { timeoutMs: 15_000 });
    expect(hung.stdout).toBe('cut=124\n');
    expect((await on('node-2', 'systemctl is-active containerd')).stdout).toBe('active\n');
    // The bracket keeps pgrep from matching this very shell's command line.
    const gone = await on('node-2', 'for i in $(seq 50); do pgrep -f "[s]ystemctl restart" >/dev/null || exit 0; sleep 0.2; done; exit 1');
    expect(gone.exitCode).toBe(0);
    const pending = on('node-2', 'systemctl restart containerd; echo restarted=$?');
    await sleep(500);
    await fleet.setFault('node-2', 'command-hangs', false);
    expect((await pending).stdout).toBe('restarted=0\n');
  });

  it('sshd-down: connections are refused until sshd is back', async () => {
    await fleet.setFault('node-2', 'sshd-down', true);
    const r = await on('node-2', 'true');
    expect(r.exitCode).toBe(255);
    expect(r.stderr).toContain('Connection refused');
    await fleet.setFault('node-2', 'sshd-down', false);
    expect((await on('node-2', 'hostname')).stdout).toBe('node-2\n');
  });

  it('sshd-frozen (set at start): TCP connects but the SSH banner never comes; thawed it answers', async () => {
    const r = await on('node-3', 'true', { connectTimeoutS: 2 });
    expect(r.exitCode).toBe(255);
    expect(r.stderr).toContain('Connection timed out during banner exchange');
    await fleet.setFault('node-3', 'sshd-frozen', false);
    expect((await on('node-3', 'hostname')).stdout).toBe('node-3\n');
  });

  it('host-key-changed: ssh refuses the node against the fleet known_hosts; switched off it is trusted again', async () => {
    await fleet.setFault('node-3', 'host-key-changed', true);
    const r = await on('node-3', 'true');
    expect(r.exitCode).toBe(255);
    expect(r.stderr).toContain('REMOTE HOST IDENTIFICATION HAS CHANGED');
    await fleet.setFault('node-3', 'host-key-changed', false);
    expect((await on('node-3', 'hostname')).stdout).toBe('node-3\n');
  });

  it('max-sessions-2: a third concurrent session on one connection is refused', async () => {
    const concurrentSessions = async (count: number) => {
      const control = join(fleet.dir, `mux-${count}`);
      const args = sshArgs(fleet, node('node-3'));
      const master = spawn('ssh', ['-M', '-S', control, '-N', ...args], { stdio: 'ignore' });
      try {
        for (let i = 0; i < 50 && (await sshRunMux(control, args, 'true')).code !== 0; i++) await sleep(100);
        return await Promise.all(Array.from({ length: count }, () => sshRunMux(control, args, 'sleep 1.5')));
      } finally {
        master.kill();
      }
    };
    await fleet.setFault('node-3', 'max-sessions-2', true);
    const limited = await concurrentSessions(3);
    // The refused session's client then falls back to a connection of its own.
    expect(limited.filter((s) => s.stderr.includes('Session open refused by peer'))).toHaveLength(1);
    await fleet.setFault('node-3', 'max-sessions-2', false);
    expect((await concurrentSessions(3)).map((s) => s.stderr)).toEqual(['', '', '']);
  });
});

function sshRunMux(control: string, args: string[], command: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('ssh', ['-S', control, ...args, command], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}
