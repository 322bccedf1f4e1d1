// A fleet's alias addresses (several node names served by one simulated host, as bench/scale.ts and
// test/scale-rollout.test.ts use them) are answered by that host's own sshd, or the fleet does not start.
// Session 5's 2,000-node run halted on HostKeyMismatch: another fleet's sshd held an alias address that this fleet
// had leased too (sim/addresses.ts: two fleets replacing one stale lease), and sshd silently went on without it.
// Here a program takes the alias address after the fleet leased it and before its sshd starts.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../sim/addresses';
import { startFleet, type Fleet } from '../sim/fleet';
import { nodePaths } from '../sim/node-files';

describe('alias addresses of a simulated host', () => {
  const saved = process.env.KATAFLEET_SIM_LEASE_DIR;
  afterAll(() => {
    if (saved === undefined) delete process.env.KATAFLEET_SIM_LEASE_DIR;
    else process.env.KATAFLEET_SIM_LEASE_DIR = saved;
  });

  it('fails AliasAddressTaken, naming the address, when another program listens on a leased alias address', async () => {
    // A private lease directory and a port of its own: the fleet leases 127.0.1.1 for the host, 127.0.1.2-3 for its aliases.
    process.env.KATAFLEET_SIM_LEASE_DIR = await mkdtemp(join(tmpdir(), 'kf-lease-dir-'));
    const port = await freeLoopbackPort();
    const dir = await mkdtemp(join(tmpdir(), 'kf-fleet-aliases-'));
    const aliasConfig = `${nodePaths(join(dir, 'fleet', 'nodes', 'host-1')).sshdConfig}.alias-0`;
    let squatter: Server | undefined;
    let fleet: Fleet | undefined;
    const starting = startFleet({ nodes: [{ name: 'host-1', aliases: 2 }], port, dir: join(dir, 'fleet') });
    try {
      // The alias config is written after the leases (and their port check), before the node boots and its sshds start.
      while (!existsSync(aliasConfig)) await sleep(5);
      squatter = createServer((socket) => socket.end('SSH-2.0-NotTheFleet\r\n'));
      await new Promise<void>((resolve, reject) => squatter!.once('error', reject).listen(port, '127.0.1.3', resolve));
      const failure = await starting.then((started) => {
        fleet = started;
        return undefined;
      }, (err: unknown) => err as Error);
      expect(failure?.name).toBe('AliasAddressTaken');
      expect(failure?.message).toContain(`127.0.1.3:${port}`);
      expect(failure?.message).toContain('Bind to port');
      expect(failure?.message).not.toContain('127.0.1.2:');
      expect(failure?.message).toContain('start the fleet again');
    } finally {
      await starting.catch(() => undefined);
      await fleet?.stop();
      await new Promise((resolve) => (squatter ? squatter.close(resolve) : resolve(undefined)));
    }
  }, 180_000);

  it('starts when its alias addresses are free, each answered by the host', async () => {
    process.env.KATAFLEET_SIM_LEASE_DIR = await mkdtemp(join(tmpdir(), 'kf-lease-dir-'));
    const port = await freeLoopbackPort();
    const fleet = await startFleet({ nodes: [{ name: 'host-1', aliases: 2 }], port, dir: join(await mkdtemp(join(tmpdir(), 'kf-fleet-aliases-')), 'fleet') });
    try {
      expect(fleet.nodes.find((node) => node.name === 'host-1')?.aliases).toEqual(['127.0.1.2', '127.0.1.3']);
      // The key each alias offers is the one the fleet wrote for it in known_hosts.
      const knownHosts = await readFile(fleet.knownHostsPath, 'utf8');
      for (const address of ['127.0.1.2', '127.0.1.3']) {
        const { stdout } = await promisify(execFile)('ssh-keyscan', ['-t', 'ed25519', '-p', String(port), address]);
        const offered = stdout.split('\n').find((line) => line.includes('ssh-ed25519'))!.split(' ').slice(1, 3).join(' ');
        expect(knownHosts).toContain(`[${address}]:${port} ${offered}`);
      }
    } finally {
      await fleet.stop();
    }
  }, 180_000);
});
