// Worker memory (issue 13, docs/scale.md "Worker memory"): what a worker keeps per SSH connection must not grow with
// the fleet. Each connection's host verifier lived as long as the connection and held the whole parsed known_hosts
// (a line per node): at 400 nodes, 180 open connections held 72,000 parsed lines (a heap snapshot's strings
// "ssh-ed25519" and the node addresses), and the worker's peak RSS was 476–502 MB; keeping only the lines that
// can decide the node's key brought it to 369 MB (`bench/scale.ts --nodes 400 --hosts 4 --wave-size 200`).
import { randomBytes } from 'node:crypto';
import { knownHostsForNode } from '../activities/ssh/pool';
import { checkHostKey, knownHostsName, parseKnownHosts } from '../activities/ssh/known-hosts';

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
