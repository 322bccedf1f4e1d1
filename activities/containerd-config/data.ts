import { parse } from '@iarna/toml';
import { ContainerdConfigError, ContainerdConfigInvalid, ContainerdPatchVerificationFailed } from './errors';
import type { TomlData } from './render';

/**
 * Parses TOML text or throws `ContainerdConfigInvalid` as `FILE:LINE:COL: message`. The parser's own error is not
 * kept as `cause`: its message quotes the offending lines of the file, and failures end up in Temporal history.
 */
export function parseToml(text: string, file: string): TomlData {
  try {
    return parse(text) as unknown as TomlData;
  } catch (error) {
    throw new ContainerdConfigError(ContainerdConfigInvalid, `${file}:${parseErrorPlace(error)}: ${parseErrorReason(error)}; fix the file before patching it`);
  }
}

/**
 * Re-parses edited text and checks that it holds exactly `expected`; otherwise throws
 * `ContainerdPatchVerificationFailed`, so that a wrong edit is never written to a node.
 */
export function verifyEdit(candidate: string, expected: TomlData, file: string, intent: string): void {
  let actual: TomlData;
  try {
    actual = parse(candidate) as unknown as TomlData;
  } catch (error) {
    throw new ContainerdConfigError(
      ContainerdPatchVerificationFailed,
      `${file}: the edited config (${intent}) does not parse at line ${parseErrorPlace(error)}: ${parseErrorReason(error)}; nothing was written, the file keeps its bytes`,
    );
  }
  const differences = dataDifferences(expected, actual);
  if (differences.length > 0) {
    throw new ContainerdConfigError(
      ContainerdPatchVerificationFailed,
      `${file}: the edited config (${intent}) differs from the intended data at ${differences.slice(0, 5).join(', ')}; nothing was written, the file keeps its bytes`,
    );
  }
}

function parseErrorPlace(error: unknown): string {
  const { line, col } = error as { line?: number; col?: number };
  return typeof line === 'number' && typeof col === 'number' ? `${line + 1}:${col + 1}` : '1:1';
}

/**
 * The parser's reason without any text of the file: @iarna/toml's first line is a fixed phrase such as
 * `Invalid character, expected "="`; its later lines quote the file, and are dropped. A first line that quotes
 * the file (an unknown escape, a duplicate key) is replaced by a fixed one.
 */
function parseErrorReason(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const first = message.split('\n')[0].replace(/ at row \d+, col \d+, pos \d+:$/, '');
  return /^[A-Za-z0-9 ,.:'()-]*("[^"]{1,3}"[A-Za-z0-9 ,.:'()-]*)?$/.test(first) && first.length <= 120 ? first : 'not valid TOML here';
}

export function isTable(value: unknown): value is TomlData {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

export function getPath(data: TomlData, path: readonly string[]): unknown {
  let node: unknown = data;
  for (const key of path) {
    if (!isTable(node) || !Object.prototype.hasOwnProperty.call(node, key)) return undefined;
    node = node[key];
  }
  return node;
}

/** Sets `value` at `path`, creating tables on the way (as a `[a.b.c]` header does). */
export function setPath(data: TomlData, path: readonly string[], value: TomlData): void {
  let node = data;
  for (const key of path.slice(0, -1)) {
    if (!isTable(node[key])) node[key] = {};
    node = node[key] as TomlData;
  }
  node[path[path.length - 1]] = value;
}

export function deletePath(data: TomlData, path: readonly string[]): void {
  const parent = getPath(data, path.slice(0, -1));
  if (isTable(parent)) delete parent[path[path.length - 1]];
}

/** A deep copy; dates are kept by reference (they are never edited). */
export function cloneData<T>(value: T): T {
  if (Array.isArray(value)) return value.map(cloneData) as T;
  if (isTable(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, cloneData(v)])) as T;
  return value;
}

/** Dotted paths where two parsed TOML documents differ; empty when they are equal. */
export function dataDifferences(expected: unknown, actual: unknown, path = ''): string[] {
  if (isTable(expected) && isTable(actual)) {
    const keys = [...new Set([...Object.keys(expected), ...Object.keys(actual)])];
    return keys.flatMap((key) => dataDifferences(expected[key], actual[key], path ? `${path}.${key}` : key));
  }
  if (Array.isArray(expected) && Array.isArray(actual) && expected.length === actual.length) {
    return expected.flatMap((item, index) => dataDifferences(item, actual[index], `${path}[${index}]`));
  }
  if (expected instanceof Date && actual instanceof Date) {
    return String(expected) === String(actual) && expected.getTime() === actual.getTime() ? [] : [path];
  }
  return Object.is(expected, actual) ? [] : [path || '(root)'];
}

export function dataEqual(a: unknown, b: unknown): boolean {
  return dataDifferences(a, b).length === 0;
}
