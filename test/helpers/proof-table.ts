// A README section's proof table: every sentence names the tests (through the public CLI or API) that would fail if
// it were false. Used by test/rollout-readme.test.ts and test/cluster-readme.test.ts.
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

/** `file: title` for every proving test that `proofs` names and its file (under test/) does not define. */
export function missingProofTests(proofs: Proof[]): string[] {
  return proofs.flatMap((proof) =>
    Object.entries(proof.tests).flatMap(([file, titles]) => {
      const source = readFileSync(join(__dirname, '..', file), 'utf8');
      return titles.filter((title) => !source.includes(`it('${title.replace(/'/g, "\\'")}'`) && !source.includes(`it("${title}"`)).map((title) => `${file}: ${title}`);
    }),
  );
}
