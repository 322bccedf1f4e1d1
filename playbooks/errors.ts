/**
 * Problems found in playbook and inventory files, reported all at once.
 * Check errors by `name === 'PlaybookError'` rather than `instanceof` (STYLE.md: that breaks across
 * sandboxes and in Jest).
 */

/** One thing wrong in a file, with enough context to fix it. */
export interface Problem {
  /** The file as the user named it, e.g. `playbooks/kata.toml`. */
  file: string;
  /** Where in the document, e.g. `steps[3].kind`; empty for a TOML syntax error or a file-level problem. */
  path: string;
  /** What is wrong and, where possible, what to do. */
  message: string;
  /** 1-based line of a TOML syntax error. */
  line?: number;
  /** 1-based column of a TOML syntax error. */
  col?: number;
}

/** One line per problem: `FILE:LINE:COL: message`, `FILE: path: message` or `FILE: message`. */
export function formatProblem(problem: Problem): string {
  if (problem.line !== undefined) return `${problem.file}:${problem.line}:${problem.col ?? 1}: ${problem.message}`;
  if (problem.path) return `${problem.file}: ${problem.path}: ${problem.message}`;
  return `${problem.file}: ${problem.message}`;
}

/**
 * Every problem found in a playbook or inventory (and their pairing). The CLI prints `message`
 * and exits with status 2; nothing is started.
 */
export class PlaybookError extends Error {
  override readonly name = 'PlaybookError';
  readonly problems: readonly Problem[];

  constructor(problems: readonly Problem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.problems = problems;
  }
}

/** Throws a {@link PlaybookError} when there is at least one problem. */
export function throwIfProblems(problems: readonly Problem[]): void {
  if (problems.length > 0) throw new PlaybookError(problems);
}

/** Edit distance between two words (insertions, deletions, substitutions, adjacent swaps). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

function commonPrefixLength(a: string, b: string): number {
  let length = 0;
  while (length < a.length && length < b.length && a[length] === b[length]) length++;
  return length;
}

/** Longest word for which suggestions are computed: the edit distance costs length × length. */
const maxSuggestedWordLength = 64;

/**
 * The candidate closest to a misspelt `word`, if one is close enough to be what was meant: a few
 * edits away, or else the only candidate sharing its first five letters (`verify-pod` →
 * `verification-pod`). Words longer than 64 characters get no suggestion (no typo is that long).
 */
export function closestMatch(word: string, candidates: readonly string[]): string | undefined {
  if (word.length > maxSuggestedWordLength) return undefined;
  const lower = word.toLowerCase();
  const limit = Math.max(2, Math.floor(word.length / 3));
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const distance = editDistance(lower, candidate.toLowerCase());
    if (distance <= limit && (!best || distance < best.distance)) best = { candidate, distance };
  }
  if (best) return best.candidate;
  const sharingPrefix = candidates.filter((candidate) => commonPrefixLength(lower, candidate.toLowerCase()) >= 5);
  return sharingPrefix.length === 1 ? sharingPrefix[0] : undefined;
}

/** ` (did you mean "x"?)` or an empty string. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const match = closestMatch(word, candidates);
  return match === undefined ? '' : ` (did you mean ${JSON.stringify(match)}?)`;
}
