// The SSH pool logging in as an ordinary user with passwordless sudo, as on many real fleets.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh, SshFailureType, SshPool, type SshNode } from '../activities/ssh';
import { startFleet, type Fleet } from '../sim/fleet';

let fleet: Fleet;
let parentDir: string | undefined;
let node: SshNode;
const pool = new SshPool({ connectTimeoutMs: 5_000 });

beforeAll(async () => {
  parentDir = await mkdtemp(join(tmpdir(), 'kf-ssh-sudo-'));
  fleet = await startFleet({ nodes: 1, sshUser: 'kfadmin', dir: join(parentDir, 'fleet') });
  const [simNode] = fleet.nodes;
  node = {
    name: simNode.name, address: simNode.address, port: simNode.port, user: 'kfadmin',
    identityFile: fleet.identityFile, knownHosts: fleet.knownHostsPath,
  };
}, 90_000);

afterAll(async () => {
  await pool.closeAll();
  await fleet?.stop();
  if (parentDir) await rm(parentDir, { recursive: true, force: true });
});

describe('SshPool with a non-root login user', () => {
  it('runs commands as root through sudo -n, and as the user when asked', async () => {
    const asRoot = await pool.run(node, sh`id -un`);
    expect(asRoot.stdout).toBe('root\n');
    expect(asRoot.command).toBe('sudo -n id -un');
    expect((await pool.run(node, sh`id -un`, { asRoot: false })).stdout).toBe('kfadmin\n');
  });

  it('runs a whole pipeline as root and passes stdin through sudo', async () => {
    await pool.run(node, sh`cat > /root/from-stdin && chmod 600 /root/from-stdin`, { stdin: "it's $HOME\n" });
    expect((await pool.run(node, sh`cat /root/from-stdin | wc -c`)).stdout).toBe('11\n');
    const denied = await pool.run(node, sh`cat /root/from-stdin`, { asRoot: false, allowExitCodes: [1] });
    expect(denied.stderr).toContain('Permission denied');
  });

  it('kills a timed-out command of a non-root session at once, with a signal (sshd honours signals for non-root users)', async () => {
    const failure = await pool.run(node, sh`sleep 4244`, { asRoot: false, timeoutMs: 500 }).then(() => undefined, (err: { type: string }) => err);
    expect(failure?.type).toBe(SshFailureType.CommandTimedOut);
    // Well before the node's own timeout(1) deadline (2 s): the signal did it.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await pool.run(node, sh`pgrep -u kfadmin -x sleep`, { allowExitCodes: [0, 1] })).exitCode).toBe(1);
  });

  it('explains a sudo that wants a password instead of hanging on a prompt', async () => {
    await pool.run(node, sh`rm /etc/sudoers.d/90-kfadmin`);
    const failure = await pool.run(node, sh`true`).then(() => undefined, (err: { type: string; message: string }) => err);
    expect(failure?.type).toBe(SshFailureType.CommandFailed);
    expect(failure?.message).toMatch(/^Command failed with exit code 1 \(sudo -n needs a password: allow passwordless sudo for this user, or connect as root\): sudo -n true — on node node-1/);
  });
});
