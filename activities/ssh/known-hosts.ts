import { createHash, createHmac, randomBytes } from 'node:crypto';
import { appendFile, readFile, stat } from 'node:fs/promises';

/** One key line of an OpenSSH `known_hosts` file. */
export interface KnownHostEntry {
  /** 1-based line number, for messages. */
  line: number;
  /** `@revoked` keys are refused; `@cert-authority` lines are kept but never match (certificates are not supported). */
  marker: '@revoked' | '@cert-authority' | null;
  /** The host field as written: `|1|salt|hash`, or comma-separated patterns such as `node1,[10.0.0.5]:2222,!*.bad`. */
  hosts: string;
  /** Key type from the line, e.g. `ssh-ed25519`. */
  keyType: string;
  /** The public key blob, as the server sends it during the handshake. */
  key: Buffer;
}

/** Parses `known_hosts` text. Blank lines, comments and malformed lines are skipped, as OpenSSH does. */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split('\n').forEach((raw, index) => {
    const fields = raw.trim().split(/\s+/);
    if (fields[0] === '' || fields[0].startsWith('#')) return;
    const marker = fields[0] === '@revoked' || fields[0] === '@cert-authority' ? fields.shift() as KnownHostEntry['marker'] : null;
    const [hosts, keyType, keyBase64] = fields;
    if (!hosts || !keyType || !keyBase64) return;
    const key = Buffer.from(keyBase64, 'base64');
    if (key.length === 0 || sshKeyType(key) !== keyType) return;
    entries.push({ line: index + 1, marker, hosts, keyType, key });
  });
  return entries;
}

/**
 * The name OpenSSH looks up (and writes): `host` on port 22, `[host]:port` otherwise, with the host name in
 * lowercase, as ssh(1) lowercases it before any known_hosts lookup. Hashed entries can only be compared that way:
 * hashing `Worker-3` would miss the entry for `worker-3`, and a changed key would look unknown instead of changed.
 */
export function knownHostsName(host: string, port: number): string {
  const name = host.toLowerCase();
  return port === 22 ? name : `[${name}]:${port}`;
}

/** The key type at the start of an SSH public key blob (`string keytype` in RFC 4253 wire format). */
export function sshKeyType(key: Buffer): string | null {
  if (key.length < 4) return null;
  const length = key.readUInt32BE(0);
  if (length === 0 || 4 + length > key.length) return null;
  return key.subarray(4, 4 + length).toString('latin1');
}

/** The fingerprint OpenSSH prints (`ssh-keygen -l`): `SHA256:` and unpadded base64. */
export function sshFingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** `|1|salt|hash` as written with `HashKnownHosts yes`: HMAC-SHA1 of the name, keyed by a random salt. */
export function hashKnownHostsName(name: string, salt: Buffer = randomBytes(20)): string {
  const hash = createHmac('sha1', salt).update(name).digest('base64');
  return `|1|${salt.toString('base64')}|${hash}`;
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

/** True when the entry's host field names `host` on `port` (hashed, plain, `[host]:port`, wildcards, `!` negation). */
export function hostFieldMatches(hosts: string, host: string, port: number): boolean {
  const name = knownHostsName(host, port);
  if (hosts.startsWith('|1|')) {
    const [, , salt, hash] = hosts.split('|');
    return hashKnownHostsName(name, Buffer.from(salt ?? '', 'base64')) === `|1|${salt}|${hash}`;
  }
  let matched = false;
  for (const pattern of hosts.split(',')) {
    const negated = pattern.startsWith('!');
    if (globToRegExp(negated ? pattern.slice(1) : pattern).test(name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/** What known_hosts says about the key a server offered. */
export type HostKeyVerdict =
  | { verdict: 'known'; entry: KnownHostEntry }
  | { verdict: 'revoked'; entry: KnownHostEntry }
  | { verdict: 'mismatch'; expected: KnownHostEntry[] }
  | { verdict: 'unknown' };

/** Decides, as OpenSSH does, whether `offered` is the key known_hosts holds for `host`:`port`. Pure. */
export function checkHostKey(entries: readonly KnownHostEntry[], host: string, port: number, offered: Buffer): HostKeyVerdict {
  const revoked = entries.find((e) => e.marker === '@revoked' && e.key.equals(offered));
  if (revoked) return { verdict: 'revoked', entry: revoked };
  const forHost = entriesForHost(entries, host, port);
  const same = forHost.find((e) => e.key.equals(offered));
  if (same) return { verdict: 'known', entry: same };
  if (forHost.length === 0) return { verdict: 'unknown' };
  const offeredType = sshKeyType(offered);
  const sameType = forHost.filter((e) => e.keyType === offeredType);
  return { verdict: 'mismatch', expected: sameType.length > 0 ? sameType : forHost };
}

/** The plain key entries (no markers) that apply to `host`:`port`. */
export function entriesForHost(entries: readonly KnownHostEntry[], host: string, port: number): KnownHostEntry[] {
  return entries.filter((e) => e.marker === null && hostFieldMatches(e.hosts, host, port));
}

const hostKeyAlgorithmsByKeyType: Record<string, string[]> = {
  'ssh-ed25519': ['ssh-ed25519'],
  'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
};

/**
 * Host key algorithms to offer when known_hosts already holds keys for the host, so the server proves the key we
 * know rather than another type we never saw (which would look like a changed key). `undefined`: offer the defaults.
 */
export function hostKeyAlgorithmsFor(entries: readonly KnownHostEntry[], host: string, port: number): string[] | undefined {
  const algorithms = [...new Set(entriesForHost(entries, host, port).flatMap((e) => hostKeyAlgorithmsByKeyType[e.keyType] ?? []))];
  return algorithms.length > 0 ? algorithms : undefined;
}

/** The line trust-on-first-use appends: `[host]:port keytype base64`, readable and accepted by OpenSSH. */
export function formatKnownHostsLine(host: string, port: number, key: Buffer): string {
  return `${knownHostsName(host, port)} ${sshKeyType(key)} ${key.toString('base64')}`;
}

/** A known_hosts file as read: whether it exists, and its key lines. Shared between readers: never mutate it. */
export type KnownHostsRead = { exists: boolean; entries: KnownHostEntry[] };

/** The parsed files, by path, with the version (inode, size, times) they were parsed at. A few paths at most: one per credential profile. */
const parsedFiles = new Map<string, { version: string; read: Promise<KnownHostsRead> }>();
const parsedFilesCap = 32;

/**
 * Reads and parses a known_hosts file; a missing file reads as empty (`exists: false`, for the message). The parsed
 * file is kept and handed to every caller until the file changes (its inode, size, mtime or ctime: an append by
 * trust-on-first-use, an edit, a replacement), and concurrent callers share one read. Before, each new SSH connection
 * read and parsed the whole file: a fleet's file has a line per node, so 200 connections opened together at 10,000
 * nodes parsed 2,000,000 lines at once (the worker's main heap went to 259 MB in `bench/scale.ts --nodes 10000`).
 */
export async function readKnownHosts(path: string): Promise<KnownHostsRead> {
  let version: string;
  try {
    const info = await stat(path);
    version = `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false, entries: [] };
    throw err;
  }
  const cached = parsedFiles.get(path);
  if (cached?.version === version) return cached.read;
  // Read after the stat: a change in between is parsed now and seen as a new version at the next call (re-read then).
  const read = parseKnownHostsFile(path);
  parsedFiles.delete(path);
  if (parsedFiles.size >= parsedFilesCap) parsedFiles.delete(parsedFiles.keys().next().value as string);
  parsedFiles.set(path, { version, read });
  read.catch(() => {
    if (parsedFiles.get(path)?.read === read) parsedFiles.delete(path);
  });
  return read;
}

async function parseKnownHostsFile(path: string): Promise<KnownHostsRead> {
  try {
    return { exists: true, entries: parseKnownHosts(await readFile(path, 'utf8')) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false, entries: [] };
    throw err;
  }
}

/** Appends one key line (O_APPEND: concurrent appends for different nodes do not interleave), starting a new line if needed. */
export async function appendKnownHost(path: string, host: string, port: number, key: Buffer): Promise<void> {
  let current = '';
  try {
    current = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const separator = current === '' || current.endsWith('\n') ? '' : '\n';
  await appendFile(path, `${separator}${formatKnownHostsLine(host, port, key)}\n`, { mode: 0o644 });
}
