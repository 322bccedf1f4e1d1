import {
  classifyConnectError, commandFailedMessage, commandOutcomeUnknownMessage, commandTimedOutMessage, describeExitCode,
  formatDuration, hostKeyMismatchMessage, hostKeyUnknownMessage, parseKnownHosts, SshFailureType, tail,
  type CommandResult, type SshNode,
} from '../activities/ssh';

const node: SshNode = {
  name: 'worker-2', address: '127.0.1.3', port: 22, user: 'root',
  identityFile: '/keys/fleet', knownHosts: '/fleet/known_hosts',
};

function result(overrides: Partial<CommandResult>): CommandResult {
  return {
    host: 'worker-2', address: '127.0.1.3', command: 'kata-runtime check',
    exitCode: 0, signal: null, stdout: '', stderr: '', durationMs: 12, ...overrides,
  };
}

// A real ed25519 public key blob and another one, as a server would offer them.
const knownKey = Buffer.from('AAAAC3NzaC1lZDI1NTE5AAAAIBrzAIp7iRs+390zkGtMzQMp3r76/f5B0iXsQNAKsCWc', 'base64');
const newKey = Buffer.from('AAAAC3NzaC1lZDI1NTE5AAAAIOmQ0l0Hj6l3n7GzC9iU3bH0Z4o5o8FZ2JYQk0O2b7mZ', 'base64');

describe('command failure messages', () => {
  it('names the exit code, its meaning, the command and the node', () => {
    expect(commandFailedMessage(result({ exitCode: 127 })))
      .toBe('Command failed with exit code 127 (command not found): kata-runtime check — on node worker-2 (127.0.1.3)');
  });

  it.each([
    [126, 'permission denied or not executable'],
    [124, 'timed out by timeout(1)'],
    [137, 'killed by SIGKILL'],
    [143, 'killed by SIGTERM'],
    [1, null],
  ])('explains exit code %i as %p', (code, meaning) => {
    expect(describeExitCode(code)).toBe(meaning);
  });

  it('recognizes sudo asking for a password', () => {
    expect(describeExitCode(1, 'sudo: a password is required\n')).toContain('allow passwordless sudo');
  });

  it('reports a command killed by a signal', () => {
    expect(commandFailedMessage(result({ exitCode: null, signal: 'SIGKILL' })))
      .toBe('Command was killed by SIGKILL: kata-runtime check — on node worker-2 (127.0.1.3)');
  });

  it('appends the tail of stderr (or stdout when stderr is empty), at most 4 KiB', () => {
    const stderr = `${'x'.repeat(10_000)}\nKVM not available\n`;
    const message = commandFailedMessage(result({ exitCode: 1, stderr }));
    expect(message.split('\n')[0]).toBe('Command failed with exit code 1: kata-runtime check — on node worker-2 (127.0.1.3)');
    expect(message.endsWith('KVM not available')).toBe(true);
    expect(Buffer.byteLength(message)).toBeLessThan(4096 + 200);
    expect(commandFailedMessage(result({ exitCode: 1, stdout: 'only stdout\n' }))).toMatch(/\nonly stdout$/);
  });

  it('cuts tails on character boundaries', () => {
    expect(tail('ééé', 3)).toBe('…é');
  });

  it('tells that a timed-out command was stopped and how long it had', () => {
    expect(commandTimedOutMessage(result({ command: 'sleep 100', exitCode: null }), 30_000))
      .toMatch(/^Command timed out after 30 s and was stopped: sleep 100 — on node worker-2 \(127\.0\.1\.3\)/);
    expect(formatDuration(850)).toBe('850 ms');
    expect(formatDuration(150_000)).toBe('2.5 min');
  });

  it('tells the caller to re-read state when the outcome is unknown', () => {
    const message = commandOutcomeUnknownMessage(result({ command: 'systemctl restart containerd', exitCode: null }), node, 'read ECONNRESET');
    expect(message).toContain('Connection to node worker-2 (127.0.1.3:22) was lost while running: systemctl restart containerd (read ECONNRESET)');
    expect(message).toContain('re-read the node\'s state before running it again');
  });
});

describe('connection failure messages', () => {
  const connectError = (code: string) => Object.assign(new Error(`connect ${code} 127.0.1.3:22`), { code });

  it('asks whether sshd runs when the connection is refused', () => {
    expect(classifyConnectError(node, connectError('ECONNREFUSED'), 10_000)).toEqual({
      type: SshFailureType.SshConnectFailed,
      message: 'Cannot connect to node worker-2 (127.0.1.3:22): connection refused — is sshd running?',
    });
  });

  it('suspects a frozen sshd when the handshake times out', () => {
    const timeout = Object.assign(new Error('Timed out while waiting for handshake'), { level: 'client-timeout' });
    expect(classifyConnectError(node, timeout, 10_000).message)
      .toBe('Cannot connect to node worker-2 (127.0.1.3:22): no SSH handshake within 10 s — is sshd frozen or the node overloaded?');
  });

  it('classifies a refused key as a non-retryable auth failure that says what to fix', () => {
    const auth = Object.assign(new Error('All configured authentication methods failed'), { level: 'client-authentication' });
    const failure = classifyConnectError(node, auth, 10_000);
    expect(failure.type).toBe(SshFailureType.SshAuthFailed);
    expect(failure.message).toContain('as root with the key /keys/fleet: the server refused it');
    expect(failure.message).toContain('~root/.ssh/authorized_keys');
  });

  it('names node, address, file, both fingerprints and the fix for a changed host key', () => {
    const [known] = parseKnownHosts(`127.0.1.3 ssh-ed25519 ${knownKey.toString('base64')}\n`);
    const message = hostKeyMismatchMessage(node, newKey, [known]);
    expect(message).toContain('Host key of node worker-2 (127.0.1.3:22) has CHANGED');
    expect(message).toContain('the server offered ssh-ed25519 SHA256:');
    expect(message).toContain('but /fleet/known_hosts has ssh-ed25519 SHA256:');
    expect(message).toContain('(line 1)');
    expect(message).toContain('Nothing was run on the node');
    expect(message).toContain("ssh-keygen -R '127.0.1.3' -f /fleet/known_hosts");
  });

  it('offers the two ways forward for an unknown host', () => {
    const message = hostKeyUnknownMessage({ ...node, port: 2222 }, newKey, true);
    expect(message).toContain('Host key of node worker-2 (127.0.1.3:2222) is not in /fleet/known_hosts');
    expect(message).toContain('ssh-keyscan -p 2222 -t ed25519 127.0.1.3 >> /fleet/known_hosts');
    expect(message).toContain('trust_on_first_use = true');
  });
});
