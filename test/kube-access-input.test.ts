// `[kubernetes]` (issue 12): kubectl on the worker with a kubeconfig on the worker, or over SSH on a host. Bad input
// gets a message naming the file, the key and the fix; an API caller never chooses a file on the worker (HTTP 400,
// nothing started); a workflow started straight on Temporal cannot point the worker at a file of its choosing.
import { chmodSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import type { KubernetesTarget, NodeTarget } from '../activities/node-types';
import { Kubectl } from '../activities/kubectl';
import { SshPool } from '../activities/ssh';
import { checkTargets } from '../activities/step-policy';
import { toKubernetesTarget } from '../api/rollout-service';
import { attachCredentials, parseInventory } from '../playbooks/load';
import { startTestApi, testToken } from './helpers/api';
import { startTestTemporal } from './helpers/temporal';

const nodes = '[[nodes]]\nname = "worker-1"\naddress = "127.0.1.251"\n';
const inventory = (kubernetes: string, ssh = '[ssh]\nuser = "root"\nidentity_file = "/nonexistent/id"\n') => `${ssh}\n[kubernetes]\n${kubernetes}\n\n${nodes}`;

function problems(text: string, options: { profilesOnly?: boolean } = {}): string[] {
  try {
    parseInventory(text, 'fleet/inventory.toml', options);
  } catch (error) {
    expect((error as Error).name).toBe('PlaybookError');
    return (error as Error).message.split('\n');
  }
  throw new Error('expected the inventory to be refused');
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kf-kube-access-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('[kubernetes] in an inventory', () => {
  it('takes a kubeconfig on the worker (no control-plane host) and makes a target that names the inventory, never the path', () => {
    const file = join(dir, 'worker.toml');
    writeFileSync(file, inventory('kubeconfig = "/etc/katafleet/kubeconfig"'));
    const parsed = parseInventory(inventory('kubeconfig = "/etc/katafleet/kubeconfig"'), file);
    expect(parsed.kubernetes).toEqual({ kubeconfig: '/etc/katafleet/kubeconfig', kubectl: 'kubectl' });
    expect(toKubernetesTarget(parsed)).toEqual({ kubectl: 'kubectl', worker: { inventory: file } });
  });

  it('refuses a [kubernetes] table that says neither where kubectl runs nor which kubeconfig, and mixes that do not go together', () => {
    expect(problems(inventory(''))).toEqual([
      'fleet/inventory.toml: kubernetes.kubeconfig: required: set kubeconfig = "<file on the worker>" (or profile = "NAME" of a credential profile with a kubeconfig), or control_plane = "<node that runs kubectl>"',
    ]);
    expect(problems(inventory('control_plane = "worker-1"\nprofile = "prod"'))).toEqual([
      'fleet/inventory.toml: kubernetes.profile: profile (a kubeconfig on the worker) and control_plane (kubectl over SSH on a host) do not mix — keep one',
    ]);
    expect(problems(inventory('profile = "prod"\nkubeconfig = "/etc/k"'))).toEqual([
      'fleet/inventory.toml: kubernetes.kubeconfig: kubeconfig and a credential profile do not mix — define kubeconfig in the profile, or drop the profile',
    ]);
    expect(problems(inventory('kubeconfig = "relative/kubeconfig"'))[0]).toMatch(/^fleet\/inventory\.toml: kubernetes\.kubeconfig: .*absolute/);
    expect(problems(inventory('kubeconfig = "/etc/k; reboot"'))[0]).toMatch(/^fleet\/inventory\.toml: kubernetes\.kubeconfig: /);
    expect(problems(inventory('profile = "../prod"'))[0]).toMatch(/^fleet\/inventory\.toml: kubernetes\.profile: a profile name holds lowercase letters/);
  });

  it('refuses a kubeconfig on the worker in an inventory sent to the API: a credential profile must hold it', () => {
    expect(problems(inventory('kubeconfig = "/root/.kube/config"', '[ssh]\nprofile = "prod"\n'), { profilesOnly: true })).toEqual([
      'fleet/inventory.toml: kubernetes.kubeconfig: an inventory sent to the API does not choose files on the worker — define kubeconfig in a credential profile of the server\'s credentials file and set kubernetes.profile = "NAME"',
    ]);
    const viaProfile = parseInventory(inventory('profile = "prod"', '[ssh]\nprofile = "prod"\n'), 'api.toml', { profilesOnly: true });
    expect(viaProfile.kubernetes).toEqual({ profile: 'prod', kubectl: 'kubectl' });
  });

  it('needs the named credential profile to hold a kubeconfig, and resolves it next to the credentials file', () => {
    const credentials = join(dir, 'credentials.toml');
    writeFileSync(credentials, '[profiles.prod]\nidentity_file = "id"\nhosts = ["*"]\n\n[profiles.kube]\nidentity_file = "id"\nhosts = ["*"]\nkubeconfig = "kube/config"\n', { mode: 0o600 });
    const parsed = parseInventory(inventory('profile = "prod"', '[ssh]\nprofile = "prod"\n'), join(dir, 'inv.toml'));
    expect(() => attachCredentials(parsed, credentials)).toThrow(
      `${join(dir, 'inv.toml')}: kubernetes.profile: credential profile "prod" in ${credentials} has no kubeconfig — add kubeconfig = "<file on the worker>" to [profiles.prod] there`);
    const good = attachCredentials(parseInventory(inventory('profile = "kube"', '[ssh]\nprofile = "prod"\n'), join(dir, 'inv.toml')), credentials);
    expect(good.credentials?.profiles.kube.kubeconfig).toBe(join(dir, 'kube', 'config'));
    expect(toKubernetesTarget(good)).toEqual({ kubectl: 'kubectl', worker: { profile: 'kube', file: credentials } });
  });
});

describe('the worker\'s kubeconfig', () => {
  const node: NodeTarget = { name: 'worker-1', address: '127.0.1.251', port: 22, maxSessions: 4, connectTimeoutMs: 1000, credentials: { profile: 'prod', file: '/etc/katafleet/credentials.toml' } };

  it('refuses targets a workflow started straight on Temporal could send: a path where a reference belongs, both modes, neither', () => {
    const refused = (kubernetes: unknown) => {
      try {
        checkTargets(node, kubernetes as KubernetesTarget);
      } catch (error) {
        return { type: (error as { type?: string }).type, message: (error as Error).message };
      }
      return undefined;
    };
    expect(refused({ kubectl: 'kubectl', worker: { inventory: '/etc/passwd; reboot' } })).toMatchObject({ type: 'StepRefused' });
    expect(refused({ kubectl: 'kubectl', worker: { kubeconfig: '/root/.kube/config' } })).toMatchObject({ type: 'StepRefused' });
    expect(refused({ kubectl: 'kubectl' })).toMatchObject({ type: 'StepRefused', message: expect.stringContaining('names either a host (kubectl over SSH) or a kubeconfig reference on the worker, exactly one') });
    expect(refused({ kubectl: 'kubectl', host: node, worker: { inventory: '/etc/katafleet/inventory.toml' } })).toMatchObject({ type: 'StepRefused' });
    expect(refused({ kubectl: 'kubectl', worker: { inventory: '/etc/katafleet/inventory.toml' } })).toBeUndefined();
  });

  it('uses only a regular kubeconfig owned by the worker\'s user that nobody else can write, naming the file and the fix', () => {
    const pool = new SshPool();
    const kubeconfig = join(dir, 'kubeconfig');
    const inventoryFile = join(dir, 'kube-inventory.toml');
    writeFileSync(inventoryFile, inventory(`kubeconfig = ${JSON.stringify(kubeconfig)}`), { mode: 0o600 });
    const target: KubernetesTarget = { kubectl: 'kubectl', worker: { inventory: inventoryFile } };
    const failure = () => {
      try {
        new Kubectl(pool, target);
      } catch (error) {
        return { type: (error as { type?: string }).type, message: (error as Error).message };
      }
      return undefined;
    };
    expect(failure()).toEqual({ type: 'KubeconfigUnusable', message: `kubectl on the worker: the kubeconfig ${kubeconfig} ([kubernetes] of ${inventoryFile}) cannot be read (ENOENT) — create it, or fix the path` });
    writeFileSync(kubeconfig, 'apiVersion: v1\nkind: Config\n', { mode: 0o600 });
    chmodSync(kubeconfig, 0o666);
    expect(failure()).toEqual({ type: 'KubeconfigUnusable', message: `kubectl on the worker: the kubeconfig ${kubeconfig} can be written by group or others (mode 666) — chmod 600 it` });
    chmodSync(kubeconfig, 0o600);
    expect(failure()).toBeUndefined();
    rmSync(kubeconfig);
    mkdirSync(kubeconfig);
    expect(failure()).toEqual({ type: 'KubeconfigUnusable', message: `kubectl on the worker: the kubeconfig ${kubeconfig} ([kubernetes] of ${inventoryFile}) is not a regular file` });
  });
});

describe('the HTTP API', () => {
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

  it('answers an inventory that names a kubeconfig on the worker with 400, the key and the fix, and starts nothing', async () => {
    const response = await fetch(`${baseUrl}/v1/rollouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${testToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        playbook_toml: '[playbook]\nname = "x"\n\n[[steps]]\nid = "label"\nkind = "node-label"\nlabels = { "example.com/x" = "1" }\n',
        inventory_toml: inventory('kubeconfig = "/root/.kube/config"', '[ssh]\nprofile = "test"\n'),
      }),
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { problems?: string[] };
    expect(body.problems).toEqual([expect.stringMatching(/kubernetes\.kubeconfig: an inventory sent to the API does not choose files on the worker — define kubeconfig in a credential profile/)]);
    const started: string[] = [];
    for await (const execution of env.client.workflow.list({ query: `WorkflowType = 'rolloutWorkflow'` })) started.push(execution.workflowId);
    expect(started).toEqual([]);
  });
});
