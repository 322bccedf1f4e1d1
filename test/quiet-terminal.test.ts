// Issue 14, a quiet terminal: an expected failure (a node that fails its prerequisite check) is one line on the
// CLI's terminal (node, step, reason), never a stack trace; the worker of `katafleet up` logs JSON lines to
// .katafleet/worker.log, where an expected activity failure is one info line without a stack.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { startFleet, type Fleet } from '../sim/fleet';
import { JsonLineLogger, logRecord, parseLogLevel } from '../worker/logging';
import { runKatafleet, writeFleetInventory } from './helpers/cli';
import { startUp } from './helpers/up-process';

jest.setTimeout(600_000);

const stackLine = /^\s+at .+(:\d+:\d+\)?|native\))$/m;

const prereqOnly = `[playbook]
name = "prereq-only"

[rollout]
canary = 1

[[steps]]
id = "prereq"
kind = "prereq-check"
cpu_flags = ["vmx", "svm"]
require_kvm = true
modules = ["kvm", "vhost", "vhost_net", "vhost_vsock"]
modules_any_of = [["kvm_intel", "kvm_amd"]]
persist_modules = false
`;

describe('a quiet terminal (katafleet up + katafleet rollout --follow, a node without virtualization)', () => {
  let fleet: Fleet | undefined;
  afterAll(async () => {
    await fleet?.stop();
  });

  it('prints the failed node as one line with its step and reason, no stack; the worker log has JSON lines', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kf-quiet-'));
    fleet = await startFleet({ nodes: 1, dir: join(dir, 'fleet'), faults: { 'node-1': ['no-virtualization'] } });
    const inventory = await writeFleetInventory(fleet, dir, 'inventory', ['node-1']);
    const playbook = join(dir, 'prereq-only.toml');
    await writeFile(playbook, prereqOnly);
    const up = await startUp(['--log-level', 'info'], dir);
    try {
      const rollout = await runKatafleet(`127.0.0.1:${up.temporalPort}`, ['rollout', playbook, '--inventory', inventory, '--follow'], 300_000);

      expect(rollout.code).toBe(1);
      const terminal = `${rollout.stdout}${rollout.stderr}${up.output()}`;
      expect(terminal).not.toMatch(stackLine);
      expect(terminal).not.toMatch(/\[WARN\]|Activity failed/);
      const nodeLines = rollout.stdout.split('\n').filter((line) => /node-1/.test(line) && /prereq/.test(line) && /vmx|svm/.test(line));
      expect(nodeLines.length).toBeGreaterThan(0);

      const log = (await readFile(join(dir, '.katafleet', 'worker.log'), 'utf8')).trim().split('\n');
      const records = log.map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(records.every((r) => typeof r.time === 'string' && typeof r.level === 'string' && typeof r.msg === 'string')).toBe(true);
      const failure = records.find((r) => r.msg === 'Activity failed' && r.node === 'node-1');
      expect(failure).toMatchObject({ level: 'info', node: 'node-1', step: 'prereq', failure: expect.any(String), reason: expect.stringMatching(/vmx|svm/) });
      expect(failure?.stack).toBeUndefined();
      expect(typeof failure?.rollout).toBe('string');
    } finally {
      up.child.kill('SIGTERM');
      await up.exited;
    }
  });
});

describe('worker log lines (logRecord, JsonLineLogger)', () => {
  const now = new Date('2026-11-30T08:00:00Z');

  it('writes a transient failure that a retry may fix as one info line with its type and first line, no stack', () => {
    const error = ApplicationFailure.retryable('Node node-2: dpkg lock held by apt-get (pid 42)\nmore detail', 'DpkgLockBusy');
    const { level, line } = logRecord('WARN', 'Activity failed', { error, workflowId: 'katafleet-node-node-2', activityType: 'packageInstall', attempt: 1, step: 'install', rolloutId: 'r-1' }, now);
    expect(level).toBe('INFO');
    expect(line.includes('\n')).toBe(false);
    expect(JSON.parse(line)).toEqual({
      time: '2026-11-30T08:00:00.000Z', level: 'info', msg: 'Activity failed', node: 'node-2', step: 'install', rollout: 'r-1',
      workflowId: 'katafleet-node-node-2', attempt: 1, failure: 'DpkgLockBusy', reason: 'Node node-2: dpkg lock held by apt-get (pid 42)',
    });
  });

  it('keeps the stack of an unexpected error (a bug), at its level', () => {
    const { level, line } = logRecord('WARN', 'Activity failed', { error: new TypeError('x is undefined') }, now);
    expect(level).toBe('WARN');
    expect(JSON.parse(line)).toMatchObject({ level: 'warn', reason: 'x is undefined', stack: expect.stringContaining('TypeError') });
  });

  it('names the rollout of a rollout workflow, and drops nested objects', () => {
    const { line } = logRecord('INFO', 'Workflow started', { workflowId: 'katafleet-rollout-change-1', namespace: 'default', sdkComponent: 'workflow', extra: { a: 1 } }, now);
    expect(JSON.parse(line)).toEqual({ time: '2026-11-30T08:00:00.000Z', level: 'info', msg: 'Workflow started', rollout: 'change-1', workflowId: 'katafleet-rollout-change-1', namespace: 'default', sdkComponent: 'workflow' });
  });

  it('writes only lines at or above its level', () => {
    const lines: string[] = [];
    const logger = new JsonLineLogger((l) => lines.push(l), 'warn');
    logger.info('quiet');
    logger.warn('loud');
    logger.log('WARN', 'Activity failed', { error: ApplicationFailure.nonRetryable('Node node-6 cannot run Kata Containers', 'NodeNotCapable') });
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['loud']);
  });

  it.each(['', 'verbose', 'WARNING', '--debug'])('refuses --log-level %p naming the accepted values', (value) => {
    expect(() => parseLogLevel(value)).toThrow(`--log-level: expected one of trace | debug | info | warn | error, got "${value}"`);
  });

  it.each([
    [['worker', '--log-level', 'loud'], 'katafleet worker: --log-level: expected one of trace | debug | info | warn | error, got "loud"'],
    [['up', '--log-level', 'loud'], 'katafleet up: --log-level: expected one of trace | debug | info | warn | error, got "loud"'],
    [['demo', '--log-level', 'loud'], 'katafleet demo: --log-level: expected one of trace | debug | info | warn | error, got "loud"'],
    [['up', '--temporal-port', '72330'], 'katafleet up: --temporal-port must be a port number from 1 to 65535, got "72330"'],
  ])('katafleet %p exits 2 with the reason and starts nothing', async (args, message) => {
    const result = await runKatafleet('127.0.0.1:1', args, 60_000);
    expect(result.code).toBe(2);
    expect(result.stderr.split('\n')[0]).toBe(message);
    expect(result.stdout).toBe('');
  });

  it('accepts the levels in any case', () => {
    expect(parseLogLevel('DEBUG')).toBe('debug');
    expect(parseLogLevel(undefined)).toBeUndefined();
  });
});
