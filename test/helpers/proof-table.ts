// A README section's proof table: every sentence names the tests (through the public CLI or API) that would fail if
// it were false. Used by the test/*-readme.test.ts files.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** One README sentence and the tests that prove it. */
export interface Proof {
  /** A phrase of the README sentence (exact text, whitespace folded). */
  sentence: string;
  /** test file → the titles of its tests that prove the sentence. */
  tests: Record<string, string[]>;
}

/** `text` with every run of whitespace made one space. Pure. */
export const fold = (text: string): string => text.replace(/\s+/g, ' ').trim();

/** The sentences of `sentences` that no proof names. */
export function unprovenSentences(sentences: string[], proofs: Proof[]): string[] {
  return sentences.filter((sentence) => !proofs.some((proof) => sentence.includes(fold(proof.sentence))));
}

/** Whether `source` has `it('title', ...)` (or a template literal spelled as `title`, or `it.each([...])('title', ...)`), or `it(NAME, ...)` with `const NAME = 'title';`. */
function definesTest(source: string, title: string): boolean {
  const quoted = `'${title.replace(/'/g, "\\'")}'`;
  if (source.includes(`it(${quoted}`) || source.includes(`it("${title}"`) || source.includes(`it(\`${title}\``) || source.includes(`)(${quoted}`)) return true;
  const constant = new RegExp(`const (\\w+) = ${quoted.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')};`).exec(source);
  return constant !== null && source.includes(`it(${constant[1]},`);
}

/** `file: title` for every proving test that `proofs` names and its file (under test/) does not define. */
export function missingProofTests(proofs: Proof[]): string[] {
  return proofs.flatMap((proof) =>
    Object.entries(proof.tests).flatMap(([file, titles]) => {
      const source = readFileSync(join(__dirname, '..', file), 'utf8');
      return titles.filter((title) => !definesTest(source, title)).map((title) => `${file}: ${title}`);
    }),
  );
}

/** The text of README.md's section `heading` (a `## ` or `### ` title), up to the next heading of the same level. */
export function readmeSection(heading: string): string {
  const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
  const level = heading.slice(0, heading.indexOf(' ') + 1);
  const start = readme.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README.md has no section "${heading}"`);
  const end = readme.indexOf(`\n${level}`, start + heading.length + 2);
  return readme.slice(start + heading.length + 2, end < 0 ? undefined : end);
}

/**
 * The prose sentences of README.md's section `heading`: paragraphs and bullets split into sentences, whitespace
 * folded; code blocks and table rows left out (a table's figures are measurements, proved where they are printed).
 */
export function readmeSentences(heading: string): string[] {
  const prose = readmeSection(heading).replace(/```[\s\S]*?```/g, '').split('\n').filter((line) => !line.startsWith('|')).join('\n');
  return prose.split(/\n\s*\n|\n(?=- )/).map((paragraph) => fold(paragraph).replace(/^- /, ''))
    .flatMap((paragraph) => paragraph.split(/(?<=\.)(?<!e\.g\.)(?<!i\.e\.)\s+(?=[A-Z`*[])/)).filter(Boolean);
}
