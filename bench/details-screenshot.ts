/**
 * Screenshots of the Temporal UI's "current details" for a rollout, a node and a drift check, as katafleet's
 * formatters write them, rendered by the UI the embedded dev server serves, in headless Chromium (Debian's
 * `chromium`; `apt-get install -y chromium`). A look for people, not a test: the tests assert the text.
 *
 *   npx tsx bench/details-screenshot.ts [output folder]    (default .katafleet/details-screenshot)
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { freeLoopbackPort } from '../sim/addresses';
import { startDevServer } from '../worker/dev-server';
import { formatDriftDetails } from '../workflows/drift';
import { formatNodeDetails } from '../workflows/node';
import { formatRolloutDetails } from '../workflows/rollout';
import type { RolloutProgress } from '../workflows/rollout-messages';
import type { NodeProgress } from '../workflows/node-messages';
import type { DriftReport } from '../workflows/drift';

const rollout: RolloutProgress = {
  rolloutId: 'r-demo', playbook: 'kata', phase: 'running', currentWave: 2, waves: [['node-1'], ['node-2', 'node-3', 'node-4']],
  nodes: [
    { name: 'node-1', wave: 1, status: 'succeeded', facts: { guestKernel: '6.12.47-kata' } },
    { name: 'node-2', wave: 2, status: 'succeeded', facts: { guestKernel: '6.12.47-kata' } },
    { name: 'node-3', wave: 2, status: 'rolled-back', reason: 'step restart (service-restart): containerd is not active after the restart\njournal: failed to load plugin' },
    { name: 'node-4', wave: 2, status: 'running' },
  ],
  failureBudget: 1,
  counts: { total: 4, succeeded: 2, failed: 1, running: 1, pending: 0, skipped: 0 },
};

const node: NodeProgress = {
  node: 'node-3', rolloutId: 'r-demo', phase: 'rolled-back', facts: {}, undos: [],
  steps: [
    { id: 'prereq', kind: 'prereq-check', status: 'unchanged', summary: 'vmx, /dev/kvm, kvm kvm_intel vhost vhost_net vhost_vsock' },
    { id: 'install', kind: 'release-tarball', status: 'changed', summary: 'Kata 3.32.0 installed under /opt/kata' },
    { id: 'containerd', kind: 'containerd-patch', status: 'changed', summary: 'runtime kata added (backup /etc/containerd/config.toml.katafleet-bak)' },
    { id: 'restart', kind: 'service-restart', status: 'failed', summary: 'containerd is not active after the restart' },
  ],
  rollback: [{ stepId: 'containerd', kind: 'restore-containerd-config', ok: true, summary: 'restored /etc/containerd/config.toml (sha256 matches)' }],
};

const drift: DriftReport = {
  playbook: 'kata', reportOnly: false, phase: 'done',
  nodes: [
    { node: 'node-1', outcome: 'in-sync', drifted: [] },
    { node: 'node-2', outcome: 'repaired', drifted: ['containerd: runtime kata missing'] },
  ],
};

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const out = resolve(process.argv[2] ?? join('.katafleet', 'details-screenshot'));
  mkdirSync(out, { recursive: true });
  const scratch = mkdtempSync(join(tmpdir(), 'kf-details-'));
  const [port, uiPort] = [await freeLoopbackPort(), await freeLoopbackPort()];
  const server = await startDevServer({ dbFile: join(scratch, 'temporal.db'), port, uiPort });
  const nativeConnection = await NativeConnection.connect({ address: server.address });
  const connection = await Connection.connect({ address: server.address });
  const client = new Client({ connection });
  const taskQueue = 'details-screenshot';
  const worker = await Worker.create({ connection: nativeConnection, taskQueue, workflowsPath: require.resolve('./details-screenshot-workflow') });
  const running = worker.run();
  try {
    const shown = { rollout: formatRolloutDetails(rollout), node: formatNodeDetails(node, Date.now()), drift: formatDriftDetails(drift) };
    for (const [name, markdown] of Object.entries(shown)) {
      const workflowId = `details-${name}`;
      const handle = await client.workflow.start('showDetailsWorkflow', { taskQueue, workflowId, args: [markdown] });
      while (!(await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails) await new Promise((r) => setTimeout(r, 200));
      const png = join(out, `${name}.png`);
      await screenshot(`${server.uiUrl}/namespaces/default/workflows/${workflowId}`, png, scratch);
      process.stdout.write(`${name}: ${png}\n`);
      await handle.signal('done');
    }
  } finally {
    worker.shutdown();
    await running;
    await nativeConnection.close();
    await connection.close();
    await server.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * Opens `url` in headless Chromium and saves the page as `png` once the UI has drawn the workflow's current details. Chromium's own
 * `--screenshot` fires before the UI's single-page app has rendered a running workflow, so this drives it
 * through the DevTools protocol: navigate, open the User Metadata tab, wait for the details, capture.
 */
async function screenshot(url: string, png: string, scratch: string): Promise<void> {
  const chromium = spawn('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--window-size=1400,1600', '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', `--user-data-dir=${join(scratch, 'chromium')}`, 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    const endpoint = await new Promise<string>((resolveEndpoint, reject) => {
      let seen = '';
      chromium.stderr.on('data', (chunk: Buffer) => {
        seen += chunk.toString();
        const found = /DevTools listening on (ws:\/\/\S+)/.exec(seen);
        if (found) resolveEndpoint(found[1]);
      });
      chromium.once('exit', (code) => reject(new Error(`chromium exited with code ${code} before it listened:\n${seen}`)));
    });
    const { port } = new URL(endpoint);
    const pages = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { type: string; webSocketDebuggerUrl: string }[];
    const page = new WebSocket(pages.find((target) => target.type === 'page')!.webSocketDebuggerUrl);
    await new Promise((opened) => page.addEventListener('open', opened, { once: true }));
    let nextId = 0;
    const call = (method: string, params: object = {}) => new Promise<Record<string, unknown>>((answered) => {
      const id = ++nextId;
      const onMessage = (event: MessageEvent) => {
        const message = JSON.parse(String(event.data)) as { id?: number; result?: Record<string, unknown> };
        if (message.id !== id) return;
        page.removeEventListener('message', onMessage);
        answered(message.result ?? {});
      };
      page.addEventListener('message', onMessage);
      page.send(JSON.stringify({ id, method, params }));
    });
    await call('Page.navigate', { url });
    // The details sit in the "User Metadata" tab: wait for the tab, open it, wait for its text.
    const evaluate = async (expression: string) => ((await call('Runtime.evaluate', { expression, returnByValue: true })) as { result?: { value?: unknown } }).result?.value;
    const clickTab = "(() => { const tab = [...document.querySelectorAll('a,button')].find((e) => e.textContent.trim() === 'User Metadata'); if (tab) tab.click(); return Boolean(tab); })()";
    for (let tries = 0; tries < 240 && !(await evaluate(clickTab)); tries++) await new Promise((r) => setTimeout(r, 250));
    for (let tries = 0; tries < 240 && !(await evaluate("/current details/i.test(document.body.innerText)")); tries++) await new Promise((r) => setTimeout(r, 250));
    await new Promise((r) => setTimeout(r, 1_000));
    const { data } = (await call('Page.captureScreenshot', { format: 'png' })) as { data: string };
    writeFileSync(png, Buffer.from(data, 'base64'));
    page.close();
  } finally {
    chromium.kill('SIGTERM');
  }
}

if (typeof WebSocket === 'undefined') {
  // Node 20 has WebSocket behind a flag: run this script again with it.
  const again = spawn(process.execPath, ['--experimental-websocket', ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
  again.once('exit', (code) => (process.exitCode = code ?? 1));
} else main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
