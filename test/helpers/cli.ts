// The katafleet command as a user runs it, for the tests that prove a README sentence through the public CLI.
import { execFile } from 'node:child_process';
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Fleet } from '../../sim/fleet';
import { inventoryToml } from '../../sim/inventory';

const root = join(__dirname, '..', '..');

/** What a finished `katafleet` command left: its exit code (1 when killed by a signal or the timeout) and output. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `katafleet ...args` (bin/katafleet.js through node) against the Temporal server at `temporalAddress`, with
 * `env` added to this process's environment. Asynchronous on purpose: a worker in the test's own process must go on
 * polling while the command waits.
 */
export function runKatafleet(temporalAddress: string, args: string[], timeoutMs = 300_000, env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(root, 'bin', 'katafleet.js'), ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, TEMPORAL_ADDRESS: temporalAddress, ...env }, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
}

/**
 * Writes `dir/<name>.toml`: an inventory of the fleet's nodes `names` (no control plane), with the fleet's
 * credentials profile copied beside it, where the CLI looks for it. Returns the inventory's path.
 */
export async function writeFleetInventory(fleet: Fleet, dir: string, name: string, names: string[]): Promise<string> {
  const file = join(dir, `${name}.toml`);
  await writeFile(file, inventoryToml({ dir: fleet.dir, port: 22, nodes: fleet.nodes.filter((node) => names.includes(node.name)), kubernetes: false }));
  await copyFile(join(fleet.dir, 'credentials.toml'), join(dir, 'credentials.toml'));
  return file;
}
