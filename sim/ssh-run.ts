// Runs a command on a simulated node through the real OpenSSH client, strictly checking the host key
// against the fleet's known_hosts: what an operator would type. Used by tests and `katafleet sim`.
import { spawn } from 'node:child_process';
import type { Fleet, SimNode } from './fleet';

export interface SshResult {
  host: string;
  command: string;
  /** null when ssh was killed (timeout) */
  exitCode: number | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface SshRunOptions {
  user?: string;
  /** Kill ssh after this long. @default 60000 */
  timeoutMs?: number;
  /** Sent on the command's stdin. */
  input?: string;
  /** ssh ConnectTimeout in seconds. @default 10 */
  connectTimeoutS?: number;
}

export function sshArgs(fleet: Pick<Fleet, 'identityFile' | 'knownHostsPath'>, node: Pick<SimNode, 'address' | 'port'>, o: SshRunOptions = {}): string[] {
  return [
    '-F', '/dev/null',
    '-i', fleet.identityFile,
    '-o', `UserKnownHostsFile=${fleet.knownHostsPath}`,
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'BatchMode=yes',
    '-o', `ConnectTimeout=${o.connectTimeoutS ?? 10}`,
    '-o', 'LogLevel=ERROR',
    // OpenSSH 9's default post-quantum key exchange costs ~0.2 s more per connection on this 2-core
    // machine; ssh2 (node-ssh, what activities use) negotiates curve25519 too.
    '-o', 'KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org',
    '-p', String(node.port),
    `${o.user ?? 'root'}@${node.address}`,
  ];
}

export function sshRun(
  fleet: Pick<Fleet, 'identityFile' | 'knownHostsPath'>,
  node: Pick<SimNode, 'address' | 'port'>,
  command: string,
  o: SshRunOptions = {},
): Promise<SshResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', [...sshArgs(fleet, node, o), command], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ host: node.address, command, exitCode: code, stdout, stderr, durationMs: Date.now() - started });
    });
    child.stdin.end(o.input ?? '');
  });
}
