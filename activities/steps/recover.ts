/**
 * Recovery from the journal on the node, and quarantine.
 *
 * - {@link recoverRun}: after a failed, cancelled or timed-out step, takes back what the run's journal
 *   (plus the undos the workflow holds) says it changed, newest step first; each entry is deleted once
 *   undone. An undo that can never succeed (the config changed since katafleet wrote it, a backup is
 *   gone) is reported as refused: the node is then quarantined, never left changed and unrecorded.
 * - {@link prepareNode}: first thing of every run: refuses a quarantined node, and recovers the journal a
 *   run left behind (terminated, reset, its rollback interrupted) before anything else happens.
 * - {@link quarantine} / {@link releaseQuarantine}: `/var/lib/katafleet/quarantine.json`.
 */
import { sh, type SshPool } from '../ssh';
import type { KubernetesTarget, QuarantineMarker, RecoveryResult, Undo, UndoOutcome } from '../node-types';
import { clearJournal, journalDirFor, journaledRuns, journalListing, parseJournalListing, readJournal, RELEASED_JOURNAL_DIR, JOURNAL_DIR, type JournalEntry } from './journal';
import { KATAFLEET_DIR, type LockedShell } from './node-lock';
import type { NodeShell } from './node-shell';
import { cancellationSignal, failureType, firstLine, permanentFailure } from './step-runtime';
import { permanentUndoFailures, runUndo } from './undo';
import { NodeNeedsPrepare } from '../../workflows/step-activities';

/** The quarantine marker on a node. */
export const QUARANTINE_PATH = `${KATAFLEET_DIR}/quarantine.json`;
/** The node carries a quarantine marker: nothing is changed until `katafleet node release`. Never retried. */
export const NodeQuarantined = 'NodeQuarantined';

/** The command that lifts a quarantine, for messages. */
export function releaseCommand(node: string): string {
  return `katafleet node release ${node} --inventory FILE`;
}

/** The NodeQuarantined failure message: the reason and the exact fix. Pure. */
export function quarantineMessage(node: string, marker: QuarantineMarker): string {
  return `Node ${node} is quarantined since ${marker.since} (run ${marker.runId} of ${marker.rolloutId}): ${marker.reason}. Fix: ${marker.fix}`;
}

/** The manual fix for a refused or failed undo, ending with the release command. Pure. */
export function manualFix(node: string, undo: Undo | undefined): string {
  const release = `then run: ${releaseCommand(node)}`;
  switch (undo?.kind) {
    case 'restore-containerd-config':
      return undo.backupPath
        ? `on ${node}, compare ${undo.configPath} with katafleet's backup ${undo.backupPath} (sha256 ${undo.sha256 ?? '?'}); keep the one that is right (cp -p ${undo.backupPath} ${undo.configPath} restores the original), run systemctl restart ${undo.service} and check it is active; ${release}`
        : `on ${node}, ${undo.configPath} did not exist before katafleet wrote it: check it and delete it if nothing else needs it, run systemctl restart ${undo.service}; ${release}`;
    case 'remove-packages':
      return `on ${node}, check the packages ${undo.packages.join(', ')} (katafleet installed them) and remove them if they should not stay; ${release}`;
    case 'reinstall-packages':
      return `on ${node}, install again ${undo.packages.map((p) => `${p.name}=${p.version}`).join(', ')} if the node should keep them; ${release}`;
    case 'remove-node-labels':
      return `remove the labels ${undo.keys.join(', ')} from Node ${node} if they should not stay (kubectl label node ${node} ${undo.keys.map((k) => `${k}-`).join(' ')}); ${release}`;
    case 'restore-node-labels':
      return `put back the labels ${Object.entries(undo.labels).map(([k, v]) => `${k}=${v}`).join(', ')} on Node ${node} if it should keep them; ${release}`;
    case 'uncordon-node':
      return `uncordon Node ${node} if nothing else needs it cordoned (kubectl uncordon ${node}); ${release}`;
    case 'restore-file':
      return `on ${node}, check ${undo.path} (katafleet ${undo.backupPath === undefined ? 'created it' : `changed it; its previous bytes are in ${undo.backupPath}`}); ${release}`;
    case 'remove-package-repo':
      return `on ${node}, check the packages ${undo.packages.join(', ') || '(none)'} and the ${undo.manager ?? 'apt'} source ${undo.source ?? '(kept)'} and key ${undo.key ?? '(kept)'}${undo.rpmKey ? ` (rpm database: ${undo.rpmKey})` : ''} katafleet added; remove them if they should not stay; ${release}`;
    case 'restore-release':
      return `on ${node}, the Kata releases katafleet removed are in ${undo.aside}: move it back to /opt/kata-releases${undo.previous ? ` and point /opt/kata at ${undo.previous}` : ''} if the node should keep Kata; ${release}`;
    default:
      return `check the node (containerd config, packages, labels, cordon) against the playbook's steps; ${release}`;
  }
}

/** The node's quarantine marker, or undefined. An unreadable marker still quarantines (its text is the reason). */
export async function readQuarantine(shell: NodeShell): Promise<QuarantineMarker | undefined> {
  const text = await shell.readFile(QUARANTINE_PATH);
  return text === undefined ? undefined : parseQuarantine(shell.name, text);
}

/** The marker in a quarantine.json's text; an unreadable one is a marker whose reason is its text. Pure. */
function parseQuarantine(node: string, text: string): QuarantineMarker {
  try {
    const marker = JSON.parse(text) as QuarantineMarker;
    if (typeof marker.reason === 'string' && typeof marker.fix === 'string') return marker;
  } catch {
    // fall through
  }
  return { rolloutId: '?', runId: '?', reason: `unreadable ${QUARANTINE_PATH}: ${text.slice(0, 200)}`, fix: `check the node, then run: ${releaseCommand(node)}`, since: '?' };
}

/**
 * What a run checks before its first step, in one command: the node's quarantine marker and the runs whose
 * journals are on it.
 */
async function readRunState(shell: NodeShell): Promise<{ marker?: QuarantineMarker; journals: string[] }> {
  const parts = await shell.readAll({
    marker: shell.readFileCommand(QUARANTINE_PATH),
    journals: journalListing(),
  });
  if (parts.marker.exitCode !== 0 && parts.marker.exitCode !== 3) throw new Error(`reading ${QUARANTINE_PATH} on node ${shell.name} failed (exit ${parts.marker.exitCode})`);
  if (parts.journals.exitCode !== 0) throw new Error(`listing the journals on node ${shell.name} failed (exit ${parts.journals.exitCode})`);
  return { marker: parts.marker.exitCode === 0 ? parseQuarantine(shell.name, parts.marker.stdout) : undefined, journals: parseJournalListing(parts.journals.stdout) };
}

/**
 * The runs other than `runId` whose journals a run must take back before its first step: every one on the node,
 * except those whose entries all name another node (several node names served by one host: their own runs recover them).
 */
async function runsToRecover(shell: NodeShell, runId: string, journals: readonly string[]): Promise<{ runId: string; entries: JournalEntry[] }[]> {
  const runs: { runId: string; entries: JournalEntry[] }[] = [];
  for (const other of journals) {
    if (other === runId) continue;
    const { entries } = await readJournal(shell, other);
    if (entries.length > 0 && entries.every((entry) => entry.node !== undefined && entry.node !== shell.name)) continue;
    runs.push({ runId: other, entries });
  }
  return runs;
}

/**
 * The first step of a run found the node quarantined or a journal to recover, or could not make that check (the
 * node unreachable, a step refused, the lock busy): the run's prepareNode activity does it first, with its own retries
 * and messages. Never retried. One name for both sides: the workflow recognises it.
 */
export { NodeNeedsPrepare };

/**
 * What a run's first step throws when anything before or in its check of the node fails: NodeNeedsPrepare, so that
 * the run prepares the node with its own activity as before (which meets the same failure and reports it as it
 * always did). A cancellation stays one.
 */
export function notCheckedFailure(node: string, err: unknown): unknown {
  if (failureType(err) === NodeNeedsPrepare || cancellationSignal()?.aborted) return err;
  return permanentFailure(NodeNeedsPrepare, `Node ${node} could not be checked before the run's first step (${failureType(err) ?? 'Error'}: ${firstLine(err)}); the run checks it with its own activity`, err);
}

/**
 * The check of {@link prepareNode}, made by a run's first step under its own lock (one command when the node is
 * clean, as it almost always is) instead of an activity of its own: a quarantined node or a journal to recover
 * fails it with {@link NodeNeedsPrepare}, before the step changes anything, and the run then prepares the node as
 * before (activity `prepareNode`) and runs the step again.
 */
export async function checkNodeBeforeFirstStep(shell: NodeShell, request: { runId: string }): Promise<void> {
  const { marker, journals } = await readRunState(shell);
  if (marker) throw permanentFailure(NodeNeedsPrepare, `Node ${shell.name} carries a quarantine marker; the run checks it before its first step`);
  const runs = await runsToRecover(shell, request.runId, journals);
  if (runs.length > 0) throw permanentFailure(NodeNeedsPrepare, `Node ${shell.name} has the journal of run ${runs.map((run) => run.runId).join(', ')}; the run recovers it before its first step`);
}

/** Writes the quarantine marker (fsynced); an existing marker is kept (the first reason stays). */
export async function quarantine(shell: NodeShell, marker: QuarantineMarker): Promise<QuarantineMarker> {
  const existing = await readQuarantine(shell);
  if (existing) return existing;
  const [mkdir, tee, sync, mv] = (['mkdir', 'tee', 'sync', 'mv'] as const).map((program) => shell.tool(program));
  await shell.run(sh`${mkdir} -p ${KATAFLEET_DIR} && ${tee} ${QUARANTINE_PATH}.tmp >/dev/null && ${sync} ${QUARANTINE_PATH}.tmp && ${mv} -f ${QUARANTINE_PATH}.tmp ${QUARANTINE_PATH} && ${sync} ${KATAFLEET_DIR}`,
    { stdin: `${JSON.stringify(marker, null, 2)}\n`, signal: undefined });
  return marker;
}

/**
 * Lifts a quarantine: removes the marker and sets aside every journal left on the node (the operator
 * fixed the node by hand; replaying an old journal over that fix would undo it). Returns what it did.
 */
export async function releaseQuarantine(shell: NodeShell): Promise<{ marker?: QuarantineMarker; journals: string[] }> {
  const marker = await readQuarantine(shell);
  const journals = await journaledRuns(shell);
  const stamp = new Date().toISOString().replace(/[^0-9]/g, '').slice(0, 14);
  if (journals.length > 0) {
    await shell.run(sh`${shell.tool('mkdir')} -p ${RELEASED_JOURNAL_DIR}/${stamp} && ${shell.tool('mv')} ${journals.map((run) => `${JOURNAL_DIR}/${run}`)} ${RELEASED_JOURNAL_DIR}/${stamp}/`, { signal: undefined });
  }
  await shell.run(sh`${shell.tool('rm')} -f ${QUARANTINE_PATH} && ${shell.tool('sync')} ${KATAFLEET_DIR}`, { signal: undefined });
  return { marker, journals };
}

/**
 * Runs the undos of run `runId`: its journal's entries merged with `undos` (what the workflow holds, for
 * steps whose entry is missing), ordered by `stepOrder`, newest step first. Each journal entry is
 * deleted once its undo succeeded, and the journal when all did. Transient failures throw (the
 * workflow retries); a permanent refusal is returned as `refused`, with the manual fix.
 */
export async function recoverRun(
  shell: LockedShell,
  pool: SshPool,
  kubernetes: KubernetesTarget | undefined,
  request: { runId: string; stepOrder: string[]; undos: Undo[] },
): Promise<RecoveryResult> {
  const { entries, unreadable } = await readJournal(shell, request.runId);
  if (unreadable.length > 0) {
    return { outcomes: [], refused: { stepId: '?', reason: `unreadable journal entries ${unreadable.join(', ')}`, fix: manualFix(shell.name, undefined) } };
  }
  const byStep = new Map<string, { undo: Undo; file?: string }>();
  for (const undo of request.undos) byStep.set(undo.stepId, { undo });
  for (const entry of entries) byStep.set(entry.stepId, { undo: entry.undo, file: `${journalDirFor(request.runId)}/${String(entry.index).padStart(2, '0')}-${entry.stepId}.json` });
  const position = (stepId: string) => {
    const index = request.stepOrder.indexOf(stepId);
    return index >= 0 ? index : (entries.find((e) => e.stepId === stepId)?.index ?? -1);
  };
  const ordered = [...byStep.entries()].sort(([a], [b]) => position(b) - position(a));

  const outcomes: UndoOutcome[] = [];
  for (const [stepId, { undo, file }] of ordered) {
    try {
      outcomes.push(await runUndo(shell, pool, kubernetes, undo));
      if (file) await shell.run(sh`${shell.tool('rm')} -f ${file}`, { signal: undefined });
    } catch (err) {
      const type = failureType(err);
      if (type && permanentUndoFailures.includes(type)) {
        outcomes.push({ stepId, kind: undo.kind, ok: false, summary: firstLine(err) });
        return { outcomes, refused: { stepId, reason: firstLine(err), fix: manualFix(shell.name, undo) } };
      }
      throw err;
    }
  }
  await clearJournal(shell, request.runId);
  return { outcomes };
}

/**
 * The first thing every run does on its node: a quarantined node is refused (NodeQuarantined, nothing
 * changed); a journal some other run left behind (it was terminated, reset, or its recovery never
 * finished) is recovered first. If that recovery is refused, the node is quarantined and refused.
 * Returns one line per recovered run for the run's details.
 */
export async function prepareNode(shell: LockedShell, pool: SshPool, kubernetes: KubernetesTarget | undefined, request: { runId: string; rolloutId: string }): Promise<string[]> {
  const refuse = (marker: QuarantineMarker) => permanentFailure(NodeQuarantined, quarantineMessage(shell.name, marker));
  const { marker: existing, journals } = await readRunState(shell);
  if (existing) throw refuse(existing);
  const recovered: string[] = [];
  for (const { runId, entries } of await runsToRecover(shell, request.runId, journals)) {
    const result = await recoverRun(shell, pool, kubernetes, { runId, stepOrder: [], undos: [] }).catch((err: unknown) => {
      // The node cannot be brought back now: its state is unknown, so it is quarantined.
      const type = failureType(err);
      return { outcomes: [], refused: { stepId: '?', reason: `${type ? `${type}: ` : ''}${firstLine(err)}`, fix: manualFix(shell.name, entries[0]?.undo) } } satisfies RecoveryResult;
    });
    if (result.refused) {
      const marker = await quarantine(shell, {
        rolloutId: entries[0]?.rolloutId ?? '?',
        runId,
        reason: `run ${runId} ended without finishing or taking back its changes (its journal is on the node), and recovering it failed: ${result.refused.reason}`,
        fix: result.refused.fix,
        since: new Date().toISOString(),
      });
      throw refuse(marker);
    }
    recovered.push(`recovered the journal of run ${runId} (${entries[0]?.rolloutId ?? '?'}): ${result.outcomes.map((o) => `${o.stepId}: ${o.summary}`).join('; ') || 'nothing to take back'}`);
  }
  return recovered;
}
