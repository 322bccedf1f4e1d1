// Loopback addresses for simulated nodes. All of 127.0.0.0/8 reaches `lo` on Linux, so 127.0.1.N
// needs no setup and nothing to remove. Several fleets (tests of different helpers, a demo) may run
// on one machine at once: each address is leased with a file, and an address whose SSH port is
// already taken by anything else is skipped.
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const leaseDir = join(tmpdir(), 'katafleet-sim-leases');

interface Lease {
  fleetDir: string;
  pid: number;
}

/** Whether a process with this pid still exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A lease is stale when the process that took it is gone: a fleet's nodes die with the process
 * that started them (parent-death signal), so nothing can still use the address.
 */
async function isStale(file: string): Promise<boolean> {
  try {
    return !alive((JSON.parse(await readFile(file, 'utf8')) as Lease).pid);
  } catch {
    return true;
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice), for a server started next. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function portFree(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, address, () => server.close(() => resolve(true)));
  });
}

/**
 * Takes the lease file for an address. The file appears whole or not at all (written aside, then
 * hard-linked into place, which fails if it exists): a lease created with `wx` is empty for a moment,
 * and a fleet starting beside it would read that as stale, remove it and take the same address.
 */
async function tryLease(address: string, port: number, fleetDir: string): Promise<boolean> {
  const file = join(leaseDir, address);
  const draft = join(leaseDir, `.${address}.${process.pid}.${Math.random().toString(36).slice(2)}`);
  const lease: Lease = { fleetDir, pid: process.pid };
  await writeFile(draft, JSON.stringify(lease));
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await link(draft, file);
        if (await portFree(address, port)) return true;
        await unlink(file);
        return false;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (!(await isStale(file))) return false;
        await unlink(file).catch(() => undefined);
      }
    }
    return false;
  } finally {
    await unlink(draft).catch(() => undefined);
  }
}

/** The Nth candidate address: 127.0.1.1 … 127.0.1.254, 127.0.2.1 … */
function candidate(index: number): string {
  return `127.0.${1 + Math.floor(index / 254)}.${1 + (index % 254)}`;
}

/** No free loopback address could be leased (or a requested one is in use). */
export class AddressUnavailable extends Error {
  override readonly name = 'AddressUnavailable';
}

/**
 * Leases one address per entry: the requested address, or the next free 127.0.x.y.
 * Release them with {@link releaseAddresses} (sim down does).
 */
export async function leaseAddresses(requested: (string | undefined)[], port: number, fleetDir: string): Promise<string[]> {
  await mkdir(leaseDir, { recursive: true });
  const taken: string[] = [];
  let next = 0;
  try {
    for (const want of requested) {
      if (want !== undefined) {
        if (!(await tryLease(want, port, fleetDir))) {
          throw new AddressUnavailable(`${want}:${port} is in use (by another fleet or another program); choose another address or run \`katafleet sim down\` for the fleet holding it`);
        }
        taken.push(want);
        continue;
      }
      for (;;) {
        if (next >= 254 * 250) throw new AddressUnavailable(`no free loopback address for port ${port} in 127.0.1.1-127.0.250.254`);
        const address = candidate(next++);
        if (requested.includes(address)) continue;
        if (await tryLease(address, port, fleetDir)) {
          taken.push(address);
          break;
        }
      }
    }
    return taken;
  } catch (err) {
    await releaseAddresses(taken);
    throw err;
  }
}

export async function releaseAddresses(addresses: string[]): Promise<void> {
  await Promise.all(addresses.map((address) => unlink(join(leaseDir, address)).catch(() => undefined)));
}
