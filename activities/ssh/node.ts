/**
 * How to reach one node over SSH. A plain record so the pool does not depend on the inventory schema; the
 * inventory's `resolveNodeSsh(inventory, node)` result maps onto it field by field.
 */
export interface SshNode {
  /** Inventory name, used in every message (`worker-2`). Also the pool's key: one connection per name. */
  name: string;
  /** IP address or DNS name to connect to. */
  address: string;
  /** @default 22 */
  port?: number;
  /** Login user. */
  user: string;
  /** Path of the private key file. */
  identityFile: string;
  /** Path of the OpenSSH known_hosts file the node's host key is checked against. */
  knownHosts: string;
  /** Prefix commands with `sudo -n`. @default true when `user` is not `root` */
  sudo?: boolean;
  /** Accept and record the key of a host missing from known_hosts (never a changed key). @default false */
  trustOnFirstUse?: boolean;
  /** Concurrent channels on the node's connection; keep it below the server's MaxSessions (OpenSSH: 10). @default 4 */
  maxSessions?: number;
}

/** Defaults for the optional fields of {@link SshNode}. */
export const DEFAULT_SSH_PORT = 22;
export const DEFAULT_MAX_SESSIONS = 4;

/** `worker-2 (127.0.1.3)`: how messages name a node. */
export function nodeLabel(node: Pick<SshNode, 'name' | 'address'>): string {
  return `${node.name} (${node.address})`;
}

/** `worker-2 (127.0.1.3:22)`: how connection messages name a node. */
export function nodeEndpointLabel(node: Pick<SshNode, 'name' | 'address' | 'port'>): string {
  return `${node.name} (${node.address}:${node.port ?? DEFAULT_SSH_PORT})`;
}
