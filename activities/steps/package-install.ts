/**
 * `package-install`: installs pinned packages with the node's package manager (apt, dnf or zypper),
 * skipping what is already at the pinned version, or removes them with `action = "remove"`.
 *
 * Before installing, the step writes which packages were absent to a marker file named for the run,
 * so that an attempt retried after a worker crash still knows what this run installed (and what its
 * undo may remove), even though the packages are then already there.
 */
import { posix } from 'node:path';
import { cmd, flag, sh, type Command } from '../ssh';
import type { PackageInstallStep, PackageSpec } from '../../playbooks/schema';
import type { StepOutcome, StepRequest, Undo } from '../node-types';
import type { ProbedProgram } from '../ssh/programs';
import type { NodeShell } from './node-shell';
import { parseDuration } from '../../playbooks/duration';
import { writeIntent } from './journal';
import { activityContext, permanentFailure, timeLeftMs, transientFailure } from './step-runtime';

export type PackageManager = 'apt' | 'dnf' | 'zypper';

/** A pinned version that no configured repository offers. Never retried. */
export const PackageNotAvailable = 'PackageNotAvailable';
/** The package manager failed (a lock, a download error); retried. */
export const PackageInstallFailed = 'PackageInstallFailed';
/** The package sources cannot be reached (mirror down, network); retried. */
export const PackageRepositoryUnreachable = 'PackageRepositoryUnreachable';
/** Another process holds the dpkg lock longer than the step may wait for it; retried. The message names the holder. */
export const DpkgLockBusy = 'DpkgLockBusy';
/** The node has none of apt-get, dnf, zypper. Never retried. */
export const PackageManagerMissing = 'PackageManagerMissing';

/** Where markers of the packages a run installed are kept on the node. */
export const PACKAGE_MARKER_DIR = '/var/lib/katafleet';

/** The marker file naming the packages `runId`'s step `stepId` installed. */
export function packageMarkerPath(runId: string, stepId: string): string {
  return posix.join(PACKAGE_MARKER_DIR, `installed-${runId.slice(0, 12)}-${stepId}.packages`);
}

/** name → installed version of the packages that are installed. */
export type InstalledVersions = Map<string, string>;

/** Parses `NAME|STATUS|VERSION` lines (dpkg-query or rpm -q with katafleet's format). */
export function parseInstalled(output: string): InstalledVersions {
  const installed: InstalledVersions = new Map();
  for (const line of output.split('\n')) {
    const [name, status, version] = line.trim().split('|');
    if (name && version && /^(ii|hi|installed)/.test(status ?? '')) installed.set(name, version);
  }
  return installed;
}

/** Whether an installed version satisfies the pinned one (RPM versions may carry a release after "-"). */
export function versionMatches(installed: string, wanted: string, manager: PackageManager): boolean {
  if (installed === wanted) return true;
  return manager !== 'apt' && (installed.startsWith(`${wanted}-`) || installed.replace(/^0:/, '') === wanted);
}

/** The programs each package manager's steps run (found by the program probe). */
export const PACKAGE_PROGRAMS = {
  apt: ['apt-get', 'apt-cache', 'dpkg-query'],
  dnf: ['dnf', 'rpm'],
  zypper: ['zypper', 'rpm'],
} as const satisfies Record<PackageManager, readonly ProbedProgram[]>;

/**
 * The package manager of the node: the configured one, or with `auto` the first of apt-get, dnf, zypper the program
 * probe found (no command of its own once the connection has been probed).
 */
export async function detectPackageManager(shell: NodeShell, configured: PackageInstallStep['manager']): Promise<PackageManager> {
  if (configured !== 'auto') return configured;
  const found = await shell.programs('package-install', [], ['apt-get', 'dnf', 'zypper']);
  if (found['apt-get'] !== undefined) return 'apt';
  if (found.dnf !== undefined) return 'dnf';
  if (found.zypper !== undefined) return 'zypper';
  throw permanentFailure(PackageManagerMissing, `Node ${shell.name} has none of apt-get, dnf, zypper (searched ${shell.rootPath} as root): set manager in the package-install step, or install the packages another way`);
}

/**
 * The manager's programs for a step: each one the node lacks fails it with ProgramMissing before it changes anything.
 */
export async function packagePrograms(shell: NodeShell, manager: PackageManager, step: string): Promise<void> {
  await shell.programs(step, PACKAGE_PROGRAMS[manager]);
}

export async function installedVersions(shell: NodeShell, manager: PackageManager, names: readonly string[]): Promise<InstalledVersions> {
  const query = manager === 'apt'
    ? sh`${shell.userTool('dpkg-query')} -W -f='\${Package}|\${db:Status-Abbrev}|\${Version}\\n' ${names}`
    : sh`${shell.userTool('rpm')} -q --qf '%{NAME}|installed|%{VERSION}-%{RELEASE}\\n' ${names}`;
  const result = await shell.run(query, { asRoot: false, allowExitCodes: manager === 'apt' ? [0, 1] : [...Array(names.length + 1).keys()] });
  return parseInstalled(result.stdout);
}

function pinned(manager: PackageManager, spec: PackageSpec): string {
  return manager === 'dnf' ? `${spec.name}-${spec.version}` : `${spec.name}=${spec.version}`;
}

/** How long apt waits for the dpkg lock before it gives up (bounded: never the whole step). */
const DPKG_LOCK_WAIT_S = 60;

/** `-o DPkg::Lock::Timeout=N`: apt waits at most N seconds for the dpkg lock, then fails naming the holder. */
function lockTimeout(seconds: number): string {
  return `DPkg::Lock::Timeout=${Math.max(1, Math.floor(seconds))}`;
}

function installCommand(shell: NodeShell, manager: PackageManager, specs: readonly PackageSpec[], lockWaitS = DPKG_LOCK_WAIT_S): Command {
  const packages = specs.map((spec) => pinned(manager, spec));
  switch (manager) {
    case 'apt':
      return sh`DEBIAN_FRONTEND=noninteractive ${shell.tool('apt-get')} install -y --allow-downgrades -o ${lockTimeout(lockWaitS)} -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ${packages}`;
    case 'dnf':
      return cmd(shell.tool('dnf'), [flag('-y'), 'install', ...packages]);
    case 'zypper':
      return cmd(shell.tool('zypper'), [flag('--non-interactive'), 'install', flag('--oldpackage'), ...packages]);
  }
}

/** Removes packages; `purge` also deletes their configuration files (apt), for packages that were never there before. */
export function removeCommand(shell: NodeShell, manager: PackageManager, names: readonly string[], purge: boolean, lockWaitS = DPKG_LOCK_WAIT_S): Command {
  switch (manager) {
    case 'apt':
      return sh`DEBIAN_FRONTEND=noninteractive ${shell.tool('apt-get')} ${purge ? 'purge' : 'remove'} -y -o ${lockTimeout(lockWaitS)} ${names}`;
    case 'dnf':
      return cmd(shell.tool('dnf'), [flag('-y'), 'remove', ...names]);
    case 'zypper':
      return cmd(shell.tool('zypper'), [flag('--non-interactive'), 'remove', ...names]);
  }
}

/**
 * Removes those of `names` that are installed, with their configuration files (they were not there
 * before katafleet installed them). Returns `name version` of each removed package.
 */
export async function purgeInstalled(shell: NodeShell, manager: PackageManager, names: readonly string[]): Promise<string[]> {
  await packagePrograms(shell, manager, 'the removal of packages');
  const installed = await installedVersions(shell, manager, names);
  const present = names.filter((name) => installed.has(name));
  if (present.length > 0) await runPackageManager(shell, removeCommand(shell, manager, present, true), 'removal', PACKAGE_COMMAND_TIMEOUT_MS);
  return present.map((name) => `${name} ${installed.get(name)}`);
}

/** Installs again those of `packages` that are missing, at the given versions (undo of a remove). Returns `name version` of each. */
export async function reinstallPackages(shell: NodeShell, manager: PackageManager, packages: readonly { name: string; version: string }[]): Promise<string[]> {
  await packagePrograms(shell, manager, 'the reinstall of packages');
  const installed = await installedVersions(shell, manager, packages.map((p) => p.name));
  const missing = packages.filter((p) => !versionMatches(installed.get(p.name) ?? '', p.version, manager));
  if (missing.length === 0) return [];
  if (manager === 'apt') await ensureAptCandidates(shell, missing, 5 * 60_000);
  await runPackageManager(shell, installCommand(shell, manager, missing), 'install', PACKAGE_COMMAND_TIMEOUT_MS);
  return missing.map((p) => `${p.name} ${p.version}`);
}

/** The longest a package command of an undo may run (an undo's start-to-close covers it; see nodeWorkflow). */
export const PACKAGE_COMMAND_TIMEOUT_MS = 10 * 60_000;

/** True when every pinned version is offered by the node's repositories (apt only; dnf/zypper report it on install). */
async function aptHasCandidates(shell: NodeShell, specs: readonly PackageSpec[]): Promise<boolean> {
  const result = await shell.run(sh`${shell.userTool('apt-cache')} show --no-all-versions ${specs.map((spec) => pinned('apt', spec))} >/dev/null`, { asRoot: false, allowExitCodes: [0, 100] });
  return result.exitCode === 0;
}

async function ensureAptCandidates(shell: NodeShell, specs: readonly PackageSpec[], timeoutMs: number): Promise<void> {
  if (await aptHasCandidates(shell, specs)) return;
  const update = await shell.run(sh`${shell.tool('apt-get')} update -o ${lockTimeout(Math.min(DPKG_LOCK_WAIT_S, timeoutMs / 3000))}`, { allowExitCodes: [0, 100], timeoutMs: Math.max(5_000, timeoutMs) });
  if (/Could not get lock/.test(update.stderr)) throw dpkgLockBusy(shell, update.stderr, 'apt-get update');
  if (await aptHasCandidates(shell, specs)) return;
  const problems = `${update.stdout}\n${update.stderr}`.split('\n').map((l) => l.trim()).filter((l) => /^(E|W|Err):/.test(l));
  const wanted = specs.map((spec) => pinned('apt', spec)).join(', ');
  if (problems.some((l) => /^Err:|Failed to fetch|Could not connect|Connection refused|Temporary failure|Unable to connect/.test(l))) {
    throw transientFailure(PackageRepositoryUnreachable,
      `Node ${shell.name}: apt-get update could not reach its package sources (${problems.slice(-3).join('; ')}), so ${wanted} cannot be installed; nothing was installed`);
  }
  throw permanentFailure(PackageNotAvailable,
    `Node ${shell.name}: ${wanted} not offered by its apt sources after apt-get update${problems.length > 0 ? ` (${problems.slice(-3).join('; ')})` : ''} — ` +
    'check the repository in /etc/apt/sources.list.d and the pinned versions in the playbook');
}

export async function packageInstall(shell: NodeShell, request: StepRequest<PackageInstallStep>): Promise<StepOutcome> {
  const started = Date.now();
  const { step } = request;
  // Inner timeouts come from the time this attempt has left, so no command outlives the step's start-to-close.
  const budget = () => timeLeftMs(started, parseDuration(step.timeout), 20_000);
  const manager = await detectPackageManager(shell, step.manager);
  await packagePrograms(shell, manager, `${step.kind} "${step.id}"`);
  const names = step.packages.map((spec) => spec.name);
  const before = await installedVersions(shell, manager, names);
  const facts = { packageManager: manager };

  if (step.action === 'remove') {
    const present = names.filter((name) => before.has(name));
    if (present.length === 0) return { changed: false, summary: `not installed: ${names.join(', ')}`, facts };
    const undo: Undo = { kind: 'reinstall-packages', stepId: step.id, manager, packages: present.map((name) => ({ name, version: before.get(name) ?? '' })) };
    await writeIntent(shell, request, undo, `remove packages ${present.map((name) => `${name} ${before.get(name)}`).join(', ')}`);
    await runPackageManager(shell, removeCommand(shell, manager, present, false, lockWait(budget())), 'remove', budget());
    return { changed: true, summary: `removed ${present.map((name) => `${name} ${before.get(name)}`).join(', ')}`, undo, facts };
  }

  const unpinned = step.packages.filter((spec) => spec.version === undefined).map((spec) => spec.name);
  if (unpinned.length > 0) {
    throw permanentFailure('PackageVersionMissing', `package-install "${step.id}": ${unpinned.join(', ')} must have a pinned version to install`);
  }
  const marker = packageMarkerPath(request.runId, step.id);
  const recorded = ((await shell.readFile(marker)) ?? '').split('\n').filter(Boolean);
  const missing = step.packages.filter((spec) => !versionMatches(before.get(spec.name) ?? '', spec.version ?? '', manager));
  const undoFor = (installed: readonly string[]): Undo | undefined =>
    step.remove_on_rollback && installed.length > 0 ? { kind: 'remove-packages', stepId: step.id, packages: [...installed], manager, ...(request.journal ? { marker } : {}) } : undefined;

  if (missing.length === 0) {
    const summary = `already installed: ${step.packages.map((spec) => `${spec.name} ${before.get(spec.name)}`).join(', ')}`;
    // A marker of this run means an earlier attempt installed them and then lost its result (worker crash).
    if (recorded.length > 0) return { changed: true, summary: `${summary} (by an earlier attempt of this run)`, undo: undoFor(recorded), facts };
    return { changed: false, summary, facts };
  }

  if (manager === 'apt') await ensureAptCandidates(shell, missing, Math.min(5 * 60_000, budget() / 2));
  const newlyInstalled = [...new Set([...recorded, ...missing.filter((spec) => !before.has(spec.name)).map((spec) => spec.name)])];
  if (newlyInstalled.length > recorded.length) {
    await shell.writeFileAtomic(marker, newlyInstalled.map((name) => `${name}\n`).join(''), `${marker}.${activityContext()?.info.attempt ?? 1}.tmp`);
  }
  const intended = undoFor(newlyInstalled);
  if (intended) await writeIntent(shell, request, intended, `install ${missing.map((spec) => `${spec.name} ${spec.version}`).join(', ')} with ${manager}`);
  await runPackageManager(shell, installCommand(shell, manager, missing, lockWait(budget())), 'install', budget());

  const after = await installedVersions(shell, manager, names);
  const wrong = step.packages.filter((spec) => !versionMatches(after.get(spec.name) ?? '', spec.version ?? '', manager));
  if (wrong.length > 0) {
    throw transientFailure(PackageInstallFailed,
      `Node ${shell.name}: after installing, ${wrong.map((spec) => `${spec.name} is ${after.get(spec.name) ?? 'not installed'} (wanted ${spec.version})`).join(', ')}`);
  }
  return {
    changed: true,
    summary: `installed ${missing.map((spec) => `${spec.name} ${spec.version}${before.has(spec.name) ? ` (was ${before.get(spec.name)})` : ''}`).join(', ')} with ${manager}`,
    undo: undoFor(newlyInstalled),
    facts,
  };
}

/** Seconds apt may wait for the dpkg lock out of `budgetMs`: at most a third of it, at most {@link DPKG_LOCK_WAIT_S}. */
function lockWait(budgetMs: number): number {
  return Math.min(DPKG_LOCK_WAIT_S, budgetMs / 3000);
}

/** DpkgLockBusy naming the holder apt reported ("It is held by process 1234 (apt-get)"). */
function dpkgLockBusy(shell: NodeShell, output: string, what: string): Error {
  const holder = /held by process (\d+) \(([^)]*)\)/.exec(output);
  return transientFailure(DpkgLockBusy,
    `Node ${shell.name}: ${what} gave up waiting for the dpkg lock: ${holder ? `it is held by process ${holder[1]} (${holder[2]})` : 'another package manager holds it'}; ` +
    'nothing was installed or removed by this attempt — the step is retried, or finish or stop that process on the node');
}

/** Runs an install or remove, at most `timeoutMs`; a failure names the package manager's own error lines. */
async function runPackageManager(shell: NodeShell, command: Command, what: string, timeoutMs: number): Promise<void> {
  const result = await shell.run(command, { allowExitCodes: [...Array(256).keys()], timeoutMs: Math.max(5_000, timeoutMs) });
  if (result.exitCode === 0) return;
  const output = `${result.stdout}\n${result.stderr}`;
  if (/Could not get lock|Unable to acquire the dpkg frontend lock/.test(output)) throw dpkgLockBusy(shell, output, `package ${what}`);
  const errors = output.split('\n').map((l) => l.trim()).filter((l) => /^(E:|Error|error:|Problem)/.test(l));
  const detail = (errors.length > 0 ? errors : output.trim().split('\n').slice(-3)).join('; ');
  const notFound = /Version '.*' for '.*' was not found|Unable to locate package|No match for argument|not found in package names/.test(output);
  // zypper reports a package it could not see because its repository was unreachable as not found (exit 104), so an
  // unreachable source decides first: retried, not a permanent PackageNotAvailable.
  const unreachable = /Unable to fetch|Failed to fetch|Could not connect|Couldn't connect|Connection refused|Connection failed|Temporary failure resolving|Cannot download|Curl error/.test(output);
  const message = `Node ${shell.name}: package ${what} failed with exit code ${result.exitCode} (${result.command}): ${detail}`;
  if (notFound && !unreachable) throw permanentFailure(PackageNotAvailable, message);
  throw transientFailure(unreachable ? PackageRepositoryUnreachable : PackageInstallFailed, unreachable ? `${message}; the package sources cannot be reached` : message);
}
