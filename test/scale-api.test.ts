// Fleet size at the API's door (issue 13): a rollout of realistic, FQDN-named nodes starts through
// `POST /v1/rollouts` (no search attribute grows with the fleet), a second rollout on busy nodes is refused with a
// bounded message, an inventory over the documented limit is a 400 naming the limit and the fix, and a refusal by
// Temporal itself (a value over one of its limits, an attribute not registered) becomes an answer that names the
// limit and the fix. The dev server is the real one; no worker runs (nothing here needs a node).
import { defineSearchAttributeKey } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { asTemporalRefusal, listCapped, maxRolloutNodes, rolloutSizeProblem } from '../api/rollout-service';
import { maxDriftNodes } from '../api/schedule-service';
import { searchAttributes } from '../workflows/search-attributes';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestApi, testToken, writeTestCredentials } from './helpers/api';
import { runKatafleet } from './helpers/cli';
import { startTestTemporal } from './helpers/temporal';

/** An inline inventory of `count` workers named like cloud nodes, on distinct loopback addresses (they are never reached). */
export function fqdnInventoryToml(count: number, first = 1): string {
  const lines = ['[ssh]', 'profile = "test"', '', '[kubernetes]', 'control_plane = "cp"', '', '[[nodes]]', 'name = "cp"', 'address = "127.0.9.250"', 'role = "control-plane"', ''];
  for (let i = first; i < first + count; i++) {
    lines.push('[[nodes]]', `name = "worker-node-${String(i).padStart(4, '0')}.prod.example.internal"`, `address = "127.${10 + Math.floor(i / 250)}.${i % 250}.1"`, '');
  }
  return lines.join('\n');
}

const auth = { authorization: `Bearer ${testToken}` };

let env: TestWorkflowEnvironment;
let app: FastifyInstance;
let baseUrl: string;

async function post(url: string, payload: unknown) {
  const response = await fetch(`${baseUrl}${url}`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(payload) });
  return { status: response.status, body: (await response.json()) as { error?: string; message?: string; rollout_id?: string; started?: boolean } };
}

beforeAll(async () => {
  env = await startTestTemporal();
  ({ app, baseUrl } = await startTestApi(env.client));
}, 120_000);

afterAll(async () => {
  await app?.close();
  await env?.teardown();
});

describe('POST /v1/rollouts with a realistic fleet', () => {
  const started: string[] = [];
  afterAll(async () => {
    for (const id of started) await env.client.workflow.getHandle(`katafleet-rollout-${id}`).terminate('test done').catch(() => undefined);
  });

  it('starts a rollout of 250 nodes named worker-node-0001.prod.example.internal (was 500: KatafleetNodes over 2 KiB)', async () => {
    const response = await post('/v1/rollouts', { playbook: 'kata', inventory_toml: fqdnInventoryToml(250), request_id: 'fqdn-250' });
    expect(response.body).toMatchObject({ rollout_id: 'fqdn-250', started: true });
    expect(response.status).toBe(202);
    started.push('fqdn-250');
    const description = await env.client.workflow.getHandle('katafleet-rollout-fqdn-250').describe();
    expect(description.typedSearchAttributes.get(searchAttributes.nodesTotal)).toBe(250);
    expect(description.typedSearchAttributes.get(searchAttributes.nodes)).toBeUndefined();
    // Every search attribute value the start set is small, whatever the fleet size.
    expect(Math.max(...Object.values(description.searchAttributes).map((value) => JSON.stringify(value).length))).toBeLessThan(1024);
  }, 60_000);

  it('refuses a second rollout on nodes a running one works on with 409, naming at most 20 of them', async () => {
    const response = await post('/v1/rollouts', { playbook: 'kata', inventory_toml: fqdnInventoryToml(100, 201), request_id: 'fqdn-overlap' });
    expect(response.status).toBe(409);
    expect(response.body.error).toBe('RolloutConflict');
    expect(response.body.message).toContain('rollout fqdn-250 is still running on worker-node-0201.prod.example.internal, worker-node-0202.prod.example.internal');
    expect(response.body.message).toContain('and 30 more: wait for it, or abort it');
  }, 60_000);

  it('starts a rollout on nodes no running rollout works on', async () => {
    const response = await post('/v1/rollouts', { playbook: 'kata', inventory_toml: fqdnInventoryToml(60, 300), request_id: 'fqdn-disjoint' });
    expect(response.status).toBe(202);
    started.push('fqdn-disjoint');
  }, 60_000);

  it(`refuses an inventory of more than ${maxRolloutNodes} nodes with 400 naming the limit and the fix, and starts nothing`, async () => {
    const response = await post('/v1/rollouts', { playbook: 'kata', inventory_toml: fqdnInventoryToml(maxRolloutNodes + 1, 5000), request_id: 'too-many' });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('RolloutTooLarge');
    expect(response.body.message).toBe(`inventory_toml: ${maxRolloutNodes + 1} nodes to roll out; one rollout takes at most ${maxRolloutNodes} (the limit that keeps every Temporal payload and history under half of its limit, see docs/scale.md): split the inventory into several of at most ${maxRolloutNodes} nodes and roll them out one after the other`);
    await expect(env.client.workflow.getHandle('katafleet-rollout-too-many').describe()).rejects.toThrow();
  }, 60_000);
});

describe('katafleet rollout with an inventory over the limit (README "Fleet size": "CLI: exit 2")', () => {
  it(`exits 2 naming the limit and the fix for ${maxRolloutNodes + 1} nodes, and starts nothing`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'katafleet-too-many-'));
    try {
      writeTestCredentials(dir);
      const inventory = join(dir, 'fleet.toml');
      writeFileSync(inventory, fqdnInventoryToml(maxRolloutNodes + 1, 5000));
      const result = await runKatafleet(env.address, ['rollout', 'kata', '--inventory', inventory, '--request-id', 'cli-too-many']);
      expect(result.stderr).toContain(`${inventory}: ${maxRolloutNodes + 1} nodes to roll out; one rollout takes at most ${maxRolloutNodes}`);
      expect(result.stderr).toContain('split the inventory into several');
      expect(result.code).toBe(2);
      await expect(env.client.workflow.getHandle('katafleet-rollout-cli-too-many').describe()).rejects.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe(`drift over ${maxDriftNodes} nodes (the same limit as a rollout: the inventory in pieces)`, () => {
  it('POST /v1/schedules answers 400 naming the limit and the fix, and creates no schedule', async () => {
    const response = await post('/v1/schedules', { playbook: 'kata', inventory_toml: fqdnInventoryToml(maxDriftNodes + 1, 7000), every: '15m', schedule_id: 'too-many' });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({ error: 'RolloutTooLarge', message: `inventory_toml: ${maxDriftNodes + 1} nodes to check for drift; one drift run takes at most ${maxDriftNodes}: split the inventory into several of at most ${maxDriftNodes} nodes, one drift schedule each` });
    await expect(env.client.schedule.getHandle('katafleet-drift-too-many').describe()).rejects.toThrow();
  }, 60_000);

  it('katafleet drift check exits 2 naming the limit and the fix, and starts nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'katafleet-drift-too-many-'));
    try {
      writeTestCredentials(dir);
      const inventory = join(dir, 'fleet.toml');
      writeFileSync(inventory, fqdnInventoryToml(maxDriftNodes + 1, 7000));
      const result = await runKatafleet(env.address, ['drift', 'check', 'kata', '--inventory', inventory]);
      expect(result.stderr).toContain(`${inventory}: ${maxDriftNodes + 1} nodes to check for drift; one drift run takes at most ${maxDriftNodes}`);
      expect(result.code).toBe(2);
      expect(result.stdout).not.toContain('drift check http');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("Temporal's refusals, as answers that name the limit and the fix", () => {
  it('a search attribute value over 2 KiB (what KatafleetNodes was at 50 FQDN names)', async () => {
    const names = Array.from({ length: 60 }, (_, i) => `worker-node-${String(i).padStart(4, '0')}.prod.example.internal`);
    const refused = await env.client.workflow
      .start('rolloutWorkflow', { taskQueue: 'nobody-polls-this', workflowId: 'refused-sa', args: [{}], typedSearchAttributes: [{ key: searchAttributes.nodes, value: names }] })
      .then(() => undefined, (err: unknown) => err);
    expect(refused).toBeDefined();
    const answer = asTemporalRefusal(refused, 'starting rollout refused-sa (60 nodes)');
    expect(answer?.type).toBe('TemporalLimit');
    expect(answer?.message).toMatch(/^Temporal refused starting rollout refused-sa \(60 nodes\): a search attribute \(KatafleetNodes\) is over the namespace's limit/);
    expect(answer?.message).toMatch(/\(\d+ bytes, limit 2048\)/);
    expect(answer?.message).toContain('Fix: fewer nodes per rollout');
  });

  it('a search attribute the namespace does not know', async () => {
    const unknown = defineSearchAttributeKey('KatafleetNoSuchAttribute', 'KEYWORD');
    const refused = await env.client.workflow
      .start('rolloutWorkflow', { taskQueue: 'nobody-polls-this', workflowId: 'refused-unknown', args: [{}], typedSearchAttributes: [{ key: unknown, value: 'x' }] })
      .then(() => undefined, (err: unknown) => err);
    const answer = asTemporalRefusal(refused, 'starting rollout refused-unknown (1 nodes)');
    expect(answer?.type).toBe('TemporalNotReady');
    expect(answer?.message).toContain('search attribute KatafleetNoSuchAttribute is not registered');
    expect(answer?.message).toContain('katafleet server --print-attributes');
  });

  it('leaves errors that are not refusals alone (they stay internal errors)', () => {
    expect(asTemporalRefusal(new Error('socket hang up'), 'x')).toBeUndefined();
    expect(asTemporalRefusal({ code: 14, details: 'connection refused' }, 'x')).toBeUndefined();
  });

  it('caps lists of node names in messages', () => {
    expect(listCapped(['a', 'b'], 2)).toBe('a, b');
    expect(listCapped(['a', 'b', 'c', 'd'], 2)).toBe('a, b and 2 more');
    expect(rolloutSizeProblem(maxRolloutNodes, 'f.toml')).toBeUndefined();
    expect(rolloutSizeProblem(maxRolloutNodes + 1, 'f.toml')).toContain(`f.toml: ${maxRolloutNodes + 1} nodes to roll out`);
  });
});
