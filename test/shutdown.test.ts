// Issue 14, clean shutdown: `katafleet up` stops API, worker and the dev server it started on SIGTERM or SIGINT,
// also when signalled twice; `katafleet server stop` stops a dev server left running. No timed assertion: each
// wait has a generous timeout, then the test asserts the exit and that no process it started is left.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freeLoopbackPort } from '../sim/addresses';
import { descendants, running, spawnKatafleet, startUp, type KatafleetProcess } from './helpers/up-process';

jest.setTimeout(300_000);

/** Waits for the exit (at most `ms`, then kills what is left so nothing leaks, and fails). */
async function exitOf(proc: KatafleetProcess, started: number[], ms = 120_000): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([proc.exited, new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms); })]);
  clearTimeout(timer);
  if (code === 'timeout') {
    for (const pid of [proc.child.pid!, ...started]) if (running(pid)) process.kill(pid, 'SIGKILL');
    throw new Error(`still running ${ms / 1000} s after the signal:\n${proc.output()}`);
  }
  return code;
}

describe('katafleet up: clean shutdown (README: "Ctrl-C stops everything")', () => {
  it.each(['SIGTERM', 'SIGINT'] as const)('stops API, worker and its dev server on one %s, and leaves no process', async (signal) => {
    const up = await startUp();
    const children = descendants(up.child.pid!);
    const serverPid = Number(readFileSync(join(up.cwd, '.katafleet', 'temporal.pid'), 'utf8'));
    expect(children).toContain(serverPid);

    up.child.kill(signal);
    const code = await exitOf(up, children);

    expect(code).toBe(0);
    expect(children.filter(running)).toEqual([]);
    expect(up.output()).not.toMatch(/DRAINING|^\s+at /m);
  });

  it('stops at once when signalled twice quickly, and leaves no process', async () => {
    const up = await startUp();
    const children = descendants(up.child.pid!);

    up.child.kill('SIGINT');
    up.child.kill('SIGINT');
    const code = await exitOf(up, children);

    expect([0, 130]).toContain(code);
    expect(children.filter(running)).toEqual([]);
    expect(up.output()).not.toMatch(/DRAINING|^\s+at /m);
  });

  it('says in --help what happens to the dev server, and how to stop one left running', async () => {
    const help = spawnKatafleet(['up', '--help']);
    await help.exited;
    expect(help.output()).toMatch(/stops the API, the worker and the dev server this command started, within 10 s/);
    expect(help.output()).toMatch(/katafleet server stop/);
  });
});

describe('katafleet server stop', () => {
  it('stops a dev server started by `katafleet server` in another terminal', async () => {
    const port = await freeLoopbackPort();
    const uiPort = await freeLoopbackPort();
    const server = spawnKatafleet(['server', '--port', String(port), '--ui-port', String(uiPort)]);
    await server.waitFor(/Temporal dev server on/);
    const children = descendants(server.child.pid!);
    expect(children.length).toBeGreaterThan(0);

    const stop = spawnKatafleet(['server', 'stop'], {}, server.cwd);
    expect(await stop.exited).toBe(0);
    expect(stop.output()).toMatch(/Stopped the dev server on \.katafleet\/temporal\.db \(pid \d+\)/);
    await exitOf(server, children);
    expect(children.filter(running)).toEqual([]);

    const again = spawnKatafleet(['server', 'stop'], {}, server.cwd);
    expect(await again.exited).toBe(0);
    expect(again.output()).toMatch(/No dev server runs on \.katafleet\/temporal\.db/);
  });

  it('refuses an unknown action with exit 2 and the usage', async () => {
    const bad = spawnKatafleet(['server', 'halt']);
    expect(await bad.exited).toBe(2);
    expect(bad.output()).toMatch(/katafleet server: unknown action "halt" \(the only one is "stop"\)/);
  });
});
