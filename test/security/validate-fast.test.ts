// Issue 10's injection corpus must be "answered in under a second": `katafleet validate` loads only what it
// needs (cli/main.ts loads a command when it runs; bin/katafleet.js skips tsx's ESM loader thread for it).
// Not timed here (no timed assertions): this checks what is loaded; bench/validate.ts prints the figures.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { commandEntries } from '../../cli/main';

const run = promisify(execFile);
const repoRoot = join(__dirname, '..', '..');

describe('katafleet validate stays light', () => {
  it('loads no Temporal, fastify, SSH or simulator module', async () => {
    const script = [
      "require('tsx/cjs');",
      "require('./cli/main.ts').main(['validate', 'playbooks/kata.toml']).then((code) => {",
      "  const heavy = Object.keys(require.cache).filter((f) => /node_modules\\/(@temporalio|fastify|ssh2)\\/|\\/sim\\/|\\/activities\\/ssh\\//.test(f));",
      "  process.stdout.write(JSON.stringify({ code, heavy }));",
      '});',
    ].join('\n');
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: repoRoot });
    const result = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { code: number; heavy: string[] };
    expect(result).toEqual({ code: 0, heavy: [] });
    expect(stdout).toContain('playbooks/kata.toml: valid playbook "kata"');
  }, 120_000);

  it('lists each command with the summary of the command it loads', async () => {
    for (const entry of commandEntries) {
      const command = await entry.load();
      expect({ name: command.name, summary: command.summary }).toEqual({ name: entry.name, summary: entry.summary });
    }
  }, 120_000);
});
