// The SSH pool against a simulated fleet node (sim/fleet.ts): a real OpenSSH sshd with real fault switches.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cmd, sh, SshFailureType, SshPool, type Command, type CommandEvent, type CommandResult, type SshNode } from '../activities/ssh';
import { fleetNodeRecords, startFleet, type Fleet } from '../sim/fleet';

interface Failure { type?: string; nonRetryable?: boolean; message: string; details?: CommandResult[] }

async function failureOf(promise: Promise<unknown>): Promise<Failure> {
  try {
    await promise;
  } catch (err) {
    return err as Failure;
  }
  throw new Error('expected the command to fail');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Host view of the node's processes: pid, parent and command line. */
function processTable(): { pid: number; ppid: number; cmdline: string }[] {
  const table = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      table.push({ pid: Number(entry), ppid, cmdline: readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ') });
    } catch {
      // The process exited while we looked.
    }
  }
  return table;
}

let fleet: Fleet;
let parentDir: string | undefined;
let node: SshNode;
let initPid: number;
let pool: SshPool;

/** Every process of the node below its init. */
function nodeProcesses() {
  const table = processTable();
  const found: typeof table = [];
  for (let frontier = [initPid]; frontier.length > 0;) {
    const children = table.filter((p) => frontier.includes(p.ppid));
    found.push(...children);
    frontier = children.map((p) => p.pid);
  }
  return found;
}

/** The per-connection sshd processes (children of the listener) and what runs below them. */
function sshConnectionProcesses() {
  const processes = nodeProcesses();
  const listener = processes.find((p) => p.cmdline.includes('[listener]'));
  const connections = processes.filter((p) => p.ppid === listener?.pid);
  const below = (pids: number[]): number[] => {
    const children = processes.filter((p) => pids.includes(p.ppid)).map((p) => p.pid);
    return children.length === 0 ? [] : [...children, ...below(children)];
  };
  return { connections: connections.map((p) => p.pid), all: [...connections.map((p) => p.pid), ...below(connections.map((p) => p.pid))] };
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

beforeAll(async () => {
  parentDir = await mkdtemp(join(tmpdir(), 'kf-ssh-pool-'));
  fleet = await startFleet({ nodes: 1, dir: join(parentDir, 'fleet') });
  const [simNode] = fleet.nodes;
  node = {
    name: simNode.name, address: simNode.address, port: simNode.port, user: 'root',
    identityFile: fleet.identityFile, knownHosts: fleet.knownHostsPath,
  };
  [{ initPid }] = await fleetNodeRecords(fleet.dir);
}, 90_000);

beforeEach(() => {
  pool = new SshPool({ connectTimeoutMs: 3_000, keepaliveIntervalMs: 300, keepaliveCountMax: 2, closeGraceMs: 1_000 });
});

afterEach(async () => {
  await pool.closeAll();
});

afterAll(async () => {
  await fleet?.stop();
  if (parentDir) await rm(parentDir, { recursive: true, force: true });
});

/** Turns a fault on for the duration of `body`, with fresh connections before and after. */
async function withFault(fault: Parameters<Fleet['setFault']>[1], body: () => Promise<void>): Promise<void> {
  await pool.closeAll();
  await fleet.setFault(node.name, fault, true);
  try {
    await body();
  } finally {
    await fleet.setFault(node.name, fault, false);
    await pool.closeAll();
  }
}

describe('SshPool against a simulated node', () => {
  it('runs a command and returns a flat result, reusing one connection', async () => {
    const result = await pool.run(node, cmd('hostname'));
    expect(result).toEqual({
      host: 'node-1', address: node.address, command: 'hostname',
      exitCode: 0, signal: null, stdout: 'node-1\n', stderr: '', durationMs: expect.any(Number),
    });
    await pool.run(node, sh`true`);
    await pool.run(node, sh`true`);
    expect(sshConnectionProcesses().connections).toHaveLength(1);
  });

  it('closes a connection idle for idleCloseMs (its sshd process ends), never one running a command, and reconnects for the next command', async () => {
    const idle = new SshPool({ connectTimeoutMs: 3_000, idleCloseMs: 1_000 });
    try {
      // A command longer than idleCloseMs keeps its connection: it is not idle.
      expect((await idle.run(node, sh`sleep 3; echo done`)).stdout).toBe('done\n');
      expect(sshConnectionProcesses().connections).toHaveLength(1);
      for (let waited = 0; waited < 30_000 && sshConnectionProcesses().connections.length > 0; waited += 100) await sleep(100);
      expect(sshConnectionProcesses().connections).toHaveLength(0);
      expect((await idle.run(node, cmd('hostname'))).stdout).toBe('node-1\n');
      expect(sshConnectionProcesses().connections).toHaveLength(1);
    } finally {
      await idle.closeAll();
    }
  }, 60_000);

  it('closeIfIdle (a node run\'s end) closes the node\'s connection at once, but never one a command still runs on', async () => {
    const retiring = new SshPool({ connectTimeoutMs: 3_000 });
    try {
      const running = retiring.run(node, sh`sleep 2; echo done`);
      await sleep(500);
      retiring.closeIfIdle(node.name);
      expect((await running).stdout).toBe('done\n');
      expect(sshConnectionProcesses().connections).toHaveLength(1);
      retiring.closeIfIdle(node.name);
      for (let waited = 0; waited < 10_000 && sshConnectionProcesses().connections.length > 0; waited += 100) await sleep(100);
      expect(sshConnectionProcesses().connections).toHaveLength(0);
      expect((await retiring.run(node, cmd('hostname'))).stdout).toBe('node-1\n');
    } finally {
      await retiring.closeAll();
    }
  }, 60_000);

  it('reports every command to onCommand as sent (node, text, stdin, times, exit code; null when it failed)', async () => {
    const events: CommandEvent[] = [];
    const traced = new SshPool({ onCommand: (event) => events.push(event) });
    try {
      await traced.run(node, sh`cat > /root/traced`, { stdin: 'x\n' });
      await traced.run(node, sh`exit 3`, { allowExitCodes: [3] });
      await failureOf(traced.run(node, sh`exit 4`));
    } finally {
      await traced.closeAll();
    }
    expect(events.map((e) => [e.node, e.exitCode, e.stdin])).toEqual([['node-1', 0, 'x\n'], ['node-1', 3, undefined], ['node-1', null, undefined]]);
    // As sent: with the node-side deadline around the command.
    expect(events[0].text).toMatch(/timeout .*cat > \/root\/traced/s);
    for (const event of events) expect(event.endedMs).toBeGreaterThanOrEqual(event.startedMs);
  });

  it('delivers file contents on stdin byte for byte, never through the shell', async () => {
    const content = `version = 2\n# it's "quoted" $HOME \`uname\` $(reboot) \\n é\n\n  trailing spaces  \n`;
    await pool.run(node, sh`cat > /root/written.toml`, { stdin: content });
    expect((await pool.run(node, sh`sha256sum /root/written.toml`)).stdout).toBe(`${sha256(content)}  /root/written.toml\n`);
    expect((await pool.run(node, sh`cat /root/written.toml`)).stdout).toBe(content);
  });

  it('turns exit codes into messages that say what they mean', async () => {
    await pool.run(node, sh`printf 'echo hi\\n' > /root/not-executable && chmod 644 /root/not-executable`);
    const cases: [Command, RegExp][] = [
      [cmd('kata-runtime', ['check']), /^Command failed with exit code 127 \(command not found\): kata-runtime check — on node node-1 \(127\.0\.1\.\d+\)\n.*not found/],
      [sh`/root/not-executable`, /^Command failed with exit code 126 \(permission denied or not executable\): \/root\/not-executable/],
      [sh`timeout 0.2 sleep 5`, /^Command failed with exit code 124 \(timed out by timeout\(1\)\): timeout 0.2 sleep 5/],
      [sh`kill -KILL $$`, /^Command was killed by SIGKILL: kill -KILL \$\$ — on node node-1/],
    ];
    for (const [command, message] of cases) {
      const failure = await failureOf(pool.run(node, command));
      expect(failure.type).toBe(SshFailureType.CommandFailed);
      expect(failure.nonRetryable).toBe(false);
      expect(failure.message).toMatch(message);
      expect(failure.details?.[0].command).toBe(command.display);
    }
  });

  it('returns allowed non-zero exit codes as results', async () => {
    const result = await pool.run(node, sh`test -e ${'/root/absent'}`, { allowExitCodes: [0, 1] });
    expect(result.exitCode).toBe(1);
  });

  it('runs 10 commands at once through one connection to a node allowing 2 sessions (fault max-sessions-2)', async () => {
    await withFault('max-sessions-2', async () => {
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => pool.run(node, sh`sleep 0.2; echo ${i}`)));
      expect(results.map((r) => r.stdout)).toEqual(Array.from({ length: 10 }, (_, i) => `${i}\n`));
      expect(sshConnectionProcesses().connections).toHaveLength(1);
      // Never more than 2 at a time: 5 rounds of at least 0.2 s.
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    });
  });

  it('refuses a changed host key without running anything, and never retries (fault host-key-changed)', async () => {
    await withFault('host-key-changed', async () => {
      const failure = await failureOf(pool.run(node, sh`touch /root/must-not-exist`));
      expect(failure.type).toBe(SshFailureType.HostKeyMismatch);
      expect(failure.nonRetryable).toBe(true);
      expect(failure.message).toContain(`Host key of node node-1 (${node.address}:22) has CHANGED`);
      expect(failure.message).toMatch(/offered ssh-ed25519 SHA256:\S+, but \S+known_hosts has ssh-ed25519 SHA256:\S+ \(line \d+\)/);
      expect(failure.message).toContain(fleet.knownHostsPath);
    });
    expect((await pool.run(node, sh`test -e /root/must-not-exist`, { allowExitCodes: [0, 1] })).exitCode).toBe(1);
  });

  it('refuses an unknown host unless trust-on-first-use is on, then records its key', async () => {
    const knownHosts = join(fleet.dir, 'tofu_known_hosts');
    const unknown = await failureOf(pool.run({ ...node, knownHosts }, sh`true`));
    expect(unknown.type).toBe(SshFailureType.HostKeyUnknown);
    expect(unknown.nonRetryable).toBe(true);
    expect(unknown.message).toContain(`${knownHosts} does not exist`);

    await pool.run({ ...node, knownHosts, trustOnFirstUse: true }, sh`true`);
    expect(readFileSync(knownHosts, 'utf8')).toMatch(new RegExp(`^${node.address.replace(/\./g, '\\.')} ssh-ed25519 \\S+\\n$`));
    await pool.closeAll();
    await pool.run({ ...node, knownHosts }, sh`true`);
    await rm(knownHosts);
  });

  it('reports a connection killed mid-command as outcome unknown, and reconnects for the next command', async () => {
    await pool.run(node, sh`true`);
    const running = pool.run(node, sh`sleep 5`);
    await sleep(300);
    sshConnectionProcesses().connections.forEach((pid) => process.kill(pid, 'SIGKILL'));
    const failure = await failureOf(running);
    expect(failure.type).toBe(SshFailureType.CommandOutcomeUnknown);
    expect(failure.nonRetryable).toBe(false);
    expect(failure.message).toContain('The command may or may not have taken effect: re-read the node\'s state');
    expect((await pool.run(node, sh`echo back`)).stdout).toBe('back\n');
  });

  it('survives a connection that stops answering (ssh2 emits `error` on keepalive timeout) and reconnects', async () => {
    await pool.run(node, sh`true`);
    const frozen = sshConnectionProcesses().all;
    frozen.forEach((pid) => process.kill(pid, 'SIGSTOP'));
    try {
      // 2 unanswered keepalives 300 ms apart: the idle client emits `error` and is destroyed; no listener would crash jest.
      await sleep(1_500);
    } finally {
      frozen.forEach((pid) => process.kill(pid, 'SIGKILL'));
    }
    expect((await pool.run(node, sh`echo alive`)).stdout).toBe('alive\n');
  });

  it('cuts a hanging command at its timeout; the node then kills it (fault command-hangs)', async () => {
    await withFault('command-hangs', async () => {
      const started = Date.now();
      const failure = await failureOf(pool.run(node, sh`systemctl restart containerd`, { timeoutMs: 500 }));
      expect(failure.type).toBe(SshFailureType.CommandTimedOut);
      expect(failure.nonRetryable).toBe(false);
      expect(failure.message).toMatch(/^Command timed out after 500 ms and was stopped: systemctl restart containerd — on node node-1/);
      // Cut, not waited out: without the cut the command hangs as long as the switch is on (seconds are load, not proof).
      expect(Date.now() - started).toBeLessThan(10_000);
      // timeout(1) on the node, a second after ours, stops the whole process group: root sessions ignore signals.
      const deadline = Date.now() + 5_000;
      const hanging = () => nodeProcesses().filter((p) => p.cmdline.includes('systemctl restart containerd'));
      while (hanging().length > 0 && Date.now() < deadline) await sleep(100);
      expect(hanging()).toEqual([]);
      expect((await pool.run(node, sh`echo next`)).stdout).toBe('next\n');
    });
  });

  it('stops a command when its abort signal fires', async () => {
    const controller = new AbortController();
    const running = pool.run(node, sh`sleep 30`, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('activity cancelled')), 300);
    expect((await failureOf(running)).message).toBe('activity cancelled');
  });

  it('fails with SshConnectFailed when sshd is down (fault sshd-down)', async () => {
    await withFault('sshd-down', async () => {
      const down = await failureOf(pool.run(node, sh`true`));
      expect(down.type).toBe(SshFailureType.SshConnectFailed);
      expect(down.nonRetryable).toBe(false);
      expect(down.message).toBe(`Cannot connect to node node-1 (${node.address}:22): connection refused — is sshd running?`);
    });
  });

  it('fails with SshConnectFailed after the handshake timeout when sshd is frozen (fault sshd-frozen)', async () => {
    await withFault('sshd-frozen', async () => {
      const started = Date.now();
      const frozen = await failureOf(pool.run(node, sh`true`));
      expect(frozen.type).toBe(SshFailureType.SshConnectFailed);
      expect(frozen.message).toBe(`Cannot connect to node node-1 (${node.address}:22): no SSH handshake within 3 s — is sshd frozen or the node overloaded?`);
      // Ended by the 3 s handshake limit (named in the message), not by an OS connect timeout of minutes.
      expect(Date.now() - started).toBeLessThan(15_000);
    });
  });

  it('fails with a non-retryable SshAuthFailed when the key is refused', async () => {
    const failure = await failureOf(pool.run({ ...node, user: 'nobody', sudo: false }, sh`true`));
    expect(failure.type).toBe(SshFailureType.SshAuthFailed);
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toContain('as nobody with the key');
  });
});
