// `katafleet cluster up|down|status`: a local Temporal cluster for the scale-out path. The Temporal server
// built from the Go module proxy (scripts/setup/temporal-server.js) runs on a private PostgreSQL instance
// (Debian's postgresql: initdb into the cluster directory, loopback only, no system service), with its schema
// applied by Temporal's own temporal-sql-tool. docs/cluster.md says how it is laid out and how to size workers.
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { temporal } from '@temporalio/proto';
import { cacheDir } from '../worker/temporal-cli';
import { allSearchAttributes } from '../workflows/search-attributes';
import { parseCommandArgs, UsageError, type Command } from './command';
import { exitFailure } from './report-error';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const pinned = require('../scripts/setup/temporal-server.json') as { server: string };

/** The Temporal server version `katafleet cluster` runs (the one scripts/setup/temporal-server.js builds). */
export const temporalServerVersion = pinned.server;

/** Where the cluster keeps its state, unless --dir says otherwise. */
export const defaultClusterDir = join('.katafleet', 'cluster');

/** What `cluster up` recorded in `<dir>/cluster.json`. */
export interface ClusterState {
  version: string;
  address: string;
  namespace: string;
  frontendPort: number;
  pgPort: number;
  serverPid: number;
  /** The user PostgreSQL runs as (`postgres` when katafleet runs as root, else the caller). */
  pgUser: string;
}

/** The cluster could not be started or stopped; the message names the file or command and the fix. */
export class ClusterError extends Error {
  override readonly name = 'ClusterError';
}

/** Paths of the built Temporal server, its SQL tool and the PostgreSQL schema files. */
export function temporalServerFiles(cache = cacheDir()) {
  const root = join(cache, 'temporal-server', temporalServerVersion);
  return {
    server: join(root, 'bin', 'temporal-server'),
    sqlTool: join(root, 'bin', 'temporal-sql-tool'),
    schema: join(root, 'schema', 'postgresql', 'v12'),
  };
}

/** The newest PostgreSQL server installed from Debian's packages (`/usr/lib/postgresql/<major>/bin`). */
export function postgresBinDir(base = '/usr/lib/postgresql'): string {
  const majors = existsSync(base) ? readdirSync(base).filter((name) => /^\d+$/.test(name) && existsSync(join(base, name, 'bin', 'initdb'))) : [];
  if (majors.length === 0) {
    throw new ClusterError(`No PostgreSQL server in ${base}/*/bin: install Debian's postgresql package (\`node scripts/setup.js\` does, or \`apt-get install postgresql\`)`);
  }
  return join(base, String(Math.max(...majors.map(Number))), 'bin');
}

/** The server's static configuration (Temporal's config/development-postgres12.yaml, trimmed to one local cluster). */
export function serverConfigYaml(options: { pgPort: number; password: string; ports: ServicePorts; numHistoryShards: number; logLevel: string }): string {
  const { ports } = options;
  const store = (database: string, maxConns: number) => [
    `      sql:`,
    `        pluginName: "postgres12"`,
    `        databaseName: "${database}"`,
    `        connectAddr: "127.0.0.1:${options.pgPort}"`,
    `        connectProtocol: "tcp"`,
    `        user: "temporal"`,
    `        password: "${options.password}"`,
    `        maxConns: ${maxConns}`,
    `        maxIdleConns: ${maxConns}`,
    `        maxConnLifetime: "1h"`,
  ];
  const service = (name: keyof ServicePorts, extra: string[] = []) => [
    `  ${name}:`,
    `    rpc:`,
    `      grpcPort: ${ports[name].grpc}`,
    `      membershipPort: ${ports[name].membership}`,
    `      bindOnLocalHost: true`,
    ...extra,
  ];
  return [
    '# Written by `katafleet cluster up`: one Temporal cluster, every service in one process, PostgreSQL persistence.',
    'log:',
    '  stdout: true',
    `  level: ${options.logLevel}`,
    'persistence:',
    '  defaultStore: postgres-default',
    '  visibilityStore: postgres-visibility',
    `  numHistoryShards: ${options.numHistoryShards}`,
    '  datastores:',
    '    postgres-default:',
    ...store('temporal', 20),
    '    postgres-visibility:',
    ...store('temporal_visibility', 4),
    'global:',
    '  membership:',
    '    maxJoinDuration: 30s',
    '    broadcastAddress: "127.0.0.1"',
    'services:',
    ...service('frontend', [`      httpPort: ${ports.frontend.http}`]),
    ...service('matching'),
    ...service('history'),
    ...service('worker'),
    'clusterMetadata:',
    '  enableGlobalNamespace: false',
    '  failoverVersionIncrement: 10',
    '  masterClusterName: "active"',
    '  currentClusterName: "active"',
    '  clusterInformation:',
    '    active:',
    '      enabled: true',
    '      initialFailoverVersion: 1',
    '      rpcName: "frontend"',
    `      rpcAddress: "127.0.0.1:${ports.frontend.grpc}"`,
    'dcRedirectionPolicy:',
    '  policy: "noop"',
    '',
  ].join('\n');
}

interface ServicePorts {
  frontend: { grpc: number; membership: number; http: number };
  matching: { grpc: number; membership: number };
  history: { grpc: number; membership: number };
  worker: { grpc: number; membership: number };
}

const usage = `Usage: katafleet cluster up [--dir DIR] [--port N] [--pg-port N] [--shards N]
       katafleet cluster down [--dir DIR] [--purge]
       katafleet cluster status [--dir DIR]

A local Temporal cluster for fleets beyond one machine's dev server: the Temporal server ${temporalServerVersion}
(built by \`node scripts/setup.js\`) with PostgreSQL persistence, on loopback ports, no system service.

  up        start a private PostgreSQL (initdb into DIR/pg on first use), create the temporal and
            temporal_visibility databases with temporal-sql-tool, start the server, register the default
            namespace and katafleet's search attributes; prints TEMPORAL_ADDRESS=... for workers and the CLI
  down      stop the server and PostgreSQL; leaves no process (--purge also deletes DIR)
  status    say what runs (exit 0 when the cluster is up, 1 when not)

  --dir DIR       state directory (default ${defaultClusterDir})
  --port N        the server's frontend port on 127.0.0.1, at most 32767 (default 7333)
  --pg-port N     PostgreSQL's port on 127.0.0.1 (default 5433)
  --shards N      numHistoryShards, fixed when the databases are created (default 4)

docs/cluster.md: worker sizing, pointing katafleet at a production cluster, limits.`;

export const clusterCommand: Command = {
  name: 'cluster',
  summary: 'run a local Temporal cluster (Temporal server + PostgreSQL) under .katafleet/cluster',
  usage,
  async run(args) {
    const { values, positionals } = parseCommandArgs(this, args, {
      dir: { type: 'string' },
      port: { type: 'string' },
      'pg-port': { type: 'string' },
      shards: { type: 'string' },
      purge: { type: 'boolean' },
    }, { min: 1, max: 1 });
    const action = positionals[0];
    const dir = resolve(values.dir ?? defaultClusterDir);
    const only = (flags: string[]) => {
      const extra = Object.keys(values).filter((key) => key !== 'dir' && !flags.includes(key));
      if (extra.length > 0) throw new UsageError(`katafleet cluster ${action}: --${extra[0]} applies to ${extra[0] === 'purge' ? 'down' : 'up'} only`, usage);
    };
    switch (action) {
      case 'up': {
        only(['port', 'pg-port', 'shards']);
        const port = parsePort(values.port, '--port', 7333, maxServerPort);
        const pgPort = parsePort(values['pg-port'], '--pg-port', 5433, 65535);
        if (port === pgPort) throw new UsageError(`katafleet cluster up: --port and --pg-port are both ${port}; give them different ports`, usage);
        const shards = parseShards(values.shards);
        const state = await clusterUp({ dir, port, pgPort, shards, log: (line) => process.stderr.write(`${line}\n`) });
        process.stdout.write(`TEMPORAL_ADDRESS=${state.address}\nTEMPORAL_NAMESPACE=${state.namespace}\n`);
        return 0;
      }
      case 'down': {
        only(['purge']);
        const stopped = await clusterDown(dir, { purge: values.purge ?? false });
        process.stdout.write(`${stopped.length > 0 ? `stopped ${stopped.join(' and ')}` : 'nothing was running'}${values.purge ? `; removed ${dir}` : ''}\n`);
        return 0;
      }
      case 'status': {
        only([]);
        const status = await clusterStatus(dir);
        process.stdout.write(`${status.lines.join('\n')}\n`);
        return status.up ? 0 : exitFailure;
      }
      default:
        throw new UsageError(`katafleet cluster: unknown action "${action}"; use up, down or status`, usage);
    }
  },
};

function parsePort(value: string | undefined, flag: string, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  const port = Number(value);
  if (!/^\d+$/.test(value) || port < 1024 || port > max) {
    const why = max === maxServerPort ? ' (Temporal stores its ports in a SMALLINT column)' : '';
    throw new UsageError(`katafleet cluster up: ${flag} "${value}" is not a port from 1024 to ${max}${why}`, usage);
  }
  return port;
}

function parseShards(value: string | undefined): number {
  if (value === undefined) return 4;
  const shards = Number(value);
  if (!/^\d+$/.test(value) || shards < 1 || shards > 16384) {
    throw new UsageError(`katafleet cluster up: --shards "${value}" is not a whole number from 1 to 16384`, usage);
  }
  return shards;
}

const stateFile = (dir: string) => join(dir, 'cluster.json');

function readState(dir: string): ClusterState | undefined {
  const file = stateFile(dir);
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as ClusterState;
  } catch (err) {
    throw new ClusterError(`${file} is not valid JSON (${(err as Error).message}): delete it after checking that no temporal-server from ${dir} runs`);
  }
}

/** Whether `pid` is a running temporal-server started with this directory's config. */
function serverRunning(dir: string, pid: number): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return cmdline.some((arg) => arg.endsWith('temporal-server')) && cmdline.includes(join(dir, 'temporal.yaml'));
  } catch {
    return false;
  }
}

const asRoot = () => process.getuid?.() === 0;

/** Runs a PostgreSQL program as the user PostgreSQL runs as (it refuses to run as root). */
function pgRun(dir: string, program: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  const binary = join(postgresBinDir(), program);
  const [command, argv] = asRoot() ? ['runuser', ['-u', 'postgres', '--', binary, ...args]] : [binary, args];
  const result = spawnSync(command, argv, { cwd: dir, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 180_000 });
  if (result.error) throw new ClusterError(`${program} ${args.join(' ')}: ${result.error.message}`);
  return result;
}

function pgRunOk(dir: string, program: string, args: string[]): void {
  const result = pgRun(dir, program, args);
  if (result.status !== 0) throw new ClusterError(`${program} ${args.join(' ')} exited with ${result.status}: ${(result.stderr || result.stdout).trim()}`);
}

function pgRunning(dir: string): boolean {
  return existsSync(join(dir, 'pg', 'PG_VERSION')) && pgRun(dir, 'pg_ctl', ['status', '-D', join(dir, 'pg')]).status === 0;
}

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolvePort) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => { socket.destroy(); resolvePort(true); });
    socket.once('error', () => resolvePort(false));
  });
}

/** Makes `dir` ours and reachable by the postgres user when we run as root (it must enter the directories above pg/). */
function prepareDir(dir: string): void {
  mkdirSync(join(dir, 'pg'), { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o711);
  if (!asRoot()) return;
  const { uid, gid } = postgresIds();
  chownSync(join(dir, 'pg'), uid, gid);
  chmodSync(join(dir, 'pg'), 0o700);
  const probe = spawnSync('runuser', ['-u', 'postgres', '--', 'test', '-w', join(dir, 'pg')]);
  if (probe.status !== 0) {
    throw new ClusterError(`The postgres user cannot enter ${dir}: PostgreSQL refuses to run as root and runs as postgres, which needs search (x) permission on every directory above ${join(dir, 'pg')}. Fix: chmod o+x on those directories, or pass --dir under one it can enter`);
  }
}

function postgresIds(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((entry) => entry.startsWith('postgres:'));
  if (!line) throw new ClusterError('There is no postgres user in /etc/passwd: install Debian\'s postgresql package (it creates the user); PostgreSQL refuses to run as root');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** initdb on first use: superuser `temporal` with a random password (scram-sha-256), kept in DIR/pg-password (0600). */
function initPostgres(dir: string, log: (line: string) => void): string {
  const passwordFile = join(dir, 'pg-password');
  if (existsSync(join(dir, 'pg', 'PG_VERSION'))) {
    if (!existsSync(passwordFile)) throw new ClusterError(`${join(dir, 'pg')} exists but ${passwordFile} does not: run \`katafleet cluster down --dir ${dir} --purge\` and up again`);
    return readFileSync(passwordFile, 'utf8').trim();
  }
  const password = randomBytes(18).toString('hex');
  writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
  // initdb reads the password from a file that the postgres user can read; it is deleted right after.
  const initPassword = join(dir, '.initdb-password');
  writeFileSync(initPassword, `${password}\n`, { mode: 0o600 });
  if (asRoot()) chownSync(initPassword, postgresIds().uid, postgresIds().gid);
  log(`initdb ${join(dir, 'pg')} (PostgreSQL from ${postgresBinDir()})`);
  try {
    pgRunOk(dir, 'initdb', ['-D', join(dir, 'pg'), '-U', 'temporal', `--pwfile=${initPassword}`, '--auth=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-instructions']);
  } finally {
    rmSync(initPassword, { force: true });
  }
  return password;
}

async function startPostgres(dir: string, pgPort: number, log: (line: string) => void): Promise<void> {
  if (pgRunning(dir)) return;
  if (await portInUse(pgPort)) throw new ClusterError(`127.0.0.1:${pgPort} is already in use: pass --pg-port with a free port`);
  log(`starting PostgreSQL on 127.0.0.1:${pgPort}`);
  const options = `-c listen_addresses=127.0.0.1 -c port=${pgPort} -c unix_socket_directories= -c max_connections=60 -c fsync=on`;
  const logFile = join(dir, 'postgres.log');
  writeFileSync(logFile, '', { flag: 'a', mode: 0o600 });
  if (asRoot()) chownSync(logFile, postgresIds().uid, postgresIds().gid);
  const result = pgRun(dir, 'pg_ctl', ['start', '-D', join(dir, 'pg'), '-l', logFile, '-o', options, '-w', '-t', '120']);
  if (result.status !== 0) {
    throw new ClusterError(`PostgreSQL did not start (pg_ctl exited ${result.status}): ${(result.stderr || result.stdout).trim()}; the end of ${logFile}:\n${tail(logFile)}`);
  }
}

function sqlTool(files: ReturnType<typeof temporalServerFiles>, pgPort: number, password: string, database: string, args: string[]): void {
  const argv = ['--plugin', 'postgres12', '--ep', '127.0.0.1', '-p', String(pgPort), '-u', 'temporal', '--db', database, ...args];
  const result = spawnSync(files.sqlTool, argv, { encoding: 'utf8', env: { ...process.env, SQL_PASSWORD: password }, timeout: 180_000 });
  if (result.error || result.status !== 0) {
    throw new ClusterError(`temporal-sql-tool ${argv.join(' ')} failed: ${result.error?.message ?? (result.stderr || result.stdout).trim()}`);
  }
}

/** The two databases and their schema, as Temporal's docs do it: create-database, setup-schema -v 0.0, update-schema -d versioned/. */
function setupSchema(dir: string, files: ReturnType<typeof temporalServerFiles>, pgPort: number, password: string, shards: number, log: (line: string) => void): number {
  const marker = join(dir, 'schema.json');
  if (existsSync(marker)) return (JSON.parse(readFileSync(marker, 'utf8')) as { numHistoryShards: number }).numHistoryShards;
  for (const [database, folder] of [['temporal', 'temporal'], ['temporal_visibility', 'visibility']] as const) {
    log(`temporal-sql-tool: database ${database}, schema ${join(files.schema, folder, 'versioned')}`);
    sqlTool(files, pgPort, password, database, ['create-database']);
    sqlTool(files, pgPort, password, database, ['setup-schema', '-v', '0.0']);
    sqlTool(files, pgPort, password, database, ['update-schema', '-d', join(files.schema, folder, 'versioned')]);
  }
  writeFileSync(marker, JSON.stringify({ version: temporalServerVersion, numHistoryShards: shards }) + '\n');
  return shards;
}

/**
 * Temporal keeps each service's ports in cluster_membership.rpc_port, a SMALLINT (schema/postgresql/v12/temporal/
 * schema.sql): every port of the server must be below 32768, so the kernel's ephemeral ports will not do.
 */
export const maxServerPort = 32767;

/** A port on 127.0.0.1 that is free now, from 20000 to 32767 (below the ephemeral range), not in `taken`. */
export async function freeServerPort(taken: Set<number> = new Set()): Promise<number> {
  for (let tries = 0; tries < 200; tries += 1) {
    const port = 20000 + randomInt(maxServerPort - 20000 + 1);
    if (!taken.has(port) && (await portFree(port))) return port;
  }
  throw new ClusterError('found no free port on 127.0.0.1 from 20000 to 32767 in 200 tries');
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolvePort) => {
    const server = createServer();
    server.once('error', () => resolvePort(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolvePort(true)));
  });
}

async function servicePorts(frontend: number, pgPort: number): Promise<ServicePorts> {
  const ports = new Set<number>([frontend, pgPort]);
  const next = async () => {
    const port = await freeServerPort(ports);
    ports.add(port);
    return port;
  };
  return {
    frontend: { grpc: frontend, membership: await next(), http: await next() },
    matching: { grpc: await next(), membership: await next() },
    history: { grpc: await next(), membership: await next() },
    worker: { grpc: await next(), membership: await next() },
  };
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const { IndexedValueType } = temporal.api.enums.v1;
const indexedType: Record<string, temporal.api.enums.v1.IndexedValueType> = {
  KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  INT: IndexedValueType.INDEXED_VALUE_TYPE_INT,
  TEXT: IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
  BOOL: IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
  DOUBLE: IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
  DATETIME: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
  KEYWORD_LIST: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
};

/** A list query that names every katafleet search attribute: the frontend refuses it until all are registered and visible. */
export function allAttributesQuery(): string {
  return allSearchAttributes.map((key) => (key.type === 'INT' ? `${key.name} = 0` : `${key.name} = 'probe'`)).join(' AND ');
}

/** Registers the namespace and katafleet's search attributes, and waits until a query over all of them is accepted. */
async function registerNamespace(address: string, namespace: string, log: (line: string) => void, deadline: number): Promise<void> {
  const connection = await Connection.connect({ address, connectTimeout: '5s' });
  try {
    let lastError = '';
    let registered = false;
    let attributes = false;
    while (Date.now() < deadline) {
      try {
        if (!registered) {
          try {
            await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs('3 days') });
            log(`registered namespace ${namespace}`);
          } catch (err) {
            if (!/already exists|AlreadyExists/i.test((err as Error).message)) throw err;
          }
          registered = true;
        }
        if (!attributes) {
          const existing = await connection.operatorService.listSearchAttributes({ namespace });
          const missing = allSearchAttributes.filter((key) => !existing.customAttributes?.[key.name]);
          if (missing.length > 0) {
            await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: Object.fromEntries(missing.map((key) => [key.name, indexedType[key.type]])) });
            log(`registered search attributes ${missing.map((key) => key.name).join(', ')}`);
          }
          attributes = true;
        }
        await connection.workflowService.listWorkflowExecutions({ namespace, pageSize: 1, query: allAttributesQuery() });
        return;
      } catch (err) {
        lastError = (err as Error).message;
        await sleep(500);
      }
    }
    throw new ClusterError(`namespace ${namespace} with katafleet's search attributes was not usable on ${address} in time: ${lastError}`);
  } finally {
    await connection.close();
  }
}

async function waitForFrontend(address: string, pid: number, dir: string, deadline: number): Promise<void> {
  let lastError = '';
  while (Date.now() < deadline) {
    if (!serverRunning(dir, pid)) throw new ClusterError(`temporal-server exited before it served ${address}; the end of ${join(dir, 'temporal.log')}:\n${tail(join(dir, 'temporal.log'))}`);
    try {
      const connection = await Connection.connect({ address, connectTimeout: '2s' });
      try {
        await connection.healthService.check({});
        return;
      } finally {
        await connection.close();
      }
    } catch (err) {
      lastError = (err as Error).message;
      await sleep(500);
    }
  }
  throw new ClusterError(`temporal-server did not serve ${address} in time (${lastError}); see ${join(dir, 'temporal.log')}`);
}

/**
 * Starts (or finds running) the local cluster in `dir`: PostgreSQL, the schema, the server, the namespace and
 * katafleet's search attributes. On a failure it stops what it started.
 */
export async function clusterUp(options: { dir: string; port: number; pgPort: number; shards: number; namespace?: string; log?: (line: string) => void }): Promise<ClusterState> {
  const { dir, port } = options;
  const namespace = options.namespace ?? 'default';
  const log = options.log ?? (() => undefined);
  const files = temporalServerFiles();
  for (const [what, path] of [['temporal-server', files.server], ['temporal-sql-tool', files.sqlTool], ['the PostgreSQL schema', files.schema]] as const) {
    if (!existsSync(path)) throw new ClusterError(`${what} is not installed at ${path}: run \`node scripts/setup.js\` (it builds Temporal server ${temporalServerVersion} from the Go module proxy once, then caches it)`);
  }
  const running = readState(dir);
  if (running && serverRunning(dir, running.serverPid) && pgRunning(dir)) {
    log(`the cluster in ${dir} is already up`);
    return running;
  }
  postgresBinDir();
  if (await portInUse(port)) throw new ClusterError(`127.0.0.1:${port} is already in use: pass --port with a free port (is another Temporal server running there?)`);

  const startedPg = !pgRunning(dir);
  let serverPid: number | undefined;
  const deadline = Date.now() + 180_000;
  try {
    prepareDir(dir);
    const password = initPostgres(dir, log);
    const pgPort = startedPg ? options.pgPort : (running?.pgPort ?? options.pgPort);
    await startPostgres(dir, pgPort, log);
    const shards = setupSchema(dir, files, pgPort, password, options.shards, log);

    const config = join(dir, 'temporal.yaml');
    writeFileSync(config, serverConfigYaml({ pgPort, password, ports: await servicePorts(port, pgPort), numHistoryShards: shards, logLevel: 'warn' }), { mode: 0o600 });
    const logFile = join(dir, 'temporal.log');
    const out = openSync(logFile, 'a');
    const child = spawn(files.server, ['--config-file', config, '--allow-no-auth', 'start'], { cwd: dir, detached: true, stdio: ['ignore', out, out] });
    closeSync(out);
    child.unref();
    if (!child.pid) throw new ClusterError(`temporal-server did not start: see ${logFile}`);
    serverPid = child.pid;
    const address = `127.0.0.1:${port}`;
    log(`temporal-server ${temporalServerVersion} (pid ${serverPid}) starting on ${address}, log ${logFile}`);
    await waitForFrontend(address, serverPid, dir, deadline);
    await registerNamespace(address, namespace, log, deadline);
    const state: ClusterState = { version: temporalServerVersion, address, namespace, frontendPort: port, pgPort, serverPid, pgUser: asRoot() ? 'postgres' : String(process.getuid?.()) };
    writeFileSync(stateFile(dir), JSON.stringify(state, null, 2) + '\n');
    return state;
  } catch (err) {
    if (serverPid !== undefined) await stopServer(dir, serverPid);
    if (startedPg && existsSync(join(dir, 'pg', 'postmaster.pid'))) pgRun(dir, 'pg_ctl', ['stop', '-D', join(dir, 'pg'), '-m', 'fast', '-w']);
    throw err;
  }
}

/** Whether a process with this pid exists and is not a zombie waiting for its parent. */
function processExists(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return false;
  }
}

async function stopServer(dir: string, pid: number): Promise<boolean> {
  if (!serverRunning(dir, pid)) return false;
  process.kill(pid, 'SIGTERM');
  const until = Date.now() + 20_000;
  while (serverRunning(dir, pid) && Date.now() < until) await sleep(200);
  if (serverRunning(dir, pid)) process.kill(pid, 'SIGKILL');
  while (serverRunning(dir, pid)) await sleep(100);
  return true;
}

/** Stops the server and PostgreSQL of the cluster in `dir`; returns what it stopped. `purge` deletes `dir` too. */
export async function clusterDown(dir: string, options: { purge?: boolean } = {}): Promise<string[]> {
  const stopped: string[] = [];
  const state = readState(dir);
  if (state && (await stopServer(dir, state.serverPid))) stopped.push(`temporal-server (pid ${state.serverPid})`);
  const pidFile = join(dir, 'pg', 'postmaster.pid');
  if (existsSync(pidFile)) {
    const postmaster = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    const result = pgRun(dir, 'pg_ctl', ['stop', '-D', join(dir, 'pg'), '-m', 'fast', '-w', '-t', '60']);
    if (result.status !== 0) throw new ClusterError(`pg_ctl stop -D ${join(dir, 'pg')} failed: ${(result.stderr || result.stdout).trim()}`);
    // pg_ctl returns once postmaster.pid is gone, a moment before the postmaster itself has exited.
    const until = Date.now() + 30_000;
    while (postmaster > 0 && processExists(postmaster) && Date.now() < until) await sleep(100);
    stopped.push('PostgreSQL');
  }
  if (options.purge) rmSync(dir, { recursive: true, force: true });
  return stopped;
}

/** What runs of the cluster in `dir`, as lines for a person. */
export async function clusterStatus(dir: string): Promise<{ up: boolean; lines: string[] }> {
  const state = readState(dir);
  const server = state !== undefined && serverRunning(dir, state.serverPid);
  const pg = pgRunning(dir);
  if (!state && !pg) return { up: false, lines: [`no cluster in ${dir} (katafleet cluster up --dir ${dir} starts one)`] };
  return {
    up: server && pg,
    lines: [
      `temporal-server ${state?.version ?? temporalServerVersion}: ${server ? `running (pid ${state!.serverPid}) on ${state!.address}` : 'stopped'}`,
      `PostgreSQL: ${pg ? `running on 127.0.0.1:${state?.pgPort ?? '?'}` : 'stopped'} (data ${join(dir, 'pg')})`,
      ...(server && pg ? [`TEMPORAL_ADDRESS=${state!.address}`, `TEMPORAL_NAMESPACE=${state!.namespace}`] : []),
    ],
  };
}
