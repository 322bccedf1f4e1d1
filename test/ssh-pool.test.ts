// The SSH pool against a real OpenSSH sshd on 127.0.0.1 (see ssh-sshd.ts): what the fleet's nodes will see.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cmd, sh, SshFailureType, SshPool, type CommandResult } from '../activities/ssh';
import { startTestSshd, type TestSshd } from './ssh-sshd';

interface Failure { type?: string; nonRetryable?: boolean; message: string; details?: CommandResult[] }

async function failureOf(promise: Promise<unknown>): Promise<Failure> {
  try {
    await promise;
  } catch (err) {
    return err as Failure;
  }
  throw new Error('expected the command to fail');
}

/** Processes under sshd whose command line mentions `marker`. */
function sleepersOf(server: TestSshd, marker: string): number[] {
  return server.descendantPids().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((arg) => arg.includes(marker));
    } catch {
      return false;
    }
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let sshd: TestSshd;
let pool: SshPool;
let scratch: string;

beforeAll(async () => {
  sshd = await startTestSshd();
  scratch = mkdtempSync(join(tmpdir(), 'katafleet-ssh-scratch-'));
});

beforeEach(() => {
  pool = new SshPool({ connectTimeoutMs: 3_000, keepaliveIntervalMs: 300, keepaliveCountMax: 2, closeGraceMs: 1_000 });
});

afterEach(async () => {
  await pool.closeAll();
});

afterAll(async () => {
  await sshd.remove();
  rmSync(scratch, { recursive: true, force: true });
});

describe('SshPool against a real sshd', () => {
  it('runs a command and returns a flat result, reusing one connection', async () => {
    const result = await pool.run(sshd.node, cmd('echo', ['hello']));
    expect(result).toEqual({
      host: 'test-node', address: '127.0.0.1', command: 'echo hello',
      exitCode: 0, signal: null, stdout: 'hello\n', stderr: '', durationMs: expect.any(Number),
    });
    await pool.run(sshd.node, sh`true`);
    await pool.run(sshd.node, sh`true`);
    expect(sshd.connectionPids()).toHaveLength(1);
  });

  it('delivers file contents on stdin byte for byte, never through the shell', async () => {
    const content = `version = 2\n# it's "quoted" $HOME \`uname\` $(reboot) \\n é\n\n  trailing spaces  \n`;
    const target = join(scratch, 'written.toml');
    await pool.run(sshd.node, sh`cat > ${target}`, { stdin: content });
    expect(readFileSync(target, 'utf8')).toBe(content);
    expect((await pool.run(sshd.node, sh`cat ${target}`)).stdout).toBe(content);
  });

  it('turns exit codes into messages that say what they mean', async () => {
    const notExecutable = join(scratch, 'not-executable');
    writeFileSync(notExecutable, 'echo hi\n', { mode: 0o644 });
    const cases: [ReturnType<typeof sh>, RegExp][] = [
      [cmd('kata-runtime', ['check']), /^Command failed with exit code 127 \(command not found\): kata-runtime check — on node test-node \(127\.0\.0\.1\)\n.*not found/],
      [sh`${notExecutable}`, /^Command failed with exit code 126 \(permission denied or not executable\)/],
      [sh`timeout 0.2 sleep 5`, /^Command failed with exit code 124 \(timed out by timeout\(1\)\): timeout 0.2 sleep 5/],
      [sh`kill -KILL $$`, /^Command was killed by SIGKILL: kill -KILL \$\$ — on node test-node/],
    ];
    for (const [command, message] of cases) {
      const failure = await failureOf(pool.run(sshd.node, command));
      expect(failure.type).toBe(SshFailureType.CommandFailed);
      expect(failure.nonRetryable).toBe(false);
      expect(failure.message).toMatch(message);
      expect(failure.details?.[0].command).toBe(command.display);
    }
  });

  it('returns allowed non-zero exit codes as results', async () => {
    const result = await pool.run(sshd.node, sh`test -e ${join(scratch, 'absent')}`, { allowExitCodes: [0, 1] });
    expect(result.exitCode).toBe(1);
  });

  it('runs 10 commands at once on a server allowing 2 sessions, on one connection', async () => {
    await sshd.restart({ maxSessions: 2 });
    try {
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => pool.run(sshd.node, sh`sleep 0.2; echo ${i}`)));
      expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 10 }, (_, i) => `${i}\n`));
      expect(sshd.connectionPids()).toHaveLength(1);
      // At most 2 at a time: 5 rounds of at least 0.2 s each.
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    } finally {
      await pool.closeAll();
      await sshd.restart();
    }
  });

  it('refuses a changed host key without running anything, and never retries', async () => {
    await sshd.restart({ otherHostKey: true });
    try {
      const marker = join(scratch, 'must-not-exist');
      const failure = await failureOf(pool.run(sshd.node, sh`touch ${marker}`));
      expect(failure.type).toBe(SshFailureType.HostKeyMismatch);
      expect(failure.nonRetryable).toBe(true);
      expect(failure.message).toContain(`Host key of node test-node (127.0.0.1:${sshd.node.port}) has CHANGED`);
      expect(failure.message).toContain(sshd.node.knownHosts);
      expect(failure.message).toMatch(/offered ssh-ed25519 SHA256:\S+, but .* has ssh-ed25519 SHA256:\S+ \(line 1\)/);
      expect(existsSync(marker)).toBe(false);
    } finally {
      await sshd.restart();
    }
  });

  it('refuses an unknown host unless trust-on-first-use is on, then records its key', async () => {
    const knownHosts = join(scratch, 'tofu_known_hosts');
    const unknown = await failureOf(pool.run({ ...sshd.node, knownHosts }, sh`true`));
    expect(unknown.type).toBe(SshFailureType.HostKeyUnknown);
    expect(unknown.nonRetryable).toBe(true);

    await pool.run({ ...sshd.node, knownHosts, trustOnFirstUse: true }, sh`true`);
    expect(readFileSync(knownHosts, 'utf8')).toBe(readFileSync(sshd.node.knownHosts, 'utf8'));
    await pool.closeAll();
    await pool.run({ ...sshd.node, knownHosts }, sh`true`);
  });

  it('reports a connection killed mid-command as outcome unknown, and reconnects for the next command', async () => {
    await pool.run(sshd.node, sh`true`);
    const running = pool.run(sshd.node, sh`sleep 5`);
    await sleep(300);
    sshd.connectionPids().forEach((pid) => process.kill(pid, 'SIGKILL'));
    const failure = await failureOf(running);
    expect(failure.type).toBe(SshFailureType.CommandOutcomeUnknown);
    expect(failure.nonRetryable).toBe(false);
    expect(failure.message).toContain('re-read the node\'s state');
    expect((await pool.run(sshd.node, sh`echo back`)).stdout).toBe('back\n');
  });

  it('survives a connection that stops answering (keepalive error event) and reconnects', async () => {
    await pool.run(sshd.node, sh`true`);
    const frozen = sshd.descendantPids();
    frozen.forEach((pid) => process.kill(pid, 'SIGSTOP'));
    try {
      // 300 ms × 2 unanswered keepalives: ssh2 emits `error` on the idle client and destroys it.
      await sleep(1_500);
    } finally {
      frozen.forEach((pid) => process.kill(pid, 'SIGKILL'));
    }
    expect((await pool.run(sshd.node, sh`echo alive`)).stdout).toBe('alive\n');
  });

  it('cuts a hanging command at its timeout, the node kills it, and the connection stays usable', async () => {
    const started = Date.now();
    const failure = await failureOf(pool.run(sshd.node, sh`sleep 4242`, { timeoutMs: 500 }));
    expect(failure.type).toBe(SshFailureType.CommandTimedOut);
    expect(failure.nonRetryable).toBe(false);
    expect(failure.message).toMatch(/^Command timed out after 500 ms and was stopped: sleep 4242/);
    expect(Date.now() - started).toBeLessThan(2_000);
    // The node's own deadline (timeout(1), a second after ours) stops it, even for root whose sessions ignore signals.
    const deadline = Date.now() + 5_000;
    while (sleepersOf(sshd, '4242').length > 0 && Date.now() < deadline) await sleep(100);
    expect(sleepersOf(sshd, '4242')).toEqual([]);
    expect((await pool.run(sshd.node, sh`echo next`)).stdout).toBe('next\n');
  });

  it('stops a command when its abort signal fires', async () => {
    const controller = new AbortController();
    const running = pool.run(sshd.node, sh`sleep 30`, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('activity cancelled')), 300);
    expect((await failureOf(running)).message).toBe('activity cancelled');
  });

  it('fails with SshConnectFailed when sshd is down, and with a handshake timeout when it is frozen', async () => {
    await sshd.stop();
    try {
      const down = await failureOf(pool.run(sshd.node, sh`true`));
      expect(down.type).toBe(SshFailureType.SshConnectFailed);
      expect(down.nonRetryable).toBe(false);
      expect(down.message).toBe(`Cannot connect to node test-node (127.0.0.1:${sshd.node.port}): connection refused — is sshd running?`);
    } finally {
      await sshd.restart();
    }
    process.kill(sshd.pid(), 'SIGSTOP');
    try {
      const frozen = await failureOf(pool.run(sshd.node, sh`true`));
      expect(frozen.type).toBe(SshFailureType.SshConnectFailed);
      expect(frozen.message).toContain('no SSH handshake within 3 s — is sshd frozen or the node overloaded?');
    } finally {
      process.kill(sshd.pid(), 'SIGCONT');
    }
  });

  it('fails with a non-retryable SshAuthFailed when the key is refused', async () => {
    const failure = await failureOf(pool.run({ ...sshd.node, user: 'nobody', sudo: false }, sh`true`));
    expect(failure.type).toBe(SshFailureType.SshAuthFailed);
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toContain('as nobody with the key');
  });
});
