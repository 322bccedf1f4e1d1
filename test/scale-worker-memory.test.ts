// Worker memory (issue 13, docs/scale.md "Worker memory"): what a worker keeps per SSH connection must not grow with
// the fleet. Each connection's host verifier lived as long as the connection and held the whole parsed known_hosts
// (a line per node): at 400 nodes, 180 open connections held 72,000 parsed lines (a heap snapshot's strings
// "ssh-ed25519" and the node addresses), and the worker's peak RSS was 476–502 MB; keeping only the lines that
// can decide the node's key brought it to 369 MB (`bench/scale.ts --nodes 400 --hosts 4 --wave-size 200`).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { knownHostsForNode } from '../activities/ssh/pool';
import { appendKnownHost, checkHostKey, knownHostsName, parseKnownHosts, readKnownHosts } from '../activities/ssh/known-hosts';
import { heapGrowingPercent, limitOldGenerationGrowth, limitWorkflowThreadYoungGeneration, workflowSemiSpaceMb } from '../worker/worker';

const fleetSize = 2_000;
/** An ssh-ed25519 public key blob (type string, then 32 key bytes), as a server sends it. */
function ed25519Blob(): Buffer {
  const type = Buffer.from('ssh-ed25519');
  const key = randomBytes(32);
  const length = (n: number) => Buffer.from([0, 0, 0, n]);
  return Buffer.concat([length(type.length), type, length(key.length), key]);
}
const address = (i: number) => `127.42.${Math.floor(i / 250)}.${1 + (i % 250)}`;
const keys = Array.from({ length: fleetSize }, () => ed25519Blob());
const revokedKey = ed25519Blob();
const text = [
  '# the fleet',
  ...keys.map((key, i) => `${knownHostsName(address(i), i % 2 === 0 ? 22 : 2222)} ssh-ed25519 ${key.toString('base64')}`),
  `@revoked * ssh-ed25519 ${revokedKey.toString('base64')}`,
].join('\n');
const all = { exists: true, entries: parseKnownHosts(text) };

describe('what an SSH connection keeps of known_hosts', () => {
  it(`keeps the node's own line and the @revoked ones, not the ${fleetSize} lines of the fleet`, () => {
    expect(all.entries).toHaveLength(fleetSize + 1);
    for (const i of [0, 1, 777, fleetSize - 1]) {
      const kept = knownHostsForNode(all, address(i), i % 2 === 0 ? 22 : 2222);
      expect(kept.entries.map((entry) => entry.line).sort((a, b) => a - b)).toEqual([i + 2, fleetSize + 2]);
    }
  });

  it('decides every key as the whole file does: known, changed, revoked, unknown', () => {
    for (const i of [0, 1, 1234]) {
      const port = i % 2 === 0 ? 22 : 2222;
      const kept = knownHostsForNode(all, address(i), port);
      for (const offered of [keys[i], keys[(i + 1) % fleetSize], revokedKey, ed25519Blob()]) {
        expect(checkHostKey(kept.entries, address(i), port, offered)).toEqual(checkHostKey(all.entries, address(i), port, offered));
      }
      expect(checkHostKey(kept.entries, address(i), port, keys[i]).verdict).toBe('known');
      expect(checkHostKey(kept.entries, address(i), port, revokedKey).verdict).toBe('revoked');
      expect(checkHostKey(kept.entries, address(i), port, keys[(i + 1) % fleetSize]).verdict).toBe('mismatch');
    }
    const stranger = knownHostsForNode(all, '203.0.113.7', 22);
    expect(stranger.entries).toHaveLength(1);
    expect(checkHostKey(stranger.entries, '203.0.113.7', 22, ed25519Blob())).toEqual({ verdict: 'unknown' });
    expect(knownHostsForNode({ exists: false, entries: [] }, address(0), 22)).toEqual({ exists: false, entries: [] });
  });
});

// The workflow thread's young generation (worker/worker.ts limitWorkflowThreadYoungGeneration): the SDK creates its
// workflow thread without resourceLimits, so V8's process-wide --max-semi-space-size, set before Worker.create, bounds
// that thread's new space. Checked in a child process (the flag is process-wide): a thread created the way the SDK
// creates it allocates steadily, and its new space is measured, with and without the setting.
describe('the workflow thread\'s young generation', () => {
  const probe = (env: Record<string, string>) => {
    const program = `
      require('tsx/cjs');
      const { limitWorkflowThreadYoungGeneration } = require(${JSON.stringify(require.resolve('../worker/worker'))});
      const { Worker } = require('node:worker_threads');
      const mb = limitWorkflowThreadYoungGeneration(process.env.KATAFLEET_WORKFLOW_SEMI_SPACE_MB);
      const thread = new Worker(\`
        const v8 = require('node:v8'); const { parentPort } = require('node:worker_threads');
        let keep = []; let peak = 0;
        for (let i = 0; i < 3e6; i++) {
          keep.push({ i, text: 'activation ' + i });
          if (keep.length > 100000) keep = [];
          if (i % 50000 === 0) peak = Math.max(peak, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);
        }
        parentPort.postMessage(peak);
      \`, { eval: true });
      thread.once('message', (peak) => { process.stdout.write(JSON.stringify({ mb, newSpaceMb: peak / 1048576 })); process.exit(0); });
    `;
    const out = execFileSync(process.execPath, ['-e', program], { cwd: join(__dirname, '..'), env: { ...process.env, ...env }, encoding: 'utf8' });
    return JSON.parse(out) as { mb: number; newSpaceMb: number };
  };

  it('is bounded to 2 semi-spaces of 2 MB by default; V8 alone lets it grow to 16 MB and more', () => {
    const bounded = probe({ KATAFLEET_WORKFLOW_SEMI_SPACE_MB: '' });
    const unbounded = probe({ KATAFLEET_WORKFLOW_SEMI_SPACE_MB: '0' });
    process.stdout.write(`workflow thread new space: ${bounded.newSpaceMb} MB bounded, ${unbounded.newSpaceMb} MB with V8's default\n`);
    expect(bounded).toEqual({ mb: workflowSemiSpaceMb, newSpaceMb: expect.any(Number) });
    expect(bounded.newSpaceMb).toBeLessThanOrEqual(2 * workflowSemiSpaceMb);
    expect(unbounded.newSpaceMb).toBeGreaterThanOrEqual(16);
  }, 120_000);

  it('refuses a KATAFLEET_WORKFLOW_SEMI_SPACE_MB that is no whole number of MB from 0 to 64, naming it and the fix', () => {
    for (const bad of ['-1', '65', '1.5', '0x10', '2MB', ' 1e3', '999', '２', '002']) {
      expect(() => limitWorkflowThreadYoungGeneration(bad)).toThrow(`KATAFLEET_WORKFLOW_SEMI_SPACE_MB=${JSON.stringify(bad)}: use a whole number of MB from 0 to 64`);
    }
  });
});

// The old generation's growth between major GCs (worker/worker.ts limitOldGenerationGrowth): a worker's old generation
// fills with garbage promoted from the young one, and V8's own factor let it grow to 160 MB before a major GC at 200
// nodes in flight. Checked in a child process (the flag is process-wide), set after start as `katafleet worker` sets
// it: a live set, then objects that live long enough to be promoted and die later; the old space's peak is measured.
describe('the old generation\'s growth between major GCs', () => {
  const probe = (env: Record<string, string>) => {
    const program = `
      require('tsx/cjs');
      const { limitOldGenerationGrowth } = require(${JSON.stringify(require.resolve('../worker/worker'))});
      const v8 = require('node:v8');
      const percent = limitOldGenerationGrowth(process.env.KATAFLEET_HEAP_GROWING_PERCENT);
      const live = Array.from({ length: 400 }, (_, i) => Array.from({ length: 2500 }, (_, j) => ({ i, j, text: 'live ' + i + ' ' + j })));
      let ring = []; let peak = 0;
      for (let round = 0; round < 600; round++) {
        ring.push(Array.from({ length: 5000 }, (_, j) => ({ round, j, text: 'promoted ' + round + ' ' + j })));
        if (ring.length > 20) ring.shift();
        peak = Math.max(peak, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_size);
      }
      process.stdout.write(JSON.stringify({ percent, live: live.length, peakOldMb: peak / 1048576 }));
    `;
    const out = execFileSync(process.execPath, ['--max-semi-space-size=2', '-e', program], { cwd: join(__dirname, '..'), env: { ...process.env, ...env }, encoding: 'utf8' });
    return JSON.parse(out) as { percent: number; peakOldMb: number };
  };

  it("is 30 % by default; V8's own factor lets the same garbage grow the old space more than twice as far", () => {
    const bounded = probe({ KATAFLEET_HEAP_GROWING_PERCENT: '' });
    const own = probe({ KATAFLEET_HEAP_GROWING_PERCENT: '0' });
    process.stdout.write(`old space peak: ${bounded.peakOldMb.toFixed(0)} MB at ${bounded.percent} %, ${own.peakOldMb.toFixed(0)} MB with V8's own factor\n`);
    expect(bounded.percent).toBe(heapGrowingPercent);
    expect(own.percent).toBe(0);
    expect(bounded.peakOldMb * 2).toBeLessThan(own.peakOldMb);
  }, 120_000);

  it('refuses a KATAFLEET_HEAP_GROWING_PERCENT that is no whole number from 0 to 300, naming it and the fix', () => {
    for (const bad of ['-1', '301', '1.5', '0x10', '30%', ' 1e2', '1000', '３０', '3\n0', '9'.repeat(10_000)]) {
      expect(() => limitOldGenerationGrowth(bad)).toThrow(`KATAFLEET_HEAP_GROWING_PERCENT=${JSON.stringify(bad)}: use a whole number from 0 to 300`);
    }
  });
});

// glibc's arena count and the main thread's semi-space: bin/katafleet.js sets them (test/worker-launcher.test.ts).

// Reading known_hosts (activities/ssh/known-hosts.ts readKnownHosts): each new SSH connection read and parsed the
// whole file, a line per node of the fleet, so a wave's connections parsed it hundreds of times at once. Now the
// parsed file is shared until the file changes.
describe('reading a fleet\'s known_hosts', () => {
  it('parses it once for 200 connections opened together, and again only when the file changes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kf-known-hosts-'));
    const path = join(dir, 'known_hosts');
    await writeFile(path, `${text}\n`);
    const reads = await Promise.all(Array.from({ length: 200 }, () => readKnownHosts(path)));
    expect(reads[0].entries).toHaveLength(fleetSize + 1);
    // One parse, handed to all: the same array (the old code made 200 of 2,001 entries each).
    expect(new Set(reads.map((read) => read.entries)).size).toBe(1);
    expect(await readKnownHosts(path)).toBe(reads[0]);

    // Trust-on-first-use appends a key: the next connection sees it.
    const newKey = ed25519Blob();
    await appendKnownHost(path, '127.43.0.1', 22, newKey);
    const afterAppend = await readKnownHosts(path);
    expect(afterAppend.entries).toHaveLength(fleetSize + 2);
    expect(checkHostKey(afterAppend.entries, '127.43.0.1', 22, newKey)).toMatchObject({ verdict: 'known' });

    // The operator replaces node 0's key with one of the same length (same file size): the old key is refused.
    const replaced = ed25519Blob();
    await writeFile(path, (await readFile(path, 'utf8')).replace(keys[0].toString('base64'), replaced.toString('base64')));
    const afterEdit = await readKnownHosts(path);
    expect(checkHostKey(afterEdit.entries, address(0), 22, replaced)).toMatchObject({ verdict: 'known' });
    expect(checkHostKey(afterEdit.entries, address(0), 22, keys[0])).toMatchObject({ verdict: 'mismatch' });

    // Removed: read as missing, as before.
    await rm(path);
    expect(await readKnownHosts(path)).toEqual({ exists: false, entries: [] });
  });
});
