import { formatDuration } from './command-error';
import { isError, SshFailureType } from './failure-types';
import { knownHostsName, sshFingerprint, sshKeyType, type KnownHostEntry } from './known-hosts';
import { DEFAULT_SSH_PORT, nodeEndpointLabel, type SshNode } from './node';

/** A classified connection failure: the type retry policies see and the message people read. */
export interface ConnectFailure {
  type: SshFailureType;
  message: string;
}

type ErrorLike = Error & { code?: string; level?: string };

/**
 * Turns an error from TCP connect or the SSH handshake into a failure type and a message that says what to check.
 *
 * @example `Cannot connect to node worker-2 (127.0.1.3:22): connection refused — is sshd running?`
 */
export function classifyConnectError(node: SshNode, err: unknown, readyTimeoutMs: number): ConnectFailure {
  const e = (isError(err) ? err : new Error(String(err))) as ErrorLike;
  if (e.level === 'client-authentication') {
    return {
      type: SshFailureType.SshAuthFailed,
      message: `Cannot log in to node ${nodeEndpointLabel(node)} as ${node.user} with the key ${node.identityFile}: the server refused it — ` +
        `add its public key to ~${node.user}/.ssh/authorized_keys on the node, or fix user and identity_file in the inventory`,
    };
  }
  return { type: SshFailureType.SshConnectFailed, message: `Cannot connect to node ${nodeEndpointLabel(node)}: ${connectReason(e, readyTimeoutMs)}` };
}

function connectReason(e: ErrorLike, readyTimeoutMs: number): string {
  switch (e.code) {
    case 'ECONNREFUSED': return 'connection refused — is sshd running?';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH': return 'host unreachable — check the address and the network';
    case 'ENOTFOUND':
    case 'EAI_AGAIN': return 'the address does not resolve — check the address in the inventory';
    case 'ECONNRESET': return 'connection reset during the handshake — check sshd\'s log on the node (MaxStartups, firewall)';
  }
  if (e.level === 'client-timeout' || e.code === 'ETIMEDOUT') {
    return `no SSH handshake within ${formatDuration(readyTimeoutMs)} — is sshd frozen or the node overloaded?`;
  }
  return `${e.message} — check that sshd runs and accepts connections on that port`;
}

/** The message when the identity file cannot be read (missing, unreadable, or not a private key). */
export function identityUnreadableMessage(node: SshNode, err: unknown): string {
  const reason = (err as ErrorLike).code === 'ENOENT' ? 'no such file' : (err as Error).message;
  return `Cannot use the SSH key ${node.identityFile} for node ${node.name}: ${reason} — fix identity_file in the inventory`;
}

function describeKey(key: Buffer): string {
  return `${sshKeyType(key) ?? 'unknown-type'} ${sshFingerprint(key)}`;
}

/** The `ssh-keygen -R` line that removes a host's old entries. */
function removeCommand(node: SshNode): string {
  return `ssh-keygen -R '${knownHostsName(node.address, node.port ?? DEFAULT_SSH_PORT)}' -f ${node.knownHosts}`;
}

/** The `ssh-keyscan` line that prints a host's current key, to compare with the node's console. */
function scanCommand(node: SshNode, offered: Buffer): string {
  const type = (sshKeyType(offered) ?? 'ed25519').replace(/^ssh-/, '').replace(/^ecdsa-sha2-nistp\d+$/, 'ecdsa');
  return `ssh-keyscan -p ${node.port ?? DEFAULT_SSH_PORT} -t ${type} ${node.address}`;
}

/** The message for a host key that differs from known_hosts; names node, address, file, both fingerprints and the fix. */
export function hostKeyMismatchMessage(node: SshNode, offered: Buffer, expected: readonly KnownHostEntry[]): string {
  const known = expected.map((e) => `${describeKey(e.key)} (line ${e.line})`).join(', ');
  return `Host key of node ${nodeEndpointLabel(node)} has CHANGED: the server offered ${describeKey(offered)}, ` +
    `but ${node.knownHosts} has ${known}. Someone may be intercepting the connection, or the node was reinstalled. ` +
    'Nothing was run on the node. If the change is expected, check the new fingerprint on the node\'s console ' +
    `(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then replace the entry: ${removeCommand(node)} && ${scanCommand(node, offered)} >> ${node.knownHosts}`;
}

/** The message for a host key explicitly revoked in known_hosts. */
export function hostKeyRevokedMessage(node: SshNode, offered: Buffer, entry: KnownHostEntry): string {
  return `Host key of node ${nodeEndpointLabel(node)} is revoked: the server offered ${describeKey(offered)}, ` +
    `marked @revoked at ${node.knownHosts}:${entry.line}. Nothing was run on the node; give the node a new host key and record it in ${node.knownHosts}`;
}

/** The message for a host missing from known_hosts while trust-on-first-use is off. */
export function hostKeyUnknownMessage(node: SshNode, offered: Buffer, fileExists: boolean): string {
  const where = fileExists ? `is not in ${node.knownHosts}` : `cannot be checked: ${node.knownHosts} does not exist`;
  return `Host key of node ${nodeEndpointLabel(node)} ${where} (the server offered ${describeKey(offered)}). ` +
    `Nothing was run on the node. Check the fingerprint on the node's console, then add it: ${scanCommand(node, offered)} >> ${node.knownHosts}` +
    ' — or set trust_on_first_use = true for this node in the inventory';
}
