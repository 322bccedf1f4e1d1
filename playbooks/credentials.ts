/**
 * Credential profiles: how katafleet logs in to nodes (user, private key, known_hosts, sudo, trust on first
 * use), kept in a server-side file that the operator owns. Inventories refer to a profile by name
 * (`[ssh] profile = "prod"`); an inventory sent through the HTTP API may do nothing else, so an API caller can
 * choose which nodes to reach, never which key or which known_hosts file the worker uses.
 *
 * ```toml
 * # .katafleet/credentials.toml (mode 600, owned by the user katafleet runs as)
 * [profiles.prod]
 * user = "katafleet"
 * identity_file = "/etc/katafleet/id_ed25519"
 * known_hosts = "/etc/katafleet/known_hosts"
 * sudo = true            # or "narrow": root only through the shipped helper (deploy/, docs/node-privileges.md)
 * hosts = ["10.0.1.*", "10.0.2.0/24"]   # the node addresses this profile may log in to
 * ```
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { allowlisted, localPath, userName } from './allowlists';
import { PlaybookError, throwIfProblems, type Problem } from './errors';
import { readToml } from './toml-text';
import { problemsFromZod } from './zod-issues';

/** Largest credentials (or inventory) file read by the worker: 1 MiB. */
const maxBytes = 1024 * 1024;

/** A profile name: lowercase letters, digits, "." "_" "-", at most 64. */
export const profileNamePattern = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** The inventory keys that only a credential profile may set when the inventory comes through the API. */
export const credentialKeys = ['user', 'identity_file', 'known_hosts', 'sudo', 'trust_on_first_use'] as const;

/**
 * A `hosts` entry: an IPv4 network in CIDR form (`10.0.2.0/24`), or an address or DNS name where `*` stands for
 * any run of characters (`10.0.1.*`, `*.lab.example.com`, `2001:db8::*`). Names compare case-insensitively.
 */
export const hostPatternPattern = /^(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}\/[0-9]{1,2}|[A-Za-z0-9*][A-Za-z0-9.*:_-]{0,252})$/;

/**
 * Why an IPv4 network of `hosts` can match no address (an octet over 255, a prefix over 32), or undefined. Pure.
 * Such a pattern would bind the profile to nothing without saying so.
 */
export function cidrProblem(pattern: string): string | undefined {
  const cidr = /^([0-9.]+)\/([0-9]{1,2})$/.exec(pattern);
  if (!cidr) return undefined;
  if (cidr[1].split('.').some((octet) => Number(octet) > 255)) return `"${pattern}" is no IPv4 network: an address has four numbers from 0 to 255, e.g. "10.0.2.0/24"`;
  if (Number(cidr[2]) > 32) return `"${pattern}" is no IPv4 network: the prefix length is 0 to 32, e.g. "10.0.2.0/24"`;
  return undefined;
}

const hostsRequired =
  'required: the node addresses this profile may log in to, e.g. hosts = ["10.0.1.*", "10.0.2.0/24", "*.lab.example.com"]; ' +
  'a rollout (or a workflow started straight on Temporal) may use the profile for these addresses only';

/** One `[profiles.NAME]` table. */
export const CredentialProfile = z.strictObject({
  /** Login user. @default "root" */
  user: allowlisted(userName).default('root'),
  /** Private key; relative paths are relative to the credentials file, `~/` is the home directory. */
  identity_file: allowlisted(localPath),
  /** known_hosts file that host keys are checked against. @default "~/.ssh/known_hosts" */
  known_hosts: allowlisted(localPath).default('~/.ssh/known_hosts'),
  /**
   * How root is reached when `user` is not root: `true` runs each command as `sudo -n sh -c` (sudoers must allow
   * `sh`, i.e. all of root), `"narrow"` only through the shipped helper `kf-root` (deploy/sudoers.d/katafleet).
   * @default false
   */
  sudo: z.literal([true, false, 'narrow']).default(false),
  /** Accept and record an unknown host key on first contact (only ever from a profile). @default false */
  trust_on_first_use: z.boolean().default(false),
  /** The node addresses the profile may log in to (see {@link hostPatternPattern}); the worker refuses any other. */
  hosts: z.array(
    z.string()
      .regex(hostPatternPattern, 'a host pattern is an address or name with "*" wildcards, or an IPv4 network such as "10.0.2.0/24"')
      .refine((pattern) => cidrProblem(pattern) === undefined, { error: (issue) => cidrProblem(issue.input as string) }),
  ).min(1, hostsRequired).optional(),
  /** kubeconfig on the worker, for an inventory's `[kubernetes] profile = "NAME"` (kubectl then runs on the worker). */
  kubeconfig: allowlisted(localPath).optional(),
});
/** A profile as loaded: `hosts` is required (parseCredentials says so with {@link hostsRequired}). */
export type CredentialProfile = z.infer<typeof CredentialProfile> & { hosts: string[] };

/** A credentials file. */
export const CredentialsFile = z.strictObject({
  profiles: z.record(z.string().regex(profileNamePattern, 'a profile name holds lowercase letters, digits, ".", "_" and "-" (at most 64)'), CredentialProfile),
});

/** A loaded credentials file: its absolute path and its profiles, paths absolute. */
export interface Credentials {
  file: string;
  profiles: Record<string, CredentialProfile>;
}

/** The login a node's commands run with, as the SSH layer needs it. */
export interface Login {
  user: string;
  identityFile: string;
  knownHosts: string;
  /** `"narrow"`: root only through kf-root (activities/ssh/quote.ts `narrowSudo`). */
  sudo: boolean | 'narrow';
  trustOnFirstUse: boolean;
}

/** True when `address` (a node's address) is one of `patterns` (a profile's `hosts`). Pure. */
export function hostCovered(address: string, patterns: readonly string[]): boolean {
  return patterns.some((pattern) => hostMatches(address, pattern));
}

function hostMatches(address: string, pattern: string): boolean {
  const cidr = /^([0-9.]+)\/([0-9]{1,2})$/.exec(pattern);
  if (cidr) {
    const network = ipv4(cidr[1]);
    const host = ipv4(address);
    const bits = Number(cidr[2]);
    if (network === undefined || host === undefined || bits > 32) return false;
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    return ((network & mask) >>> 0) === ((host & mask) >>> 0);
  }
  const glob = new RegExp(`^${pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'i');
  return glob.test(address);
}

function ipv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((part) => /^[0-9]{1,3}$/.test(part) && Number(part) <= 255)) return undefined;
  return parts.reduce((value, part) => ((value << 8) | Number(part)) >>> 0, 0);
}

/**
 * Why profile `name` may not log in to `address`, or undefined when it may. Pure: the worker calls it before
 * every connection (playbooks/login.ts), so a workflow started straight on Temporal cannot take a profile to a
 * host the operator did not bind it to.
 */
export function profileScopeProblem(name: string, profile: Pick<CredentialProfile, 'hosts'>, address: string, file: string): string | undefined {
  if (hostCovered(address, profile.hosts)) return undefined;
  return `credential profile "${name}" of ${file} may log in to ${profile.hosts.join(', ')} only, not to ${address} — ` +
    `add a pattern covering ${address} to its hosts if that node belongs to it, or use the profile made for that node`;
}

/** The credentials file used when none is named: `KATAFLEET_CREDENTIALS`, else `.katafleet/credentials.toml`. */
export function defaultCredentialsFile(): string {
  return path.resolve(process.env.KATAFLEET_CREDENTIALS || path.join('.katafleet', 'credentials.toml'));
}

/** `~/x` → home directory; relative → relative to `baseDir`. */
export function resolveLocalPath(value: string, baseDir: string): string {
  if (value.startsWith('~/')) return path.join(homedir(), value.slice(2));
  return path.resolve(baseDir, value);
}

/**
 * Why katafleet must not trust a file that holds login settings, or undefined when it may: it must belong to
 * the user katafleet runs as (or root) and be writable by nobody else, like OpenSSH's own rule for its files.
 */
export function untrustedFileReason(stat: { uid: number; mode: number }): string | undefined {
  const uid = process.getuid?.();
  if (uid !== undefined && stat.uid !== uid && stat.uid !== 0) return `is owned by uid ${stat.uid}, not by the user katafleet runs as (uid ${uid}) — chown it`;
  if ((stat.mode & 0o022) !== 0) return `can be written by group or others (mode ${(stat.mode & 0o777).toString(8)}) — chmod 600 it`;
  return undefined;
}

/**
 * The text of an operator-owned regular file of at most 1 MiB (synchronous: the worker resolves logins while it
 * builds a node's shell). Refuses FIFOs and devices without blocking, and files that others could have written.
 */
export function readTrustedFile(file: string): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new Error(`${file} is not a regular file`);
    const untrusted = untrustedFileReason(stat);
    if (untrusted) throw new Error(`${file} ${untrusted}`);
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (let read = -1; read !== 0 && length < buffer.length; length += read) read = readSync(fd, buffer, length, buffer.length - length, null);
    if (length > maxBytes) throw new Error(`${file} is larger than 1 MiB`);
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * Parses a credentials file's text; paths come back absolute (relative to the file's folder).
 * @throws PlaybookError with every problem found
 */
export function parseCredentials(text: string, file: string): Credentials {
  const reading = readToml(text, file);
  const problems: Problem[] = [...reading.problems];
  if (reading.data !== undefined) {
    const result = CredentialsFile.safeParse(reading.data, { reportInput: true });
    const unbound = result.success ? Object.entries(result.data.profiles).filter(([, profile]) => profile.hosts === undefined) : [];
    problems.push(...unbound.map(([name]) => ({ file, path: `profiles.${name}.hosts`, message: hostsRequired })));
    if (result.success && unbound.length === 0) {
      const dir = path.dirname(path.resolve(file));
      const profiles = Object.fromEntries(
        Object.entries(result.data.profiles).map(([name, profile]) => [
          name,
          {
            ...profile,
            hosts: profile.hosts ?? [],
            identity_file: resolveLocalPath(profile.identity_file, dir),
            known_hosts: resolveLocalPath(profile.known_hosts, dir),
            ...(profile.kubeconfig === undefined ? {} : { kubeconfig: resolveLocalPath(profile.kubeconfig, dir) }),
          },
        ]),
      );
      throwIfProblems(problems);
      return { file: path.resolve(file), profiles };
    }
    if (!result.success) problems.push(...problemsFromZod(file, result.error.issues, CredentialsFile, reading.data));
  }
  throw new PlaybookError(problems.length > 0 ? problems : [{ file, path: '', message: 'is not a credentials file' }]);
}

/**
 * Reads a credentials file (operator-owned, not writable by others, regular, at most 1 MiB).
 * @throws PlaybookError naming the file and the fix
 */
export function loadCredentials(file: string): Credentials {
  let text: string;
  try {
    text = readTrustedFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message =
      code === 'ENOENT'
        ? 'no such file: create it (mode 600) with a [profiles.NAME] table per login (identity_file, known_hosts, user, sudo, trust_on_first_use)'
        : code
          ? `cannot be read (${code})`
          : (error as Error).message.replace(`${file} `, '');
    throw new PlaybookError([{ file, path: '', message }]);
  }
  return parseCredentials(text, file);
}

/** The login of `profile` from `credentials`. */
export function loginOf(profile: CredentialProfile): Login {
  return { user: profile.user, identityFile: profile.identity_file, knownHosts: profile.known_hosts, sudo: profile.sudo, trustOnFirstUse: profile.trust_on_first_use };
}
