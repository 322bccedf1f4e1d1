/**
 * Reads TOML text and, when it has a syntax error, still finds the schema problems of the rest:
 * the offending `key = value` line is blanked and the text parsed again (a bounded number of
 * times), so one run reports the syntax error *and* e.g. a misspelt step kind elsewhere.
 *
 * Recovery is deliberately cautious. It stops (keeping only the errors found so far) when the
 * offending line is not a plain `key = value` line (a table header, or the inside of a multi-line
 * array), or when the next error follows right after a blanked line — then the blank probably cut
 * a value in half, and what the parser says next would be noise.
 */
import TOML from '@iarna/toml';
import type { Problem } from './errors';
import { formatPath } from './zod-issues';

/** Most lines blanked in one file before giving up on recovery. */
const maxRecoveries = 10;

const keyPart = String.raw`(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')`;
const keyLine = new RegExp(String.raw`^\s*(${keyPart}(?:\s*\.\s*${keyPart})*)\s*=`);
const arrayTableHeader = new RegExp(String.raw`^\s*\[\[\s*(${keyPart}(?:\s*\.\s*${keyPart})*)\s*\]\]`);
const tableHeader = new RegExp(String.raw`^\s*\[\s*(${keyPart}(?:\s*\.\s*${keyPart})*)\s*\]`);

function keySegments(dotted: string): string[] {
  return [...dotted.matchAll(new RegExp(keyPart, 'g'))].map(([part]) =>
    part.startsWith('"') ? (JSON.parse(part) as string) : part.startsWith("'") ? part.slice(1, -1) : part,
  );
}

/** The document path (as {@link formatPath} writes it) of the key defined on line `index`. */
function pathOfKeyLine(lines: readonly string[], index: number): string | undefined {
  const key = keyLine.exec(lines[index]);
  if (!key) return undefined;
  const arrayCounts = new Map<string, number>();
  let table: PropertyKey[] = [];
  const resolve = (segments: string[]) => {
    const resolved: PropertyKey[] = [];
    for (const segment of segments) {
      resolved.push(segment);
      const count = arrayCounts.get(formatPath(resolved));
      if (count !== undefined) resolved.push(count - 1);
    }
    return resolved;
  };
  for (const line of lines.slice(0, index)) {
    const arrayHeader = arrayTableHeader.exec(line);
    const header = arrayHeader ?? tableHeader.exec(line);
    if (!header) continue;
    const segments = keySegments(header[1]);
    if (arrayHeader) {
      const parent = resolve(segments.slice(0, -1));
      const name = formatPath([...parent, segments[segments.length - 1]]);
      arrayCounts.set(name, (arrayCounts.get(name) ?? 0) + 1);
    }
    table = resolve(segments);
  }
  return formatPath([...table, ...keySegments(key[1])]);
}

/** The first line of a parser message, cut after 120 characters (parser messages can quote the text). */
function firstSentence(message: string): string {
  const line = message.split('\n')[0];
  return line.length > 120 ? `${line.slice(0, 120)}…` : line;
}

interface TomlSyntaxError {
  message: string;
  line: number;
  col: number;
}

function asSyntaxError(error: unknown): TomlSyntaxError | undefined {
  const candidate = error as { fromTOML?: boolean; message?: string; line?: number; col?: number };
  if (!candidate?.fromTOML || typeof candidate.line !== 'number') return undefined;
  // @iarna/toml counts lines and columns from 0 and appends " at row R, col C, pos P:" plus a
  // source excerpt (1-based) to the message; keep only the sentence.
  const sentence = (candidate.message ?? '').split('\n')[0].replace(/ at row \d+, col \d+, pos \d+:?$/, '');
  return { message: firstSentence(sentence), line: candidate.line, col: candidate.col ?? 0 };
}

const bareWordValue = new RegExp(String.raw`^\s*(${keyPart}(?:\s*\.\s*${keyPart})*)\s*=\s*([A-Za-z/~][^\s#,\]}]*)\s*(#.*)?$`);

/**
 * A parser message, plus the fix when the line holds an unquoted word or path (`mode = inplace`,
 * `config_path = /etc/x`). The hint names the key only, never the value or the line: a message may reach
 * someone who must not read the file (the HTTP API), and such a line can be a secret (`PASSWORD=...`).
 */
function withHint(message: string, line: string | undefined): string {
  const bare = bareWordValue.exec(line ?? '');
  if (bare && !['true', 'false', 'inf', 'nan'].includes(bare[2])) {
    const key = bare[1].trim();
    return `${message} — text needs quotes: put the value of ${key.length > 80 ? `${key.slice(0, 80)}…` : key} in double quotes ("...")`;
  }
  return message;
}

/** The outcome of {@link readToml}. */
export interface TomlReading {
  /** The parsed document, possibly with broken lines left out; undefined when nothing usable was parsed. */
  data: Record<string, unknown> | undefined;
  /** TOML syntax errors, `line`/`col` 1-based. */
  problems: Problem[];
  /** Paths (e.g. `steps[2].kind`) of keys left out: schema problems there are consequences, not news. */
  leftOut: Set<string>;
}

/** Parses `text`, recovering from syntax errors as described in the module comment. */
export function readToml(text: string, file: string): TomlReading {
  const lines = text.split('\n');
  const problems: Problem[] = [];
  const leftOut = new Set<string>();
  const blanked = new Set<number>();
  for (let attempt = 0; attempt <= maxRecoveries; attempt++) {
    let syntax: TomlSyntaxError | undefined;
    try {
      return { data: TOML.parse(lines.join('\n')) as Record<string, unknown>, problems, leftOut };
    } catch (error) {
      syntax = asSyntaxError(error);
      if (!syntax) {
        problems.push({ file, path: '', message: `cannot be read as TOML: ${firstSentence((error as Error).message)}` });
        return { data: undefined, problems, leftOut };
      }
    }
    const { line } = syntax;
    const cascade = blanked.has(line) || blanked.has(line - 1);
    if (!cascade) problems.push({ file, path: '', line: line + 1, col: syntax.col + 1, message: withHint(syntax.message, lines[line]) });
    const keyPath = line < lines.length && !cascade ? pathOfKeyLine(lines, line) : undefined;
    if (keyPath === undefined) return { data: undefined, problems, leftOut };
    leftOut.add(keyPath);
    blanked.add(line);
    lines[line] = '';
  }
  return { data: undefined, problems, leftOut };
}
