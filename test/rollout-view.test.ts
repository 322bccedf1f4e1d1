// What `katafleet status` / `--follow` and the Temporal UI's current details show for nodes that need a
// person (quarantined: needs-attention) and for a halt: pure formatting, no servers.
import { formatResultTable } from '../cli/rollout-view';
import { formatDriftDetails } from '../workflows/drift';
import { formatNodeDetails } from '../workflows/node';
import { carriedResult, detailsRowCap, formatRolloutDetails } from '../workflows/rollout';
import { failedNodesCap, maxProgressPageSize, progressPage, reasonCap, type RolloutNodeResult, type RolloutProgress } from '../workflows/rollout-messages';

const fix = 'katafleet node release node-2 --inventory FILE';
const quarantineReason = `node node-2 is quarantined (rollout r-1 could not roll it back: containerd config restore failed); nothing was changed. Fix: check the node, then ${fix}`;

const progress: RolloutProgress = {
  rolloutId: 'r-2',
  playbook: 'kata',
  phase: 'halted',
  reason: 'canary did not succeed: node-2 needs-attention (node node-2 is quarantined …); a canary must succeed whatever the failure budget (1); no further node was started',
  currentWave: 1,
  waves: [['node-2'], ['node-3']],
  nodes: [
    { name: 'node-2', wave: 1, status: 'needs-attention', reason: `${quarantineReason} ${'x'.repeat(200)}` },
    { name: 'node-3', wave: 2, status: 'skipped', reason: 'not started' },
  ],
  failureBudget: 1,
  counts: { total: 2, succeeded: 0, failed: 1, running: 0, pending: 0, skipped: 1 },
};

describe('needs-attention nodes', () => {
  it('are listed whole, with their fix, under the result table of katafleet status', () => {
    const table = formatResultTable(progress);
    expect(table).toContain('halted: 0 of 2 nodes done, 1 failed, 1 skipped — canary did not succeed: node-2 needs-attention');
    // The table cuts long reasons; the list below it does not.
    const attention = table.slice(table.indexOf('needs attention:'));
    expect(attention).toContain(`  node-2: ${quarantineReason}`);
    expect(attention).toContain(fix);
  });

  it('are listed whole, with their fix, in the rollout\'s current details in the Temporal UI', () => {
    const details = formatRolloutDetails(progress);
    expect(details).toContain('**Needs attention**');
    expect(details).toContain(`- **node-2**: ${quarantineReason}`);
    expect(details.split('\n')[0]).toContain('halted');
  });
});

/** A rollout of `count` FQDN-named nodes in waves of 500, every 7th failed with a long journal in its reason. */
function bigProgress(count: number): RolloutProgress {
  const nodes: RolloutNodeResult[] = Array.from({ length: count }, (_, i) => ({
    name: `worker-node-${String(i + 1).padStart(5, '0')}.prod.example.internal`,
    wave: Math.floor(i / 500) + 1,
    status: i % 7 === 3 ? 'rolled-back' : 'succeeded',
    reason: i % 7 === 3 ? `containerd did not start\n${'journal line\n'.repeat(2_000)}` : undefined,
    facts: { hostKernel: '6.1.0', undos: JSON.stringify([{ kind: 'remove-node-labels', node: `n-${i}`, keys: ['katacontainers.io/kata-runtime'] }]) },
  }));
  const waves: string[][] = [];
  for (const node of nodes) (waves[node.wave - 1] ??= []).push(node.name);
  return { rolloutId: 'big', playbook: 'kata', phase: 'completed', currentWave: waves.length, waves, nodes, failureBudget: count, counts: { total: count, succeeded: 0, failed: 0, running: 0, pending: 0, skipped: 0 } };
}

describe('answers bounded whatever the fleet size', () => {
  const big = bigProgress(10_000);
  const size = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

  it('pages the nodes in plan order: every node exactly once, each page at most the page size, waves cut to the page', () => {
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = progressPage(big, { pageToken: token, pageSize: maxProgressPageSize });
      expect(page.nodes.length).toBeLessThanOrEqual(maxProgressPageSize);
      expect(page.waves.flat()).toEqual(page.nodes.map((node) => node.name));
      expect(page.waveSizes).toEqual(big.waves.map((wave) => wave.length));
      seen.push(...page.nodes.map((node) => node.name));
      token = page.nodesPage?.nextPageToken;
      pages++;
    } while (token !== undefined);
    // 1,000 nodes a page, or fewer where long reasons would pass the page's byte budget.
    expect(pages).toBeGreaterThanOrEqual(10);
    expect(seen).toEqual(big.nodes.map((node) => node.name));
  });

  it('keeps the largest page of 10,000 nodes with long reasons under 256 KiB (was: 2 MiB) and the default page under 1 MiB', () => {
    const widest = progressPage(big, { pageSize: maxProgressPageSize });
    const first = progressPage(big);
    process.stdout.write(`progress page sizes at 10,000 nodes: default page ${size(first)} B, largest page ${size(widest)} B, whole progress ${size(big)} B\n`);
    expect(size(widest)).toBeLessThan(256 * 1024);
    expect(size(first)).toBeLessThan(1024 * 1024);
    expect(first.failedNodes).toHaveLength(failedNodesCap);
    expect(first.nodes.every((node) => (node.reason ?? '').length <= reasonCap && node.facts?.undos === undefined)).toBe(true);
  });

  it('refuses a page token it did not hand out, saying what to use', () => {
    expect(() => progressPage(big, { pageToken: 'n99999' })).toThrow('page token "n99999" was not handed out by this rollout: use the nextPageToken of the previous answer, or none for the first page');
    expect(() => progressPage(big, { pageToken: '../x' })).toThrow('was not handed out');
  });

  it('carries across continue-as-new only status, wave, a capped reason and the undos of a changed node', () => {
    const failed = carriedResult(big.nodes[3]);
    expect(failed).toMatchObject({ status: 'rolled-back', facts: undefined });
    expect(failed.reason!.length).toBeLessThanOrEqual(500);
    expect(carriedResult(big.nodes[0]).facts).toEqual({ undos: big.nodes[0].facts!.undos });
    const carried = big.nodes.map(carriedResult);
    process.stdout.write(`carried state at 10,000 nodes: ${size(carried)} B (was ${size(big.nodes)} B)\n`);
  });

  it('shows at most 100 rows in the Temporal UI\'s current details, failures first, and says where the rest is', () => {
    expect(detailsRowCap).toBe(100);
    const details = formatRolloutDetails(big);
    expect(details.split('\n').filter((line) => line.startsWith('- **worker-node-'))).toHaveLength(detailsRowCap);
    expect(details).toContain(`… ${10_000 - detailsRowCap} more nodes`);
    expect(details).toContain('`katafleet status big` lists every node');
    expect(details).toContain('- **worker-node-00004.prod.example.internal** — rolled-back, wave 1: containerd did not start ⏎ journal line');
    expect(Buffer.byteLength(details)).toBeLessThan(64 * 1024);
  });
});

describe('current details in the Temporal UI read well at a glance', () => {
  // The UI draws Markdown tables without cell padding (`node-1succeeded6.12.47-kata`, seen in a Chromium screenshot
  // by bench/details-screenshot.ts): every view is a list, one line per node or step, its fields separated by words.
  it('shows a rollout as one list line per node: name, status, wave, detail', () => {
    const running: RolloutProgress = { ...progress, phase: 'running', nodes: [{ name: 'node-1', wave: 1, status: 'succeeded', facts: { guestKernel: '6.12.47-kata' } }, { name: 'node-3', wave: 2, status: 'running' }] };
    const lines = formatRolloutDetails(running).split('\n');
    expect(lines).toContain('- **node-1** — succeeded, wave 1: 6.12.47-kata');
    expect(lines).toContain('- **node-3** — running, wave 2');
    expect(lines.some((line) => line.startsWith('|'))).toBe(false);
  });

  it('shows a node as one list line per step, then its rollback as a list of its own', () => {
    const details = formatNodeDetails({
      node: 'node-3', rolloutId: 'r-1', phase: 'rolled-back', facts: {}, undos: [],
      steps: [
        { id: 'containerd', kind: 'containerd-patch', status: 'changed', summary: 'runtime kata added' },
        { id: 'restart', kind: 'service-restart', status: 'failed', summary: 'containerd is not active\njournal: failed | x' },
        { id: 'label', kind: 'node-label', status: 'pending' },
      ],
      rollback: [{ stepId: 'containerd', kind: 'restore-containerd-config', ok: true, summary: 'restored' }],
    }, 0);
    expect(details).toBe([
      '**node-3**: rolled-back',
      '',
      '- **containerd** (containerd-patch) — changed: runtime kata added',
      '- **restart** (service-restart) — failed: containerd is not active ⏎ journal: failed | x',
      '- **label** (node-label) — pending',
      '',
      '**Rollback**',
      '',
      '- undone containerd: restored',
    ].join('\n'));
  });

  it('shows a drift check as one list line per node: name, outcome, what drifted', () => {
    const details = formatDriftDetails({ playbook: 'kata', reportOnly: false, phase: 'done', nodes: [{ node: 'node-1', outcome: 'in-sync', drifted: [] }, { node: 'node-2', outcome: 'repaired', drifted: ['containerd: runtime kata missing', 'label'] }] });
    expect(details.split('\n').slice(1)).toEqual(['', '- **node-1** — in-sync', '- **node-2** — repaired: containerd: runtime kata missing; label']);
  });
});
