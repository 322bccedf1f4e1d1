import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../api/server';
import { apiInventoryToml, startTestApi, testToken } from './helpers/api';
import { startTestTemporal } from './helpers/temporal';

const token = testToken;
const inventoryToml = apiInventoryToml;

describe('HTTP API', () => {
  let env: TestWorkflowEnvironment;
  let app: FastifyInstance;
  let baseUrl: string;
  const auth = { authorization: `Bearer ${token}` };

  /** A real HTTP request to the listening API (as curl would send it). */
  async function call(options: { method: 'GET' | 'POST' | 'DELETE'; url: string; headers?: Record<string, string>; payload?: unknown }) {
    const response = await fetch(`${baseUrl}${options.url}`, {
      method: options.method,
      headers: { ...options.headers, ...(options.payload === undefined ? {} : { 'content-type': 'application/json' }) },
      body: options.payload === undefined ? undefined : JSON.stringify(options.payload),
    });
    const body = await response.text();
    return { statusCode: response.status, body, json: () => JSON.parse(body) };
  }

  beforeAll(async () => {
    env = await startTestTemporal();
    ({ app, baseUrl } = await startTestApi(env.client));
  });
  afterAll(async () => {
    await app?.close();
    await env?.teardown();
  });

  it('refuses to build without a token unless told to run without authentication', async () => {
    await expect(buildApi({ client: env.client })).rejects.toThrow('the API needs a bearer token');
  });

  it('answers /healthz without a token', async () => {
    const response = await call({ method: 'GET', url: '/healthz' });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({ ok: true });
  });

  it('rejects /v1 requests without the right bearer token with 401', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: token }] as Record<string, string>[]) {
      const response = await call({ method: 'GET', url: '/v1/rollouts', headers });
      expect(response.statusCode).toBe(401);
      expect(response.json()).toMatchObject({ error: 'Unauthorized' });
    }
  });

  it('serves an OpenAPI document that validates and lists every route', async () => {
    const response = await call({ method: 'GET', url: '/openapi.json', headers: auth });
    expect(response.statusCode).toBe(200);
    const document = response.json();
    const validation = spawnSync(process.execPath, [join(__dirname, 'helpers', 'validate-openapi.mjs')], { input: response.body, encoding: 'utf8' });
    const result = JSON.parse(validation.stdout) as { valid: boolean; errors: unknown[] };
    expect(result.errors).toEqual([]);
    expect(result.valid).toBe(true);
    expect(Object.keys(document.paths)).toEqual(
      expect.arrayContaining(['/v1/rollouts', '/v1/rollouts/{id}', '/v1/rollouts/{id}/pause', '/v1/rollouts/{id}/resume', '/v1/rollouts/{id}/abort', '/v1/schedules', '/v1/schedules/{id}', '/healthz']),
    );
  });

  it('answers an invalid playbook with 400 and the same messages as the CLI', async () => {
    const response = await call({
      method: 'POST',
      url: '/v1/rollouts',
      headers: auth,
      payload: { playbook_toml: '[playbook]\nname = "x"\n\n[[steps]]\nid = "a"\nkind = "pakage-install"\n', inventory_toml: inventoryToml },
    });
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ error: 'PlaybookError' });
    expect(response.json().problems).toContain(
      'playbook_toml: steps[0].kind: expected one of prereq-check | package-install | package-repo | release-tarball | containerd-patch | service-restart | readiness-gate | node-label | runtime-class | verification-pod | rollback, got "pakage-install" (did you mean "package-install"?)',
    );
  });

  it('answers a body with neither playbook nor playbook_toml with 400', async () => {
    const response = await call({ method: 'POST', url: '/v1/rollouts', headers: auth, payload: { inventory_toml: inventoryToml } });
    expect(response.statusCode).toBe(400);
    expect(response.json().message).toContain('give exactly one of playbook and playbook_toml');
  });

  it('answers unknown rollout ids with 404', async () => {
    for (const [method, url] of [['GET', '/v1/rollouts/no-such-rollout'], ['POST', '/v1/rollouts/no-such-rollout/pause']] as const) {
      const response = await call({ method, url, headers: auth });
      expect(response.statusCode).toBe(404);
      expect(response.json()).toMatchObject({ error: 'RolloutNotFound' });
    }
  });

  it('starts one rollout for the same request id twice, and refuses another rollout on the same nodes with 409', async () => {
    const payload = { playbook: 'kata', inventory_toml: inventoryToml, request_id: 'same-request-1' };
    const first = await call({ method: 'POST', url: '/v1/rollouts', headers: auth, payload });
    expect(first.statusCode).toBe(202);
    expect(first.json()).toMatchObject({ rollout_id: 'same-request-1', workflow_id: 'katafleet-rollout-same-request-1', started: true });
    expect(first.json().ui_link).toContain('/workflows/katafleet-rollout-same-request-1');
    const second = await call({ method: 'POST', url: '/v1/rollouts', headers: auth, payload });
    expect(second.statusCode).toBe(202);
    expect(second.json()).toMatchObject({ rollout_id: 'same-request-1', started: false });

    const executions = [];
    for await (const execution of env.client.workflow.list({ query: `WorkflowId = 'katafleet-rollout-same-request-1'` })) executions.push(execution);
    expect(executions).toHaveLength(1);

    const other = await call({ method: 'POST', url: '/v1/rollouts', headers: auth, payload: { ...payload, request_id: 'other-request' } });
    expect(other.statusCode).toBe(409);
    expect(other.json()).toMatchObject({ error: 'RolloutConflict' });
    expect(other.json().message).toContain('rollout same-request-1 is still running on api-node-1, api-node-2');

    const list = await call({ method: 'GET', url: '/v1/rollouts', headers: auth });
    expect(list.json().rollouts.map((rollout: { rolloutId: string }) => rollout.rolloutId)).toContain('same-request-1');
    await env.client.workflow.getHandle('katafleet-rollout-same-request-1').terminate('test done');
  });
});
