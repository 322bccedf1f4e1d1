/**
 * `prereq-check`: refuses a node that cannot run Kata (no hardware virtualization, no /dev/kvm, a
 * module that will not load, `kata-runtime check` failing) before anything on it is changed, then
 * loads the missing modules and persists them in modules-load.d.
 */
import { MESSAGE_TAIL_BYTES, sh, tail, type Command } from '../ssh';
import type { PrereqCheckStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest, Undo } from '../node-types';
import { backupPathFor } from './containerd-patch';
import { FILE_IS_DIRECTORY_EXIT, FileIsDirectory, fileIsDirectoryMessage, sha256Hex, type NodeShell, type OrderedPart, type PartResult } from './node-shell';
import { permanentFailure, transientFailure } from './step-runtime';

/** The node cannot run Kata Containers; the message says why. Never retried. */
export const NodeNotCapable = 'NodeNotCapable';
/** `run_kata_check` on a node without `kata-runtime`: the check belongs after `package-install`. Never retried. */
export const KataRuntimeMissing = 'KataRuntimeMissing';

/** The CPU flags of the first processor in /proc/cpuinfo (`flags` on x86, `Features` on arm64). */
export function parseCpuFlags(cpuinfo: string): Set<string> {
  const line = cpuinfo.split('\n').find((l) => /^(flags|Features)\s*:/.test(l));
  return new Set(line ? line.slice(line.indexOf(':') + 1).trim().split(/\s+/) : []);
}

/** Module names in /proc/modules. */
export function parseLoadedModules(procModules: string): Set<string> {
  return new Set(procModules.split('\n').map((line) => line.split(' ')[0]).filter(Boolean));
}

/** The modules-load.d file content katafleet writes: one module per line. */
export function modulesLoadFile(modules: readonly string[]): string {
  return `# Written by katafleet (prereq-check): kernel modules Kata Containers needs at boot.\n${modules.map((m) => `${m}\n`).join('')}`;
}

/** The programs prereq-check needs to persist modules (a backup of modules-load.d's file, then an atomic write). */
const PERSIST_PROGRAMS = ['cp', 'ln', 'rm', 'mkdir', 'tee', 'chmod', 'chown', 'mv', 'sha256sum'] as const;

/** What the step reads before it decides anything: one remote command (kernel, CPU, modules, /dev/kvm, the modules-load.d file and its backup). */
async function readPrereqState(shell: NodeShell, request: StepRequest<PrereqCheckStep>) {
  const { step } = request;
  const modules = [...step.modules, ...step.modules_any_of.flat()];
  const fileOrExit3 = (path: string) => shell.readFileCommand(path);
  const sha256OrExit3 = (path: string) => sh`if test -f ${path}; then ${shell.tool('sha256sum')} ${path}; else exit 3; fi`;
  const persist = step.persist_modules && modules.length > 0;
  const kataCheckWithReads = step.run_kata_check && step.cpu_flags.length === 0 && !step.require_kvm && modules.length === 0;
  const parts = await shell.readAll({
    kernel: sh`uname -r`,
    cpuinfo: step.cpu_flags.length > 0 ? fileOrExit3('/proc/cpuinfo') : sh`true`,
    procModules: modules.length > 0 ? fileOrExit3('/proc/modules') : sh`true`,
    sysModules: modules.length > 0 ? sh`for m in ${modules}; do if test -d /sys/module/"$m"; then echo "$m"; fi; done` : sh`true`,
    kvm: step.require_kvm ? sh`test -c /dev/kvm` : sh`true`,
    fileSha: persist ? sha256OrExit3(step.modules_load_file) : sh`exit 3`,
    backupSha: persist ? sha256OrExit3(backupPathFor(step.modules_load_file, request.runId)) : sh`exit 3`,
    // `kata-runtime check` rides on the reads when nothing the step checks first could stop it (no CPU flags, no
    // /dev/kvm, no modules): then it runs on the same node state as a command of its own after them would.
    kataCheck: kataCheckWithReads ? KATA_CHECK : sh`true`,
  });
  const sha = (part: { stdout: string; exitCode: number }) => (part.exitCode === 0 ? part.stdout.trim().split(/\s+/)[0] : undefined);
  return {
    hostKernel: parts.kernel.stdout.trim(),
    cpuinfo: parts.cpuinfo.exitCode === 0 ? parts.cpuinfo.stdout : '',
    present: new Set([...parseLoadedModules(parts.procModules.exitCode === 0 ? parts.procModules.stdout : ''), ...parts.sysModules.stdout.split('\n').filter(Boolean)]),
    kvm: parts.kvm.exitCode === 0,
    fileSha: sha(parts.fileSha),
    backupSha: sha(parts.backupSha),
    kataCheck: kataCheckWithReads ? parts.kataCheck : undefined,
  };
}

export async function prereqCheck(shell: NodeShell, request: StepRequest<PrereqCheckStep>): Promise<StepOutcome> {
  const { step } = request;
  const state = await readPrereqState(shell, request);
  const { hostKernel } = state;
  // The programs it may run, from the probe that came with the read above: modprobe when a module is not loaded
  // yet, the file tools when it persists modules. One missing fails the step here, before it changes anything.
  const modules = [...step.modules, ...step.modules_any_of.flat()];
  const bin = await shell.programs(`prereq-check "${step.id}"`, [
    ...(modules.some((module) => !state.present.has(module)) ? ['modprobe' as const] : []),
    ...(step.persist_modules && modules.length > 0 ? PERSIST_PROGRAMS : []),
  ], ['modprobe', ...PERSIST_PROGRAMS]);
  const facts: Record<string, string> = { hostKernel };
  const done: string[] = [];

  if (step.cpu_flags.length > 0) {
    const flags = parseCpuFlags(state.cpuinfo);
    const found = step.cpu_flags.filter((flag) => flags.has(flag));
    if (found.length === 0) {
      throw notCapable(shell, `CPU has no ${step.cpu_flags.join(' or ')} flag: no hardware virtualization (enable VT-x/AMD-V in the firmware, or nested virtualization on the hypervisor)`);
    }
    facts.cpuFlags = found.join(',');
  }

  const needed: string[] = [];
  const loadedNow: string[] = [];
  // On a node without the modules-load file, the file's write rides on the loads' command (run only once every load
  // and /dev/kvm succeeded) when its content is known before: every group settled by a module already loaded.
  const predicted = staticModules(step, state.present);
  const mergedWrite = step.persist_modules && predicted !== undefined && predicted.length > 0 && state.fileSha === undefined && !step.run_kata_check
    ? { command: shell.writeFileCommand(step.modules_load_file), stdin: modulesLoadFile(predicted) }
    : undefined;
  const loads = await loadModules(shell, step, state.present, bin.modprobe ?? shell.tool('modprobe'), mergedWrite);
  for (const module of step.modules) {
    const problem = loads.problemOf(module);
    if (problem !== undefined) throw notCapable(shell, `kernel module ${module} cannot be loaded: ${problem}`);
    if (loads.loaded(module)) loadedNow.push(module);
    needed.push(module);
  }
  for (const group of step.modules_any_of) {
    const problems: string[] = [];
    let chosen: string | undefined;
    for (const module of group) {
      const problem = loads.problemOf(module);
      if (problem === undefined) {
        chosen = module;
        if (loads.loaded(module)) loadedNow.push(module);
        break;
      }
      problems.push(`${module}: ${problem}`);
    }
    if (chosen === undefined) throw notCapable(shell, `none of the kernel modules ${group.join(', ')} can be loaded (${problems.join('; ')})`);
    needed.push(chosen);
  }
  if (loadedNow.length > 0) done.push(`loaded ${loadedNow.join(', ')}`);

  // A module loaded just now (kvm_intel, kvm_amd) may have made /dev/kvm: the loads' command read it again then.
  if (step.require_kvm && !(loadedNow.length === 0 ? state.kvm : loads.kvmAfter)) {
    throw notCapable(shell, '/dev/kvm does not exist: KVM is not available (load kvm_intel or kvm_amd, and enable virtualization in the firmware)');
  }

  if (step.run_kata_check) {
    // Read with the step's first command when nothing could have stopped the step before it (see readPrereqState).
    facts.kataCheck = kataVerdict(shell, state.kataCheck ?? await kataCheckRun(shell));
  }

  let undo: Undo | undefined;
  if (step.persist_modules && needed.length > 0) {
    const path = step.modules_load_file;
    const content = modulesLoadFile(needed);
    const backupPath = backupPathFor(path, request.runId);
    const previousSha = state.fileSha;
    const wrote = mergedWrite?.stdin === content ? loads.written : undefined;
    if (wrote !== undefined) {
      if (wrote.exitCode === FILE_IS_DIRECTORY_EXIT) throw permanentFailure(FileIsDirectory, fileIsDirectoryMessage(shell.name, path));
      if (wrote.exitCode !== 0) throw transientFailure('CommandFailed', `Node ${shell.name}: writing ${path} exited with ${wrote.exitCode}: ${wrote.stdout.trim().split('\n').slice(-3).join(' | ')}; trying again`);
      done.push(`wrote ${path}`);
      undo = { kind: 'restore-file', stepId: step.id, path, backupPath: undefined, sha256: undefined };
    } else if (previousSha !== sha256Hex(content)) {
      const backupSha = previousSha === undefined ? undefined : await backUpFile(shell, path, backupPath, previousSha);
      await shell.writeFileAtomic(path, content);
      done.push(`wrote ${path}${backupSha ? ` (the previous one backed up to ${backupPath})` : ''}`);
      undo = { kind: 'restore-file', stepId: step.id, path, backupPath: backupSha && backupPath, sha256: backupSha };
    } else {
      // An earlier attempt of this run wrote it and lost its result: its backup says what to restore.
      const backupSha = state.backupSha;
      if (backupSha !== undefined) undo = { kind: 'restore-file', stepId: step.id, path, backupPath, sha256: backupSha };
    }
  }

  const checks = [facts.cpuFlags && `CPU ${facts.cpuFlags}`, step.require_kvm && '/dev/kvm', needed.length > 0 && `modules ${needed.join(', ')}`, step.run_kata_check && 'kata-runtime check']
    .filter(Boolean)
    .join(', ');
  return {
    changed: done.length > 0,
    undo,
    summary: `capable (${checks || 'no checks asked'}; kernel ${hostKernel})${done.length > 0 ? `; ${done.join('; ')}` : ''}`,
    facts,
  };
}

/**
 * Backs `path` up to `backupPath` on the node (copy, then a hard link, so an existing backup is never replaced) and
 * checks the backup holds the bytes whose sha256 was read. Returns that sha256.
 */
async function backUpFile(shell: NodeShell, path: string, backupPath: string, sha256: string): Promise<string> {
  if ((await shell.sha256(backupPath)) === undefined) {
    const temp = `${backupPath}.tmp`;
    await shell.run(sh`${shell.tool('cp')} -p ${path} ${temp} && { ${shell.tool('ln')} ${temp} ${backupPath} 2>/dev/null || test -e ${backupPath}; }; status=$?; ${shell.tool('rm')} -f ${temp}; exit $status`);
  }
  const backupSha = await shell.sha256(backupPath);
  if (backupSha !== sha256) {
    throw transientFailure('FileChanged', `Node ${shell.name}: ${path} changed while katafleet backed it up (backup sha256 ${backupSha}, read ${sha256}); the step will try again`);
  }
  return sha256;
}

/**
 * The `restore-file` undo: puts the backup back byte for byte (copy to a temp file, rename; the sha256 recorded
 * when it was made is checked before and after), or deletes the file when there was none before. Safe to repeat.
 */
export async function restoreFile(shell: NodeShell, undo: Extract<Undo, { kind: 'restore-file' }>): Promise<string> {
  const { path, backupPath } = undo;
  if (backupPath === undefined) {
    if (!(await shell.exists(path))) return `${path} already absent`;
    await shell.run(sh`${shell.tool('rm')} -f ${path}`);
    return `removed ${path} (there was none before)`;
  }
  const backupSha = await shell.sha256(backupPath);
  if (backupSha === undefined || (undo.sha256 !== undefined && backupSha !== undo.sha256)) {
    throw permanentFailure(backupSha === undefined ? 'FileBackupMissing' : 'FileBackupCorrupted',
      `Node ${shell.name}: the backup ${backupPath} of ${path} ${backupSha === undefined ? 'is gone' : `has sha256 ${backupSha}, not the ${undo.sha256} recorded when it was made`}; restore ${path} by hand`);
  }
  if ((await shell.sha256(path)) === backupSha) return `${path} already as before`;
  const temp = `${path}.katafleet-restore`;
  await shell.run(sh`${shell.tool('cp')} -p ${backupPath} ${temp} && ${shell.tool('mv')} -f ${temp} ${path}`);
  const restoredSha = await shell.sha256(path);
  if (restoredSha !== backupSha) {
    throw transientFailure('FileRestoreFailed', `Node ${shell.name}: ${path} has sha256 ${restoredSha} after restoring ${backupPath} (sha256 ${backupSha}); trying again`);
  }
  return `restored ${path} from ${backupPath} (sha256 ${backupSha.slice(0, 12)}…)`;
}

/** `kata-runtime check`, its stdout and stderr as one text (what the shell prints for a missing program too). */
const KATA_CHECK = sh`kata-runtime check 2>&1`;

/** Runs `kata-runtime check` as a command of its own. */
async function kataCheckRun(shell: NodeShell): Promise<PartResult> {
  const result = await shell.run(KATA_CHECK, { allowExitCodes: [0, 1, 127] });
  return { stdout: result.stdout, exitCode: result.exitCode ?? -1 };
}

/** The verdict line of `kata-runtime check`'s answer, or NodeNotCapable with its errors (KataRuntimeMissing on exit 127). */
function kataVerdict(shell: NodeShell, result: PartResult): string {
  if (result.exitCode === 127) {
    throw permanentFailure(KataRuntimeMissing,
      `kata-runtime is not installed on node ${shell.name}: a prereq-check with run_kata_check = true must come after the package-install step that installs Kata`);
  }
  const output = result.stdout;
  // Failures go into Temporal history for good: at most the output's last 4 KiB, as the SSH pool's own failures
  // (a node's tool may print file contents or tokens first).
  const kept = output.trim();
  const cut = Buffer.byteLength(kept) > MESSAGE_TAIL_BYTES ? ` (output, last ${MESSAGE_TAIL_BYTES / 1024} KiB)` : '';
  if (result.exitCode !== 0 && result.exitCode !== 1) {
    throw transientFailure('CommandFailed', `Node ${shell.name}: kata-runtime check exited with ${result.exitCode}${cut}: ${tail(kept)}`);
  }
  if (result.exitCode !== 0) {
    const errors = output.split('\n').map((l) => l.trim()).filter((l) => /^(ERROR|ERRO|WARN)|not found|not capable/i.test(l));
    throw notCapable(shell, `kata-runtime check failed: ${errors.length > 0 ? tail(errors.join('; ')) : `${tail(kept)}${cut}`}`);
  }
  return output.split('\n').map((l) => l.trim()).find((l) => /capable/i.test(l)) ?? 'passed';
}

/**
 * The modules a step ends up needing when that is known before any load: every module of `modules`, and per group the
 * first member already loaded, if no member before it would have to be tried. Undefined otherwise.
 */
export function staticModules(step: Pick<PrereqCheckStep, 'modules' | 'modules_any_of'>, present: ReadonlySet<string>): string[] | undefined {
  const chosen: string[] = [];
  for (const group of step.modules_any_of) {
    if (group.length === 0 || !present.has(group[0])) return undefined;
    chosen.push(group[0]);
  }
  return [...step.modules, ...chosen];
}

/**
 * Loads the modules the node lacks as one command (NodeShell.runInOrder), in the order separate `modprobe`s ran: the
 * required ones until the first that fails; then per group its members until one loads (a member already loaded
 * ends the group without a load); then, when something was to be loaded and `/dev/kvm` is required, `test -c
 * /dev/kvm` again. Each `modprobe` reports its own status and message; a part after a failure that stops the step
 * does not run, so no module is loaded that separate commands would not have loaded. `then` (with its stdin) runs
 * last, only when every load and the /dev/kvm read succeeded.
 */
async function loadModules(shell: NodeShell, step: PrereqCheckStep, present: Set<string>, modprobe: string, then?: { command: Command; stdin: string }) {
  const parts: OrderedPart[] = [];
  const partOf = new Map<string, number>();
  const required: number[] = [];
  const add = (module: string, when: OrderedPart['when']) => {
    partOf.set(module, parts.length);
    parts.push({ command: sh`${modprobe} ${module}`, when });
    return parts.length - 1;
  };
  for (const module of step.modules) {
    if (!present.has(module) && !partOf.has(module)) required.push(add(module, { ok: [...required] }));
  }
  const groups: number[][] = [];
  for (const group of step.modules_any_of) {
    const tried: number[] = [];
    let satisfied = false;
    for (const module of group) {
      if (present.has(module)) {
        satisfied = true;
        break;
      }
      tried.push(partOf.get(module) ?? add(module, { ok: [...required], anyOk: [...groups], failed: [...tried] }));
    }
    if (!satisfied) groups.push(tried);
  }
  let kvmPart: number | undefined;
  if (step.require_kvm && parts.length > 0) {
    kvmPart = parts.length;
    parts.push({ command: sh`test -c /dev/kvm`, when: { ok: [...required], anyOk: [...groups] } });
  }
  let writePart: number | undefined;
  if (then && parts.length > 0) {
    writePart = parts.length;
    parts.push({ command: then.command, when: { ok: [...required, ...(kvmPart === undefined ? [] : [kvmPart])], anyOk: [...groups] } });
  }
  const answers = await shell.runInOrder(parts, writePart === undefined ? {} : { stdin: then!.stdin });
  return {
    /** Why `module` could not be loaded, or undefined when it is loaded (before, or by this command). */
    problemOf(module: string): string | undefined {
      if (present.has(module)) return undefined;
      const answer = answers[partOf.get(module) ?? -1];
      if (answer === undefined) return 'not tried (an earlier module failed)';
      if (answer.exitCode === 0) return undefined;
      if (answer.exitCode !== 1) throw transientFailure('CommandFailed', `Node ${shell.name}: modprobe ${module} exited with ${answer.exitCode}: ${answer.stdout.trim().split('\n').slice(-3).join(' | ')}`);
      return (answer.stdout.trim() || `modprobe exited with ${answer.exitCode}`).split('\n').pop();
    },
    /** True when this command loaded `module`. */
    loaded(module: string): boolean {
      return !present.has(module) && answers[partOf.get(module) ?? -1]?.exitCode === 0;
    },
    /** `/dev/kvm` after the loads (undefined when it was not read again). */
    kvmAfter: kvmPart === undefined ? undefined : answers[kvmPart]?.exitCode === 0,
    /** The answer of `then` (undefined when it was not sent, or did not run). */
    written: writePart === undefined ? undefined : answers[writePart],
  };
}

function notCapable(shell: NodeShell, reason: string) {
  return permanentFailure(NodeNotCapable, `Node ${shell.name} cannot run Kata Containers: ${reason}`);
}
