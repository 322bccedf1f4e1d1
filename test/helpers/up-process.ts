// `katafleet up` (and `katafleet server`) as a user starts them: their own process, in a folder of their own (where
// .katafleet/ is created), on free loopback ports; with what they printed, and the processes they started.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeLoopbackPort } from '../../sim/addresses';

const bin = join(__dirname, '..', '..', 'bin', 'katafleet.js');

/** A running katafleet command. */
export interface KatafleetProcess {
  child: ChildProcess;
  /** The folder it runs in (its .katafleet/ is there). */
  cwd: string;
  output(): string;
  /** Resolves with the exit code (or the signal's name) once it exited. */
  exited: Promise<number | string>;
  /** Waits until its output matches `pattern`; rejects when it exits first or after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
}

/** Spawns `katafleet ...args` in `cwd` (default: a new temporary folder). */
export function spawnKatafleet(args: string[], env: NodeJS.ProcessEnv = {}, cwd = mkdtempSync(join(tmpdir(), 'kf-up-'))): KatafleetProcess {
  const base = { ...process.env };
  delete base.TEMPORAL_ADDRESS;
  const child = spawn(process.execPath, [bin, ...args], { cwd, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const listeners = new Set<() => void>();
  const append = (chunk: Buffer) => {
    output += chunk.toString();
    listeners.forEach((listener) => listener());
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => {
    listeners.forEach((listener) => listener());
    resolve(code ?? signal ?? -1);
  }));
  return {
    child,
    cwd,
    output: () => output,
    exited,
    waitFor(pattern, timeoutMs = 180_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (pattern.test(output)) return done(resolve);
          if (child.exitCode !== null || child.signalCode !== null) return done(() => reject(new Error(`katafleet ${args.join(' ')} exited before printing ${pattern}:\n${output}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`katafleet ${args.join(' ')} did not print ${pattern} within ${timeoutMs / 1000} s:\n${output}`))), timeoutMs);
        const done = (settle: () => void) => {
          clearTimeout(timer);
          listeners.delete(check);
          settle();
        };
        listeners.add(check);
        check();
      });
    },
  };
}

/** `katafleet up` on free ports, with a token from the environment; resolves once its API listens. */
export async function startUp(extraArgs: string[] = [], cwd?: string): Promise<KatafleetProcess & { temporalPort: number }> {
  const temporalPort = await freeLoopbackPort();
  const uiPort = await freeLoopbackPort();
  const apiPort = await freeLoopbackPort();
  const up = spawnKatafleet(['up', '--temporal-port', String(temporalPort), '--ui-port', String(uiPort), '--port', String(apiPort), ...extraArgs],
    { KATAFLEET_API_TOKEN: 'u'.repeat(40) }, cwd);
  await up.waitFor(/katafleet API on/);
  return { ...up, temporalPort };
}

/** Every process below `pid` (children, grandchildren, ...), from /proc. */
export function descendants(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const child of parents.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

/** Whether a process still exists (a zombie counts as gone). */
export function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
