import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { appendFile } from 'node:fs/promises';
import path from 'node:path';
import fastifySwagger from '@fastify/swagger';
import type { Client } from '@temporalio/client';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { defaultCredentialsFile } from '../playbooks/credentials';
import { attachCredentials, loadNamedInventory, loadNamedPlaybook, maxFileBytes, parseInventory, parsePlaybook, shippedPlaybooksDir } from '../playbooks/load';
import { katafleetVersion } from '../worker/version';
import { createDriftSchedule, deleteDriftSchedule, listDriftSchedules } from './schedule-service';
import { registerNodeRoutes } from './node-routes';
import { controlRollout, getRollout, listRollouts, RolloutServiceError, startRollout } from './rollout-service';
import { AbortBody, CreateScheduleBody, DriftScheduleBody, ErrorBody, PhaseBody, RolloutBody, RolloutIdParams, RolloutPageQuery, RolloutSummaryBody, StartedRolloutBody, StartRolloutBody } from './schemas';

export interface ApiOptions {
  client: Client;
  /** Bearer token every request but `/healthz` must carry; undefined only with `insecureNoAuth`. */
  token?: string;
  insecureNoAuth?: boolean;
  /** Serve `/openapi.json` without the token. @default false */
  publicOpenapi?: boolean;
  /** Folder of the playbooks a request may name. @default the shipped playbooks */
  playbooksDir?: string;
  /** Folder of the inventories a request may name. @default ".katafleet/inventories" */
  inventoriesDir?: string;
  /** Credentials file whose profiles API inventories name. @default `KATAFLEET_CREDENTIALS`, else ".katafleet/credentials.toml" */
  credentialsFile?: string;
  /** Serve HTTPS with this certificate and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /**
   * Host names (without port) the `Host` header may carry besides `127.0.0.1`, `localhost` and `[::1]`, e.g. the
   * address the API listens on; any other answers 421 (DNS rebinding).
   */
  allowedHosts?: string[];
  /** Append one JSON line per state-changing request (and per refused one) to this file (mode 600). */
  auditLog?: string;
  /** Where the details of internal errors go. @default standard error */
  errorLog?: (line: string) => void;
  logger?: boolean;
}

/** Route `config` of katafleet's routes: `public` routes are the only ones answered without the token. */
interface RouteAccess {
  public?: boolean;
}

/**
 * `RolloutTooLarge` and `TemporalLimit` are the request's fault (too many nodes for one rollout, a value over one of
 * Temporal's limits); `TemporalNotReady` is the server's (a search attribute not registered): 503 with the fix.
 */
const statusByType: Record<string, number> = { PlaybookError: 400, RolloutNotFound: 404, RolloutConflict: 409, RolloutRequestRejected: 409, RolloutTooLarge: 400, TemporalLimit: 400, TemporalNotReady: 503, InvalidPageToken: 400, WorkerUnavailable: 503 };

/** Builds the HTTP API (not listening yet): rollouts, their control, health and the OpenAPI document. */
export async function buildApi(options: ApiOptions): Promise<FastifyInstance> {
  if (!options.token && !options.insecureNoAuth) throw new Error('the API needs a bearer token (KATAFLEET_API_TOKEN or --token-file), or --insecure-no-auth on loopback');
  const weak = options.token === undefined ? undefined : tokenProblem(options.token);
  if (weak) throw new Error(weak);
  const allowedHosts = new Set(['127.0.0.1', 'localhost', '[::1]', ...(options.allowedHosts ?? []).map(hostForHeader)]);
  const errorLog = options.errorLog ?? ((line: string) => process.stderr.write(`${line}\n`));
  const app = Fastify({
    logger: options.logger ?? false,
    genReqId: () => randomUUID(),
    ...(options.tls ? { https: { cert: options.tls.cert, key: options.tls.key } } : {}),
    // Explicit rather than Fastify's defaults: 1 MiB, the size cap of a playbook or inventory file.
    bodyLimit: maxFileBytes,
    requestTimeout: 30_000,
    connectionTimeout: 60_000,
  });
  const folders = {
    playbooks: options.playbooksDir ?? shippedPlaybooksDir,
    inventories: options.inventoriesDir ?? path.join('.katafleet', 'inventories'),
    credentials: path.resolve(options.credentialsFile ?? defaultCredentialsFile()),
  };
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(fastifySwagger, {
    openapi: {
      info: { title: 'katafleet API', version: katafleetVersion(), description: 'Start, follow and control Kata Containers rollouts.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });

  // DNS rebinding: a web page whose name now points at 127.0.0.1 still sends its own name as Host.
  app.addHook('onRequest', async (request, reply) => {
    if (!allowedHosts.has(hostWithoutPort(request.headers.host ?? ''))) {
      return reply.code(421).send({ error: 'MisdirectedRequest', message: 'this API does not answer for that Host header: use 127.0.0.1 or localhost, or start it with --allowed-host NAME' });
    }
  });

  // Decided on the route the router matched, never on the raw request target (percent-encoding, absolute-form
  // targets and dot segments all reach a route under another spelling). Default deny: only routes marked public
  // are answered without the token; an unknown route is 401 too, so nothing tells which paths exist.
  app.addHook('onRequest', async (request, reply) => {
    const access = request.routeOptions.config as RouteAccess | undefined;
    const matched = request.routeOptions.url !== undefined;
    if ((matched && access?.public === true) || options.token === undefined) return;
    if (bearerMatches(request.headers.authorization, options.token)) {
      tokenIds.set(request, tokenId(options.token));
    } else {
      return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'Unauthorized', message: 'missing or wrong bearer token: send "Authorization: Bearer <token>"' });
    }
  });

  app.setErrorHandler(async (error: Error & { validation?: unknown; statusCode?: number; problems?: { file: string; path: string; message: string }[] }, request, reply) => {
    if (error.validation) {
      return reply.code(400).send({ error: 'InvalidRequest', message: error.message });
    }
    const type = error instanceof RolloutServiceError ? error.type : error.name;
    const status = statusByType[type] ?? error.statusCode ?? 500;
    if (status >= 500 && type !== 'TemporalNotReady' && type !== 'WorkerUnavailable') {
      // The detail (a Temporal or gRPC message, a path) goes to the log only; the caller gets the id to quote.
      errorLog(JSON.stringify({ time: new Date().toISOString(), level: 'error', request_id: request.id, method: request.method, route: request.routeOptions.url, error: error.name, message: error.message, stack: error.stack }));
      return reply.code(status).send({ error: 'InternalError', message: `internal error; the server log has the details under request id ${request.id}` });
    }
    const problems = error.name === 'PlaybookError' ? error.message.split('\n') : undefined;
    return reply.code(status).send({ error: type, message: error.message, problems });
  });

  if (options.auditLog) {
    const auditLog = options.auditLog;
    // Written before the answer leaves (onSend), so a caller never sees an outcome that is not in the log yet.
    app.addHook('onSend', async (request, reply, payload) => {
      if (!['GET', 'HEAD', 'OPTIONS'].includes(request.method)) {
        await appendFile(auditLog, `${JSON.stringify(auditRecord(request, reply.statusCode))}\n`, { mode: 0o600 });
      }
      return payload;
    });
  }

  const api = app.withTypeProvider<ZodTypeProvider>();
  const client = options.client;

  api.get('/healthz', { config: { public: true } satisfies RouteAccess, schema: { security: [], response: { 200: z.object({ ok: z.literal(true) }) } } }, async () => ({ ok: true as const }));
  api.get('/openapi.json', { config: { public: options.publicOpenapi === true } satisfies RouteAccess, schema: { hide: true } }, async () => app.swagger());

  api.post('/v1/rollouts', { schema: { body: StartRolloutBody, response: { 202: StartedRolloutBody, 400: ErrorBody, 409: ErrorBody, 503: ErrorBody } } }, async (request, reply) => {
    const body = request.body;
    const { playbook, inventory } = await loadFromBody(body, folders);
    const started = await startRollout(client, playbook, inventory, { requestId: body.request_id, overrides: body.options });
    auditSubjects.set(request, { rollout_id: started.rolloutId });
    return reply.code(202).send({ rollout_id: started.rolloutId, workflow_id: started.workflowId, ui_link: started.uiLink, started: started.started });
  });

  api.get('/v1/rollouts', { schema: { response: { 200: z.object({ rollouts: z.array(RolloutSummaryBody) }) } } }, async () => ({ rollouts: await listRollouts(client) }));

  api.get('/v1/rollouts/:id', { schema: { params: RolloutIdParams, querystring: RolloutPageQuery, response: { 200: RolloutBody, 400: ErrorBody, 404: ErrorBody, 503: ErrorBody } } }, async (request) =>
    getRollout(client, request.params.id, { pageToken: request.query.page_token, pageSize: request.query.page_size }),
  );

  for (const action of ['pause', 'resume'] as const) {
    api.post(`/v1/rollouts/:id/${action}`, { schema: { params: RolloutIdParams, response: { 200: PhaseBody, 404: ErrorBody, 409: ErrorBody } } }, async (request) => ({
      rollout_id: request.params.id,
      phase: await controlRollout(client, request.params.id, action),
    }));
  }
  api.post('/v1/rollouts/:id/abort', { schema: { params: RolloutIdParams, body: AbortBody, response: { 200: PhaseBody, 404: ErrorBody, 409: ErrorBody } } }, async (request) => ({
    rollout_id: request.params.id,
    phase: await controlRollout(client, request.params.id, 'abort', request.body),
  }));

  api.post('/v1/schedules', { schema: { body: CreateScheduleBody, response: { 201: z.object({ schedule_id: z.string() }), 400: ErrorBody } } }, async (request, reply) => {
    const body = request.body;
    const { playbook, inventory } = await loadFromBody(body, folders);
    const scheduleId = await createDriftSchedule(client, playbook, inventory, { every: body.every, reportOnly: body.report_only, scheduleId: body.schedule_id });
    auditSubjects.set(request, { schedule_id: scheduleId });
    return reply.code(201).send({ schedule_id: scheduleId });
  });
  api.get('/v1/schedules', { schema: { response: { 200: z.object({ schedules: z.array(DriftScheduleBody) }) } } }, async () => ({ schedules: await listDriftSchedules(client) }));
  api.delete('/v1/schedules/:id', { schema: { params: RolloutIdParams, response: { 204: z.null(), 404: ErrorBody } } }, async (request, reply) => {
    await deleteDriftSchedule(client, request.params.id);
    return reply.code(204).send(null);
  });

  registerNodeRoutes(app, client, (body) => loadInventoryFromBody(body, folders));
  return app;
}

/**
 * The playbook and inventory of a request: by name from the configured folders, or inline TOML. The caller
 * never chooses a path. Invalid ones throw PlaybookError (400).
 */
async function loadFromBody(
  body: { playbook?: string; playbook_toml?: string; inventory?: string; inventory_toml?: string },
  folders: { playbooks: string; inventories: string; credentials: string },
) {
  const playbook = body.playbook_toml ? parsePlaybook(body.playbook_toml, 'playbook_toml') : await loadNamedPlaybook(body.playbook!, folders.playbooks);
  return { playbook, inventory: await loadInventoryFromBody(body, folders) };
}

/** The inventory of a request: by name from the configured folder, or inline TOML naming credential profiles only. */
async function loadInventoryFromBody(body: { inventory?: string; inventory_toml?: string }, folders: { inventories: string; credentials: string }) {
  return body.inventory_toml
    ? attachCredentials(parseInventory(body.inventory_toml, 'inventory_toml', { profilesOnly: true }), folders.credentials)
    : loadNamedInventory(body.inventory!, folders.inventories, folders.credentials);
}

/** The minimum length of an API token. */
export const minTokenLength = 32;

/** Why `token` is too weak to guard the API (it is root on the fleet), or undefined. */
export function tokenProblem(token: string): string | undefined {
  if (token.length < minTokenLength) {
    return `the API token has ${token.length} characters; use at least ${minTokenLength}, e.g. from \`openssl rand -hex 32\``;
  }
  return undefined;
}

/** Who made a request, in the audit log: the first 8 hex digits of the token's SHA-256 (never the token). */
export function tokenId(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 8);
}

const tokenIds = new WeakMap<FastifyRequest, string>();
const auditSubjects = new WeakMap<FastifyRequest, { rollout_id?: string; schedule_id?: string }>();

/** One audit log line: when, who (token id), what (method, route, rollout, schedule or node), request id, outcome. */
function auditRecord(request: FastifyRequest, status: number) {
  const params = (request.params ?? {}) as { id?: string; name?: string };
  const route = request.routeOptions.url;
  const subject = auditSubjects.get(request) ?? (params.id === undefined ? {} : route?.startsWith('/v1/schedules') ? { schedule_id: params.id } : { rollout_id: params.id });
  return {
    time: new Date().toISOString(),
    token_id: tokenIds.get(request) ?? 'none',
    method: request.method,
    route: route ?? null,
    ...subject,
    ...(params.name === undefined ? {} : { node: params.name }),
    request_id: request.id,
    status,
    outcome: status < 300 ? 'ok' : status === 401 || status === 421 ? 'refused' : 'failed',
  };
}

/** `Host` header value without the port, lowercase: `[::1]:8080` → `[::1]`, `Example.org:80` → `example.org`. */
function hostWithoutPort(host: string): string {
  const lower = host.toLowerCase();
  if (lower.startsWith('[')) return lower.slice(0, lower.indexOf(']') + 1);
  return lower.split(':')[0];
}

/** A configured host name as it appears in a Host header: IPv6 addresses in brackets. */
function hostForHeader(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host.toLowerCase()}]` : host.toLowerCase();
}

function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer (.+)$/.exec(header ?? '');
  if (!match) return false;
  const given = Buffer.from(match[1]);
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** Loopback addresses, the only ones the API may listen on without authentication. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
