import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { startDevServer } from '../worker/dev-server';
import { doctorWorkflow } from '../workflows';
import { createTestWorker, startTestTemporal } from './helpers/temporal';
import { freeLoopbackPort } from '../sim/addresses';


describe('Temporal through the test environment', () => {
  it('runs a workflow and its activity on the real dev server', async () => {
    const env = await startTestTemporal();
    try {
      const worker = await createTestWorker(env, 'doctor-test');
      const report = await worker.runUntil(
        env.client.workflow.execute(doctorWorkflow, { taskQueue: 'doctor-test', workflowId: 'doctor-1' }),
      );
      expect(report.worker.pid).toBe(process.pid);
      expect(report.worker.katafleet).toBe('test');
      expect(Date.parse(report.workflowTime)).not.toBeNaN();
    } finally {
      await env.teardown();
    }
  });
});

describe('katafleet server (embedded dev server)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'katafleet-server-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('serves the Web UI and keeps workflow history across a restart (SQLite)', async () => {
    const port = await freeLoopbackPort();
    const uiPort = await freeLoopbackPort();
    const dbFile = join(dir, 'temporal.db');

    const first = await startDevServer({ dbFile, port, uiPort });
    try {
      const ui = await fetch(first.uiUrl);
      expect(ui.status).toBe(200);
      expect(await ui.text()).toContain('<html');
      const connection = await Connection.connect({ address: first.address });
      const client = new Client({ connection });
      await client.workflow.start('doctorWorkflow', { taskQueue: 'nobody-polls-this', workflowId: 'kept-across-restart' });
      await connection.close();
    } finally {
      await first.stop();
    }

    const second = await startDevServer({ dbFile, port, uiPort });
    try {
      const connection = await Connection.connect({ address: second.address });
      const description = await new Client({ connection }).workflow.getHandle('kept-across-restart').describe();
      expect(description.type).toBe('doctorWorkflow');
      expect(description.status.name).toBe('RUNNING');
      const attributes = await connection.operatorService.listSearchAttributes({ namespace: 'default' });
      expect(Object.keys(attributes.customAttributes ?? {})).toEqual(expect.arrayContaining(['KatafleetPhase', 'KatafleetNodesDone']));
      await connection.close();
    } finally {
      await second.stop();
    }
  });
});
