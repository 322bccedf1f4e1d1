import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi, isLoopback } from '../api/server';
import { connectTemporal, temporalTargetFromEnv } from '../worker/connection';
import { startDevServer, type RunningDevServer } from '../worker/dev-server';
import { createWorker } from '../worker/worker';
import { parseCommandArgs, UsageError, type Command } from './command';

const apiOptions = {
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '8080' },
  'token-file': { type: 'string' },
  'insecure-no-auth': { type: 'boolean' },
  'public-openapi': { type: 'boolean' },
  'playbooks-dir': { type: 'string' },
  'inventories-dir': { type: 'string' },
} as const;

interface ApiFlags {
  host: string;
  port: string;
  'token-file'?: string;
  'insecure-no-auth'?: boolean;
  'public-openapi'?: boolean;
  'playbooks-dir'?: string;
  'inventories-dir'?: string;
}

/** The bearer token: KATAFLEET_API_TOKEN, else the first line of --token-file. */
function readToken(flags: ApiFlags, usage: string): string | undefined {
  if (process.env.KATAFLEET_API_TOKEN) return process.env.KATAFLEET_API_TOKEN.trim();
  if (flags['token-file']) {
    const token = readFileSync(flags['token-file'], 'utf8').split('\n')[0].trim();
    if (!token) throw new UsageError(`${flags['token-file']}: the token file is empty`, usage);
    return token;
  }
  if (!flags['insecure-no-auth']) {
    throw new UsageError('katafleet api: no token configured: set KATAFLEET_API_TOKEN or pass --token-file FILE (or --insecure-no-auth, loopback only)', usage);
  }
  if (!isLoopback(flags.host)) throw new UsageError(`katafleet api: --insecure-no-auth is allowed on loopback only, not on ${flags.host}`, usage);
  return undefined;
}

async function listen(flags: ApiFlags, token: string | undefined): Promise<{ app: FastifyInstance; close(): Promise<void> }> {
  const { client, connection } = await connectTemporal();
  const app = await buildApi({ client, token, insecureNoAuth: token === undefined, publicOpenapi: flags['public-openapi'], playbooksDir: flags['playbooks-dir'], inventoriesDir: flags['inventories-dir'] });
  await app.listen({ host: flags.host, port: Number(flags.port) });
  process.stdout.write(`katafleet API on http://${flags.host}:${flags.port} (OpenAPI: /openapi.json)${token ? '' : ' WITHOUT authentication'}\n`);
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
  usage: `Usage: katafleet api [--host 127.0.0.1] [--port 8080] [--token-file FILE] [--insecure-no-auth] [--public-openapi]

Serves POST/GET /v1/rollouts, GET /v1/rollouts/{id}, POST /v1/rollouts/{id}/pause|resume|abort, the schedules,
GET /healthz and GET /openapi.json. Every request but /healthz needs "Authorization: Bearer <token>" (/openapi.json
too, unless --public-openapi). Without a token the API refuses to start, unless --insecure-no-auth is given and it
listens on loopback.`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, apiOptions, { min: 0, max: 0 });
    const flags = values as ApiFlags;
    const server = await listen(flags, readToken(flags, this.usage));
    await untilInterrupted();
    await server.close();
    return 0;
  },
};

/** A token for local use, kept in .katafleet/api-token so scripts and curl can read it. */
function localToken(file: string): string {
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dirname(file), { recursive: true });
  const token = randomBytes(24).toString('hex');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}

export const upCommand: Command = {
  name: 'up',
  summary: 'run the embedded Temporal, a worker and the API together, for local use',
  usage: `Usage: katafleet up [--host 127.0.0.1] [--port 8080] [--token-file FILE] [--insecure-no-auth]

Starts the embedded dev server (unless TEMPORAL_ADDRESS is set), a worker and the API. Without a configured token
it creates one in .katafleet/api-token (mode 600) and prints where it is. Ctrl-C stops everything.`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, apiOptions, { min: 0, max: 0 });
    const flags = values as ApiFlags;
    const tokenFile = join('.katafleet', 'api-token');
    const token = flags['insecure-no-auth'] || process.env.KATAFLEET_API_TOKEN || flags['token-file'] ? readToken(flags, this.usage) : localToken(tokenFile);
    const target = temporalTargetFromEnv();
    let server: RunningDevServer | undefined;
    if (!target.external) {
      server = await startDevServer();
      process.stdout.write(`Temporal dev server on ${server.address}, Web UI ${server.uiUrl}\n`);
    }
    const { worker, close: closeWorker } = await createWorker({ target });
    const running = worker.run();
    const api = await listen(flags, token);
    if (token && !process.env.KATAFLEET_API_TOKEN && !flags['token-file']) process.stdout.write(`API token in ${tokenFile}\n`);
    await Promise.race([untilInterrupted(), running]);
    await api.close();
    worker.shutdown();
    await running;
    await closeWorker();
    await server?.stop();
    return 0;
  },
};
