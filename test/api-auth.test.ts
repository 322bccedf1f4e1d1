// The bearer token is checked on the route the router matched, not on the raw request target: every spelling
// of a /v1 path that the router may accept (percent-encoding, dot segments, absolute-form, case, `;`, ...)
// is sent over a raw TCP socket (fetch and inject() would normalise it first) and none reaches a handler.
import { connect } from 'node:net';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../api/server';
import { apiInventoryToml, startTestApi, testToken } from './helpers/api';
import { startTestTemporal } from './helpers/temporal';

interface RawResponse {
  status: number;
  head: string;
  body: string;
}

/** Sends `request` as written (no normalisation at all) and reads the whole answer. */
function sendRaw(port: number, request: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => socket.write(request));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const [head, ...rest] = text.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body: rest.join('\r\n\r\n') });
    });
  });
}

function rawRequest(method: string, target: string, options: { body?: string; authorization?: string } = {}): string {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
  if (options.authorization) lines.push(`Authorization: ${options.authorization}`);
  if (options.body !== undefined) lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(options.body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${options.body ?? ''}`;
}

/** `/v1/rollouts` with the character at `index` percent-encoded (upper and lower case hex). */
function encodedAt(path: string, index: number, lower = false): string {
  const hex = path.charCodeAt(index).toString(16).padStart(2, '0');
  return `${path.slice(0, index)}%${lower ? hex : hex.toUpperCase()}${path.slice(index + 1)}`;
}

const rolloutsPath = '/v1/rollouts';
/** Every spelling tried; each is sent as GET, HEAD, OPTIONS and as a POST that would start a rollout. */
const spellings = [
  rolloutsPath,
  ...[...rolloutsPath].map((_, index) => encodedAt(rolloutsPath, index)),
  encodedAt(rolloutsPath, 1, true),
  '/%76%31/rollouts',
  '//v1/rollouts',
  '/./v1/rollouts',
  '/v1/./rollouts',
  '/x/../v1/rollouts',
  '/v1/x/../rollouts',
  '/%2e/v1/rollouts',
  '/x/%2e%2e/v1/rollouts',
  '/V1/rollouts',
  '/v1/Rollouts',
  '/v1/rollouts/',
  '/v1;x/rollouts',
  '/v1/rollouts;x',
  '/v1/rollouts?x=1',
  '/v1/rollouts?',
  '/v1/rollouts#x',
  'http://x/v1/rollouts',
  'http://127.0.0.1/v1/rollouts',
  'http://x/%761/rollouts',
  '/v1/rollouts%00',
  '/v1/rollouts%20',
];

describe('HTTP API authentication (raw request targets)', () => {
  let env: TestWorkflowEnvironment;
  let app: FastifyInstance;
  let port: number;
  const playbookToml = '[playbook]\nname = "raw-auth"\n\n[[steps]]\nid = "label"\nkind = "node-label"\nlabels = { "example.com/x" = "1" }\n';

  beforeAll(async () => {
    env = await startTestTemporal();
    ({ app, port } = await startTestApi(env.client));
  });
  afterAll(async () => {
    await app?.close();
    await env?.teardown();
  });

  async function rolloutWorkflows(): Promise<string[]> {
    const ids: string[] = [];
    for await (const execution of env.client.workflow.list({ query: `WorkflowType = 'rolloutWorkflow'` })) ids.push(execution.workflowId);
    return ids;
  }

  it(`never reaches a handler without the token, whatever the spelling (${spellings.length} request targets × GET, HEAD, OPTIONS, POST)`, async () => {
    const answers: string[] = [];
    for (const [index, target] of spellings.entries()) {
      const body = JSON.stringify({ playbook_toml: playbookToml, inventory_toml: apiInventoryToml, request_id: `raw-${index}` });
      for (const [method, payload] of [['GET'], ['HEAD'], ['OPTIONS'], ['POST', body]] as const) {
        const response = await sendRaw(port, rawRequest(method, target, { body: payload }));
        answers.push(`${method} ${target} → ${response.status}`);
        expect([400, 401, 404]).toContain(response.status);
        expect(response.body).not.toContain('"rollouts"');
        expect(response.body).not.toContain('rollout_id');
      }
    }
    process.stdout.write(`${answers.join('\n')}\n`);
    expect(await rolloutWorkflows()).toEqual([]);
    const list = await sendRaw(port, rawRequest('GET', rolloutsPath, { authorization: `Bearer ${testToken}` }));
    expect(list.status).toBe(200);
    expect(JSON.parse(list.body)).toEqual({ rollouts: [] });
  });

  it('answers an unknown route 401 without a token (not 404: which paths exist stays hidden) and 404 with it', async () => {
    for (const target of ['/v2/rollouts', '/admin', '/v1/nodes/x/release', '/openapi.json']) {
      expect((await sendRaw(port, rawRequest('GET', target))).status).toBe(401);
    }
    expect((await sendRaw(port, rawRequest('GET', '/admin', { authorization: `Bearer ${testToken}` }))).status).toBe(404);
  });

  it('guards every route: control, schedules and the OpenAPI document need the token', async () => {
    for (const [method, target] of [
      ['POST', '/v1/rollouts/x/pause'],
      ['POST', '/%761/rollouts/x/abort'],
      ['POST', '/v1/rollouts/x/resume'],
      ['GET', '/v1/rollouts/x'],
      ['GET', '/v1/schedules'],
      ['GET', 'http://x/v1/schedules'],
      ['DELETE', '/%761/schedules/katafleet-drift-x'],
      ['POST', '/v1/schedules'],
      ['GET', '/openapi.json'],
      ['GET', '/%6fpenapi.json'],
    ] as const) {
      const response = await sendRaw(port, rawRequest(method, target, { body: method === 'POST' ? '{}' : undefined }));
      expect(`${method} ${target} → ${response.status}`).toBe(`${method} ${target} → 401`);
    }
  });

  it('the same POST with the token does start a rollout (so the refusals above were refusals of a real start)', async () => {
    const body = JSON.stringify({ playbook_toml: playbookToml, inventory_toml: apiInventoryToml, request_id: 'raw-with-token' });
    const response = await sendRaw(port, rawRequest('POST', rolloutsPath, { body, authorization: `Bearer ${testToken}` }));
    expect(response.status).toBe(202);
    expect(await rolloutWorkflows()).toEqual(['katafleet-rollout-raw-with-token']);
    await env.client.workflow.getHandle('katafleet-rollout-raw-with-token').terminate('test done');
  });

  it('answers /healthz without a token, and /openapi.json only when told to make it public', async () => {
    expect((await sendRaw(port, rawRequest('GET', '/healthz'))).status).toBe(200);
    const open = await buildApi({ client: env.client, token: testToken, publicOpenapi: true });
    const openPort = Number(new URL(await open.listen({ host: '127.0.0.1', port: 0 })).port);
    try {
      expect((await sendRaw(openPort, rawRequest('GET', '/openapi.json'))).status).toBe(200);
      expect((await sendRaw(openPort, rawRequest('GET', '/v1/rollouts'))).status).toBe(401);
    } finally {
      await open.close();
    }
  });
});
