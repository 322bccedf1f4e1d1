/**
 * `containerd-patch`: adds (or removes) runtime handlers in containerd's config on a node.
 *
 * Order of work, each part safe to repeat after a crash at any point:
 * read the config → patch it in memory (pure patcher) → back up the original next to it, named for
 * this run and never overwritten → write the candidate to a temp file → `containerd --config TMP
 * config dump` must accept it → rename it over the config. Before the first change the step writes its
 * intent (the undo, with the sha256 it is about to write) to the journal on the node. A retried attempt that finds the config
 * already patched and this run's backup present reports the change (with its undo) instead of
 * forgetting it, so a run records exactly one backup and patches exactly once.
 *
 * SSH commands on the usual path (in-place, a config to back up): three. The reads (config, this run's backup and
 * no-config marker, the path check riding on them); one command whose parts each run only once the one before
 * succeeded: the journal intent (first, fsynced, its text in the script), the backup copy with its sha256 checked on
 * the node, the candidate (on stdin) and its validation, the swap; the sha256 read after the swap, a command of its
 * own so that a cancellation can stop it (the journal lets the recovery take the swap back).
 */
import { posix } from 'node:path';
import {
  ContainerdConfigConflict,
  ContainerdConfigInvalid,
  patchContainerdConfig,
  removeRuntimes,
  type PatchOutcome,
} from '../containerd-config';
import { getPath, isTable, parseToml } from '../containerd-config/data';
import { sh, type Command, type CommandResult } from '../ssh';
import type { ContainerdPatchStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest, Undo } from '../node-types';
import { sha256Hex, type NodeShell, type PartResult } from './node-shell';
import { intentWrite, printText } from './journal';
import { activityContext, cancellationSignal, failureType, permanentFailure, transientFailure } from './step-runtime';

/** A backup named for this run exists but holds other bytes than the config it would back up. Never retried. */
export const ContainerdBackupConflict = 'ContainerdBackupConflict';

/** The run's 12-character tag in file names on the node. */
export function runTag(runId: string): string {
  return runId.slice(0, 12);
}

/** `/etc/containerd/config.toml.katafleet-<run>.bak`: the original config, kept next to it. */
export function backupPathFor(configPath: string, runId: string): string {
  return `${configPath}.katafleet-${runTag(runId)}.bak`;
}

/** Marker that this run found no config (so undo deletes the one it wrote). */
export function absentMarkerFor(configPath: string, runId: string): string {
  return `${configPath}.katafleet-${runTag(runId)}.absent`;
}

/** Marker that this run created the drop-in file (so undo deletes it). */
export function dropInMarkerFor(dropInPath: string, runId: string): string {
  return `${dropInPath}.katafleet-${runTag(runId)}.created`;
}

/** The candidate file validated before the swap: per attempt, so two attempts never share one (R16). */
function candidatePathFor(configPath: string, runId: string, attempt: number): string {
  return `${candidatePrefix(configPath, runId)}${attempt}.new`;
}

function candidatePrefix(configPath: string, runId: string): string {
  return `${configPath}.katafleet-${runTag(runId)}-a`;
}

/** Exit status of the backup part when the backup does not hold the config's bytes as read (ContainerdConfigChanged). */
const BACKUP_DIFFERS_EXIT = 90;

/** On stderr (exit 125) when the candidate could not be written, so a validator's own exit 125 is not taken for it. */
const CANDIDATE_NOT_WRITTEN = 'katafleet-candidate-not-written';

/**
 * The first read, one command: the config's bytes, the sha256 of this run's backup and whether this run's no-config
 * marker exists. A file that exists but cannot be read is an error, never "absent".
 */
async function readPatchState(shell: NodeShell, configPath: string, backupPath: string, absentMarker: string): Promise<{ config?: string; backupSha?: string; absent: boolean }> {
  const parts = await shell.readAll({
    config: shell.readFileCommand(configPath),
    backupSha: sh`if test -f ${backupPath}; then ${shell.tool('sha256sum')} ${backupPath}; else exit 3; fi`,
    absent: sh`test -e ${absentMarker}`,
  });
  for (const [name, path] of [['config', configPath], ['backupSha', backupPath]] as const) {
    if (parts[name].exitCode !== 0 && parts[name].exitCode !== 3) {
      throw transientFailure('CommandFailed', `Node ${shell.name}: reading ${path} failed (exit ${parts[name].exitCode}); trying again`);
    }
  }
  return {
    config: parts.config.exitCode === 0 ? parts.config.stdout : undefined,
    backupSha: parts.backupSha.exitCode === 0 ? parts.backupSha.stdout.trim().split(/\s+/)[0] : undefined,
    absent: parts.absent.exitCode === 0,
  };
}

/** The programs containerd-patch runs on the node (found by the program probe; all required). */
export const PATCH_PROGRAMS = ['containerd', 'cp', 'ln', 'rm', 'mv', 'mkdir', 'touch', 'tee', 'sync', 'chmod', 'chown', 'sha256sum'] as const;
type PatchPrograms = Record<(typeof PATCH_PROGRAMS)[number], string>;

export async function containerdPatch(shell: NodeShell, request: StepRequest<ContainerdPatchStep>): Promise<StepOutcome> {
  const { step, runId } = request;
  const configPath = step.config_path;
  const attempt = activityContext()?.info.attempt ?? 1;
  const backupPath = backupPathFor(configPath, runId);
  const absentMarker = absentMarkerFor(configPath, runId);
  // One command reads the config, this run's backup of it and its no-config marker (an earlier attempt's).
  const first = await readPatchState(shell, configPath, backupPath, absentMarker);
  const original = first.config;
  const outcome = computePatch(shell, step, original ?? '');
  // The programs this step runs, from the probe that came with the read above; one missing fails it here, unchanged.
  const bin = await shell.programs(`containerd-patch "${step.id}"`, PATCH_PROGRAMS);
  const dropInMode = step.action === 'add' && step.mode === 'drop-in';

  // The intent goes to the journal on the node before the first change (drop-in, backup, swap): in drop-in mode a
  // command of its own, otherwise in front of the first change, in the same remote script.
  let intent: { command: Command; stdin: string } | undefined;
  if (request.journal) {
    const dropInCurrent = dropInMode && outcome.dropIn ? await shell.readFile(outcome.dropIn.path) : undefined;
    const dropInOurs = dropInMode && outcome.dropIn !== undefined
      && (dropInCurrent === undefined || (dropInCurrent === outcome.dropIn.content && (await shell.exists(dropInMarkerFor(outcome.dropIn.path, runId)))));
    const dropInConflict = dropInMode && dropInCurrent !== undefined && dropInCurrent !== outcome.dropIn?.content;
    if ((outcome.status !== 'unchanged' || dropInOurs) && !dropInConflict) {
      const originalSha = original === undefined ? undefined : sha256Hex(original);
      const undo: Undo = restoreUndo(step, original === undefined ? undefined : backupPathFor(configPath, runId), originalSha, dropInOurs ? outcome.dropIn?.path : undefined, outcome.status === 'unchanged' ? originalSha : sha256Hex(outcome.content));
      intent = intentWrite(shell, request, undo, `${describe(step)} in ${configPath}${original === undefined ? ' (no config yet: write one)' : `, original backed up to ${backupPathFor(configPath, runId)}`}`, { keepFirst: true });
      if (dropInMode && intent) {
        await shell.run(intent.command, { stdin: intent.stdin, signal: undefined });
        intent = undefined;
      }
    }
  }

  const dropIn = dropInMode ? await placeDropIn(shell, bin, runId, outcome, attempt) : undefined;
  const createdDropIn = dropIn?.created ? dropIn.path : undefined;

  if (outcome.status === 'unchanged') {
    if (dropIn?.created && original !== undefined) {
      // Only the drop-in is new (the config already imports it): back up the config anyway, so the undo has one shape.
      const originalSha = await backUp(shell, bin, configPath, backupPath, original, attempt, first.backupSha);
      if (dropIn.writtenNow) await validateOnNode(shell, bin, configPath, configPath, [dropIn.path, dropIn.marker]);
      const undo: Undo = restoreUndo(step, backupPath, originalSha, createdDropIn, originalSha);
      return { changed: true, summary: `${dropIn.summary}; ${configPath} already imports it`, undo, facts: facts(undo, originalSha) };
    }
    // This run's backup (or absent marker) next to an already patched config: an earlier attempt patched it and lost its result.
    const backupSha = first.backupSha;
    if (backupSha !== undefined || first.absent) {
      const currentSha = original === undefined ? undefined : sha256Hex(original);
      const undo: Undo = restoreUndo(step, backupSha === undefined ? undefined : backupPath, backupSha, createdDropIn, currentSha);
      return {
        changed: true,
        summary: `${describe(step)} already in ${configPath} (patched by an earlier attempt of this run)${dropIn ? `; ${dropIn.summary}` : ''}`,
        undo,
        facts: facts(undo, currentSha),
      };
    }
    return { changed: false, summary: `${describe(step)} already in ${configPath}${dropIn ? `; ${dropIn.path} up to date` : ''}` };
  }

  let originalSha: string | undefined;
  const backupCreated = { now: false };
  if (original === undefined) {
    const mark = sh`${bin.mkdir} -p ${posix.dirname(configPath)} && ${bin.touch} ${absentMarker}`;
    await shell.run(intent ? sh`${intent.command} || exit 1
${mark}` : mark, { stdin: intent?.stdin, signal: intent ? undefined : cancellationSignal() });
  }
  const candidate = candidatePathFor(configPath, runId, attempt);
  // On a refusal the files this attempt made go (the node's lock keeps every other attempt out meanwhile);
  // a backup an earlier attempt made stays, its journal entry names it.
  const ownFiles = () => [candidate, original === undefined ? absentMarker : backupCreated.now ? backupPath : candidate, ...(dropIn?.writtenNow ? [dropIn.path, dropIn.marker] : [])];
  // One command writes the candidate (0600 until chmod --reference: the config may hold registry credentials) and
  // has containerd validate it.
  const candidateCommand = sh`umask 077 && ${bin.tee} ${candidate} >/dev/null && ${bin.sync} ${candidate} || { echo ${CANDIDATE_NOT_WRITTEN} >&2; exit 125; }
${bin.containerd} --config ${candidate} config dump >/dev/null`;
  // The swap, then the candidates of earlier attempts of this run (a crashed attempt's, or one named before candidates
  // were per attempt) removed. The swap is not stopped by a cancellation: once started it finishes, and the journal
  // (written before) lets the recovery take it back. The read after it stays a command of its own: a cancellation may
  // stop it.
  const swap = original === undefined
    ? sh`${bin.chmod} 0644 ${candidate} && ${bin.mv} -f ${candidate} ${configPath} && ${bin.sync} ${posix.dirname(configPath)}`
    : sh`${bin.chmod} --reference=${configPath} ${candidate} && ${bin.chown} --reference=${configPath} ${candidate} && ${bin.mv} -f ${candidate} ${configPath} && ${bin.sync} ${posix.dirname(configPath)}`;
  const swapCommand = sh`${swap} && ${bin.rm} -f ${configPath}.katafleet-${runTag(runId)}.new ${candidatePrefix(configPath, runId)}*.new`;
  let validation: Pick<CommandResult, 'exitCode' | 'stdout' | 'stderr'>;
  let swapped: PartResult | undefined;
  const intentText = intent && printText(intent.stdin);
  if (original !== undefined && first.backupSha === undefined && (intent === undefined || intentText !== undefined)) {
    // One command (NodeShell.runInOrder), each part only once the one before succeeded: the intent (its text in the
    // script) and the backup copy, whose sha256 must be the config's as read (checked on the node, exit 90
    // otherwise); the candidate (on stdin) and its validation; the swap. Not stopped by a cancellation, as the swap.
    const expected = sha256Hex(original);
    backupCreated.now = true;
    const copy = sh`kf_h=$(${backupCopy(bin, configPath, backupPath, attempt)}) || exit $?; echo "$kf_h"; test "\${kf_h%% *}" = ${expected} || exit ${BACKUP_DIFFERS_EXIT}`;
    const [copied, validated, swap] = await shell.runInOrder([
      { command: intent ? sh`${intentText!} | { ${intent.command}
} || exit 1
${copy}` : copy },
      { command: candidateCommand, when: { ok: [0] } },
      { command: swapCommand, when: { ok: [1] } },
    ], { stdin: outcome.content, signal: undefined });
    if (copied?.exitCode === BACKUP_DIFFERS_EXIT) {
      checkBackup(shell, configPath, backupPath, expected, copied.stdout.trim().split('\n').pop()?.split(/\s+/)[0], false);
    }
    if (copied?.exitCode !== 0) {
      throw transientFailure('CommandFailed', `Node ${shell.name}: backing up ${configPath} to ${backupPath} exited with ${copied?.exitCode}: ${copied?.stdout.trim().split('\n').slice(-3).join(' | ')}; trying again`);
    }
    originalSha = expected;
    validation = { exitCode: validated?.exitCode ?? null, stdout: validated?.stdout ?? '', stderr: validated?.stdout ?? '' };
    swapped = swap;
  } else {
    if (original !== undefined) originalSha = await backUp(shell, bin, configPath, backupPath, original, attempt, first.backupSha, backupCreated, intent);
    validation = await shell.run(candidateCommand, { stdin: outcome.content, allowExitCodes: [...Array(256).keys()] });
  }
  if (validation.exitCode === 125 && validation.stderr.includes(CANDIDATE_NOT_WRITTEN)) {
    throw transientFailure('CommandFailed', `Node ${shell.name}: writing the candidate ${candidate} failed: ${validation.stderr.trim().split('\n').filter((line) => line !== CANDIDATE_NOT_WRITTEN).slice(-3).join(' | ')}; trying again`);
  }
  await refuseInvalid(shell, bin, validation, candidate, configPath, ownFiles());
  if (swapped === undefined) {
    await shell.run(swapCommand, { signal: undefined });
  } else if (swapped.exitCode !== 0) {
    throw transientFailure('CommandFailed', `Node ${shell.name}: swapping ${candidate} in as ${configPath} exited with ${swapped.exitCode}: ${swapped.stdout.trim().split('\n').slice(-3).join(' | ')}; trying again (the journal holds the undo)`);
  }
  const configSha = await shell.sha256(configPath);
  if (configSha !== sha256Hex(outcome.content)) {
    throw transientFailure('ContainerdConfigChanged', `Node ${shell.name}: ${configPath} changed while katafleet replaced it (sha256 ${configSha}); the step will re-read it and try again`);
  }

  const undo: Undo = restoreUndo(step, original === undefined ? undefined : backupPath, originalSha, createdDropIn, configSha);
  const changes = outcome.status === 'patched'
    ? [...outcome.added.map((n) => `added ${n}`), ...outcome.replaced.map((n) => `replaced ${n}`), ...(outcome.removed ?? []).map((n) => `removed ${n}`)]
    : [];
  return {
    changed: true,
    summary: `${changes.join(', ') || 'imported the drop-in'} in ${configPath}${original === undefined ? ' (there was no config: wrote a complete one)' : `; original backed up to ${backupPath}`}${dropIn ? `; ${dropIn.summary}` : ''}`,
    undo,
    facts: facts(undo, configSha),
  };
}

function describe(step: ContainerdPatchStep): string {
  const names = step.runtimes.map((r) => r.name).join(', ');
  return step.action === 'add' ? `runtime ${names}` : `no runtime ${names}`;
}

function restoreUndo(step: ContainerdPatchStep, backupPath: string | undefined, sha256: string | undefined, createdDropIn: string | undefined, writtenSha256: string | undefined): Undo {
  return { kind: 'restore-containerd-config', stepId: step.id, configPath: step.config_path, backupPath, sha256, createdDropIn, writtenSha256, service: 'containerd' };
}

function facts(undo: Undo, configSha: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (undo.kind !== 'restore-containerd-config') return out;
  if (undo.backupPath) out.backupPath = undo.backupPath;
  if (undo.sha256) out.backupSha256 = undo.sha256;
  if (configSha) out.configSha256 = configSha;
  if (undo.createdDropIn) out.dropInPath = undo.createdDropIn;
  return out;
}

/** The pure patch of the config text; refusals become non-retryable failures of the patcher's type. */
function computePatch(shell: NodeShell, step: ContainerdPatchStep, text: string): PatchOutcome {
  const file = `${step.config_path} on node ${shell.name}`;
  try {
    if (step.action === 'add') {
      return patchContainerdConfig(text, step.runtimes, { replace: step.replace, mode: step.mode, dropInPath: step.drop_in_path, file });
    }
    const outcome = removeRuntimes(text, step.runtimes.map((r) => r.name), { file });
    if (outcome.status === 'patched') assertSameRuntimeTypes(text, outcome, step, file);
    return outcome;
  } catch (err) {
    const type = failureType(err);
    if (type) throw permanentFailure(type, (err as Error).message, err);
    throw err;
  }
}

/** `action = "remove"` only takes out runtimes whose runtime_type is the one the playbook names. */
function assertSameRuntimeTypes(text: string, outcome: PatchOutcome, step: ContainerdPatchStep, file: string): void {
  const data = parseToml(text, file);
  for (const runtime of step.runtimes) {
    const table = getPath(data, [...outcome.pluginPath, runtime.name]);
    const configured = isTable(table) ? table.runtime_type : undefined;
    if (configured !== undefined && configured !== runtime.runtime_type) {
      throw permanentFailure(ContainerdConfigConflict,
        `${file}: runtime ${runtime.name} has runtime_type ${JSON.stringify(configured)}, not ${JSON.stringify(runtime.runtime_type)}: ` +
        'it was configured by someone else, so katafleet leaves it; remove it by hand or fix runtime_type in the playbook');
    }
  }
}

/**
 * Copies the config to this run's backup without ever replacing an existing file (a hard link from a
 * complete temp copy: `ln` refuses an existing name), then checks the backup holds the bytes read.
 * Returns the original's sha256.
 */
async function backUp(shell: NodeShell, bin: PatchPrograms, configPath: string, backupPath: string, original: string, attempt: number,
  existing: string | undefined, created?: { now: boolean }, intent?: { command: Command; stdin: string }): Promise<string> {
  const expected = sha256Hex(original);
  if (created) created.now = existing === undefined;
  if (existing !== undefined && intent) await shell.run(intent.command, { stdin: intent.stdin, signal: undefined });
  if (existing === undefined) {
    // The intent (when the run journals), the copy and the read of what the backup holds now, in one command.
    const copied = await shell.run(sh`${intent ? sh`${intent.command} || exit 1
` : sh``}${backupCopy(bin, configPath, backupPath, attempt)}`, intent ? { stdin: intent.stdin, signal: undefined } : {});
    return checkBackup(shell, configPath, backupPath, expected, copied.stdout.trim().split(/\s+/)[0], false);
  }
  return checkBackup(shell, configPath, backupPath, expected, existing, true);
}

/**
 * The backup copy (a complete temp copy, then a hard link: `ln` refuses an existing name, so a backup is never
 * replaced) and the sha256 of what the backup holds then, printed last.
 */
function backupCopy(bin: PatchPrograms, configPath: string, backupPath: string, attempt: number): Command {
  const temp = `${backupPath}.${attempt}.tmp`;
  return sh`${bin.cp} -p ${configPath} ${temp} && ${bin.sync} ${temp} && { ${bin.ln} ${temp} ${backupPath} 2>/dev/null || test -e ${backupPath}; }; status=$?; ${bin.rm} -f ${temp}; ${bin.sync} ${posix.dirname(backupPath)}; if [ $status -ne 0 ]; then exit $status; fi; ${bin.sha256sum} ${backupPath}`;
}

/** The backup must hold the bytes read; one an earlier attempt made that holds others is a conflict. Returns the sha256. */
function checkBackup(shell: NodeShell, configPath: string, backupPath: string, expected: string, backupSha: string | undefined, madeEarlier: boolean): string {
  if (backupSha === expected) return expected;
  if (madeEarlier) {
    throw permanentFailure(ContainerdBackupConflict,
      `Node ${shell.name}: ${backupPath} (from an earlier attempt of this run) holds other bytes (sha256 ${backupSha}) than ${configPath} now (sha256 ${expected}): ` +
      'the config changed between attempts. katafleet never overwrites a backup; compare the two files and remove the backup if the current config is the one to keep');
  }
  throw transientFailure('ContainerdConfigChanged', `Node ${shell.name}: ${configPath} changed while katafleet backed it up (backup sha256 ${backupSha}, read ${expected}); the step will try again`);
}

/**
 * `containerd --config FILE config dump` must accept the candidate; otherwise the files this attempt
 * made (`ownFiles`: candidate, backup, drop-in) are removed and the config keeps its bytes.
 */
async function validateOnNode(shell: NodeShell, bin: PatchPrograms, file: string, configPath: string, ownFiles: readonly string[]): Promise<void> {
  const result = await shell.run(sh`${bin.containerd} --config ${file} config dump >/dev/null`, { allowExitCodes: [...Array(256).keys()] });
  await refuseInvalid(shell, bin, result, file, configPath, ownFiles);
}

/** {@link validateOnNode}'s verdict on the validator's `result`. */
async function refuseInvalid(shell: NodeShell, bin: PatchPrograms, result: Pick<CommandResult, 'exitCode' | 'stdout' | 'stderr'>, file: string, configPath: string, ownFiles: readonly string[]): Promise<void> {
  if (result.exitCode === 0) return;
  await shell.run(sh`${bin.rm} -f ${ownFiles}`);
  throw permanentFailure(ContainerdConfigInvalid,
    `containerd on node ${shell.name} refuses the patched ${configPath} (containerd --config ${file} config dump exited with ${result.exitCode}): ` +
    `${(result.stderr.trim() || result.stdout.trim()).split('\n').slice(-5).join(' | ')}; nothing was replaced, ${configPath} keeps its bytes`);
}

interface PlacedDropIn {
  path: string;
  /** The marker saying this run created it. */
  marker: string;
  /** True when this run wrote the file (now or in an earlier attempt; it did not exist before): undo deletes it. */
  created: boolean;
  /** True when this attempt wrote it. */
  writtenNow: boolean;
  summary: string;
}

/**
 * Drop-in mode: writes the runtimes' file unless the node has it already. An existing file with other
 * content belongs to someone (or an earlier playbook) and is refused rather than overwritten.
 */
async function placeDropIn(shell: NodeShell, bin: PatchPrograms, runId: string, outcome: PatchOutcome, attempt: number): Promise<PlacedDropIn> {
  const dropIn = outcome.dropIn;
  if (!dropIn) throw new Error('the patcher returned no drop-in in drop-in mode');
  const marker = dropInMarkerFor(dropIn.path, runId);
  const current = await shell.readFile(dropIn.path);
  if (current === dropIn.content) {
    const created = await shell.exists(marker);
    return { path: dropIn.path, marker, created, writtenNow: false, summary: `${dropIn.path} ${created ? 'written by an earlier attempt of this run' : 'already up to date'}` };
  }
  if (current !== undefined) {
    throw permanentFailure(ContainerdConfigConflict,
      `Node ${shell.name}: the drop-in ${dropIn.path} exists with other content than the playbook's runtimes; katafleet does not overwrite it — ` +
      'compare it with the playbook, then remove it or set drop_in_path to another file');
  }
  await shell.run(sh`${bin.mkdir} -p ${posix.dirname(dropIn.path)} && ${bin.touch} ${marker}`);
  await shell.writeFileAtomic(dropIn.path, dropIn.content, `${dropIn.path}.katafleet-a${attempt}-tmp`);
  return { path: dropIn.path, marker, created: true, writtenNow: true, summary: `wrote ${dropIn.path}` };
}
