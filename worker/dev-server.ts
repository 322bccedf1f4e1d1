import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Connection } from '@temporalio/client';
import { allSearchAttributes } from '../workflows/search-attributes';
import { temporalCliPath } from './temporal-cli';

/** Options of the embedded Temporal dev server. */
export interface DevServerOptions {
  /** SQLite file that keeps workflow history across restarts. @default `.katafleet/temporal.db` */
  dbFile?: string;
  /** @default 7233 */
  port?: number;
  /** Web UI port. @default 8233 */
  uiPort?: number;
  namespace?: string;
  /** Where the server's output goes. @default next to the database, `temporal.log` */
  logFile?: string;
}

/**
 * Arguments of `temporal server start-dev`: SQLite persistence, the Web UI, and katafleet's search
 * attributes registered at start so the UI can filter rollouts by phase and counts.
 */
export function devServerArgs(options: Required<Omit<DevServerOptions, 'logFile'>>): string[] {
  const args = ['server', 'start-dev', '--db-filename', options.dbFile, '--ip', '127.0.0.1', '--port', String(options.port), '--ui-port', String(options.uiPort), '--namespace', options.namespace, '--log-level', 'error',
    // Every workflow task is a few SQLite commits: WAL without a sync per commit cuts each from ~10 ms to well under one
    // (a power loss may lose the last commits, an application crash loses nothing; https://sqlite.org/wal.html).
    '--sqlite-pragma', 'journal_mode=wal', '--sqlite-pragma', 'synchronous=normal',
    // The activity a workflow task schedules goes back to the worker in the task's answer, not through the queue.
    '--dynamic-config-value', 'system.enableActivityEagerExecution=true'];
  for (const key of allSearchAttributes) {
    args.push('--search-attribute', `${key.name}=${searchAttributeTypeName(key.type)}`);
  }
  return args;
}

/** The type name the `temporal` CLI uses for a search attribute type (`KEYWORD` → `Keyword`). */
export function searchAttributeTypeName(type: string): string {
  const names: Record<string, string> = { KEYWORD: 'Keyword', INT: 'Int', TEXT: 'Text', BOOL: 'Bool', DOUBLE: 'Double', DATETIME: 'Datetime', KEYWORD_LIST: 'KeywordList' };
  const name = names[type];
  if (!name) throw new Error(`No dev-server name for search attribute type ${type}`);
  return name;
}

export interface RunningDevServer {
  address: string;
  uiUrl: string;
  process: ChildProcess;
  /** Stops the server gracefully (SIGTERM, then SIGKILL after `graceMs`, default 10 s). */
  stop(graceMs?: number): Promise<void>;
}

/** The pid file a started dev server leaves next to its database, for `katafleet server stop`. */
export function devServerPidFile(dbFile: string): string {
  return join(dirname(dbFile), 'temporal.pid');
}

/** Starts `temporal server start-dev` and resolves once its frontend accepts connections. */
export async function startDevServer(options: DevServerOptions = {}): Promise<RunningDevServer> {
  const resolved = {
    dbFile: options.dbFile ?? join('.katafleet', 'temporal.db'),
    port: options.port ?? 7233,
    uiPort: options.uiPort ?? 8233,
    namespace: options.namespace ?? 'default',
  };
  mkdirSync(dirname(resolved.dbFile), { recursive: true });
  const logFile = options.logFile ?? join(dirname(resolved.dbFile), 'temporal.log');
  const log = openSync(logFile, 'a');
  const child = spawn(temporalCliPath(), devServerArgs(resolved), { stdio: ['ignore', log, log] });
  const pidFile = devServerPidFile(resolved.dbFile);
  if (child.pid) writeFileSync(pidFile, `${child.pid}\n`);
  const removePidFile = () => {
    try {
      if (readFileSync(pidFile, 'utf8').trim() === String(child.pid)) rmSync(pidFile, { force: true });
    } catch {
      // Already gone (katafleet server stop removed it).
    }
  };
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    removePidFile();
    resolve(code);
  }));
  const address = `127.0.0.1:${resolved.port}`;
  await waitForFrontend(address, exited, logFile);
  return {
    address,
    uiUrl: `http://127.0.0.1:${resolved.uiPort}`,
    process: child,
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function waitForFrontend(address: string, exited: Promise<number | null>, logFile: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  let early: number | null | undefined;
  void exited.then((code) => (early = code));
  while (Date.now() < deadline) {
    if (early !== undefined) {
      throw new Error(`temporal server start-dev exited with code ${early} before it served ${address}; see ${logFile} (is the port in use?)`);
    }
    try {
      const connection = await Connection.connect({ address, connectTimeout: '1s' });
      await connection.healthService.check({});
      await connection.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
  throw new Error(`temporal server start-dev did not serve ${address} within 60 s; see ${logFile}`);
}

/**
 * Stops the dev server whose pid file is next to `dbFile` (one that `katafleet server` or `katafleet up` started and
 * left running): SIGTERM, then SIGKILL after `graceMs`. Returns its pid, or undefined when none runs.
 */
export async function stopDevServerOf(dbFile: string, graceMs = 10_000): Promise<number | undefined> {
  const pidFile = devServerPidFile(dbFile);
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  const commandLine = (() => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      return [];
    }
  })();
  // Only a dev server on this database: the pid may have been reused by another process since.
  if (!Number.isInteger(pid) || pid <= 1 || !commandLine.includes('start-dev') || !commandLine.includes(dbFile)) {
    rmSync(pidFile, { force: true });
    return undefined;
  }
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && alive(pid)) await new Promise((resolve) => setTimeout(resolve, 100));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  while (alive(pid)) await new Promise((resolve) => setTimeout(resolve, 50));
  rmSync(pidFile, { force: true });
  return pid;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
