import type { RolloutNodeResult, RolloutProgress } from '../workflows/rollout-messages';

const barWidth = 20;

/**
 * One bar per wave and one line per node of the current and earlier waves: the live view of `--follow`. The first
 * wave is labelled `canary` only when the rollout has one, as its progress says (`progress.canary`, which the progress
 * query, `GET /v1/rollouts/{id}` and the result carry); `canary` stands in for a saved result without that field.
 */
export function formatRolloutLive(progress: RolloutProgress, canary?: number): string {
  const lines = [`rollout ${progress.rolloutId} (${progress.playbook}): ${progress.phase} — ${progress.counts.succeeded}/${progress.counts.total} done, ${progress.counts.failed} failed (budget ${progress.failureBudget})`];
  progress.waves.forEach((_wave, index) => {
    const nodes = progress.nodes.filter((node) => node.wave === index + 1);
    const finished = nodes.filter((node) => !['pending', 'running'].includes(node.status)).length;
    const filled = Math.round((finished / Math.max(1, nodes.length)) * barWidth);
    const label = index === 0 && isCanaryWave(progress, canary) ? 'canary' : `wave ${index + 1}`;
    lines.push(`  ${label.padEnd(7)} [${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}] ${finished}/${nodes.length}`);
    if (index + 1 <= progress.currentWave) {
      for (const node of nodes) lines.push(`    ${node.name.padEnd(20)} ${node.status}${node.reason ? `: ${node.reason}` : ''}`);
    }
  });
  return lines.join('\n');
}

/**
 * Whether the first wave of `progress` is a canary: as the rollout says (`progress.canary`), else as `canary` says (read
 * elsewhere for a rollout whose result predates that field), else guessed from the wave sizes. Pure.
 */
function isCanaryWave(progress: RolloutProgress, canary: number | undefined): boolean {
  const asked = progress.canary ?? canary;
  if (asked !== undefined) return asked > 0;
  const sizes = progress.waveSizes ?? progress.waves.map((wave) => wave.length);
  return sizes.length > 1 && sizes[0] < progress.counts.total;
}

/** The result table printed at the end of a rollout (and by `katafleet status`). */
export function formatResultTable(progress: RolloutProgress): string {
  const header = ['node', 'wave', 'result', 'host kernel', 'guest kernel', 'config backup', 'time', 'reason'];
  const rows = progress.nodes.map((node) => [
    node.name,
    String(node.wave),
    node.status,
    node.facts?.hostKernel ?? '',
    node.facts?.guestKernel ?? '',
    node.facts?.backupPath ?? '',
    node.durationMs === undefined ? '' : `${(node.durationMs / 1000).toFixed(1)} s`,
    reasonOf(node),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column].length)));
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd();
  const summary = `${progress.phase}: ${progress.counts.succeeded} of ${progress.counts.total} nodes done, ${progress.counts.failed} failed, ${progress.counts.skipped} skipped${progress.reason ? ` — ${progress.reason}` : ''}`;
  // A quarantined node needs a person: its whole reason, with the exact fix, not cut like the table's.
  const attention = progress.nodes.filter((node) => node.status === 'needs-attention').map((node) => `  ${node.name}: ${node.reason ?? 'quarantined'}`);
  const cluster = (progress.cluster ?? []).map((entry) => `  ${entry}`);
  return [line(header), ...rows.map(line), '', summary, ...(cluster.length > 0 ? ['', 'cluster (once for the rollout):', ...cluster] : []), ...(attention.length > 0 ? ['', 'needs attention:', ...attention] : [])].join('\n');
}

function reasonOf(node: RolloutNodeResult): string {
  if (!node.reason) return '';
  return node.reason.length > 160 ? `${node.reason.slice(0, 157)}...` : node.reason;
}
