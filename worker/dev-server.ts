import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync } from 'node:fs';
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
  /** Stops the server gracefully (SIGTERM, then SIGKILL after 10 s). */
  stop(): Promise<void>;
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
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const address = `127.0.0.1:${resolved.port}`;
  await waitForFrontend(address, exited, logFile);
  return {
    address,
    uiUrl: `http://127.0.0.1:${resolved.uiPort}`,
    process: child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
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
