/**
 * Wave planning: which nodes a rollout touches together. Pure and deterministic, so a workflow can
 * call it and `katafleet plan` prints exactly what the workflow will do.
 */

/** How waves are sized; the `[rollout]` table of a playbook fits this shape. */
export interface WaveSizing {
  /** Nodes in the first (canary) wave; 0 means no canary wave. */
  canary: number;
  /** Nodes per later wave: a count, or `"N%"` of all nodes (rounded up, at least 1). */
  wave_size: number | string;
}

/**
 * Nodes per wave after the canary for `totalNodes` nodes.
 * @throws Error when `wave_size` is neither a positive integer nor a percentage from 1% to 100%.
 */
export function waveSizeFor(waveSize: number | string, totalNodes: number): number {
  if (typeof waveSize === 'number') {
    if (!Number.isInteger(waveSize) || waveSize < 1) {
      throw new Error(`wave_size ${waveSize} must be a positive whole number or a percentage such as "25%"`);
    }
    return waveSize;
  }
  const percent = /^([0-9]{1,3})%$/.exec(waveSize);
  const value = percent ? Number(percent[1]) : NaN;
  if (!(value >= 1 && value <= 100)) {
    throw new Error(`wave_size ${JSON.stringify(waveSize)} must be a positive whole number or a percentage from "1%" to "100%"`);
  }
  return Math.max(1, Math.ceil((totalNodes * value) / 100));
}

/**
 * Splits nodes into waves, keeping their order: first a canary wave of `canary` nodes (none when
 * 0), then waves of `wave_size` nodes; the last wave may be smaller. A percentage counts all nodes,
 * canary included.
 * @example planWaves(['a','b','c','d','e'], { canary: 1, wave_size: 2 }) // [['a'], ['b','c'], ['d','e']]
 * @throws Error on a negative or fractional canary, a bad wave size, or a node named twice.
 */
export function planWaves(nodeNames: readonly string[], rollout: WaveSizing): string[][] {
  const { canary } = rollout;
  if (!Number.isInteger(canary) || canary < 0) {
    throw new Error(`canary ${canary} must be a whole number of nodes, 0 or more`);
  }
  const seen = new Set<string>();
  for (const name of nodeNames) {
    if (seen.has(name)) throw new Error(`node ${JSON.stringify(name)} is listed twice; each node belongs to exactly one wave`);
    seen.add(name);
  }
  const size = waveSizeFor(rollout.wave_size, nodeNames.length);
  const waves: string[][] = [];
  const canaryCount = Math.min(canary, nodeNames.length);
  if (canaryCount > 0) waves.push(nodeNames.slice(0, canaryCount));
  for (let start = canaryCount; start < nodeNames.length; start += size) {
    waves.push(nodeNames.slice(start, start + size));
  }
  return waves;
}
