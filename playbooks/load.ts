/**
 * Loading playbooks and inventories: TOML text → shape (zod) → cross-references → typed data with
 * its source. Every function throws a {@link PlaybookError} listing all problems at once.
 */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import type { z } from 'zod';
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
): z.output<Schema> {
  const reading = readToml(text, file);
  const problems = [...reading.problems];
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

/** `~/x` → home directory; relative → relative to the inventory file's folder. */
function resolveLocalPath(value: string, inventoryDir: string): string {
  if (value.startsWith('~/')) return path.join(homedir(), value.slice(2));
  return path.resolve(inventoryDir, value);
}

function resolveSshPaths<T extends SshOverride>(ssh: T, inventoryDir: string): T {
  return {
    ...ssh,
    ...(ssh.identity_file === undefined ? {} : { identity_file: resolveLocalPath(ssh.identity_file, inventoryDir) }),
    ...(ssh.known_hosts === undefined ? {} : { known_hosts: resolveLocalPath(ssh.known_hosts, inventoryDir) }),
  };
}

/**
 * Parses and validates an inventory. Local paths (`identity_file`, `known_hosts`) come back
 * absolute, resolved against the folder of `file`.
 * @throws PlaybookError with every problem found
 */
export function parseInventory(text: string, file: string): Inventory {
  const document = parseDocument(text, file, Inventory, crossCheckInventory);
  const inventoryDir = path.dirname(path.resolve(file));
  return {
    ...document,
    ssh: resolveSshPaths(document.ssh, inventoryDir),
    nodes: document.nodes.map((node) => (node.ssh ? { ...node, ssh: resolveSshPaths(node.ssh, inventoryDir) } : node)),
    source: sourceOf(text, file),
  };
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

async function readText(file: string, shown: string, missingHint: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message = code === 'ENOENT' ? `no such file${missingHint}` : code === 'EISDIR' ? 'is a folder, not a TOML file' : `cannot be read (${code ?? (error as Error).message})`;
    throw new PlaybookError([{ file: shown, path: '', message }]);
  }
}

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
 * Reads, parses and validates an inventory file.
 * @throws PlaybookError
 */
export async function loadInventory(file: string): Promise<Inventory> {
  return parseInventory(await readText(path.resolve(file), file, ''), file);
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
