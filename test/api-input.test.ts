// What the API may read is configured, not chosen by the caller: playbooks and inventories are names in the
// configured folders, regular files of at most 1 MiB, and no message carries a file's content back.
// README: "The HTTP API" (names, not paths).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { loadInventory, loadNamedInventory } from '../playbooks/load';
import { apiInventoryToml, startTestApi, testToken, writeTestCredentials } from './helpers/api';
import { startTestTemporal } from './helpers/temporal';

const secretLines = 'DB_USER=appuser\n# a comment\nDB_PASSWORD=Hunter2SuperSecret\nAPI_KEY=AKIAIOSFODNN7EXAMPLE\n';

describe('HTTP API: playbooks and inventories by name from configured folders', () => {
  let env: TestWorkflowEnvironment;
  let app: FastifyInstance;
  let baseUrl: string;
  let dir: string;
  let inventories: string;
  let playbooks: string;
  let credentials: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'katafleet-api-input-'));
    inventories = join(dir, 'inventories');
    playbooks = join(dir, 'playbooks');
    mkdirSync(inventories);
    mkdirSync(playbooks);
    writeFileSync(join(dir, 'secret.env'), secretLines);
    writeFileSync(join(inventories, 'prod.toml'), apiInventoryToml);
    writeFileSync(join(inventories, 'creds.toml'), secretLines);
    writeFileSync(join(playbooks, 'mine.toml'), '[playbook]\nname = "mine"\n\n[[steps]]\nid = "label"\nkind = "node-label"\nlabels = { "example.com/x" = "1" }\n');
    symlinkSync(join(dir, 'secret.env'), join(inventories, 'outside.toml'));
    symlinkSync('/proc/self/environ', join(inventories, 'environ.toml'));
    symlinkSync('/dev/zero', join(inventories, 'zero.toml'));
    symlinkSync(join(dir, 'no-such-file'), join(inventories, 'dangling.toml'));
    execFileSync('mkfifo', [join(inventories, 'fifo.toml')]);
    mkdirSync(join(inventories, 'folder.toml'));
    writeFileSync(join(inventories, 'big.toml'), `# ${'x'.repeat(1024 * 1024)}\n`);
    env = await startTestTemporal();
    credentials = writeTestCredentials(dir);
    ({ app, baseUrl } = await startTestApi(env.client, { inventoriesDir: inventories, playbooksDir: playbooks, credentialsFile: credentials }));
  });
  afterAll(async () => {
    await app?.close();
    await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
  });

  async function post(payload: unknown, url = '/v1/rollouts') {
    const started = performance.now();
    const response = await fetch(`${baseUrl}${url}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${testToken}`, 'content-type': 'application/json' },
      body: typeof payload === 'string' ? payload : JSON.stringify(payload),
    });
    const body = await response.text();
    return { status: response.status, body, json: () => JSON.parse(body) as { error: string; message: string; problems?: string[] }, ms: performance.now() - started };
  }

  async function noWorkflowStarted(): Promise<void> {
    const ids: string[] = [];
    for await (const execution of env.client.workflow.list({ query: `WorkflowType = 'rolloutWorkflow'` })) ids.push(execution.workflowId);
    expect(ids).toEqual([]);
  }

  it('refuses paths and malformed names with 400 naming the field and the rule', async () => {
    for (const [field, value] of [
      ['inventory', '/etc/passwd'],
      ['inventory', '../secret'],
      ['inventory', 'prod/../prod'],
      ['inventory', 'a..b'],
      ['inventory', 'Prod'],
      ['inventory', '/proc/self/environ'],
      ['inventory', 'x'.repeat(65)],
      ['playbook', '../../../../etc/passwd'],
      ['playbook', '/dev/zero'],
    ] as const) {
      const payload = field === 'inventory' ? { playbook: 'mine', inventory: value } : { playbook: value, inventory: 'prod' };
      const response = await post(payload);
      expect(`${field}=${value} → ${response.status}`).toBe(`${field}=${value} → 400`);
      expect(response.json().error).toBe('InvalidRequest');
      expect(response.json().message).toContain(field);
      expect(response.json().message).toContain(`no "/" and no ".."`);
    }
    await noWorkflowStarted();
  });

  it('gives one answer for a missing name, a symlink out of the folder (to a file or to /proc/self/environ) and a dangling one', async () => {
    for (const name of ['missing', 'outside', 'environ', 'dangling', 'zero']) {
      const response = await post({ playbook: 'mine', inventory: name });
      expect(response.status).toBe(400);
      const message = response.json().message;
      expect(message).not.toMatch(/Hunter2|appuser|PATH=|ENOENT|EACCES|no such file|folder/);
      expect(message).toBe(`${join(inventories, name)}.toml: no inventory named "${name}" in ${inventories}; available: big, creds, prod`);
    }
    await noWorkflowStarted();
  });

  it('answers a FIFO, a folder and a file over 1 MiB in the folder with 400 at once, and /dev/zero without reading it (timings printed)', async () => {
    const cases: [string, string][] = [
      ['fifo', 'is not a regular file'],
      ['folder', 'is a folder'],
      ['big', 'is larger than 1 MiB'],
      ['zero', 'no inventory named "zero"'],
    ];
    for (const [name, expected] of cases) {
      const response = await post({ playbook: 'mine', inventory: name });
      process.stdout.write(`inventory ${name}: ${response.status} in ${response.ms.toFixed(0)} ms\n`);
      expect(response.status).toBe(400);
      expect(response.json().message).toContain(expected);
    }
    await noWorkflowStarted();
  });

  it('never echoes a file line: an env file in the folder gets line:col and the key only', async () => {
    const response = await post({ playbook: 'mine', inventory: 'creds' });
    expect(response.status).toBe(400);
    const { message, problems } = response.json();
    expect(message).not.toMatch(/Hunter2|appuser|AKIA/);
    expect(problems?.[0]).toMatch(/creds\.toml:1:\d+: .*text needs quotes: put the value of DB_USER in double quotes/);
  });

  it('answers a 1 MiB step kind with 400, without a suggestion and with the value cut (timing printed)', async () => {
    const kind = 'a'.repeat(1_000_000);
    const response = await post({ playbook_toml: `[playbook]\nname = "x"\n\n[[steps]]\nid = "s"\nkind = "${kind}"\n`, inventory_toml: apiInventoryToml });
    process.stdout.write(`1 MB step kind: ${response.status} in ${response.ms.toFixed(0)} ms, ${response.body.length} bytes of answer\n`);
    expect(response.status).toBe(400);
    expect(response.json().problems?.[0]).toMatch(/steps\[0\]\.kind: expected one of prereq-check \| .*, got "a{80}…"$/);
    expect(response.body.length).toBeLessThan(2000);
  });

  it('refuses a body over 1 MiB (413) and starts nothing', async () => {
    const response = await post({ playbook: 'mine', inventory_toml: `# ${'x'.repeat(1024 * 1024)}\n${apiInventoryToml}` });
    expect(response.status).toBe(413);
    await noWorkflowStarted();
  });

  it('reads a named playbook from --playbooks-dir and a named inventory from --inventories-dir', async () => {
    const response = await post({ playbook: 'mine', inventory: 'prod', request_id: 'named-files' });
    expect(response.status).toBe(202);
    const shipped = await post({ playbook: 'kata', inventory: 'prod' });
    expect(shipped.status).toBe(400);
    expect(shipped.json().message).toContain('no playbook named "kata" in');
    expect(shipped.json().message).toContain('available: mine');
    await env.client.workflow.getHandle('katafleet-rollout-named-files').terminate('test done');
  });

  it('the named-file loader refuses paths on its own too (behind the API schema), with the same answer', async () => {
    for (const name of ['../secret.env', '/etc/passwd', 'environ/../prod', 'a..b', '.', '..']) {
      await expect(loadNamedInventory(name, inventories, credentials)).rejects.toThrow(`${inventories}: no inventory named ${JSON.stringify(name)} in ${inventories}; available: big, creds, prod`);
    }
  });

  it('the CLI (a local, trusted user) still takes paths, but regular files only: /dev/zero and a FIFO are refused at once', async () => {
    await expect(loadInventory('/dev/zero')).rejects.toThrow('/dev/zero: is not a regular file');
    await expect(loadInventory(join(inventories, 'fifo.toml'))).rejects.toThrow('is not a regular file');
    await expect(loadInventory(join(inventories, 'big.toml'))).rejects.toThrow('is larger than 1 MiB');
    await expect(loadInventory(join(inventories, 'prod.toml'), { credentialsFile: credentials })).resolves.toMatchObject({ nodes: expect.any(Array) });
  });
});
