// Address leases of the simulated fleet: fleets started at the same moment never share an address. (The lease file
// is hard-linked into place whole, so it is never seen empty; this test did not catch the earlier empty-file window
// either, which is too short to hit on purpose: it guards the distinctness, not that window.)
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { leaseAddresses, releaseAddresses } from '../sim/addresses';

/** A pid no process has: one of a process that has exited. */
function deadPid(): number {
  return spawnSync('true').pid!;
}

describe('address leases', () => {
  const saved = process.env.KATAFLEET_SIM_LEASE_DIR;
  afterEach(() => {
    if (saved === undefined) delete process.env.KATAFLEET_SIM_LEASE_DIR;
    else process.env.KATAFLEET_SIM_LEASE_DIR = saved;
  });

  it('gives 120 fleets leasing at once 120 different addresses', async () => {
    process.env.KATAFLEET_SIM_LEASE_DIR = await mkdtemp(join(tmpdir(), 'kf-lease-dir-'));
    const dir = await mkdtemp(join(tmpdir(), 'kf-leases-'));
    // A port nothing listens on, so only the lease files decide.
    const port = 1;
    const leases = await Promise.all(Array.from({ length: 120 }, (_, i) => leaseAddresses([undefined], port, join(dir, `fleet-${i}`))));
    try {
      const addresses = leases.flat();
      expect(addresses).toHaveLength(120);
      expect(new Set(addresses).size).toBe(120);
    } finally {
      await Promise.all(leases.map((taken) => releaseAddresses(taken)));
    }
  });

  // The HostKeyMismatch of session 5's 2,000-node run: the lease directory held 966 stale leases of a killed bench,
  // and two fleets replacing the same stale lease at once could both end up holding it (one removed the other's
  // fresh lease). The old code gave 117 of the 160 addresses twice in this test.
  it('gives fleets leasing at once over stale leases (of a process that is gone) different addresses', async () => {
    const leaseDir = await mkdtemp(join(tmpdir(), 'kf-lease-dir-'));
    process.env.KATAFLEET_SIM_LEASE_DIR = leaseDir;
    const gone = deadPid();
    for (let i = 1; i <= 200; i++) await writeFile(join(leaseDir, `127.0.1.${i}`), JSON.stringify({ fleetDir: '/tmp/killed-bench/fleet', pid: gone }));
    const dir = await mkdtemp(join(tmpdir(), 'kf-leases-'));
    const leases = await Promise.all(Array.from({ length: 8 }, (_, i) => leaseAddresses(Array.from({ length: 20 }, () => undefined), 1, join(dir, `fleet-${i}`))));
    try {
      const addresses = leases.flat();
      expect(addresses).toHaveLength(160);
      const twice = addresses.filter((address, index) => addresses.indexOf(address) !== index);
      expect(twice).toEqual([]);
      // No takeover lock is left behind.
      expect((await readdir(leaseDir)).filter((name) => name.endsWith('.takeover'))).toEqual([]);
    } finally {
      await Promise.all(leases.map((taken) => releaseAddresses(taken)));
    }
  });
});
