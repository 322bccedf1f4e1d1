/**
 * The journal on the node: before a step changes anything it writes its intent — what it will change,
 * where the backup is, how to take it back (an {@link Undo}), which run and attempt — to
 * `/var/lib/katafleet/journal/<run id>/<NN>-<step>.json`, written and fsynced before the change.
 * The undo of a run is derived from its journal, so it survives what workflow state does not: a
 * cancellation that lands after the side effect, a termination, a reset, a lost activity result.
 *
 * The run's journal is deleted when the run succeeds (its undos then live in the rollout's result for
 * an abort with rollback) or when its recovery has taken everything back. A journal left on the node
 * belongs to a run that ended without either: the next run recovers it before doing anything.
 */
import { posix } from 'node:path';
import { quote, sh, type Command } from '../ssh';
import { withPrelude } from '../ssh/quote';
import type { StepRequest, Undo } from '../node-types';
import { FILE_IS_DIRECTORY_EXIT, fileIsDirectoryMessage, type NodeShell, type PartResult } from './node-shell';
import { KATAFLEET_DIR } from './node-lock';
import { activityContext, transientFailure } from './step-runtime';

/** Where runs' journals live on a node. */
export const JOURNAL_DIR = `${KATAFLEET_DIR}/journal`;
/** Journals set aside by `katafleet node release` (kept for people, never replayed). */
export const RELEASED_JOURNAL_DIR = `${KATAFLEET_DIR}/journal-released`;

/** One intent, as written on the node. */
export interface JournalEntry {
  runId: string;
  /** The inventory's name of the node (absent in entries written before issue 13): recovery takes back only its own node's runs. */
  node?: string;
  rolloutId: string;
  stepId: string;
  /** The step's position in the playbook: recovery undoes the highest first. */
  index: number;
  attempt: number;
  /** When it was written (worker clock, ISO 8601). */
  at: string;
  /** What the step is about to change, for people. */
  intent: string;
  undo: Undo;
}

/** The journal directory of one run. */
export function journalDirFor(runId: string): string {
  return posix.join(JOURNAL_DIR, runId);
}

function entryPath(runId: string, index: number, stepId: string): string {
  return posix.join(journalDirFor(runId), `${String(index).padStart(2, '0')}-${stepId}.json`);
}

/**
 * Writes a step's intent and fsyncs it (file and directory) before returning; a no-op for requests of
 * workflows that do not journal (histories recorded before the journal existed). With `keepFirst`, an
 * entry an earlier attempt of this run wrote (before its change, so it knows the original) is kept.
 */
export async function writeIntent(shell: NodeShell, request: StepRequest, undo: Undo, intent: string, options: { keepFirst?: boolean } = {}): Promise<void> {
  const write = intentWrite(shell, request, undo, intent, options);
  if (write) await shell.run(write.command, { stdin: write.stdin, signal: undefined });
}

/**
 * {@link writeIntent} as a command and its stdin, for a step that sends it in front of its first change in one remote
 * script (`intent || exit; change`: the intent is written and fsynced before the change starts, as with a command of
 * its own); undefined for requests that do not journal.
 */
export function intentWrite(shell: NodeShell, request: StepRequest, undo: Undo, intent: string, options: { keepFirst?: boolean } = {}): { command: Command; stdin: string } | undefined {
  if (!request.journal) return undefined;
  const attempt = activityContext()?.info.attempt ?? 1;
  const entry: JournalEntry = {
    runId: request.runId, node: shell.name, rolloutId: request.rolloutId, stepId: request.step.id, index: request.stepIndex ?? 0, attempt, at: new Date().toISOString(), intent, undo,
  };
  const path = entryPath(request.runId, entry.index, entry.stepId);
  const temp = `${path}.${attempt}.tmp`;
  const [mkdir, tee, sync, mv, cat] = (['mkdir', 'tee', 'sync', 'mv', 'cat'] as const).map((program) => shell.tool(program));
  const write = sh`${mkdir} -p ${posix.dirname(path)} && ${tee} ${temp} >/dev/null && ${sync} ${temp} && ${mv} -f ${temp} ${path} && ${sync} ${posix.dirname(path)}`;
  return { command: options.keepFirst ? sh`if test -e ${path}; then ${cat} >/dev/null; else ${write}; fi` : write, stdin: `${JSON.stringify(entry)}\n` };
}

/** Removes one step's entry (its change was taken back by the step itself, e.g. an uncordon). */
export async function dropIntent(shell: NodeShell, request: StepRequest): Promise<void> {
  if (!request.journal) return;
  // (No journal directory: the entry was never written, e.g. its step failed before the command that carried it.)
  await shell.run(sh`${shell.tool('rm')} -f ${entryPath(request.runId, request.stepIndex ?? 0, request.step.id)} && if test -d ${journalDirFor(request.runId)}; then ${shell.tool('sync')} ${journalDirFor(request.runId)}; fi`, { signal: undefined });
}

/** Every entry of one run's journal, highest index (newest step) first. Unreadable entries are reported, not skipped. */
export async function readJournal(shell: NodeShell, runId: string): Promise<{ entries: JournalEntry[]; unreadable: string[] }> {
  const dir = journalDirFor(runId);
  const text = await shell.output(sh`for f in ${dir}/*.json; do test -f "$f" || continue; echo "@@@ $f"; ${shell.tool('cat')} "$f"; echo; done`);
  const entries: JournalEntry[] = [];
  const unreadable: string[] = [];
  for (const chunk of text.split(/^@@@ /m).filter((c) => c.trim())) {
    const newline = chunk.indexOf('\n');
    const file = chunk.slice(0, newline).trim();
    try {
      const entry = JSON.parse(chunk.slice(newline + 1)) as JournalEntry;
      if (typeof entry.stepId !== 'string' || typeof entry.undo?.kind !== 'string') throw new Error('not a journal entry');
      entries.push(entry);
    } catch {
      unreadable.push(file);
    }
  }
  entries.sort((a, b) => b.index - a.index);
  return { entries, unreadable };
}

/** Run ids with a journal on the node. */
export async function journaledRuns(shell: NodeShell): Promise<string[]> {
  return parseJournalListing(await shell.output(journalListing()));
}

/** The command that lists the runs with a journal on the node (one name per line). */
export function journalListing(): Command {
  return sh`if test -d ${JOURNAL_DIR}; then ls -1 ${JOURNAL_DIR}; fi`;
}

/** Run ids in {@link journalListing}'s output. Pure. */
export function parseJournalListing(listing: string): string[] {
  return listing.split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('.'));
}

/** Deletes one run's journal (all taken back, or the run succeeded). */
export async function clearJournal(shell: NodeShell, runId: string): Promise<void> {
  await shell.run(sh`${shell.tool('rm')} -rf ${journalDirFor(runId)} && ${shell.tool('sync')} ${KATAFLEET_DIR}`, { signal: undefined });
}

/** Where succeeded runs' undo records are kept (newest highest), for the `rollback` step kind. */
export const APPLIED_DIR = `${KATAFLEET_DIR}/applied`;

/** A succeeded run's record: what it changed and how to take it back. */
export interface AppliedRecord {
  runId: string;
  rolloutId: string;
  /** When the run finished (worker clock, ISO 8601). */
  at: string;
  /** Newest step first. */
  undos: Undo[];
}

/** The largest record {@link printText} puts into a script: far below Linux's 128 KiB limit on one argument (a script goes to `sh -c` as one). */
export const SCRIPT_TEXT_MAX = 16 * 1024;

/**
 * A command that prints `text` exactly (`printf '%s'` of it in POSIX single quotes, the quoting every script gets for
 * `sh -c`), for a small record that rides in a command whose stdin is taken (a tarball); undefined when the text is
 * larger than {@link SCRIPT_TEXT_MAX} or holds a NUL (then it needs a command of its own, with stdin).
 */
export function printText(text: string): Command | undefined {
  if (Buffer.byteLength(text, 'utf8') > SCRIPT_TEXT_MAX || text.includes('\0')) return undefined;
  return withPrelude(`printf '%s' ${quote(text)}`, sh``);
}

/**
 * A JSON record as one line of stdin ahead of other stdin: JSON.stringify escapes every newline inside strings, so
 * the line ends at the record's end, and the shell's `read` (which takes exactly one line from a pipe, byte by byte)
 * hands it back whole, leaving the rest for the next reader. Throws if the text is not one line (never, for JSON).
 */
export function oneLine(text: string): string {
  if (!text.endsWith('\n') || text.indexOf('\n') !== text.length - 1) throw new Error('a record sent ahead of other stdin must be one line ending in a newline');
  return text;
}

/**
 * Moves a succeeded run's journal into one applied record (numbered after the newest one, never by file
 * times) and deletes the journal. The `rollback` step kind takes back the newest record. With `alsoWrite`, that file
 * is written next (NodeShell.writeFileAtomic's command) in the same remote command, only once the commit is done:
 * the record is the first line of stdin ({@link oneLine}), the file's content the rest. A failed commit fails as
 * before (CommandFailed); a failed write of `alsoWrite` is returned as `writeError`, the commit standing. `last` runs
 * at the end of the same command whatever the others did (the run's lease given back: LockedShell.releaseInLastCommand).
 */
export async function commitJournal(shell: NodeShell, record: { runId: string; rolloutId: string; undos: Undo[] }, alsoWrite?: { path: string; content: string },
  last?: { command: Command; ran: (answer: PartResult | undefined) => void }): Promise<{ writeError?: string }> {
  const [mkdir, tee, sync, mv, rm] = (['mkdir', 'tee', 'sync', 'mv', 'rm'] as const).map((program) => shell.tool(program));
  const clear = sh`${rm} -rf ${journalDirFor(record.runId)} && ${sync} ${KATAFLEET_DIR}`;
  let commit = clear;
  let stdin = '';
  if (record.undos.length > 0) {
    stdin = oneLine(`${JSON.stringify({ ...record, at: new Date().toISOString() } satisfies AppliedRecord)}\n`);
    commit = sh`IFS= read -r record || exit 95
${mkdir} -p ${APPLIED_DIR} && cd ${APPLIED_DIR} || exit
if ! ls *-${record.runId}.json >/dev/null 2>&1; then
n=$(ls -1 | grep -E '^[0-9]+-' | cut -d- -f1 | sort -n | tail -n 1 | sed 's/^0*//'); n=$(( \${n:-0} + 1 ))
printf '%s\\n' "$record" | ${tee} .tmp-${record.runId} >/dev/null && ${sync} .tmp-${record.runId} && ${mv} -f .tmp-${record.runId} "$(printf '%06d' "$n")-"${record.runId}.json && ${sync} . || exit
fi
${clear}`;
  }
  const parts = [{ command: commit }, ...(alsoWrite ? [{ command: shell.writeFileCommand(alsoWrite.path), when: { ok: [0] } }] : []), ...(last ? [{ command: last.command }] : [])];
  const answers = await shell.runInOrder(parts, { stdin: stdin + (alsoWrite?.content ?? ''), signal: undefined });
  const [committed, written] = answers;
  last?.ran(answers[parts.length - 1]);
  if (committed?.exitCode !== 0) {
    throw transientFailure('CommandFailed', `Node ${shell.name}: committing run ${record.runId} (its applied record, then its journal deleted) exited with ${committed?.exitCode}: ${committed?.stdout.trim().split('\n').slice(-3).join(' | ')}`);
  }
  if (!alsoWrite || written?.exitCode === 0) return {};
  if (written?.exitCode === FILE_IS_DIRECTORY_EXIT) return { writeError: fileIsDirectoryMessage(shell.name, alsoWrite.path) };
  return { writeError: `Node ${shell.name}: writing ${alsoWrite.path} exited with ${written?.exitCode}: ${written?.stdout.trim().split('\n').slice(-3).join(' | ')}` };
}

/** The newest applied record whose undos satisfy `wanted`, with its file; undefined when there is none. */
export async function newestApplied(shell: NodeShell, wanted: (record: AppliedRecord) => boolean): Promise<{ file: string; record: AppliedRecord } | undefined> {
  const text = await shell.output(sh`if test -d ${APPLIED_DIR}; then cd ${APPLIED_DIR} && for f in $(ls -1 | grep -E '^[0-9]+-.*\.json$' | sort -rn); do echo "@@@ $f"; ${shell.tool('cat')} "$f"; echo; done; fi`);
  for (const chunk of text.split(/^@@@ /m).filter((c) => c.trim())) {
    const newline = chunk.indexOf('\n');
    try {
      const record = JSON.parse(chunk.slice(newline + 1)) as AppliedRecord;
      if (Array.isArray(record.undos) && wanted(record)) return { file: `${APPLIED_DIR}/${chunk.slice(0, newline).trim()}`, record };
    } catch {
      // an unreadable record is skipped; the rollback says which one it took
    }
  }
  return undefined;
}
