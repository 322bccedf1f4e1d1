import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi, isLoopback, tokenProblem } from '../api/server';
import { connectTemporal, taskQueue, temporalTargetFromEnv, type TemporalTarget } from '../worker/connection';
import { installWorkerLogging, parseLogLevel, type WorkerLogLevel } from '../worker/logging';
import { startDevServer, type RunningDevServer } from '../worker/dev-server';
import { createWorker } from '../worker/worker';
import { parseCommandArgs, UsageError, type Command } from './command';
import { onInterrupt } from './signals';
import { workerMemoryLines } from './worker';

const apiOptions = {
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '8080' },
  'token-file': { type: 'string' },
  'insecure-no-auth': { type: 'boolean' },
  'public-openapi': { type: 'boolean' },
  'playbooks-dir': { type: 'string' },
  'inventories-dir': { type: 'string' },
  credentials: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'allowed-host': { type: 'string', multiple: true },
  'audit-log': { type: 'string' },
} as const;

interface ApiFlags {
  host: string;
  port: string;
  'token-file'?: string;
  'insecure-no-auth'?: boolean;
  'public-openapi'?: boolean;
  'playbooks-dir'?: string;
  'inventories-dir'?: string;
  credentials?: string;
  'tls-cert'?: string;
  'tls-key'?: string;
  'allowed-host'?: string[];
  'audit-log'?: string;
}

const optionsUsage = `[--host 127.0.0.1] [--port 8080] [--token-file FILE] [--insecure-no-auth]
       [--tls-cert FILE --tls-key FILE] [--allowed-host NAME]... [--audit-log FILE] [--public-openapi]
       [--playbooks-dir DIR] [--inventories-dir DIR] [--credentials FILE]`;

const optionsHelp = `Every request but /healthz needs "Authorization: Bearer <token>" (/openapi.json too, unless --public-openapi);
the token is root on the fleet: at least 32 characters (openssl rand -hex 32), and a token file must be mode 600
and yours. Requests name playbooks (--playbooks-dir, default the shipped ones) and inventories (--inventories-dir,
default .katafleet/inventories) by name, or send them inline; the SSH login comes from the credential profiles of
--credentials (default KATAFLEET_CREDENTIALS, else .katafleet/credentials.toml). --tls-cert/--tls-key serve HTTPS.
Host headers other than 127.0.0.1, localhost, [::1], the --host address and --allowed-host names get 421.
Each state-changing request is logged as a JSON line to --audit-log (default .katafleet/audit.log).`;

/** The folder of katafleet's local state; created (and kept) mode 700: it holds the token and the history. */
const stateDir = '.katafleet';

function ensureStateDir(): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const stat = statSync(stateDir);
  if ((stat.mode & 0o077) !== 0 && stat.uid === process.getuid?.()) chmodSync(stateDir, 0o700);
}

/** Why a token file must not be trusted (readable by others, or someone else's), or undefined. */
function tokenFileProblem(file: string): string | undefined {
  const stat = statSync(file);
  const uid = process.getuid?.();
  if (uid !== undefined && stat.uid !== uid) return `${file}: the token file is owned by uid ${stat.uid}, not by you (uid ${uid}): use your own token file`;
  if ((stat.mode & 0o077) !== 0) return `${file}: the token file can be read by group or others (mode ${(stat.mode & 0o777).toString(8)}): chmod 600 ${file}`;
  return undefined;
}

/** The first line of a token file, after checking its owner, mode and the token's length. */
function readTokenFile(file: string, usage: string): string {
  if (!existsSync(file)) throw new UsageError(`${file}: no such token file`, usage);
  const problem = tokenFileProblem(file);
  if (problem) throw new UsageError(problem, usage);
  const token = readFileSync(file, 'utf8').split('\n')[0].trim();
  if (!token) throw new UsageError(`${file}: the token file is empty`, usage);
  return checkedToken(token, file, usage);
}

function checkedToken(token: string, source: string, usage: string): string {
  const weak = tokenProblem(token);
  if (weak) throw new UsageError(`${source}: ${weak}`, usage);
  return token;
}

/** The bearer token: KATAFLEET_API_TOKEN, else the first line of --token-file. */
function readToken(flags: ApiFlags, usage: string): string | undefined {
  if (process.env.KATAFLEET_API_TOKEN) return checkedToken(process.env.KATAFLEET_API_TOKEN.trim(), 'KATAFLEET_API_TOKEN', usage);
  if (flags['token-file']) return readTokenFile(flags['token-file'], usage);
  if (!flags['insecure-no-auth']) {
    throw new UsageError('katafleet api: no token configured: set KATAFLEET_API_TOKEN or pass --token-file FILE (or --insecure-no-auth, loopback only)', usage);
  }
  if (!isLoopback(flags.host)) throw new UsageError(`katafleet api: --insecure-no-auth is allowed on loopback only, not on ${flags.host}`, usage);
  return undefined;
}

function readTls(flags: ApiFlags, usage: string): { cert: Buffer; key: Buffer } | undefined {
  if (!flags['tls-cert'] && !flags['tls-key']) return undefined;
  if (!flags['tls-cert'] || !flags['tls-key']) throw new UsageError('katafleet api: give both --tls-cert FILE and --tls-key FILE (PEM)', usage);
  return { cert: readFileSync(flags['tls-cert']), key: readFileSync(flags['tls-key']) };
}

/** The warning printed when the API listens beyond loopback in clear text, or undefined. */
export function clearTextWarning(host: string, tls: boolean): string | undefined {
  if (tls || isLoopback(host)) return undefined;
  return [
    '',
    '!!! WARNING: the katafleet API listens on ' + host + ' WITHOUT TLS.',
    '!!! The bearer token (root on the fleet) and every playbook cross the network in clear text.',
    '!!! Pass --tls-cert FILE --tls-key FILE, or listen on 127.0.0.1 behind a TLS reverse proxy (SECURITY.md).',
    '',
  ].join('\n');
}

async function listen(flags: ApiFlags, token: string | undefined, usage: string, target?: TemporalTarget): Promise<{ app: FastifyInstance; close(): Promise<void> }> {
  const tls = readTls(flags, usage);
  const warning = clearTextWarning(flags.host, tls !== undefined);
  if (warning) process.stderr.write(`${warning}\n`);
  const { client, connection } = await connectTemporal(target);
  const app = await buildApi({
    client,
    token,
    insecureNoAuth: token === undefined,
    publicOpenapi: flags['public-openapi'],
    playbooksDir: flags['playbooks-dir'],
    inventoriesDir: flags['inventories-dir'],
    credentialsFile: flags.credentials,
    tls,
    allowedHosts: [...(['0.0.0.0', '::'].includes(flags.host) ? [] : [flags.host]), ...(flags['allowed-host'] ?? [])],
    auditLog: flags['audit-log'] ?? join(stateDir, 'audit.log'),
  });
  await app.listen({ host: flags.host, port: Number(flags.port) });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : flags.port;
  process.stdout.write(`katafleet API on ${tls ? 'https' : 'http'}://${flags.host}:${port}${token ? '' : ' WITHOUT authentication'}\n`);
  return {
    app,
    async close() {
      await app.close();
      await connection.close();
    },
  };
}

function untilInterrupted(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

export const apiCommand: Command = {
  name: 'api',
  summary: 'serve the HTTP API (bearer token from KATAFLEET_API_TOKEN or --token-file)',
  usage: `Usage: katafleet api ${optionsUsage}

Serves POST/GET /v1/rollouts, GET /v1/rollouts/{id}, POST /v1/rollouts/{id}/pause|resume|abort, the schedules,
GET /healthz and GET /openapi.json. Without a token the API refuses to start, unless --insecure-no-auth is given
and it listens on loopback.
${optionsHelp}`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, apiOptions, { min: 0, max: 0 });
    const flags = values as ApiFlags;
    ensureStateDir();
    const server = await listen(flags, readToken(flags, this.usage), this.usage);
    await untilInterrupted();
    await server.close();
    return 0;
  },
};

/** A token for local use, kept in .katafleet/api-token (mode 600) so scripts and curl can read it. */
function localToken(file: string, usage: string): string {
  if (existsSync(file)) return readTokenFile(file, usage);
  const token = randomBytes(32).toString('hex');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}

export const upCommand: Command = {
  name: 'up',
  summary: 'run the embedded Temporal, a worker and the API together, for local use',
  usage: `Usage: katafleet up ${optionsUsage}
       [--log-level trace|debug|info|warn|error] [--temporal-port N] [--ui-port N]

Starts the embedded dev server (unless TEMPORAL_ADDRESS is set), a worker and the API. Without a configured token
it creates one in .katafleet/api-token (mode 600; .katafleet is mode 700) and prints where it is.
The worker logs JSON lines (time, level, node, step, rollout) to .katafleet/worker.log (--log-level, default info);
its memory settings are those of \`katafleet worker\` (see katafleet worker --help), on stderr when it starts.
Ctrl-C or SIGTERM stops the API, the worker and the dev server this command started, within 10 s (a second
signal stops at once); the history stays in .katafleet/temporal.db for the next start. A dev server started
separately with \`katafleet server\` is not stopped; \`katafleet server stop\` stops it (also one left behind
when \`katafleet up\` was killed with SIGKILL).
  --temporal-port N   frontend port of the embedded dev server (default 7233)
  --ui-port N         its Web UI port (default 8233)
${optionsHelp}`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, { ...apiOptions, 'log-level': { type: 'string' }, 'temporal-port': { type: 'string' }, 'ui-port': { type: 'string' } }, { min: 0, max: 0 });
    const flags = values as ApiFlags;
    const level = logLevelOption(values['log-level'], this.usage);
    const temporalPort = portOption(values['temporal-port'], '--temporal-port', this.usage);
    const uiPort = portOption(values['ui-port'], '--ui-port', this.usage);
    const memory = workerMemoryLines(this.usage);
    const tokenFile = join(stateDir, 'api-token');
    ensureStateDir();
    const token = flags['insecure-no-auth'] || process.env.KATAFLEET_API_TOKEN || flags['token-file'] ? readToken(flags, this.usage) : localToken(tokenFile, this.usage);
    let target = temporalTargetFromEnv();
    const logFile = join(stateDir, 'worker.log');
    installWorkerLogging({ file: logFile, level, sdkHandlesSignals: false });
    process.stderr.write(memory.map((line) => `${line}\n`).join(''));
    let server: RunningDevServer | undefined;
    const interruption = onInterrupt(() => server?.process.kill('SIGKILL'));
    try {
      if (!target.external) {
        server = await startDevServer({ port: temporalPort, uiPort });
        target = { ...target, address: server.address };
        process.stdout.write(`Temporal dev server on ${server.address}, Web UI ${server.uiUrl}\n`);
      }
      const { worker, close: closeWorker } = await createWorker({ target });
      const running = worker.run();
      process.stdout.write(`Worker on "${taskQueue}", log in ${logFile}\n`);
      const api = await listen(flags, token, this.usage, target);
      if (token && !process.env.KATAFLEET_API_TOKEN && !flags['token-file']) process.stdout.write(`API token in ${tokenFile}\n`);
      // A worker that fails on its own still lets the API and the dev server stop in order.
      await Promise.race([interruption.signalled, running]).catch(() => undefined);
      await api.close();
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch((err: Error) => process.stderr.write(`worker: ${err.message}\n`));
      await closeWorker();
    } finally {
      await server?.stop(3_000);
      interruption.dispose();
    }
    return 0;
  },
};

function logLevelOption(value: string | undefined, usage: string): WorkerLogLevel | undefined {
  try {
    return parseLogLevel(value);
  } catch (err) {
    throw new UsageError(`katafleet up: ${(err as Error).message}`, usage);
  }
}

function portOption(value: string | undefined, flag: string, usage: string): number | undefined {
  if (value === undefined) return undefined;
  const port = Number(value);
  if (!/^\d+$/.test(value) || port < 1 || port > 65535) throw new UsageError(`katafleet up: ${flag} must be a port number from 1 to 65535, got "${value}"`, usage);
  return port;
}
