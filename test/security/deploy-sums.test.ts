// docs/node-privileges.md gives the sha256 of each file in deploy/ so that an operator can check what they install
// as root on their nodes. This keeps that table true: a changed file without a changed table fails here.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const repoRoot = join(__dirname, '..', '..');

describe('the sha256 table of docs/node-privileges.md', () => {
  it('lists every shipped deploy/ file with its current sha256', async () => {
    const doc = await readFile(join(repoRoot, 'docs', 'node-privileges.md'), 'utf8');
    const rows = [...doc.matchAll(/^\| `([a-z./-]+)` \| `([0-9a-f]{64})` \|/gm)].map((m) => [m[1], m[2]] as const);
    expect(rows.map(([file]) => file).sort()).toEqual(['install.sh', 'kf-root', 'kf-shim', 'sudoers.d/katafleet']);
    for (const [file, documented] of rows) {
      const actual = createHash('sha256').update(await readFile(join(repoRoot, 'deploy', file))).digest('hex');
      expect({ file, sha256: actual }).toEqual({ file, sha256: documented });
    }
  });
});
