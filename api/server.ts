import { timingSafeEqual } from 'node:crypto';
import fastifySwagger from '@fastify/swagger';
import type { Client } from '@temporalio/client';
import Fastify, { type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { loadInventory, loadPlaybook, parseInventory, parsePlaybook } from '../playbooks/load';
import { katafleetVersion } from '../worker/version';
import { createDriftSchedule, deleteDriftSchedule, listDriftSchedules } from './schedule-service';
import { registerNodeRoutes } from './node-routes';
import { controlRollout, getRollout, listRollouts, RolloutServiceError, startRollout } from './rollout-service';
import { AbortBody, CreateScheduleBody, DriftScheduleBody, ErrorBody, PhaseBody, RolloutBody, RolloutIdParams, RolloutSummaryBody, StartedRolloutBody, StartRolloutBody } from './schemas';

export interface ApiOptions {
  client: Client;
  /** Bearer token every /v1 request must carry; undefined only with `insecureNoAuth`. */
  token?: string;
  insecureNoAuth?: boolean;
  logger?: boolean;
}

const statusByType: Record<string, number> = { PlaybookError: 400, RolloutNotFound: 404, RolloutConflict: 409, RolloutRequestRejected: 409 };

/** Builds the HTTP API (not listening yet): rollouts, their control, health and the OpenAPI document. */
export async function buildApi(options: ApiOptions): Promise<FastifyInstance> {
  if (!options.token && !options.insecureNoAuth) throw new Error('the API needs a bearer token (KATAFLEET_API_TOKEN or --token-file), or --insecure-no-auth on loopback');
  const app = Fastify({ logger: options.logger ?? false });
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

  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/v1/') || !options.token) return;
    if (!bearerMatches(request.headers.authorization, options.token)) {
      await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'Unauthorized', message: 'missing or wrong bearer token: send "Authorization: Bearer <token>"' });
    }
  });

  app.setErrorHandler(async (error: Error & { validation?: unknown; statusCode?: number; problems?: { file: string; path: string; message: string }[] }, _request, reply) => {
    if (error.validation) {
      return reply.code(400).send({ error: 'InvalidRequest', message: error.message });
    }
    const type = error instanceof RolloutServiceError ? error.type : error.name;
    const status = statusByType[type] ?? error.statusCode ?? 500;
    const problems = error.name === 'PlaybookError' ? error.message.split('\n') : undefined;
    return reply.code(status).send({ error: status === 500 ? 'InternalError' : type, message: error.message, problems });
  });

  const api = app.withTypeProvider<ZodTypeProvider>();
  const client = options.client;

  api.get('/healthz', { schema: { security: [], response: { 200: z.object({ ok: z.literal(true), version: z.string() }) } } }, async () => ({ ok: true as const, version: katafleetVersion() }));
  api.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  api.post('/v1/rollouts', { schema: { body: StartRolloutBody, response: { 202: StartedRolloutBody, 400: ErrorBody, 409: ErrorBody } } }, async (request, reply) => {
    const body = request.body;
    const { playbook, inventory } = await loadFromBody(body);
    const started = await startRollout(client, playbook, inventory, { requestId: body.request_id, overrides: body.options });
    return reply.code(202).send({ rollout_id: started.rolloutId, workflow_id: started.workflowId, ui_link: started.uiLink, started: started.started });
  });

  api.get('/v1/rollouts', { schema: { response: { 200: z.object({ rollouts: z.array(RolloutSummaryBody) }) } } }, async () => ({ rollouts: await listRollouts(client) }));

  api.get('/v1/rollouts/:id', { schema: { params: RolloutIdParams, response: { 200: RolloutBody, 404: ErrorBody } } }, async (request) => getRollout(client, request.params.id));

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
    const { playbook, inventory } = await loadFromBody(body);
    const scheduleId = await createDriftSchedule(client, playbook, inventory, { every: body.every, reportOnly: body.report_only, scheduleId: body.schedule_id });
    return reply.code(201).send({ schedule_id: scheduleId });
  });
  api.get('/v1/schedules', { schema: { response: { 200: z.object({ schedules: z.array(DriftScheduleBody) }) } } }, async () => ({ schedules: await listDriftSchedules(client) }));
  api.delete('/v1/schedules/:id', { schema: { params: RolloutIdParams, response: { 204: z.null(), 404: ErrorBody } } }, async (request, reply) => {
    await deleteDriftSchedule(client, request.params.id);
    return reply.code(204).send(null);
  });

  registerNodeRoutes(app, client);
  return app;
}

/** The playbook and inventory of a request, from files on this host or inline TOML; invalid ones throw PlaybookError (400). */
async function loadFromBody(body: { playbook?: string; playbook_toml?: string; inventory?: string; inventory_toml?: string }) {
  const playbook = body.playbook_toml ? parsePlaybook(body.playbook_toml, 'playbook_toml') : await loadPlaybook(body.playbook!);
  const inventory = body.inventory_toml ? parseInventory(body.inventory_toml, 'inventory_toml') : await loadInventory(body.inventory!);
  return { playbook, inventory };
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
