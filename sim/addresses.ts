// Loopback addresses for simulated nodes. All of 127.0.0.0/8 reaches `lo` on Linux, so 127.0.1.N
// needs no setup and nothing to remove. Several fleets (tests of different helpers, a demo) may run
// on one machine at once: each address is leased with a file, and an address whose SSH port is
// already taken by anything else is skipped. The lease files live in `$TMPDIR/katafleet-sim-leases`
// (`KATAFLEET_SIM_LEASE_DIR` overrides it: tests use a private one).
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where the lease files are: one per address, shared by every fleet on the machine. */
export function leaseDir(): string {
  return process.env.KATAFLEET_SIM_LEASE_DIR || join(tmpdir(), 'katafleet-sim-leases');
}

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
 *
 * A stale lease (its process is gone) is only replaced under a takeover lock (`<address>.takeover`,
 * created exclusively), and is read again under it. Without the lock two fleets could both read the
 * same stale lease, one remove it and link its own, and the other then remove that fresh lease and
 * link its own: both fleets held the address, the second sshd's bind failed (sshd goes on with its
 * other addresses) and its node names were answered by the first fleet's sshd (`HostKeyMismatch` in
 * the 2,000-node run of session 5, with 966 stale leases of a killed bench in the directory).
 */
async function tryLease(address: string, port: number, fleetDir: string): Promise<boolean> {
  const dir = leaseDir();
  const file = join(dir, address);
  const draft = join(dir, `.${address}.${process.pid}.${Math.random().toString(36).slice(2)}`);
  const lease: Lease = { fleetDir, pid: process.pid };
  await writeFile(draft, JSON.stringify(lease));
  try {
    try {
      await link(draft, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (!(await isStale(file)) || !(await takeOverStale(file, draft))) return false;
    }
    if (await portFree(address, port)) return true;
    await unlink(file);
    return false;
  } finally {
    await unlink(draft).catch(() => undefined);
  }
}

/**
 * Replaces the stale lease `file` by `draft`, under the exclusive takeover lock. False when another
 * fleet holds the lock (it is taking the address over) or the lease is no longer stale once locked.
 * A lock left by a process that died in these few milliseconds only retires its address.
 */
async function takeOverStale(file: string, draft: string): Promise<boolean> {
  const lock = `${file}.takeover`;
  try {
    await writeFile(lock, String(process.pid), { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    if (!(await isStale(file))) return false;
    await unlink(file).catch(() => undefined);
    try {
      await link(draft, file);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    }
  } finally {
    await unlink(lock).catch(() => undefined);
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
  await mkdir(leaseDir(), { recursive: true });
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
  await Promise.all(addresses.map((address) => unlink(join(leaseDir(), address)).catch(() => undefined)));
}
