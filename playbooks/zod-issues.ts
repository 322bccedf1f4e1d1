/**
 * Turns zod issues into problems a person can act on: `steps[3].kind: expected one of … , got
 * "pakage-install" (did you mean "package-install"?)`, `rollout.canry: unknown key (did you mean
 * "canary"?)`, `steps[1].runtimes: required`.
 */
import type { z } from 'zod';
import { closestMatch, didYouMean, type Problem } from './errors';

type Key = PropertyKey;

/** `steps[3].runtimes[0].name`; keys that are not bare TOML keys are quoted: `labels."a.io/b"`. */
export function formatPath(path: readonly Key[]): string {
  let text = '';
  for (const key of path) {
    if (typeof key === 'number') text += `[${key}]`;
    else {
      const name = String(key);
      const part = /^[A-Za-z0-9_-]{1,80}$/.test(name) ? name : JSON.stringify(capped(name));
      text += text === '' ? part : `.${part}`;
    }
  }
  return text;
}

function valueAt(data: unknown, path: readonly Key[]): unknown {
  let current = data;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<Key, unknown>)[key];
  }
  return current;
}

/** Long text cut after 80 characters: a message never carries a long value back. */
function capped(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

/** How a value looks in a message: strings quoted (at most 80 characters), tables and arrays by their kind. */
function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(capped(value));
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return 'a date';
  if (value !== null && typeof value === 'object') return 'a table';
  return String(value);
}

const expectedNames: Record<string, string> = {
  object: 'a table',
  array: 'an array',
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  record: 'a table',
};

interface SchemaDef {
  type: string;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  innerType?: z.ZodType;
  in?: z.ZodType;
  options?: z.ZodType[];
  valueType?: z.ZodType;
}

const defOf = (schema: z.ZodType) => (schema as unknown as { _zod: { def: SchemaDef } })._zod.def;

/** The object schema that applies at `path` of `data`, following arrays, records, wrappers and unions. */
function objectShapeAt(schema: z.ZodType, path: readonly Key[], data: unknown): Record<string, z.ZodType> | undefined {
  let current: z.ZodType | undefined = schema;
  let index = 0;
  while (current) {
    const def = defOf(current);
    if (def.innerType) current = def.innerType;
    else if (def.type === 'pipe') current = def.in;
    else if (def.type === 'union') {
      const here = valueAt(data, path.slice(0, index));
      current = def.options?.find((option) => option.safeParse(here).success || matchesDiscriminator(option, here)) ?? def.options?.[0];
    } else if (index === path.length) return def.type === 'object' ? def.shape : undefined;
    else if (def.type === 'object') current = def.shape?.[String(path[index++])];
    else if (def.type === 'array' || def.type === 'record') {
      current = def.type === 'array' ? def.element : def.valueType;
      index++;
    } else return undefined;
  }
  return undefined;
}

function matchesDiscriminator(option: z.ZodType, value: unknown): boolean {
  const shape = defOf(option).shape;
  if (!shape?.kind || value === null || typeof value !== 'object') return false;
  return shape.kind.safeParse((value as { kind?: unknown }).kind).success;
}

interface Issue {
  code: string;
  path: Key[];
  message: string;
  expected?: string;
  keys?: string[];
  values?: unknown[];
  options?: unknown[];
  discriminator?: string;
  note?: string;
  issues?: Issue[];
  errors?: Issue[][];
  origin?: string;
  minimum?: number | bigint;
  maximum?: number | bigint;
}

/** `expected one of a | b, got "x" (did you mean "a"?)`; enum values are quoted as TOML strings. */
function oneOf(choices: readonly unknown[], got: unknown, quote: boolean): string {
  const names = choices.map(String);
  const list = names.map((name) => (quote ? JSON.stringify(name) : name)).join(' | ');
  const suggestion = typeof got === 'string' ? didYouMean(got, names) : '';
  return `expected one of ${list}, got ${describeValue(got)}${suggestion}`;
}

function sizeMessage(issue: Issue, value: unknown): string {
  const isSmall = issue.code === 'too_small';
  const bound = isSmall ? issue.minimum : issue.maximum;
  if (Array.isArray(value)) return isSmall && Number(bound) === 1 ? 'must not be empty' : `must have ${isSmall ? 'at least' : 'at most'} ${bound} entries`;
  if (typeof value === 'string') return `must be ${isSmall ? 'at least' : 'at most'} ${bound} characters long`;
  return `must be ${isSmall ? 'at least' : 'at most'} ${bound}, got ${describeValue(value)}`;
}

/**
 * Why a value fits none of a union's options: the types it could have had, or else the most
 * specific reason one option gave (`"/bin/sh -c" is refused: …`).
 */
function unionMessage(issue: Issue, value: unknown): string {
  const reasons = (issue.errors ?? []).flat().filter((inner) => inner.path.length === 0);
  const specific = reasons.find((inner) => inner.code !== 'invalid_type' && inner.code !== 'invalid_value');
  if (specific) return specific.message;
  const expected = [...new Set(reasons.filter((inner) => inner.code === 'invalid_type').map((inner) => expectedNames[inner.expected ?? ''] ?? inner.expected))];
  return expected.length > 0 ? `expected ${expected.join(' or ')}, got ${describeValue(value)}` : `${describeValue(value)} is not allowed here`;
}

/**
 * Problems for every zod issue, in document order. `schema` and `data` let unknown-key messages
 * suggest the key that was meant.
 */
export function problemsFromZod(file: string, issues: readonly z.core.$ZodIssue[], schema: z.ZodType, data: unknown): Problem[] {
  const problems: Problem[] = [];
  // Keys that a misspelt key probably meant: their "required" would only repeat the typo.
  const misspelt = new Set<string>();
  const add = (path: readonly Key[], message: string) => problems.push({ file, path: formatPath(path), message });
  for (const issue of issues as unknown as Issue[]) {
    const value = valueAt(data, issue.path);
    switch (issue.code) {
      case 'unrecognized_keys': {
        const known = Object.keys(objectShapeAt(schema, issue.path, data) ?? {});
        for (const key of issue.keys ?? []) {
          const meant = closestMatch(key, known);
          if (meant !== undefined) misspelt.add(formatPath([...issue.path, meant]));
          const hint = meant !== undefined ? ` (did you mean ${JSON.stringify(meant)}?)` : known.length > 0 ? ` (known keys: ${known.join(', ')})` : '';
          add([...issue.path, key], `unknown key${hint}`);
        }
        break;
      }
      case 'invalid_union':
        if (issue.discriminator !== undefined) {
          add(issue.path, value === undefined ? `required: one of ${(issue.options ?? []).join(' | ')}` : oneOf(issue.options ?? [], value, false));
        } else {
          add(issue.path, value === undefined ? 'required' : unionMessage(issue, value));
        }
        break;
      case 'invalid_type':
        add(issue.path, value === undefined ? 'required' : `expected ${expectedNames[issue.expected ?? ''] ?? issue.expected}, got ${describeValue(value)}`);
        break;
      case 'invalid_value':
        add(issue.path, oneOf(issue.values ?? [], value, true));
        break;
      case 'invalid_key':
        add(issue.path, `key ${(issue.issues ?? []).map((inner) => inner.message).join('; ')}`);
        break;
      case 'too_small':
      case 'too_big':
        add(issue.path, sizeMessage(issue, value));
        break;
      default:
        add(issue.path, issue.message);
    }
  }
  return problems.filter((problem) => !(misspelt.has(problem.path) && problem.message.startsWith('required')));
}
