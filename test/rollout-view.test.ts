// What `katafleet status` / `--follow` and the Temporal UI's current details show for nodes that need a
// person (quarantined: needs-attention) and for a halt: pure formatting, no servers.
import { formatResultTable } from '../cli/rollout-view';
import { formatRolloutDetails } from '../workflows/rollout';
import type { RolloutProgress } from '../workflows/rollout-messages';

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
