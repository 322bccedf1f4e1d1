// Every sentence of README.md's "Temporal: embedded, or your cluster", and the tests that prove it through the public
// CLI: `katafleet server` keeps history in its SQLite file across a stop and a start, with the UI and katafleet's
// search attributes; with TEMPORAL_ADDRESS (and the other variables of the `temporal` CLI) katafleet uses that
// server and starts none of its own.
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { freeLoopbackPort } from '../sim/addresses';
import { taskQueue } from '../worker/connection';
import { allSearchAttributes } from '../workflows/search-attributes';
import { runKatafleet } from './helpers/cli';
import { missingProofTests, readmeSentences, unprovenSentences, type Proof } from './helpers/proof-table';
import { runKatafleetWorker, startTestTemporal, type RunningTestWorker } from './helpers/temporal';
import { waitFor } from './rollout-helpers';
import { descendants, running, spawnKatafleet, type KatafleetProcess } from './helpers/up-process';

const embedded = 'katafleet server keeps history in its SQLite file across a stop and a start, serves the Web UI and registers katafleet\'s search attributes';
const variables = 'with TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE the CLI uses that server; TEMPORAL_TLS and TEMPORAL_API_KEY turn TLS on; TEMPORAL_UI_URL makes the links';
const noServer = 'katafleet up with TEMPORAL_ADDRESS starts no server of its own: its worker polls the given one';
const printAttributes = 'server --print-attributes prints one create command per katafleet search attribute, for TEMPORAL_NAMESPACE';
const twoWorkers = 'a worker SIGKILLed while it runs an activity: the rollout completes on the other, each node patched exactly once';

export const proofs: Proof[] = [
  { sentence: 'By default katafleet uses the embedded dev server that `katafleet server` starts', tests: { 'temporal-readme.test.ts': [embedded] } },
  { sentence: 'History survives restarts of the server.', tests: { 'temporal-readme.test.ts': [embedded], 'temporal-server.test.ts': ['serves the Web UI and keeps workflow history across a restart (SQLite)'] } },
  { sentence: 'To use an existing Temporal cluster (self-hosted or Temporal Cloud)', tests: { 'temporal-readme.test.ts': [variables, noServer], 'cluster-two-workers.test.ts': [twoWorkers] } },
  { sentence: 'Register katafleet\'s search attributes on that cluster once', tests: { 'cluster-readme.test.ts': [printAttributes] } },
  { sentence: 'Then run `katafleet worker` on as many machines as you like.', tests: { 'cluster-two-workers.test.ts': [twoWorkers] } },
];

describe('README "Temporal: embedded, or your cluster"', () => {
  it('has a proving test named for every sentence', () => {
    expect(unprovenSentences(readmeSentences('## Temporal: embedded, or your cluster'), proofs)).toEqual([]);
  });

  it('names only tests that exist, in the files named', () => {
    expect(missingProofTests(proofs)).toEqual([]);
  });
});

/** Waits until `proc` exits (its child processes too); kills what is left after `ms` and fails. */
async function exitOf(proc: KatafleetProcess, children: number[], ms = 120_000): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([proc.exited, new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms); })]);
  clearTimeout(timer);
  if (code === 'timeout' || children.some(running)) {
    for (const pid of [proc.child.pid!, ...children]) if (running(pid)) process.kill(pid, 'SIGKILL');
    throw new Error(`katafleet still ran ${ms / 1000} s after it was told to stop:\n${proc.output()}`);
  }
  return code;
}

describe('the embedded dev server', () => {
  it(embedded, async () => {
    const help = await runKatafleet('127.0.0.1:1', ['server', '--help']);
    expect(help.stdout).toMatch(/--db FILE .*\(default \.katafleet\/temporal\.db\)/);
    expect(help.stdout).toMatch(/--ui-port N .*\(default 8233\)/);

    const port = await freeLoopbackPort();
    const uiPort = await freeLoopbackPort();
    const cwd = await mkdtemp(join(tmpdir(), 'kf-temporal-readme-'));
    const start = async () => {
      const server = spawnKatafleet(['server', '--port', String(port), '--ui-port', String(uiPort)], {}, cwd);
      await server.waitFor(/Temporal dev server on/);
      return server;
    };
    const stop = async (server: KatafleetProcess) => {
      const children = descendants(server.child.pid!);
      const stopped = spawnKatafleet(['server', 'stop'], {}, cwd);
      expect(await stopped.exited).toBe(0);
      await exitOf(server, children);
    };

    const first = await start();
    try {
      expect((await fetch(`http://127.0.0.1:${uiPort}/`)).status).toBe(200);
      const connection = await Connection.connect({ address: `127.0.0.1:${port}` });
      try {
        const attributes = await connection.operatorService.listSearchAttributes({ namespace: 'default' });
        expect(Object.keys(attributes.customAttributes ?? {})).toEqual(expect.arrayContaining(allSearchAttributes.map((key) => key.name)));
        await new Client({ connection }).workflow.start('doctorWorkflow', { taskQueue: 'nobody-polls-this', workflowId: 'readme-kept' });
      } finally {
        await connection.close();
      }
    } finally {
      await stop(first);
    }

    const second = await start();
    try {
      const connection = await Connection.connect({ address: `127.0.0.1:${port}` });
      try {
        const description = await new Client({ connection }).workflow.getHandle('readme-kept').describe();
        expect({ type: description.type, status: description.status.name }).toEqual({ type: 'doctorWorkflow', status: 'RUNNING' });
        await new Client({ connection }).workflow.getHandle('readme-kept').terminate('test done');
      } finally {
        await connection.close();
      }
    } finally {
      await stop(second);
    }
  }, 300_000);
});

describe('an existing Temporal server, named by the temporal CLI\'s variables', () => {
  let env: TestWorkflowEnvironment;
  let worker: RunningTestWorker;
  beforeAll(async () => {
    env = await startTestTemporal();
    worker = await runKatafleetWorker(env, taskQueue);
  }, 120_000);
  afterAll(async () => {
    await worker?.stop();
    await env?.teardown();
  });

  it(variables, async () => {
    const doctor = await runKatafleet(env.address, ['doctor'], 120_000, { TEMPORAL_NAMESPACE: 'default' });
    expect(doctor).toMatchObject({ code: 0, stdout: expect.stringContaining(`Temporal ${env.address} (namespace default): ok`) });

    const otherNamespace = await runKatafleet(env.address, ['doctor'], 120_000, { TEMPORAL_NAMESPACE: 'katafleet-readme-none' });
    expect(otherNamespace.code).not.toBe(0);
    expect(otherNamespace.stderr).toMatch(/katafleet-readme-none/);

    for (const tls of [{ TEMPORAL_TLS: 'true' }, { TEMPORAL_API_KEY: 'readme-key' }] as Record<string, string>[]) {
      const refused = await runKatafleet(env.address, ['doctor'], 120_000, tls);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain(`Cannot reach Temporal at ${env.address}`);
      expect(refused.stderr).toContain('check TEMPORAL_ADDRESS and the TLS / API key variables');
    }

    // TEMPORAL_UI_URL: the link printed for a rollout points at that UI.
    const dir = await mkdtemp(join(tmpdir(), 'kf-temporal-readme-'));
    await writeFile(join(dir, 'credentials.toml'), '[profiles.test]\nidentity_file = "/nonexistent/id"\nhosts = ["127.0.0.0/8"]\n', { mode: 0o600 });
    await writeFile(join(dir, 'inventory.toml'), '[ssh]\nprofile = "test"\n\n[[nodes]]\nname = "readme-ui"\naddress = "127.0.30.1"\n');
    const playbook = join(dir, 'prereq.toml');
    await writeFile(playbook, '[playbook]\nname = "prereq"\n\n[rollout]\ncanary = 0\n\n[[steps]]\nid = "prereq"\nkind = "prereq-check"\ncpu_flags = []\nrequire_kvm = false\n');
    const started = await runKatafleet(env.address, ['rollout', playbook, '--inventory', join(dir, 'inventory.toml'), '--request-id', 'readme-ui'], 120_000, { TEMPORAL_UI_URL: 'https://temporal-ui.example.test/' });
    expect(started.code).toBe(0);
    expect(started.stdout).toContain('https://temporal-ui.example.test/namespaces/default/workflows/katafleet-rollout-readme-ui');
  }, 300_000);

  it(noServer, async () => {
    const apiPort = await freeLoopbackPort();
    const up = spawnKatafleet(['up', '--port', String(apiPort)], { TEMPORAL_ADDRESS: env.address, KATAFLEET_API_TOKEN: 'u'.repeat(40) });
    let children: number[] = [];
    try {
      await up.waitFor(/katafleet API on/);
      children = descendants(up.child.pid!);
      const commands = children.map((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
        } catch {
          return '';
        }
      });
      expect(commands.filter((command) => /start-dev/.test(command))).toEqual([]);
      expect(up.output()).not.toMatch(/Temporal dev server on/);
      // Its worker polls the given server: a poller whose identity is up's process (or one of its children).
      const ours = [up.child.pid!, ...children];
      const pollers = await waitFor('up\'s worker to poll the given server', async () => {
        const described = await env.client.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: taskQueue }, taskQueueType: 1 });
        const identities = (described.pollers ?? []).map((poller) => poller.identity ?? '');
        return identities.some((identity) => ours.includes(Number(identity.split('@')[0]))) ? identities : undefined;
      }, 60_000, 1000);
      expect(pollers.length).toBeGreaterThan(0);
    } finally {
      up.child.kill('SIGTERM');
      await exitOf(up, children);
    }
  }, 300_000);
});
