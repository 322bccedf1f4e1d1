/**
 * Loading playbooks and inventories: TOML text → shape (zod) → cross-references → typed data with
 * its source. Every function throws a {@link PlaybookError} listing all problems at once.
 */
import { createHash } from 'node:crypto';
import { constants, existsSync, readdirSync } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import path from 'node:path';
import type { z } from 'zod';
import { credentialKeys, defaultCredentialsFile, loadCredentials, profileScopeProblem, resolveLocalPath, type Credentials } from './credentials';
import { crossCheckInventory, crossCheckPairing, crossCheckPlaybook } from './cross-checks';
import { didYouMean, PlaybookError, throwIfProblems, type Problem } from './errors';
import { Inventory, Playbook, type SourceInfo, type SshOverride } from './schema';
import { readToml } from './toml-text';
import { problemsFromZod } from './zod-issues';

export { PlaybookError } from './errors';
export type { Problem } from './errors';

/** Folder of the shipped playbooks (this one). */
const shippedPlaybooks = __dirname;

function sourceOf(text: string, file: string): SourceInfo {
  return { file, sha256: createHash('sha256').update(text).digest('hex') };
}

/** Syntax, then shape, then (when the shape is right) the document's own cross-checks. */
function parseDocument<Schema extends z.ZodType>(
  text: string,
  file: string,
  schema: Schema,
  crossCheck: (document: z.output<Schema>, file: string) => Problem[],
  rawCheck: (data: Record<string, unknown>, file: string) => Problem[] = () => [],
): z.output<Schema> {
  const reading = readToml(text, file);
  const problems = [...reading.problems, ...(reading.data === undefined ? [] : rawCheck(reading.data, file))];
  let document: z.output<Schema> | undefined;
  if (reading.data !== undefined) {
    const result = schema.safeParse(reading.data, { reportInput: true });
    if (result.success) {
      document = result.data;
      problems.push(...crossCheck(result.data, file));
    } else {
      problems.push(...problemsFromZod(file, result.error.issues, schema, reading.data));
    }
  }
  const relevant = problems.filter((problem) => !reading.leftOut.has(problem.path));
  throwIfProblems(relevant);
  if (document === undefined) throw new PlaybookError(problems);
  return document;
}

/**
 * Parses and validates a playbook.
 * @param file how the file is named in messages and in `source.file`
 * @throws PlaybookError with every problem found
 */
export function parsePlaybook(text: string, file: string): Playbook {
  return { ...parseDocument(text, file, Playbook, crossCheckPlaybook), source: sourceOf(text, file) };
}

function resolveSshPaths<T extends SshOverride>(ssh: T, inventoryDir: string): T {
  return {
    ...ssh,
    ...(ssh.identity_file === undefined ? {} : { identity_file: resolveLocalPath(ssh.identity_file, inventoryDir) }),
    ...(ssh.known_hosts === undefined ? {} : { known_hosts: resolveLocalPath(ssh.known_hosts, inventoryDir) }),
  };
}

/** Options of {@link parseInventory}. */
export interface InventoryOptions {
  /**
   * The inventory comes from someone who may choose nodes but not logins (the HTTP API): the login keys
   * (`user`, `identity_file`, `known_hosts`, `sudo`, `trust_on_first_use`) are refused, and a credential
   * profile must be named.
   */
  profilesOnly?: boolean;
}

/** The `ssh` tables of a raw inventory document, with their paths. */
function sshTables(data: Record<string, unknown>): [string, Record<string, unknown>][] {
  const tables: [string, Record<string, unknown>][] = [];
  const isTable = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);
  if (isTable(data.ssh)) tables.push(['ssh', data.ssh]);
  if (Array.isArray(data.nodes)) {
    data.nodes.forEach((node: unknown, index) => {
      if (isTable(node) && isTable(node.ssh)) tables.push([`nodes[${index}].ssh`, node.ssh]);
    });
  }
  return tables;
}

/** Login keys where they must not be: anywhere in an API inventory, and next to a profile anywhere. */
function credentialKeyProblems(data: Record<string, unknown>, file: string, options: InventoryOptions): Problem[] {
  const tables = sshTables(data);
  const usesProfiles = tables.some(([, table]) => table.profile !== undefined);
  const problems: Problem[] = [];
  for (const [where, table] of tables) {
    for (const key of credentialKeys.filter((name) => table[name] !== undefined)) {
      const message = options.profilesOnly
        ? `an inventory sent to the API names nodes and addresses only; the login comes from the server — define ${key} in a credential profile of the server's credentials file and set ssh.profile = "NAME"`
        : `${key} and a credential profile do not mix in one inventory — define ${key} in the profile, or drop the profile`;
      if (options.profilesOnly || usesProfiles) problems.push({ file, path: `${where}.${key}`, message });
    }
  }
  const kubernetes = data.kubernetes as Record<string, unknown> | undefined;
  if (options.profilesOnly && kubernetes && typeof kubernetes === 'object' && kubernetes.kubeconfig !== undefined && kubernetes.control_plane === undefined) {
    problems.push({ file, path: 'kubernetes.kubeconfig', message: 'an inventory sent to the API does not choose files on the worker — define kubeconfig in a credential profile of the server\'s credentials file and set kubernetes.profile = "NAME"' });
  }
  if (options.profilesOnly && !usesProfiles) {
    problems.push({ file, path: 'ssh.profile', message: 'required: an inventory sent to the API names a credential profile of the server (ssh.profile = "NAME"), which holds the SSH login' });
  }
  return problems;
}

/**
 * Parses and validates an inventory. Local paths (`identity_file`, `known_hosts`) come back
 * absolute, resolved against the folder of `file`. Profiles are not looked up here: see {@link attachCredentials}.
 * @throws PlaybookError with every problem found
 */
export function parseInventory(text: string, file: string, options: InventoryOptions = {}): Inventory {
  const document = parseDocument(text, file, Inventory, crossCheckInventory, (data, name) => credentialKeyProblems(data, name, options));
  const inventoryDir = path.dirname(path.resolve(file));
  return {
    ...document,
    ssh: resolveSshPaths(document.ssh, inventoryDir),
    nodes: document.nodes.map((node) => (node.ssh ? { ...node, ssh: resolveSshPaths(node.ssh, inventoryDir) } : node)),
    source: sourceOf(text, file),
  };
}

/** The profile names an inventory refers to, with where. */
function profileReferences(inventory: Inventory): [string, string][] {
  const references: [string, string][] = [];
  if (inventory.ssh.profile !== undefined) references.push(['ssh.profile', inventory.ssh.profile]);
  inventory.nodes.forEach((node, index) => {
    if (node.ssh?.profile !== undefined) references.push([`nodes[${index}].ssh.profile`, node.ssh.profile]);
  });
  if (inventory.kubernetes?.profile !== undefined) references.push(['kubernetes.profile', inventory.kubernetes.profile]);
  return references;
}

/**
 * The inventory with the credentials file its profiles come from; every profile it names must be defined
 * there. An inventory that names no profile comes back unchanged.
 * @throws PlaybookError naming the inventory key, or the credentials file, and the fix
 */
export function attachCredentials(inventory: Inventory, credentialsFile: string): Inventory {
  const references = profileReferences(inventory);
  if (references.length === 0) return inventory;
  const credentials: Credentials = loadCredentials(credentialsFile);
  const defined = Object.keys(credentials.profiles).sort();
  throwIfProblems(
    references
      .filter(([, name]) => credentials.profiles[name] === undefined)
      .map(([where, name]) => ({
        file: inventory.source.file,
        path: where,
        message: `no credential profile named ${quoteCapped(name)} in ${credentialsFile}${didYouMean(name, defined)}; defined: ${defined.join(', ') || 'none'} — add [profiles.${name}] there, or name one of these`,
      })),
  );
  // A profile logs in only to the addresses its `hosts` cover (checked again by the worker before each connection).
  throwIfProblems(inventory.nodes.flatMap((node, index) => {
    const name = node.ssh?.profile ?? inventory.ssh.profile;
    const problem = name === undefined ? undefined : profileScopeProblem(name, credentials.profiles[name], node.address, credentials.file);
    return problem ? [{ file: inventory.source.file, path: `nodes[${index}].address`, message: problem }] : [];
  }));
  const kubeProfile = inventory.kubernetes?.profile;
  if (kubeProfile !== undefined && credentials.profiles[kubeProfile]?.kubeconfig === undefined) {
    throwIfProblems([{ file: inventory.source.file, path: 'kubernetes.profile', message: `credential profile "${kubeProfile}" in ${credentialsFile} has no kubeconfig — add kubeconfig = "<file on the worker>" to [profiles.${kubeProfile}] there` }]);
  }
  return { ...inventory, credentials };
}

/**
 * The credentials file for an operator's inventory file: `KATAFLEET_CREDENTIALS`, else a `credentials.toml`
 * next to the inventory, else `.katafleet/credentials.toml`.
 */
export function credentialsFileFor(inventoryFile: string): string {
  if (process.env.KATAFLEET_CREDENTIALS) return path.resolve(process.env.KATAFLEET_CREDENTIALS);
  const sibling = path.join(path.dirname(path.resolve(inventoryFile)), 'credentials.toml');
  return existsSync(sibling) ? sibling : defaultCredentialsFile();
}

const bareName = /^[a-z0-9][a-z0-9-]*$/;

/**
 * The file a playbook argument means: a bare name such as `kata` is the shipped
 * `playbooks/kata.toml`; anything else is a path (relative to the working directory).
 */
export function resolvePlaybookPath(pathOrName: string): string {
  return bareName.test(pathOrName) ? path.join(shippedPlaybooks, `${pathOrName}.toml`) : path.resolve(pathOrName);
}

/** The names of the shipped playbooks: `gvisor`, `kata`, `kata-uninstall`. */
export function shippedPlaybookNames(): string[] {
  return readdirSync(shippedPlaybooks)
    .filter((entry) => entry.endsWith('.toml'))
    .map((entry) => entry.slice(0, -'.toml'.length))
    .sort();
}

/** How a file is named in messages: relative to the working directory when inside it. */
function displayName(absolute: string): string {
  const relative = path.relative(process.cwd(), absolute);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : absolute;
}

/** Largest playbook, inventory or credentials file katafleet reads: 1 MiB. */
export const maxFileBytes = 1024 * 1024;

/** Why a file was not read, as a message for {@link Problem}. */
class FileRefused extends Error {}

/**
 * The text of a regular file of at most {@link maxFileBytes}. Opened without blocking (a FIFO opens at once
 * and is refused), checked with fstat on the opened descriptor (no race with a rename), and read at most
 * one byte past the cap, so `/dev/zero` or a growing `/proc` file never fills memory.
 */
export async function readBoundedFile(file: string, flags = 0): Promise<string> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | flags);
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new FileRefused(stat.isDirectory() ? 'is a folder, not a TOML file' : 'is not a regular file (a FIFO, socket or device): give a TOML file');
    if (stat.size > maxFileBytes) throw new FileRefused(tooLarge);
    const buffer = Buffer.alloc(maxFileBytes + 1);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > maxFileBytes) throw new FileRefused(tooLarge);
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    await handle.close();
  }
}

const tooLarge = `is larger than ${maxFileBytes / 1024 / 1024} MiB: playbooks, inventories and credentials files are small TOML files`;

async function readText(file: string, shown: string, missingHint: string): Promise<string> {
  try {
    return await readBoundedFile(file);
  } catch (error) {
    if (error instanceof FileRefused) throw new PlaybookError([{ file: shown, path: '', message: error.message }]);
    const code = (error as NodeJS.ErrnoException).code;
    const message = code === 'ENOENT' ? `no such file${missingHint}` : code === 'EISDIR' ? 'is a folder, not a TOML file' : `cannot be read (${code ?? (error as Error).message})`;
    throw new PlaybookError([{ file: shown, path: '', message }]);
  }
}

/** What the API accepts as a playbook or inventory name: no `/`, no `..`, at most 64 characters. */
export const fileNamePattern = /^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,63}$/;

/** The regular `.toml` files in `dir` (no symlinks), by name without `.toml`; none when it cannot be listed. */
function namesIn(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((entry) => entry.isFile() && entry.name.endsWith('.toml') && fileNamePattern.test(entry.name.slice(0, -'.toml'.length)))
      .map((entry) => entry.name.slice(0, -'.toml'.length))
      .sort();
  } catch {
    return [];
  }
}

/**
 * The text of `<dir>/<name>.toml`, for callers that may read only what the operator put into `dir` (the HTTP
 * API). The real path must stay inside the real `dir` (a symlink out is refused), and the file must be a regular
 * file of at most 1 MiB. A name that is missing, malformed or refused gets one answer whether or not anything
 * exists under that name elsewhere, so the answer tells nothing about files outside `dir`.
 * @throws PlaybookError
 */
export async function readNamedFile(kind: 'playbook' | 'inventory', name: string, dir: string): Promise<{ text: string; shown: string }> {
  const bare = name.endsWith('.toml') ? name.slice(0, -'.toml'.length) : name;
  const root = await realpath(dir).catch(() => path.resolve(dir));
  const valid = fileNamePattern.test(bare);
  const shown = valid ? displayName(path.join(root, `${bare}.toml`)) : displayName(root);
  const available = namesIn(root);
  const missing = () =>
    new PlaybookError([{ file: shown, path: '', message: `no ${kind} named ${quoteCapped(name)} in ${displayName(root)}${didYouMean(bare, available)}; available: ${available.join(', ') || 'none'}` }]);
  if (!valid) throw missing();
  let real: string;
  try {
    real = await realpath(path.join(root, `${bare}.toml`));
  } catch {
    throw missing();
  }
  if (path.dirname(real) !== root) throw missing();
  try {
    return { text: await readBoundedFile(real, constants.O_NOFOLLOW), shown };
  } catch (error) {
    if (error instanceof FileRefused) throw new PlaybookError([{ file: shown, path: '', message: error.message }]);
    throw missing();
  }
}

/** A value quoted for a message, cut after 80 characters: error messages never carry long input back. */
export function quoteCapped(value: string, limit = 80): string {
  return JSON.stringify(value.length > limit ? `${value.slice(0, limit)}…` : value);
}

/**
 * A playbook by name from `dir` (for the API; default folder: the shipped playbooks). See {@link readNamedFile}.
 * @throws PlaybookError
 */
export async function loadNamedPlaybook(name: string, dir: string = shippedPlaybooks): Promise<Playbook> {
  const { text, shown } = await readNamedFile('playbook', name, dir);
  return parsePlaybook(text, shown);
}

/**
 * An inventory by name from `dir` (for the API). See {@link readNamedFile}.
 * @throws PlaybookError
 */
export async function loadNamedInventory(name: string, dir: string, credentialsFile: string = defaultCredentialsFile()): Promise<Inventory> {
  const { text, shown } = await readNamedFile('inventory', name, dir);
  return attachCredentials(parseInventory(text, shown, { profilesOnly: true }), credentialsFile);
}

/** Folder of the shipped playbooks: the API's default playbooks folder. */
export const shippedPlaybooksDir = shippedPlaybooks;

/**
 * Reads, parses and validates a playbook file, or a shipped one by name (`kata`).
 * @throws PlaybookError
 */
export async function loadPlaybook(pathOrName: string): Promise<Playbook> {
  const file = resolvePlaybookPath(pathOrName);
  const isName = bareName.test(pathOrName);
  const shown = isName ? displayName(file) : pathOrName;
  const hint = isName
    ? ` — there is no shipped playbook named ${JSON.stringify(pathOrName)}${didYouMean(pathOrName, shippedPlaybookNames())}; shipped: ${shippedPlaybookNames().join(', ')}; or give the path of a .toml file`
    : '';
  return parsePlaybook(await readText(file, shown, hint), shown);
}

/**
 * Reads, parses and validates an inventory file (the CLI: the operator's own file). Its `[ssh]` may set the
 * login itself, or name credential profiles, found in `credentialsFile` (default: {@link credentialsFileFor}).
 * @throws PlaybookError
 */
export async function loadInventory(file: string, options: { credentialsFile?: string } = {}): Promise<Inventory> {
  const inventory = parseInventory(await readText(path.resolve(file), file, ''), file);
  return attachCredentials(inventory, options.credentialsFile ?? credentialsFileFor(file));
}

/**
 * Checks that a playbook can run on an inventory: Kubernetes access when steps need it, at least
 * one worker node, root rights (root login or sudo) on every worker.
 * @param files names for messages; default: each document's `source.file`
 * @throws PlaybookError
 */
export function checkPlaybookAgainstInventory(playbook: Playbook, inventory: Inventory, files?: { playbook?: string; inventory?: string }): void {
  throwIfProblems(
    crossCheckPairing(playbook, inventory, {
      playbook: files?.playbook ?? playbook.source.file,
      inventory: files?.inventory ?? inventory.source.file,
    }),
  );
}
