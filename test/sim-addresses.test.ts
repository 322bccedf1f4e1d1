// Address leases of the simulated fleet: fleets started at the same moment never share an address. (The lease file
// is hard-linked into place whole, so it is never seen empty; this test did not catch the earlier empty-file window
// either, which is too short to hit on purpose: it guards the distinctness, not that window.)
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { leaseAddresses, releaseAddresses } from '../sim/addresses';

describe('address leases', () => {
  it('gives 120 fleets leasing at once 120 different addresses', async () => {
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
});
