// `katafleet worker`'s memory settings (docs/scale.md "Worker memory"): glibc's MALLOC_ARENA_MAX and the main
// thread's V8 semi-space are read only when a process starts, so bin/katafleet.js (a shell launcher that execs node)
// sets them for `worker` and `up`, keeping a user's own values; KATAFLEET_MEMORY_DEFAULTS=0 sets neither. Checked from
// outside the real worker process: its /proc/<pid>/environ and cmdline, and the line it prints when it starts. The
// worker is pointed at port 1 (nothing listens), so it bundles its workflows, fails to connect and exits; it is read
// while it bundles, and killed.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { memorySettings, memorySettingsNote } from '../worker/worker';
import { runKatafleet } from './helpers/cli';

const root = join(__dirname, '..');
const bin = join(root, 'bin', 'katafleet.js');

/** What the started worker process showed: its first stderr lines, its environment and command line from /proc. */
interface Started {
  pid: number;
  stderr: string;
  environ: Record<string, string>;
  cmdline: string[];
}

/**
 * Starts `command` (default: bin/katafleet.js itself, as a user's `katafleet worker` does) with a clean environment
 * plus `env`, waits for its memory-settings line, reads /proc/<pid>, then kills it.
 */
function startWorker(env: Record<string, string>, command: string[] = [bin, 'worker'], cwd = root): Promise<Started> {
  const clean = { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, HOME: process.env.HOME ?? '/tmp', TEMPORAL_ADDRESS: '127.0.0.1:1', ...env };
  const child = spawn(command[0], command.slice(1), { cwd, env: clean, stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let stderr = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error(`no memory-settings line within 60 s:\n${stderr}`)), 60_000);
    const finish = (err: Error | undefined, started?: Started) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      child.once('exit', () => (err ? reject(err) : resolve(started!)));
      if (child.exitCode !== null || child.signalCode !== null) child.emit('exit');
    };
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const match = /katafleet worker: pid (\d+), memory settings: .*\n(?:katafleet worker: running with .*\n)?/.exec(stderr);
      if (!match || done) return;
      const pid = Number(match[1]);
      try {
        const environ = Object.fromEntries(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean).map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
        finish(undefined, { pid, stderr, environ, cmdline });
      } catch (err) {
        finish(err as Error);
      }
    });
    child.once('exit', () => finish(new Error(`the worker exited before its memory-settings line was read:\n${stderr}`)));
  });
}

describe('katafleet worker\'s memory settings', () => {
  it('starts with MALLOC_ARENA_MAX=2 and --max-semi-space-size=2 from a clean environment, and says so on its first line', async () => {
    const started = await startWorker({});
    // The process the user started is the worker itself (the launcher execs node): same pid.
    expect(started.environ.MALLOC_ARENA_MAX).toBe('2');
    expect(started.cmdline).toContain('--max-semi-space-size=2');
    expect(started.cmdline.slice(-2)).toEqual([bin, 'worker']);
    expect(started.stderr.split('\n')[0]).toBe(`katafleet worker: pid ${started.pid}, memory settings: MALLOC_ARENA_MAX=2, main thread --max-semi-space-size=2, workflow thread semi-space 2 MB, old generation growth between major GCs 30 %`);
    expect(started.stderr).not.toContain('running with');

    // `katafleet up` runs a worker too (TEMPORAL_ADDRESS set: no dev server of its own; its .katafleet/ in a temporary folder).
    const folder = mkdtempSync(join(tmpdir(), 'kf-launcher-'));
    const up = await startWorker({ KATAFLEET_API_TOKEN: 'u'.repeat(40) }, [bin, 'up', '--port', '0'], folder).finally(() => rmSync(folder, { recursive: true, force: true }));
    expect(up.environ.MALLOC_ARENA_MAX).toBe('2');
    expect(up.cmdline).toContain('--max-semi-space-size=2');
    expect(up.cmdline.slice(-4)).toEqual([bin, 'up', '--port', '0']);
  }, 180_000);

  it('keeps a user\'s own MALLOC_ARENA_MAX=4 and NODE_OPTIONS semi-space, and warns that they are not katafleet\'s', async () => {
    const arenas = await startWorker({ MALLOC_ARENA_MAX: '4' });
    expect(arenas.environ.MALLOC_ARENA_MAX).toBe('4');
    expect(arenas.cmdline).toContain('--max-semi-space-size=2');
    expect(arenas.stderr).toContain('memory settings: MALLOC_ARENA_MAX=4, main thread --max-semi-space-size=2');
    expect(arenas.stderr).toContain('katafleet worker: running with MALLOC_ARENA_MAX=4 instead of katafleet\'s MALLOC_ARENA_MAX=2 and --max-semi-space-size=2');

    const semi = await startWorker({ NODE_OPTIONS: '--max-semi-space-size=8' });
    expect(semi.environ.MALLOC_ARENA_MAX).toBe('2');
    expect(semi.cmdline.some((arg) => arg.startsWith('--max-semi-space-size'))).toBe(false);
    expect(semi.stderr).toContain('memory settings: MALLOC_ARENA_MAX=2, main thread --max-semi-space-size=8');
    expect(semi.stderr).toContain('running with --max-semi-space-size=8 instead of');
  }, 180_000);

  it('says V8\'s own old-generation growth with KATAFLEET_HEAP_GROWING_PERCENT=0', async () => {
    const own = await startWorker({ KATAFLEET_HEAP_GROWING_PERCENT: '0' });
    expect(own.stderr.split('\n')[0]).toBe(`katafleet worker: pid ${own.pid}, memory settings: MALLOC_ARENA_MAX=2, main thread --max-semi-space-size=2, workflow thread semi-space 2 MB, old generation growth between major GCs V8's own`);
  }, 180_000);

  it('sets neither with KATAFLEET_MEMORY_DEFAULTS=0, nor when node is started on bin/katafleet.js directly, and warns', async () => {
    for (const started of [await startWorker({ KATAFLEET_MEMORY_DEFAULTS: '0' }), await startWorker({}, [process.execPath, bin, 'worker'])]) {
      expect(started.environ.MALLOC_ARENA_MAX).toBeUndefined();
      expect(started.cmdline.some((arg) => arg.startsWith('--max-semi-space-size'))).toBe(false);
      expect(started.stderr).toContain('memory settings: MALLOC_ARENA_MAX=unset (glibc\'s 8 per core), main thread --max-semi-space-size=unset (V8\'s 16), workflow thread semi-space 2 MB, old generation growth between major GCs 30 %');
      expect(started.stderr).toContain('running with MALLOC_ARENA_MAX=(unset) and --max-semi-space-size=(unset) instead of katafleet\'s');
    }
  }, 180_000);

  it('refuses an invalid KATAFLEET_WORKFLOW_SEMI_SPACE_MB, KATAFLEET_HEAP_GROWING_PERCENT or KATAFLEET_MEMORY_DEFAULTS with exit 2, naming it and the fix, before it connects', async () => {
    const bad = await runKatafleet('127.0.0.1:1', ['worker'], 60_000, { KATAFLEET_WORKFLOW_SEMI_SPACE_MB: '2MB' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('KATAFLEET_WORKFLOW_SEMI_SPACE_MB="2MB": use a whole number of MB from 0 to 64');
    expect(bad.stderr).not.toContain('katafleet worker: pid');
    const growth = await runKatafleet('127.0.0.1:1', ['worker'], 60_000, { KATAFLEET_HEAP_GROWING_PERCENT: '30%' });
    expect(growth.code).toBe(2);
    expect(growth.stderr).toContain('KATAFLEET_HEAP_GROWING_PERCENT="30%": use a whole number from 0 to 300');
    expect(growth.stderr).not.toContain('katafleet worker: pid');
    for (const value of ['off', 'false', ' 0', '00', '2']) {
      const refused = await runKatafleet('127.0.0.1:1', ['worker'], 60_000, { KATAFLEET_MEMORY_DEFAULTS: value });
      expect({ code: refused.code, says: refused.stderr.split('\n')[0] }).toEqual({
        code: 2, says: `katafleet: KATAFLEET_MEMORY_DEFAULTS=${JSON.stringify(value)}: use 0 to start without katafleet's MALLOC_ARENA_MAX=2 and --max-semi-space-size=2, or unset it (1) to have them`,
      });
    }
  }, 180_000);

  it('reads the semi-space as node does: NODE_OPTIONS first, then the command line, the last one winning', () => {
    expect(memorySettings({ NODE_OPTIONS: '--max-semi-space-size=8' }, ['--max-semi-space-size=2'])).toEqual({ mainSemiSpaceMb: '2' });
    expect(memorySettings({ NODE_OPTIONS: '--max_semi_space_size 4', MALLOC_ARENA_MAX: '' }, [])).toEqual({ mainSemiSpaceMb: '4' });
    expect(memorySettings({ MALLOC_ARENA_MAX: '2' }, ['--max-old-space-size=512'])).toEqual({ mallocArenaMax: '2' });
    expect(memorySettingsNote({ mallocArenaMax: '2', mainSemiSpaceMb: '2' })).toBe('');
  });
});
