// SECURITY.md "Credential profiles": a profile logs in only to the node addresses its `hosts` cover, and the
// worker checks that before every connection. So someone who reaches Temporal and starts rolloutWorkflow or
// nodeWorkflow straight away, naming an operator's profile for a node it is not bound to, gets a permanent
// CredentialProfileRefused failure, and nothing reaches the node (its sshd accepts no login).
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { buildRolloutInput, rolloutWorkflowId } from '../../api/rollout-service';
import { loadInventory, loadPlaybook } from '../../playbooks/load';
import { loginFor } from '../../playbooks/login';
import { nodeWorkflowId, type nodeWorkflow } from '../../workflows/node';
import type { RolloutInput } from '../../workflows/rollout';
import type { RolloutProgress } from '../../workflows/rollout-messages';
import { kataSteps, nodeInput, onNode, startNodeFleet, type NodeFleet } from '../helpers/node-workflow';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from '../helpers/temporal';

const taskQueue = 'profile-scope';
let env: TestWorkflowEnvironment;
let nodes: NodeFleet;
let worker: RunningTestWorker;
let labCredentials: string;

/** Logins the node's sshd accepted so far (its own log). */
async function acceptedLogins(): Promise<number> {
  const log = await onNode(nodes, 's-1', 'cat /var/log/ssh.log');
  return log.split('\n').filter((line) => line.includes('Accepted publickey')).length;
}

beforeAll(async () => {
  env = await startTestTemporal();
  nodes = await startNodeFleet('profile-scope', { nodes: [{ name: 's-1' }] });
  worker = await runKatafleetWorker(env, taskQueue);
  // The operator's second profile: the same key (the worst case), bound to the lab network only.
  const target = nodes.targets['s-1'];
  const login = loginFor(target.credentials, target);
  labCredentials = join(await mkdtemp(join(tmpdir(), 'kf-profile-scope-')), 'credentials.toml');
  await writeFile(labCredentials, [
    '[profiles.lab]', `user = "${login.user}"`, `identity_file = "${login.identityFile}"`, `known_hosts = "${login.knownHosts}"`,
    'trust_on_first_use = true', 'hosts = ["10.99.0.0/16"]', '',
  ].join('\n'), { mode: 0o600 });
}, 240_000);

afterAll(async () => {
  await worker?.stop();
  await Promise.all([env?.teardown(), nodes?.fleet.stop()]);
}, 60_000);

describe('a workflow started straight on Temporal with a profile not bound to the node', () => {
  let before = 0;

  beforeAll(async () => {
    before = await acceptedLogins();
  });

  it('nodeWorkflow fails with CredentialProfileRefused, naming the profile, its hosts and the address', async () => {
    const input = nodeInput(nodes, 's-1', await kataSteps(['prereq', 'containerd']), { rolloutId: 'scope' });
    input.node = { ...input.node, credentials: { profile: 'lab', file: labCredentials } };
    const handle = await env.client.workflow.start<typeof nodeWorkflow>('nodeWorkflow', { taskQueue, workflowId: `${nodeWorkflowId('s-1')}-scope`, args: [input] });
    const failure = await handle.result().then(() => undefined, (err: { cause?: { message?: string; cause?: { type?: string; message?: string } } }) => err);
    expect(failure).toBeDefined();
    const text = JSON.stringify(failure?.cause ?? {}) + String(failure?.cause?.message);
    expect(text).toContain('CredentialProfileRefused');
    expect(text).toContain(`credential profile \\"lab\\" of ${labCredentials} may log in to 10.99.0.0/16 only, not to ${nodes.targets['s-1'].address}`);
    // Refused before any connection: one activity attempt, no retry of a permanent failure.
    const attempts = (await handle.fetchHistory()).events?.filter((event) => event.activityTaskStartedEventAttributes) ?? [];
    expect(attempts.every((event) => event.activityTaskStartedEventAttributes?.attempt === 1)).toBe(true);
  }, 120_000);

  it('rolloutWorkflow reports the node failed with the same reason', async () => {
    const playbook = await loadPlaybook('kata');
    const inventory = await loadInventory(nodes.fleet.inventoryPath);
    const base = buildRolloutInput({ ...playbook, steps: await kataSteps(['prereq', 'containerd']) }, inventory, 'scope-rollout', { canary: 1, failure_budget: 0, pause_between_waves: '0s' });
    const input: RolloutInput = { ...base, nodes: base.nodes.map((node) => ({ ...node, credentials: { profile: 'lab', file: labCredentials } })) };
    const handle = await env.client.workflow.start('rolloutWorkflow', { taskQueue, workflowId: rolloutWorkflowId('scope-rollout'), args: [input] });
    const result = await handle.result().then((progress: RolloutProgress) => progress, (err: Error) => err);
    expect(JSON.stringify(result instanceof Error ? { message: result.message, cause: (result as { cause?: unknown }).cause } : result)).toMatch(/CredentialProfileRefused|may log in to 10\.99\.0\.0\/16 only/);
    if (!(result instanceof Error)) {
      expect(result.counts).toMatchObject({ succeeded: 0 });
    }
  }, 180_000);

  it('nothing reached the node: its sshd accepted no login meanwhile (only this check\'s own)', async () => {
    expect(await acceptedLogins()).toBe(before + 1);
  });
});
