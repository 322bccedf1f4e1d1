/**
 * A layout scanner for TOML text that a real parser has already accepted: it finds where each table header and
 * each key/value statement sits (byte offsets, lines, indentation, quoting) so that edits can touch exact lines
 * and leave every other byte alone. It understands strings (all four kinds), multi-line arrays and comments, so a
 * `[` inside a string or an array is never taken for a header.
 */

export interface TomlHeader {
  kind: 'table' | 'array';
  /** The decoded key path, e.g. `['plugins', 'io.containerd.grpc.v1.cri', 'containerd']`. */
  path: string[];
  /** Offset of the start of the header's line. */
  lineStart: number;
  /** Offset just after the header line's newline (or the end of the text). */
  lineEnd: number;
  /** Whitespace before `[`. */
  indent: string;
  /** The quote character of the first quoted key segment, if any. */
  quote: '"' | "'" | undefined;
  /** 1-based line number. */
  line: number;
}

export interface TomlKeyValue {
  /** Path of the table the statement belongs to (the last header before it, `[]` at the top). */
  table: string[];
  /** The (possibly dotted) key, decoded. */
  key: string[];
  lineStart: number;
  lineEnd: number;
  indent: string;
  /** Offsets of the value's text, e.g. the `[...]` of an array. */
  valueStart: number;
  valueEnd: number;
  line: number;
}

export interface TomlLayout {
  headers: TomlHeader[];
  keyValues: TomlKeyValue[];
  /** Line start offsets; `lines[i]` is where 1-based line i+1 starts. */
  lineStarts: number[];
}

export function scanToml(text: string): TomlLayout {
  const scanner = new Scanner(text);
  return scanner.scan();
}

/** 1-based line number of an offset. */
export function lineOf(lineStarts: readonly number[], offset: number): number {
  let lo = 0;
  let hi = lineStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (lineStarts[mid] <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo + 1;
}

class Scanner {
  private i = 0;
  private readonly headers: TomlHeader[] = [];
  private readonly keyValues: TomlKeyValue[] = [];
  private table: string[] = [];
  private readonly lineStarts: number[] = [0];

  constructor(private readonly text: string) {
    for (let k = 0; k < text.length; k++) if (text[k] === '\n') this.lineStarts.push(k + 1);
  }

  scan(): TomlLayout {
    const { text } = this;
    while (this.i < text.length) {
      this.skipBlanks();
      const c = text[this.i];
      if (c === undefined) break;
      if (c === '\n' || c === '\r') this.i++;
      else if (c === '#') this.skipToLineEnd();
      else if (c === '[') this.header();
      else this.keyValue();
    }
    return { headers: this.headers, keyValues: this.keyValues, lineStarts: this.lineStarts };
  }

  private header(): void {
    const lineStart = this.lineStartOf(this.i);
    const indent = this.text.slice(lineStart, this.i);
    const kind = this.text[this.i + 1] === '[' ? 'array' : 'table';
    this.i += kind === 'array' ? 2 : 1;
    const { path, quote } = this.key();
    this.skipBlanks();
    this.i += kind === 'array' ? 2 : 1;
    const lineEnd = this.finishLine();
    this.table = path;
    this.headers.push({ kind, path, lineStart, lineEnd, indent, quote, line: lineOf(this.lineStarts, lineStart) });
  }

  private keyValue(): void {
    const lineStart = this.lineStartOf(this.i);
    const indent = this.text.slice(lineStart, this.i);
    const { path } = this.key();
    this.skipBlanks();
    this.i++; // '='
    this.skipBlanks();
    const valueStart = this.i;
    this.value();
    const valueEnd = this.i;
    const lineEnd = this.finishLine();
    this.keyValues.push({
      table: this.table,
      key: path,
      lineStart,
      lineEnd,
      indent,
      valueStart,
      valueEnd,
      line: lineOf(this.lineStarts, lineStart),
    });
  }

  /** A dotted key: bare, "basic" or 'literal' segments separated by dots. */
  private key(): { path: string[]; quote: '"' | "'" | undefined } {
    const path: string[] = [];
    let quote: '"' | "'" | undefined;
    for (;;) {
      this.skipBlanks();
      const c = this.text[this.i];
      if (c === '"') {
        quote ??= '"';
        path.push(this.basicString());
      } else if (c === "'") {
        quote ??= "'";
        path.push(this.literalString());
      } else {
        const start = this.i;
        while (this.i < this.text.length && /[A-Za-z0-9_-]/.test(this.text[this.i])) this.i++;
        path.push(this.text.slice(start, this.i));
      }
      this.skipBlanks();
      if (this.text[this.i] !== '.') return { path, quote };
      this.i++;
    }
  }

  /** Skips one value: strings, arrays and inline tables may span lines; comments may sit inside arrays. */
  private value(): void {
    const { text } = this;
    let depth = 0;
    let end = this.i;
    while (this.i < text.length) {
      const c = text[this.i];
      if (text.startsWith('"""', this.i)) this.multilineString('"""');
      else if (text.startsWith("'''", this.i)) this.multilineString("'''");
      else if (c === '"') this.basicString();
      else if (c === "'") this.literalString();
      else if (c === '[' || c === '{') {
        depth++;
        this.i++;
      } else if (c === ']' || c === '}') {
        depth--;
        this.i++;
      } else if (c === '#' || c === '\n' || c === '\r') {
        if (depth === 0) break;
        if (c === '#') this.skipToLineEnd();
        else this.i++;
        continue;
      } else if (c === ' ' || c === '\t') {
        this.i++;
        continue;
      } else this.i++;
      end = this.i;
    }
    this.i = end;
  }

  private basicString(): string {
    const { text } = this;
    this.i++;
    let out = '';
    while (this.i < text.length && text[this.i] !== '"') {
      if (text[this.i] === '\\') {
        const e = text[this.i + 1];
        const simple: Record<string, string> = { b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', '"': '"', '\\': '\\', e: '\x1b' };
        if (e in simple) {
          out += simple[e];
          this.i += 2;
        } else {
          const digits = e === 'u' ? 4 : 8;
          out += String.fromCodePoint(parseInt(text.slice(this.i + 2, this.i + 2 + digits), 16));
          this.i += 2 + digits;
        }
      } else out += text[this.i++];
    }
    this.i++;
    return out;
  }

  private literalString(): string {
    const end = this.text.indexOf("'", this.i + 1);
    const out = this.text.slice(this.i + 1, end);
    this.i = end + 1;
    return out;
  }

  private multilineString(delimiter: '"""' | "'''"): void {
    const { text } = this;
    this.i += 3;
    for (;;) {
      if (delimiter === '"""' && text[this.i] === '\\') this.i += 2;
      else if (text.startsWith(delimiter, this.i)) break;
      else this.i++;
    }
    this.i += 3;
    // Up to two quotes may directly precede the closing delimiter: `""""` ends with one quote in the content.
    for (let extra = 0; extra < 2 && text[this.i] === delimiter[0]; extra++) this.i++;
  }

  private skipBlanks(): void {
    while (this.text[this.i] === ' ' || this.text[this.i] === '\t') this.i++;
  }

  private skipToLineEnd(): void {
    while (this.i < this.text.length && this.text[this.i] !== '\n') this.i++;
  }

  /** After a statement: optional blanks and comment, then the newline. Returns the offset after the newline. */
  private finishLine(): number {
    this.skipToLineEnd();
    if (this.i < this.text.length) this.i++;
    return this.i;
  }

  private lineStartOf(offset: number): number {
    return this.text.lastIndexOf('\n', offset - 1) + 1;
  }
}
