import { createTwoFilesPatch, FILE_HEADERS_ONLY } from 'diff';

/**
 * A unified diff (`diff -u` format, 3 lines of context) from `before` to `after`, with `---`/`+++` headers
 * naming the two labels. Empty when the texts are equal, as `diff -u` prints nothing then.
 * A missing newline at the end of either text is marked `\ No newline at end of file`.
 */
export function unifiedDiff(before: string, after: string, labelBefore: string, labelAfter: string): string {
  if (before === after) return '';
  return createTwoFilesPatch(labelBefore, labelAfter, before, after, undefined, undefined, { context: 3, headerOptions: FILE_HEADERS_ONLY });
}
