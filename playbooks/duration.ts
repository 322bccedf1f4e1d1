/**
 * Durations as playbooks write them: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, or a sum such as `"1m30s"`.
 * Pure and free of imports, so the playbook schema (validation), workflows (timers, timeouts) and activities
 * (polls, deadlines) share it: playbooks/ is the lowest layer.
 */

const unitMs = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
const wholeDuration = /^(?:[0-9]+(?:ms|s|m|h))+$/;
const durationPart = /([0-9]+)(ms|s|m|h)/g;

/** What a duration string may look like, for error messages. */
export const durationFormatHint = 'a duration such as "500ms", "30s", "5m", "1h" or "1m30s"';

/** True when `text` is a duration {@link parseDuration} accepts. */
export function isDuration(text: string): boolean {
  return wholeDuration.test(text);
}

/**
 * Milliseconds in a duration string.
 * @example parseDuration('5m') === 300_000; parseDuration('1m30s') === 90_000
 * @throws Error when `text` is not {@link isDuration | a duration}.
 */
export function parseDuration(text: string): number {
  if (!isDuration(text)) {
    throw new Error(`${JSON.stringify(text)} is not ${durationFormatHint}`);
  }
  let total = 0;
  for (const [, amount, unit] of text.matchAll(durationPart)) {
    total += Number(amount) * unitMs[unit as keyof typeof unitMs];
  }
  return total;
}
