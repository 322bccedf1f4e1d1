// Every sentence of README.md's "Drift repair", and the tests that prove it: the drift tests run driftWorkflow on
// the simulated fleet (through the CLI's `drift check` and `drift schedule`, the API's /v1/schedules, or started on
// Temporal as a schedule starts it); this file checks that the table is complete, and proves the schedule's overlap
// policy through the API.
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { FastifyInstance } from 'fastify';
import { startTestApi, testToken, apiInventoryToml } from './helpers/api';
import { fold, missingProofTests, readmeSentences, unprovenSentences, type Proof } from './helpers/proof-table';
import { startTestTemporal } from './helpers/temporal';

const overlap = 'a schedule created through POST /v1/schedules is a Temporal Schedule that skips a tick while the previous run still works';
const finds = 'finds nodes without Kata, names everything they lack, and repairs them through nodeWorkflow';
const inSync = 'finds an in-sync fleet in sync and writes nothing: no config rewrite, no restart, no package or cluster change';
const repairsAll = 'repairs every drift kind, and the next run finds the fleet in sync';
const busy = 'skips a node that a rollout is working on and says so, and the rollout finishes undisturbed';
const inverse = 'holds the inverse state for remove/delete steps: the kata-uninstall playbook finds everything Kata left (report only)';
const records = 'records the playbook on each node a rollout succeeded on, and repairs a drifted node back to it';
const driftPayloads = 'checks, repairs and reports across continue-as-new runs with no payload over 256 KiB (the old input alone was over 2 MiB)';
const scheduleHolder = 'keeps a schedule\'s start action small: the nodes are held by the schedule\'s inventory workflow, which its deletion ends';
const conflict = 'reports a conflict and repairs nothing when the drift run holds another playbook than the node recorded';

export const proofs: Proof[] = [
  { sentence: 'Nodes drift after a rollout', tests: { 'drift.test.ts': [repairsAll] } },
  {
    sentence: '`driftWorkflow` checks every node of an inventory against the playbook, read-only',
    tests: { 'drift.test.ts': [finds, inSync, 'reports a node whose sshd is down as unreachable, with the reason, and still checks the others'], 'drift-desired.test.ts': [conflict] },
  },
  { sentence: 'Drifted nodes are repaired by running the playbook\'s `nodeWorkflow` on them (in batches) under the same per-node lock as rollouts', tests: { 'drift.test.ts': [finds, busy] } },
  { sentence: '`--report-only` changes nothing.', tests: { 'drift.test.ts': ['--report-only names each drift and changes nothing'] } },
  { sentence: 'An in-sync node is only read: no config write, no restart.', tests: { 'drift.test.ts': [inSync] } },
  { sentence: 'A repair only puts back what the node\'s last successful rollout applied', tests: { 'drift-desired.test.ts': [records] } },
  { sentence: 'When the drift run\'s playbook is another one, or another version of the same one, the node is reported `conflict`', tests: { 'drift-desired.test.ts': [conflict] } },
  {
    sentence: 'So is a node that an abort rolled back, and a node on which a repair would downgrade a package.',
    tests: { 'drift-desired.test.ts': ['does not re-apply a playbook to a node an abort rolled back', 'names a package installed newer than the playbook pins, and the drift result is a conflict, not a repair'] },
  },
  { sentence: 'A node that no rollout recorded anything on is repaired to the drift run\'s playbook.', tests: { 'drift.test.ts': [finds] } },
  { sentence: 'A quarantined node (`/var/lib/katafleet/quarantine.json`) is reported `needs-attention`', tests: { 'drift-desired.test.ts': ['skips a quarantined node: needs-attention with the reason and the fix, nothing changed'] } },
  { sentence: 'What is checked: packages at their pinned versions', tests: { 'drift.test.ts': [finds, repairsAll] } },
  { sentence: 'For remove/delete steps (kata-uninstall) the inverse: those things must be absent.', tests: { 'drift.test.ts': [inverse] } },
  { sentence: 'Gates and proofs (`prereq-check`, `readiness-gate`, `verification-pod`) and `rollback` are not checked.', tests: { 'drift.test.ts': [inSync] } },
  {
    sentence: 'Schedules are Temporal Schedules (overlap policy skip',
    tests: { 'drift-readme.test.ts': [overlap], 'drift.test.ts': ['runs a schedule created through the CLI and one created through the API on time; both show in `temporal schedule list` until deleted'] },
  },
  { sentence: 'Each run lists its nodes (one line each: outcome, what drifted) in the UI\'s current details, and the search attribute `KatafleetDrift`', tests: { 'drift.test.ts': ['shows the result in the workflow\'s search attributes as outcomes and counts, bounded whatever the fleet size'] } },
  {
    sentence: 'A drift run or schedule takes **at most 10,000 nodes**, as a rollout does',
    tests: { 'scale-api.test.ts': ['POST /v1/schedules answers 400 naming the limit and the fix, and creates no schedule', 'katafleet drift check exits 2 naming the limit and the fix, and starts nothing'], 'scale-drift-payloads.test.ts': [driftPayloads] },
  },
  { sentence: 'Its inventory travels in pieces of at most 500 nodes', tests: { 'scale-drift-payloads.test.ts': [driftPayloads, scheduleHolder], 'drift.test.ts': [finds, 'runs a schedule created through the CLI and one created through the API on time; both show in `temporal schedule list` until deleted'] } },
  { sentence: 'A run continues as new before its history fills up, and its report lists every node up to 500', tests: { 'scale-drift-payloads.test.ts': [driftPayloads, 'lists every node up to ${reportNodesCap}, else the nodes not in sync first, within 192 KiB, and counts all'] } },
];

/** Sentences that promise no behaviour. */
export const unproven: { sentence: string; why: string }[] = [
  { sentence: 'Measured on the simulated fleet: checking 3 in-sync nodes takes ~1 s, repairing 3 drifted nodes ~10–13 s.', why: 'a measurement; the drift tests print no timing' },
];

describe('README "Drift repair"', () => {
  it('has a proving test named for every sentence, but the ones listed as unproven', () => {
    expect(unprovenSentences(readmeSentences('## Drift repair'), proofs)).toEqual(unproven.map((entry) => fold(entry.sentence)));
  });

  it('names only tests that exist, in the files named', () => {
    expect(missingProofTests(proofs)).toEqual([]);
  });
});

describe('drift schedules through the API', () => {
  let env: TestWorkflowEnvironment;
  let app: FastifyInstance;
  let baseUrl: string;
  beforeAll(async () => {
    env = await startTestTemporal();
    ({ app, baseUrl } = await startTestApi(env.client));
  }, 120_000);
  afterAll(async () => {
    await app?.close();
    await env?.teardown();
  });

  it(overlap, async () => {
    const playbook = '[playbook]\nname = "label"\n\n[[steps]]\nid = "label"\nkind = "node-label"\nlabels = { "example.com/x" = "1" }\n';
    const response = await fetch(`${baseUrl}/v1/schedules`, {
      method: 'POST',
      headers: { authorization: `Bearer ${testToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ playbook_toml: playbook, inventory_toml: apiInventoryToml, every: '1h', report_only: true }),
    });
    const body = (await response.json()) as { schedule_id: string };
    expect(response.status).toBe(201);
    const handle = env.client.schedule.getHandle(body.schedule_id);
    try {
      const description = await handle.describe();
      expect(description.policies.overlap).toBe('SKIP');
      expect(description.action).toMatchObject({ type: 'startWorkflow', workflowType: 'driftWorkflow' });
    } finally {
      await handle.delete();
    }
  }, 60_000);
});
