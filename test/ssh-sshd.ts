// A real OpenSSH sshd on 127.0.0.1 for the SSH layer's integration tests: key-only, its own host key, in a temp dir.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import type { SshNode } from '../activities/ssh';

export interface TestSshd {
  node: SshNode;
  dir: string;
  /** pid of the listening sshd. */
  pid(): number;
  /** Restarts sshd with new options (same port). */
  restart(options?: SshdOptions): Promise<void>;
  /** Stops sshd, keeping keys and files (the port then refuses connections). */
  stop(): Promise<void>;
  /** Stops sshd and removes its directory. */
  remove(): Promise<void>;
  /** pids of the per-connection sshd processes (children of the listener). */
  connectionPids(): number[];
  /** pids of every process below the listener: per-connection sshd processes and the commands they run. */
  descendantPids(): number[];
}

export interface SshdOptions {
  maxSessions?: number;
  /** Use the second host key, as if the node were reinstalled. */
  otherHostKey?: boolean;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

function processTable(): [pid: number, ppid: number][] {
  const out = execFileSync('ps', ['-e', '-o', 'pid=,ppid='], { encoding: 'utf8' });
  return out.trim().split('\n').map((line) => line.trim().split(/\s+/).map(Number) as [number, number]);
}

function childrenOf(pid: number | undefined, table: [number, number][]): number[] {
  return pid === undefined ? [] : table.filter(([, ppid]) => ppid === pid).map(([p]) => p);
}

/** Starts sshd; the known_hosts file already holds its (first) host key. */
export async function startTestSshd(options: SshdOptions = {}): Promise<TestSshd> {
  // sshd refuses to start without its privilege separation directory (normally made by the service unit).
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const dir = mkdtempSync(join(tmpdir(), 'katafleet-sshd-'));
  const keygen = (file: string, type = 'ed25519') => execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-f', join(dir, file)]);
  keygen('host_key');
  keygen('host_key_other');
  keygen('client_key');
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')));
  const port = await freePort();
  const hostPub = readFileSync(join(dir, 'host_key.pub'), 'utf8').split(' ');
  writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${hostPub[0]} ${hostPub[1]}\n`);

  let child: ChildProcess | null = null;
  const start = async (opts: SshdOptions) => {
    const config = join(dir, 'sshd_config');
    writeFileSync(config, [
      `Port ${port}`, 'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, opts.otherHostKey ? 'host_key_other' : 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'PubkeyAuthentication yes',
      'UsePAM no', 'StrictModes no', 'PermitRootLogin prohibit-password', `LogLevel ${process.env.SSHD_LOGLEVEL ?? 'ERROR'}`,
      `MaxSessions ${opts.maxSessions ?? 10}`, 'MaxStartups 100',
    ].join('\n') + '\n');
    child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    // SSHD_LOG=file (with SSHD_LOGLEVEL=DEBUG) keeps sshd's log for debugging a test.
    if (process.env.SSHD_LOG) child.stderr?.pipe(createWriteStream(process.env.SSHD_LOG));
    else child.stderr?.resume();
    await waitForPort(port, 5000);
  };
  const stop = async () => {
    const running = child;
    child = null;
    if (!running || running.exitCode !== null) return;
    const exited = new Promise((r) => running.once('exit', r));
    running.kill('SIGTERM');
    await exited;
  };
  await start(options);
  const user = userInfo().username;
  return {
    dir,
    node: {
      name: 'test-node', address: '127.0.0.1', port, user,
      identityFile: join(dir, 'client_key'), knownHosts: join(dir, 'known_hosts'),
    },
    pid: () => child?.pid ?? -1,
    restart: async (opts = {}) => { await stop(); await start(opts); },
    stop,
    remove: async () => { await stop(); rmSync(dir, { recursive: true, force: true }); },
    connectionPids: () => childrenOf(child?.pid, processTable()),
    descendantPids: () => {
      const table = processTable();
      const found: number[] = [];
      for (let frontier = childrenOf(child?.pid, table); frontier.length > 0; frontier = frontier.flatMap((p) => childrenOf(p, table))) {
        found.push(...frontier);
      }
      return found;
    },
  };
}
