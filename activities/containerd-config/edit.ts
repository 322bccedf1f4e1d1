/**
 * Byte-precise text edits on TOML: append a block, cut the exact lines of some tables, extend an array.
 * Each function touches only the lines it names and leaves every other byte as it was.
 */
import type { TomlHeader, TomlLayout } from './scan';

/**
 * Adds `block` after the last non-blank line, separated by one blank line, and keeps the file's trailing
 * blank lines after it (so a file ending in a run of blank lines still ends that way).
 */
export function appendBlock(text: string, block: string): string {
  let contentEnd = text.length;
  while (contentEnd > 0 && /\s/.test(text[contentEnd - 1])) contentEnd--;
  if (contentEnd === 0) return text + block;
  const newline = text.indexOf('\n', contentEnd);
  if (newline === -1) return `${text}\n\n${block}`;
  return `${text.slice(0, newline + 1)}\n${block}${text.slice(newline + 1)}`;
}

/**
 * Inserts `block` after a blank-line-separated group of lines ending at `after` (so the new tables sit next to
 * their siblings), as `blank line + block` in front of the blank line that follows the group. Without such a
 * place (no `after`, no blank line after it, or only blank lines to the end) the block is appended.
 */
export function insertBlock(text: string, after: number | undefined, block: string): string {
  const rest = after === undefined ? '' : text.slice(after);
  if (after === undefined || rest.trim() === '' || !/^[ \t]*\r?\n/.test(rest)) return appendBlock(text, block);
  return `${text.slice(0, after)}\n${block}${rest}`;
}

/** A half-open span of whole lines: `start` is a line start, `end` is just after a newline (or the end of text). */
export interface LineSpan {
  start: number;
  end: number;
}

/**
 * The lines of the tables whose header paths start with `prefix`: each header line through its last key line.
 * Comment and blank lines after the last key belong to whatever follows. With `withLeadingComments`, a comment
 * paragraph standing directly above a header (after a blank line or the file start) goes with it.
 * Spans separated only by blank lines are joined.
 */
export function tableSpans(text: string, layout: TomlLayout, prefix: readonly string[], withLeadingComments: boolean): LineSpan[] {
  const spans = layout.headers
    .filter((header) => startsWith(header.path, prefix))
    .map((header) => {
      const keys = layout.keyValues.filter((kv) => kv.lineStart > header.lineStart && samePath(kv.table, header.path));
      const end = Math.max(header.lineEnd, ...keys.map((kv) => kv.lineEnd));
      return { start: withLeadingComments ? commentParagraphStart(text, layout, header) : header.lineStart, end };
    })
    .sort((a, b) => a.start - b.start);
  const joined: LineSpan[] = [];
  for (const span of spans) {
    const last = joined[joined.length - 1];
    if (last && text.slice(last.end, span.start).trim() === '') last.end = Math.max(last.end, span.end);
    else joined.push({ ...span });
  }
  return joined;
}

/**
 * Removes spans (and `replacement` in place of the first one, if given). When a removed span had a blank line
 * before it and a blank line (or only blank lines) after it, the blank line before goes too, so that removing an
 * appended block gives back the bytes it was appended to.
 */
export function cutSpans(text: string, spans: readonly LineSpan[], replacement?: string): string {
  let out = text;
  for (let index = spans.length - 1; index >= 0; index--) {
    let { start } = spans[index];
    const { end } = spans[index];
    if (index === 0 && replacement !== undefined) {
      out = out.slice(0, start) + replacement + out.slice(end);
      continue;
    }
    const previousLineStart = lineBefore(out, start);
    const previousBlank = start > 0 && out.slice(previousLineStart, start).trim() === '';
    const nextLineEnd = out.indexOf('\n', end);
    const nextBlank = out.slice(end, nextLineEnd === -1 ? out.length : nextLineEnd).trim() === '';
    if (previousBlank && nextBlank) start = previousLineStart;
    out = out.slice(0, start) + out.slice(end);
  }
  return out;
}

/**
 * Adds `item` (already rendered, e.g. `"/etc/containerd/conf.d/x.toml"`) as the last element of the array whose
 * text is `text.slice(valueStart, valueEnd)`, following its layout: one line stays one line; a multi-line array
 * gets a new line with the indentation of its last element.
 */
export function appendToArray(text: string, valueStart: number, valueEnd: number, item: string): string {
  const lastElementEnd = lastArrayElementEnd(text, valueStart, valueEnd);
  if (lastElementEnd === undefined) return `${text.slice(0, valueStart)}[${item}]${text.slice(valueEnd)}`;
  const multiLine = text.slice(valueStart, valueEnd).includes('\n');
  if (!multiLine) return `${text.slice(0, lastElementEnd)}, ${item}${text.slice(lastElementEnd)}`;
  const lineStart = text.lastIndexOf('\n', lastElementEnd - 1) + 1;
  const indent = /^[ \t]*/.exec(text.slice(lineStart))?.[0] ?? '';
  return `${text.slice(0, lastElementEnd)},\n${indent}${item}${text.slice(lastElementEnd)}`;
}

/** End offset of the last string element of an array of strings, or undefined when it is empty. */
function lastArrayElementEnd(text: string, valueStart: number, valueEnd: number): number | undefined {
  let last: number | undefined;
  let i = valueStart + 1;
  while (i < valueEnd - 1) {
    const c = text[i];
    if (c === '#') i = text.indexOf('\n', i);
    else if (c === '"' || c === "'") {
      i++;
      while (text[i] !== c) i += c === '"' && text[i] === '\\' ? 2 : 1;
      last = ++i;
    } else i++;
  }
  return last;
}

/** Inserts a whole line after the line that ends at `lineEnd`. */
export function insertLineAfter(text: string, lineEnd: number, line: string): string {
  const before = text.slice(0, lineEnd);
  return `${before}${before.endsWith('\n') || before === '' ? '' : '\n'}${line}\n${text.slice(lineEnd)}`;
}

function commentParagraphStart(text: string, layout: TomlLayout, header: TomlHeader): number {
  const insideStatement = (offset: number) => layout.keyValues.some((kv) => kv.lineStart <= offset && offset < kv.lineEnd);
  let start = header.lineStart;
  for (;;) {
    if (start === 0) return start;
    const previousStart = lineBefore(text, start);
    const line = text.slice(previousStart, start).trim();
    if (line.startsWith('#') && !insideStatement(previousStart)) start = previousStart;
    else return line === '' ? start : header.lineStart;
  }
}

/** Start of the line before the line that starts at `lineStart` (> 0). */
function lineBefore(text: string, lineStart: number): number {
  return lineStart >= 2 ? text.lastIndexOf('\n', lineStart - 2) + 1 : 0;
}

export function startsWith(path: readonly string[], prefix: readonly string[]): boolean {
  return prefix.length <= path.length && prefix.every((key, index) => path[index] === key);
}

export function samePath(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && startsWith(a, b);
}
