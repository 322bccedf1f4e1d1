// Transport and token: token length and token-file rules, TLS, the clear-text warning, the Host header check
// (DNS rebinding), generic 500 answers with a request id, and the audit log. README: "The HTTP API".
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../api/server';
import { apiInventoryToml, startTestApi, testToken } from './helpers/api';
import { startTestTemporal } from './helpers/temporal';

const root = join(__dirname, '..');
const playbookToml = '[playbook]\nname = "audit"\n\n[[steps]]\nid = "label"\nkind = "node-label"\nlabels = { "example.com/x" = "1" }\n';

/** One HTTP/1.1 request with the given Host header, over a raw socket; resolves with the status. */
function statusWithHost(port: number, host: string, target = '/healthz'): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => socket.write(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`));
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString()));
    socket.on('error', reject);
    socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)));
  });
}

describe('HTTP API transport and token', () => {
  let env: TestWorkflowEnvironment;
  let dir: string;

  beforeAll(async () => {
    env = await startTestTemporal();
    dir = mkdtempSync(join(tmpdir(), 'katafleet-api-transport-'));
  });
  afterAll(async () => {
    await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('the token', () => {
    it('must have at least 32 characters; the message gives the fix', async () => {
      await expect(buildApi({ client: env.client, token: 'x'.repeat(31) })).rejects.toThrow('the API token has 31 characters; use at least 32, e.g. from `openssl rand -hex 32`');
    });

    /** `katafleet api ARGS` in `cwd` against the test's Temporal server; exits at once on a usage error. */
    const katafleetApi = (args: string[], env2: Record<string, string> = {}) =>
      spawnSync(process.execPath, [join(root, 'bin', 'katafleet.js'), 'api', ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, TEMPORAL_ADDRESS: env.address, ...env2 }, timeout: 30_000 });

    it('is refused by the CLI when short, or when its file is readable by others or not yours (exit 2)', () => {
      const short = katafleetApi([], { KATAFLEET_API_TOKEN: 'short-token' });
      expect(short.status).toBe(2);
      expect(short.stderr).toContain('KATAFLEET_API_TOKEN: the API token has 11 characters; use at least 32, e.g. from `openssl rand -hex 32`');
      const loose = join(dir, 'loose-token');
      writeFileSync(loose, `${testToken}\n`, { mode: 0o644 });
      const readable = katafleetApi(['--token-file', loose]);
      expect(readable.status).toBe(2);
      expect(readable.stderr).toContain(`${loose}: the token file can be read by group or others (mode 644): chmod 600 ${loose}`);
      const foreign = join(dir, 'foreign-token');
      writeFileSync(foreign, `${testToken}\n`, { mode: 0o600 });
      chownSync(foreign, 65534, 65534);
      const notMine = katafleetApi(['--token-file', foreign]);
      expect(notMine.status).toBe(2);
      expect(notMine.stderr).toContain(`${foreign}: the token file is owned by uid 65534, not by you`);
    });
  });

  describe('listening', () => {
    let child: ChildProcess | undefined;
    afterEach(async () => {
      if (child && child.exitCode === null) {
        const gone = new Promise((resolve) => child!.once('exit', resolve));
        child.kill('SIGINT');
        await gone;
      }
      child = undefined;
    });

    /** Starts `katafleet api ARGS` (or another command) in `cwd` and resolves with its port and what it printed so far. */
    async function startCliApi(cwd: string, args: string[], command = 'api'): Promise<{ port: number; stderr: string }> {
      const tokenFile = join(cwd, 'token');
      writeFileSync(tokenFile, `${testToken}\n`, { mode: 0o600 });
      const tokenArgs = command === 'api' ? ['--token-file', tokenFile] : [];
      child = spawn(process.execPath, [join(root, 'bin', 'katafleet.js'), command, '--port', '0', ...tokenArgs, ...args], { cwd, env: { ...process.env, TEMPORAL_ADDRESS: env.address } });
      let stdout = '';
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      return new Promise((resolve, reject) => {
        child!.stdout!.on('data', (chunk: Buffer) => {
          stdout += chunk.toString();
          const port = /katafleet API on https?:\/\/[^ ]+:(\d+)/.exec(stdout)?.[1];
          if (port) resolve({ port: Number(port), stderr });
        });
        child!.once('exit', (code) => reject(new Error(`katafleet api exited ${code}: ${stderr}`)));
      });
    }

    it('warns loudly when it listens beyond loopback without TLS, and creates .katafleet mode 700', async () => {
      const cwd = mkdtempSync(join(dir, 'cli-'));
      const { port, stderr } = await startCliApi(cwd, ['--host', '0.0.0.0']);
      expect(stderr).toContain('WARNING: the katafleet API listens on 0.0.0.0 WITHOUT TLS');
      expect(stderr).toContain('--tls-cert FILE --tls-key FILE');
      expect(await statusWithHost(port, '127.0.0.1')).toBe(200);
      expect(statSync(join(cwd, '.katafleet')).mode & 0o777).toBe(0o700);
    });

    it('katafleet up creates .katafleet (mode 700) with a 64-hex-digit api-token (mode 600) and audits to .katafleet/audit.log', async () => {
      const cwd = mkdtempSync(join(dir, 'up-'));
      const { port } = await startCliApi(cwd, [], 'up');
      expect(statSync(join(cwd, '.katafleet')).mode & 0o777).toBe(0o700);
      expect(statSync(join(cwd, '.katafleet', 'api-token')).mode & 0o777).toBe(0o600);
      const token = readFileSync(join(cwd, '.katafleet', 'api-token'), 'utf8').trim();
      expect(token).toMatch(/^[0-9a-f]{64}$/);
      const response = await fetch(`http://127.0.0.1:${port}/v1/rollouts/none/pause`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      expect(response.status).toBe(404);
      const audit = JSON.parse(readFileSync(join(cwd, '.katafleet', 'audit.log'), 'utf8').trim()) as Record<string, unknown>;
      expect(audit).toMatchObject({ token_id: createHash('sha256').update(token).digest('hex').slice(0, 8), route: '/v1/rollouts/:id/pause', rollout_id: 'none', status: 404 });
    });

    it('serves HTTPS with --tls-cert and --tls-key, without the warning', async () => {
      const cwd = mkdtempSync(join(dir, 'tls-'));
      const cert = join(cwd, 'cert.pem');
      const key = join(cwd, 'key.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
      const { port, stderr } = await startCliApi(cwd, ['--host', '127.0.0.1', '--tls-cert', cert, '--tls-key', key]);
      expect(stderr).not.toContain('WARNING');
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const request = httpsRequest({ host: '127.0.0.1', port, path: '/v1/rollouts', ca: readFileSync(cert), headers: { authorization: `Bearer ${testToken}` } }, (response) => {
          let body = '';
          response.on('data', (chunk) => (body += chunk));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
        });
        request.on('error', reject);
        request.end();
      });
      expect(answer).toEqual({ status: 200, body: '{"rollouts":[]}' });
      expect(await statusWithHost(port, '127.0.0.1')).toBe(0); // plain HTTP on the TLS port gets no HTTP answer
    });
  });

  describe('Host header (DNS rebinding)', () => {
    let app: FastifyInstance;
    let port: number;
    beforeAll(async () => ({ app, port } = await startTestApi(env.client, { allowedHosts: ['katafleet.internal'] })));
    afterAll(async () => app?.close());

    it('answers 127.0.0.1, localhost, [::1] and configured names, with or without a port', async () => {
      for (const host of ['127.0.0.1', `127.0.0.1:${port}`, 'localhost', `LOCALHOST:${port}`, '[::1]', `[::1]:${port}`, 'katafleet.internal', `katafleet.internal:${port}`]) {
        expect(`${host} → ${await statusWithHost(port, host)}`).toBe(`${host} → 200`);
      }
    });

    it('refuses any other name with 421, before authentication', async () => {
      for (const host of ['attacker.example', `attacker.example:${port}`, '127.0.0.1.attacker.example', 'localhost.attacker.example', '[::2]', '']) {
        expect(`${host} → ${await statusWithHost(port, host)}`).toMatch(new RegExp(`^${host.replace(/[.[\]]/g, '\\$&')} → (421|400)$`));
      }
      expect(await statusWithHost(port, 'attacker.example', '/v1/rollouts')).toBe(421);
    });
  });

  it('answers an internal error with a generic 500 and a request id; the detail goes to the log', async () => {
    const connection = await Connection.connect({ address: env.address });
    const lines: string[] = [];
    const { app, baseUrl } = await startTestApi(new Client({ connection }), { errorLog: (line) => lines.push(line) });
    try {
      await connection.close();
      const response = await fetch(`${baseUrl}/v1/rollouts`, { headers: { authorization: `Bearer ${testToken}` } });
      expect(response.status).toBe(500);
      const body = (await response.json()) as { error: string; message: string };
      const requestId = /under request id ([0-9a-f-]{36})$/.exec(body.message)?.[1];
      expect(body).toEqual({ error: 'InternalError', message: `internal error; the server log has the details under request id ${requestId}` });
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0])).toMatchObject({ level: 'error', request_id: requestId, method: 'GET', route: '/v1/rollouts', message: expect.any(String) });
    } finally {
      await app.close();
    }
  });

  it('writes one audit line per state-changing request: time, token id, method, route, rollout, request id, outcome', async () => {
    const auditLog = join(dir, 'audit.log');
    const { app, baseUrl } = await startTestApi(env.client, { auditLog });
    const call = async (method: string, url: string, body?: unknown, token: string | null = testToken) => {
      const response = await fetch(`${baseUrl}${url}`, {
        method,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      await response.text();
      return response;
    };
    try {
      expect((await call('POST', '/v1/rollouts', { playbook_toml: playbookToml, inventory_toml: apiInventoryToml, request_id: 'audited-1' })).status).toBe(202);
      expect((await call('GET', '/v1/rollouts')).status).toBe(200);
      expect((await call('POST', '/%761/rollouts/audited-1/abort', {}, null)).status).toBe(401);
      expect((await call('POST', '/v1/rollouts/no-such/pause')).status).toBe(404);
      expect((await call('DELETE', '/v1/schedules/katafleet-drift-nothing')).status).toBe(404);
    } finally {
      await app.close();
      await env.client.workflow.getHandle('katafleet-rollout-audited-1').terminate('test done');
    }
    const tokenId = createHash('sha256').update(testToken).digest('hex').slice(0, 8);
    const lines = readFileSync(auditLog, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines).toEqual([
      { time: expect.any(String), token_id: tokenId, method: 'POST', route: '/v1/rollouts', rollout_id: 'audited-1', request_id: expect.any(String), status: 202, outcome: 'ok' },
      { time: expect.any(String), token_id: 'none', method: 'POST', route: '/v1/rollouts/:id/abort', rollout_id: 'audited-1', request_id: expect.any(String), status: 401, outcome: 'refused' },
      { time: expect.any(String), token_id: tokenId, method: 'POST', route: '/v1/rollouts/:id/pause', rollout_id: 'no-such', request_id: expect.any(String), status: 404, outcome: 'failed' },
      { time: expect.any(String), token_id: tokenId, method: 'DELETE', route: '/v1/schedules/:id', schedule_id: 'katafleet-drift-nothing', request_id: expect.any(String), status: 404, outcome: 'failed' },
    ]);
    expect(readFileSync(auditLog, 'utf8')).not.toContain(testToken);
    expect(statSync(auditLog).mode & 0o777).toBe(0o600);
  });
});
