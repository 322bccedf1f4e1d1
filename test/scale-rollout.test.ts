// A rollout of 300 nodes named like cloud nodes, through `POST /v1/rollouts` on the embedded dev server, stays
// under half of every Temporal limit (issue 13). 300 names in kube-apiserver (kwok) are served by 3 real
// simulated hosts (100 names each, each name its own loopback address): see bench/scale-run.ts for what is
// real and what is light, and `npx tsx bench/scale.ts --nodes N` for the large sizes.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cloudNodeName, runScaleRollout, shareOfLimits, type ScaleMeasurement } from '../bench/scale-run';

const nodeCount = 300;

describe(`a rollout of ${nodeCount} cloud-named nodes through the API`, () => {
  let measured: ScaleMeasurement;

  beforeAll(async () => {
    measured = await runScaleRollout({ nodes: nodeCount, hosts: 3, dir: await mkdtemp(join(tmpdir(), 'kf-scale-rollout-')), log: (line) => process.stdout.write(`${line}\n`) });
    process.stdout.write(`scale-rollout: ${JSON.stringify({ ...measured, allNodes: undefined, share: shareOfLimits(measured) })}\n`);
  }, 1_200_000);

  it('succeeds on every node, each in the API\'s pages exactly once, and labels every Node', () => {
    expect(measured).toMatchObject({ status: 'COMPLETED', phase: 'succeeded', counts: { total: nodeCount, succeeded: nodeCount, failed: 0 } });
    expect(measured.allNodes.map((node) => node.name)).toEqual(Array.from({ length: nodeCount }, (_, i) => cloudNodeName(i, nodeCount)));
    expect(measured.allNodes.every((node) => node.status === 'succeeded')).toBe(true);
    expect(measured.labelled).toBe(nodeCount);
  });

  it('keeps every payload, search attribute, history and answer under half of its Temporal limit', () => {
    const share = shareOfLimits(measured);
    expect(Object.values(share).every(Number.isFinite)).toBe(true);
    expect(Object.entries(share).filter(([, value]) => !(value < 0.5))).toEqual([]);
  });
});
