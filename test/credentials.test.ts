// Credentials belong to the server: API inventories name nodes and a credential profile; the login (key,
// known_hosts, user, sudo, trust on first use) is defined in an operator-owned credentials file, and the
// worker reads it from there. README: "The HTTP API" (credential profiles), SECURITY.md.
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { toNodeTarget } from '../api/rollout-service';
import { sshNodeOf } from '../activities/steps/node-shell';
import { hostCovered, loadCredentials } from '../playbooks/credentials';
import { loadInventory, parseInventory } from '../playbooks/load';
import { loginFor } from '../playbooks/login';
import type { RolloutInput } from '../workflows/rollout';
import { apiInventoryToml, startTestApi, testToken } from './helpers/api';
import { startTestTemporal } from './helpers/temporal';

const playbookToml = '[playbook]\nname = "creds"\n\n[[steps]]\nid = "label"\nkind = "node-label"\nlabels = { "example.com/x" = "1" }\n';
const profileText = '[profiles.prod]\nuser = "ops"\nidentity_file = "keys/id_ed25519"\nknown_hosts = "keys/known_hosts"\nsudo = true\ntrust_on_first_use = true\nhosts = ["10.0.0.*"]\n';

describe('credential profiles', () => {
  let dir: string;
  let credentialsFile: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'katafleet-credentials-test-'));
    credentialsFile = join(dir, 'credentials.toml');
    writeFileSync(credentialsFile, profileText, { mode: 0o600 });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  describe('through the HTTP API', () => {
    let env: TestWorkflowEnvironment;
    let app: FastifyInstance;
    let baseUrl: string;

    beforeAll(async () => {
      env = await startTestTemporal();
      ({ app, baseUrl } = await startTestApi(env.client));
    });
    afterAll(async () => {
      await app?.close();
      await env?.teardown();
    });

    async function post(inventory: string, requestId?: string) {
      const response = await fetch(`${baseUrl}/v1/rollouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${testToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ playbook_toml: playbookToml, inventory_toml: inventory, request_id: requestId }),
      });
      return { status: response.status, body: (await response.json()) as { error: string; problems?: string[]; rollout_id?: string } };
    }

    async function rolloutWorkflows(): Promise<string[]> {
      const ids: string[] = [];
      for await (const execution of env.client.workflow.list({ query: `WorkflowType = 'rolloutWorkflow'` })) ids.push(execution.workflowId);
      return ids;
    }

    it.each([
      ['ssh.identity_file', 'identity_file = "/root/.ssh/id_ed25519"'],
      ['ssh.known_hosts', 'known_hosts = "/root/.ssh/authorized_keys"'],
      ['ssh.trust_on_first_use', 'trust_on_first_use = true'],
      ['ssh.user', 'user = "root"'],
      ['ssh.sudo', 'sudo = true'],
    ])('refuses an inventory that sets %s with 400 naming the key and the fix, and starts nothing', async (key, line) => {
      const response = await post(apiInventoryToml.replace('profile = "test"', `profile = "test"\n${line}`));
      expect(response.status).toBe(400);
      expect(response.body.problems).toEqual([
        `inventory_toml: ${key}: an inventory sent to the API names nodes and addresses only; the login comes from the server — define ${key.slice(4)} in a credential profile of the server's credentials file and set ssh.profile = "NAME"`,
      ]);
      expect(await rolloutWorkflows()).toEqual([]);
    });

    it("refuses a node's own login keys too", async () => {
      const response = await post(apiInventoryToml.replace('address = "127.0.1.251"', 'address = "127.0.1.251"\nssh = { identity_file = "/etc/ssh/ssh_host_ed25519_key", port = 22 }'));
      expect(response.status).toBe(400);
      expect(response.body.problems?.[0]).toMatch(/^inventory_toml: nodes\[1\]\.ssh\.identity_file: an inventory sent to the API names nodes and addresses only/);
    });

    it('requires a profile, and names the defined ones when the profile is unknown', async () => {
      const none = await post(apiInventoryToml.replace('profile = "test"\n', ''));
      expect(none.status).toBe(400);
      expect(none.body.problems).toEqual([expect.stringMatching(/^inventory_toml: ssh\.profile: required: an inventory sent to the API names a credential profile of the server/)]);
      const unknown = await post(apiInventoryToml.replace('profile = "test"', 'profile = "tset"'));
      expect(unknown.status).toBe(400);
      expect(unknown.body.problems).toEqual([expect.stringMatching(/^inventory_toml: ssh\.profile: no credential profile named "tset" in .*credentials\.toml \(did you mean "test"\?\); defined: test — add \[profiles\.tset\] there/)]);
      expect(await rolloutWorkflows()).toEqual([]);
    });

    it('puts the profile name into the workflow input, never a key or known_hosts path', async () => {
      const response = await post(apiInventoryToml, 'profile-input');
      expect(response.status).toBe(202);
      const handle = env.client.workflow.getHandle('katafleet-rollout-profile-input');
      const history = await handle.fetchHistory();
      const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]?.data;
      // The nodes travel in the inventory's pieces (signals), not in the start input (issue 13).
      const pieceData = history.events?.find((event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'inventoryPiece')?.workflowExecutionSignaledEventAttributes?.input?.payloads?.[0]?.data;
      const decoded = Buffer.from(payload ?? []).toString('utf8') + Buffer.from(pieceData ?? []).toString('utf8');
      const rollout = JSON.parse(Buffer.from(payload ?? []).toString('utf8')) as RolloutInput;
      const piece = JSON.parse(Buffer.from(pieceData ?? []).toString('utf8')) as { nodes: NonNullable<RolloutInput['nodes']> };
      expect(rollout.nodes).toBeUndefined();
      expect(piece.nodes.map((node) => node.credentials)).toEqual([
        { profile: 'test', file: expect.stringMatching(/credentials\.toml$/) },
        { profile: 'test', file: expect.stringMatching(/credentials\.toml$/) },
      ]);
      expect(decoded).not.toContain('/nonexistent/id_ed25519');
      expect(decoded).not.toContain('identityFile');
      await handle.terminate('test done');
    });
  });

  describe('the credentials file', () => {
    it('resolves relative paths against its own folder', () => {
      expect(loadCredentials(credentialsFile).profiles.prod).toEqual({
        user: 'ops',
        identity_file: join(dir, 'keys/id_ed25519'),
        known_hosts: join(dir, 'keys/known_hosts'),
        sudo: true,
        trust_on_first_use: true,
        hosts: ['10.0.0.*'],
      });
    });

    it('is refused when group or others can write it, or when another user owns it', () => {
      const loose = join(dir, 'loose.toml');
      writeFileSync(loose, profileText);
      chmodSync(loose, 0o664);
      expect(() => loadCredentials(loose)).toThrow(`${loose}: can be written by group or others (mode 664) — chmod 600 it`);
      const foreign = join(dir, 'foreign.toml');
      writeFileSync(foreign, profileText, { mode: 0o600 });
      chownSync(foreign, 65534, 65534);
      expect(() => loadCredentials(foreign)).toThrow(`${foreign}: is owned by uid 65534, not by the user katafleet runs as (uid ${process.getuid?.()}) — chown it`);
      expect(() => loadCredentials(join(dir, 'missing.toml'))).toThrow('no such file: create it (mode 600)');
    });

    it('requires hosts: the addresses the profile may log in to', () => {
      const file = join(dir, 'unbound.toml');
      writeFileSync(file, '[profiles.x]\nidentity_file = "/k"\n', { mode: 0o600 });
      expect(() => loadCredentials(file)).toThrow(`${file}: profiles.x.hosts: required: the node addresses this profile may log in to, e.g. hosts = ["10.0.1.*", "10.0.2.0/24", "*.lab.example.com"]`);
      writeFileSync(file, '[profiles.x]\nidentity_file = "/k"\nhosts = ["10.0.0.1; reboot"]\n', { mode: 0o600 });
      expect(() => loadCredentials(file)).toThrow('profiles.x.hosts[0]: a host pattern is an address or name with "*" wildcards, or an IPv4 network such as "10.0.2.0/24"');
      writeFileSync(file, '[profiles.x]\nidentity_file = "/k"\nhosts = []\n', { mode: 0o600 });
      expect(() => loadCredentials(file)).toThrow('profiles.x.hosts: must not be empty');
      writeFileSync(file, '[profiles.x]\nidentity_file = "/k"\nhosts = ["*"]\nsudo = "all"\n', { mode: 0o600 });
      expect(() => loadCredentials(file)).toThrow('profiles.x.sudo: expected one of "true" | "false" | "narrow", got "all"');
      writeFileSync(file, '[profiles.x]\nidentity_file = "/k"\nhosts = ["*"]\nsudo = "narrow"\n', { mode: 0o600 });
      expect(loadCredentials(file).profiles.x.sudo).toBe('narrow');
    });

    it.each([
      ['10.0.2.0/24', '10.0.2.77', true], ['10.0.2.0/24', '10.0.3.1', false], ['10.0.0.0/8', '10.250.0.1', true], ['0.0.0.0/0', '192.0.2.1', true],
      ['10.0.1.*', '10.0.1.5', true], ['10.0.1.*', '10.0.10.5', false], ['*.lab.example.com', 'Node-1.LAB.example.com', true],
      ['*.lab.example.com', 'lab.example.com.evil.org', false], ['10.0.1.5', '10.0.1.50', false], ['127.0.0.0/8', 'localhost', false],
    ])('hosts pattern %s covers %s: %s', (pattern, address, covered) => {
      expect(hostCovered(address, [pattern])).toBe(covered);
    });

    it('refuses, at load, an inventory node whose address its profile does not cover', async () => {
      const inventoryFile = join(dir, 'outside.toml');
      writeFileSync(inventoryFile, '[ssh]\nprofile = "prod"\n\n[[nodes]]\nname = "a"\naddress = "10.0.0.1"\n\n[[nodes]]\nname = "b"\naddress = "192.0.2.7"\n', { mode: 0o600 });
      await expect(loadInventory(inventoryFile)).rejects.toThrow(
        `${inventoryFile}: nodes[1].address: credential profile "prod" of ${credentialsFile} may log in to 10.0.0.* only, not to 192.0.2.7 — add a pattern covering 192.0.2.7 to its hosts`,
      );
    });

    it('must not be mixed with login keys in one (CLI) inventory', () => {
      expect(() => parseInventory('[ssh]\nprofile = "prod"\nidentity_file = "k"\n\n[[nodes]]\nname = "a"\naddress = "10.0.0.1"\n', 'inv.toml')).toThrow(
        'inv.toml: ssh.identity_file: identity_file and a credential profile do not mix in one inventory — define identity_file in the profile, or drop the profile',
      );
    });
  });

  describe('in the worker', () => {
    it("reads a profile's login from the credentials file the target names", async () => {
      const inventoryFile = join(dir, 'inventory.toml');
      writeFileSync(inventoryFile, '[ssh]\nprofile = "prod"\n\n[[nodes]]\nname = "a"\naddress = "10.0.0.1"\n', { mode: 0o600 });
      const inventory = await loadInventory(inventoryFile);
      const target = toNodeTarget(inventory, inventory.nodes[0]);
      expect(target.credentials).toEqual({ profile: 'prod', file: credentialsFile });
      expect(sshNodeOf(target)).toMatchObject({ user: 'ops', identityFile: join(dir, 'keys/id_ed25519'), sudo: true, trustOnFirstUse: true });
    });

    it('refuses a target whose address the profile does not cover (CredentialProfileRefused), e.g. one started straight on Temporal', () => {
      const target = { name: 'a', address: '192.0.2.7', port: 22, maxSessions: 1, connectTimeoutMs: 1000, credentials: { profile: 'prod', file: credentialsFile } };
      const failure = (() => { try { sshNodeOf(target); return undefined; } catch (error) { return error as { type?: string; nonRetryable?: boolean; message: string }; } })();
      expect(failure?.type).toBe('CredentialProfileRefused');
      expect(failure?.nonRetryable).toBe(true);
      expect(failure?.message).toBe(`Node a (192.0.2.7): nothing was run: credential profile "prod" of ${credentialsFile} may log in to 10.0.0.* only, not to 192.0.2.7 — ` +
        'add a pattern covering 192.0.2.7 to its hosts if that node belongs to it, or use the profile made for that node');
    });

    it("reads an operator inventory's own [ssh] login from that file (the CLI path)", async () => {
      const inventoryFile = join(dir, 'raw.toml');
      writeFileSync(inventoryFile, '[ssh]\nidentity_file = "/keys/a"\nknown_hosts = "/keys/kh"\n\n[[nodes]]\nname = "a"\naddress = "10.0.0.1"\n', { mode: 0o644 });
      const inventory = await loadInventory(inventoryFile);
      const target = toNodeTarget(inventory, inventory.nodes[0]);
      expect(target.credentials).toEqual({ inventory: inventoryFile, node: 'a' });
      expect(loginFor(target.credentials, target)).toEqual({ user: 'root', identityFile: '/keys/a', knownHosts: '/keys/kh', sudo: false, trustOnFirstUse: false });
      expect(() => loginFor(target.credentials, { ...target, address: '10.9.9.9' })).toThrow(`${inventoryFile} lists node a at 10.0.0.1 port 22, not at 10.9.9.9 port 22`);
    });

    it('refuses a private key that group or others can read, as OpenSSH does', () => {
      const key = join(dir, 'exposed_key');
      writeFileSync(key, 'not really a key\n', { mode: 0o644 });
      const file = join(dir, 'exposed.toml');
      writeFileSync(file, `[profiles.x]\nidentity_file = "${key}"\nhosts = ["10.0.0.1"]\n`, { mode: 0o600 });
      const target = { name: 'a', address: '10.0.0.1', port: 22, maxSessions: 1, connectTimeoutMs: 1000, credentials: { profile: 'x', file } };
      expect(() => sshNodeOf(target)).toThrow(`Node a (10.0.0.1): no login: the private key ${key} can be read by group or others (mode 644): chmod 600 ${key}`);
      chmodSync(key, 0o600);
      expect(sshNodeOf(target)).toMatchObject({ identityFile: key });
    });

    it('refuses a target (e.g. a workflow started straight on Temporal) that points at a file others can write or own', () => {
      const planted = join(dir, 'planted.toml');
      writeFileSync(planted, '[profiles.x]\nidentity_file = "/root/.ssh/id_ed25519"\ntrust_on_first_use = true\nhosts = ["*"]\n');
      chmodSync(planted, 0o666);
      const target = { name: 'a', address: '10.0.0.1', port: 22, maxSessions: 1, connectTimeoutMs: 1000, credentials: { profile: 'x', file: planted } };
      expect(() => sshNodeOf(target)).toThrow(`Node a (10.0.0.1): no login: ${planted} can be written by group or others (mode 666) — chmod 600 it`);
      chmodSync(planted, 0o600);
      chownSync(planted, 65534, 65534);
      expect(() => sshNodeOf(target)).toThrow('is owned by uid 65534');
      expect(() => sshNodeOf({ ...target, credentials: { profile: 'x', file: '/dev/zero' } })).toThrow('/dev/zero is not a regular file');
      expect(() => sshNodeOf({ ...target, credentials: { inventory: '/proc/self/environ', node: 'a' } })).toThrow('no login');
    });
  });
});
