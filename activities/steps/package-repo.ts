/**
 * `package-repo`: adds an apt, dnf or zypper repository with its signing key, then installs pinned packages from it
 * (the seed's method for distributions that do not ship Kata; Kata's own OBS repositories were the 1.x way, KATA.md §2).
 *
 * Order, so that a refusal changes nothing and a re-run after a crash finishes the job:
 *   (1) the worker downloads the key and checks that it is exactly one key with the pinned fingerprint (gpg on the
 *       worker); a wrong fingerprint is refused before anything reaches the node;
 *   (2) a journal on the node names what was there before (`/var/lib/katafleet/repo-<run>-<step>.state`);
 *   (3) the key goes to `/etc/apt/keyrings/katafleet-<name>.asc`, the source to
 *       `/etc/apt/sources.list.d/katafleet-<name>.list` with `signed-by=` that key (the key vouches for this
 *       repository only, not for every source as apt-key did);
 *   (4) `apt-get update` of that source alone: a repository whose `InRelease` the key does not verify is refused
 *       (PackageRepoSignatureInvalid) and the files this attempt wrote are taken away again;
 *   (5) the packages, by package-install's code (pinned versions, dpkg lock handling, marker).
 * dnf and zypper (Fedora/RHEL, openSUSE/SLES): the key goes to `/etc/pki/rpm-gpg/RPM-GPG-KEY-katafleet-<name>` and
 * into the rpm database (`rpm --import`, which both trust for package signatures), the repository to
 * `/etc/yum.repos.d/katafleet-<name>.repo` or `/etc/zypp/repos.d/katafleet-<name>.repo` with `gpgcheck=1`,
 * `repo_gpgcheck=1` and `gpgkey=` that file; (4) is `dnf -y makecache --repo katafleet-<name>` or
 * `zypper --non-interactive refresh katafleet-<name>`: the signed `repomd.xml` must verify with the pinned key.
 * zypper runs without `--gpg-auto-import-keys`: with it, zypper imports whatever key the repository serves
 * (`repomd.xml.key`) and a repository signed by someone else passes; without it, a non-interactive zypper rejects a
 * key it does not already trust, and the pinned one is already in the rpm database.
 * The undo removes the packages this run installed, then the source and the key (file and rpm database entry) if
 * this run created them.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';
import { APT_KEYRINGS_DIR, APT_SOURCES_DIR, RPM_KEYS_DIR, YUM_REPOS_DIR, ZYPP_REPOS_DIR, checkAllowlist, repoUrl } from '../../playbooks/allowlists';
import type { PackageInstallStep, PackageRepoStep } from '../../playbooks/schema';
import { cmd, flag, sh } from '../ssh';
import type { StepOutcome, StepRequest, Undo } from '../node-types';
import type { NodeShell } from './node-shell';
import { dropIntent, writeIntent } from './journal';
import { PACKAGE_MARKER_DIR, PACKAGE_PROGRAMS, installedVersions, packageInstall, packageMarkerPath, purgeInstalled, versionMatches } from './package-install';
import { permanentFailure, transientFailure } from './step-runtime';

const run = promisify(execFile);

/** The downloaded key is not exactly one key with the pinned fingerprint. Never retried: the pin or key_url must change. */
export const PackageRepoKeyMismatch = 'PackageRepoKeyMismatch';
/** The repository's signed metadata does not verify with the pinned key (or is unsigned). Never retried. */
export const PackageRepoSignatureInvalid = 'PackageRepoSignatureInvalid';
/** The key or the repository could not be downloaded (network, HTTP error); retried. */
export const PackageRepoUnreachable = 'PackageRepoUnreachable';

/** The programs package-repo runs besides its package manager's (found by the program probe; all required). */
const REPO_PROGRAMS = ['mkdir', 'chmod', 'chown', 'tee', 'mv', 'rm'] as const;

/** package-repo's package managers. */
export type RepoManager = PackageRepoStep['manager'];

/** The files a step writes for repository `name` with `manager` (apt by default). */
export function repoFiles(name: string, manager: RepoManager = 'apt'): { source: string; key: string } {
  switch (manager) {
    case 'apt':
      return { source: posix.join(APT_SOURCES_DIR, `katafleet-${name}.list`), key: posix.join(APT_KEYRINGS_DIR, `katafleet-${name}.asc`) };
    case 'dnf':
      return { source: posix.join(YUM_REPOS_DIR, `katafleet-${name}.repo`), key: posix.join(RPM_KEYS_DIR, `RPM-GPG-KEY-katafleet-${name}`) };
    case 'zypper':
      return { source: posix.join(ZYPP_REPOS_DIR, `katafleet-${name}.repo`), key: posix.join(RPM_KEYS_DIR, `RPM-GPG-KEY-katafleet-${name}`) };
  }
}

/** The repository id dnf and zypper know it by (the `[section]` of its .repo file). */
export function repoId(name: string): string {
  return `katafleet-${name}`;
}

/** The rpm database's name for an imported key: `gpg-pubkey-` and the last 8 hex digits of its fingerprint, lower case. */
export function rpmKeyName(fingerprint: string): string {
  return `gpg-pubkey-${normalizeFingerprint(fingerprint).slice(-8).toLowerCase()}`;
}

/** The journal of run `runId`'s step `stepId`. */
export function repoJournalPath(runId: string, stepId: string): string {
  return posix.join(PACKAGE_MARKER_DIR, `repo-${runId.slice(0, 12)}-${stepId}.state`);
}

/** Normalised fingerprint: upper case, no spaces. */
export function normalizeFingerprint(fingerprint: string): string {
  return fingerprint.replace(/\s+/g, '').toUpperCase();
}

/** The apt source line: `deb [signed-by=KEY] URL SUITE [COMPONENTS]`, one line with its comment. */
export function aptSourceText(step: Pick<PackageRepoStep, 'name' | 'url' | 'suite' | 'components' | 'key_fingerprint'>): string {
  const { key } = repoFiles(step.name);
  return `# Added by katafleet (package-repo "${step.name}"), key ${normalizeFingerprint(step.key_fingerprint)}\n` +
    `deb [signed-by=${key}] ${step.url} ${step.suite}${step.components.length > 0 ? ` ${step.components.join(' ')}` : ''}\n`;
}

/**
 * The .repo file of a dnf or zypper repository (one section, dnf.conf(5) and zypper's repo file keys): packages and
 * the signed repomd.xml must verify with the pinned key, and a repository that cannot be reached is an error rather
 * than skipped (Fedora's default; zypper skips nothing it was told to refresh).
 */
export function rpmRepoText(step: Pick<PackageRepoStep, 'name' | 'url' | 'key_fingerprint'>, manager: 'dnf' | 'zypper'): string {
  const { key } = repoFiles(step.name, manager);
  return [
    `# Added by katafleet (package-repo "${step.name}"), key ${normalizeFingerprint(step.key_fingerprint)}`,
    `[${repoId(step.name)}]`,
    `name=katafleet ${step.name}`,
    `baseurl=${step.url}`,
    'enabled=1',
    ...(manager === 'zypper' ? ['autorefresh=1', 'type=rpm-md'] : []),
    'gpgcheck=1',
    'repo_gpgcheck=1',
    ...(manager === 'zypper' ? ['pkg_gpgcheck=1'] : ['skip_if_unavailable=False']),
    `gpgkey=file://${key}`,
    '',
  ].join('\n');
}

/** The source file's text for the step's manager. */
export function repoSourceText(step: PackageRepoStep): string {
  return step.manager === 'apt' ? aptSourceText(step) : rpmRepoText(step, step.manager);
}

/** The primary key fingerprints in `gpg --with-colons --show-keys` output (the first `fpr` after each `pub`). */
export function primaryFingerprints(colons: string): string[] {
  const found: string[] = [];
  let wantFpr = false;
  for (const line of colons.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === 'pub') wantFpr = true;
    else if (fields[0] === 'fpr' && wantFpr) {
      found.push(fields[9].toUpperCase());
      wantFpr = false;
    }
  }
  return found;
}

/** The message when the downloaded key is not the pinned one. */
export function keyMismatchMessage(stepId: string, url: string, wanted: string, found: string[]): string {
  const what = found.length === 0 ? 'holds no OpenPGP public key' : found.length > 1 ? `holds ${found.length} keys (${found.join(', ')})` : `is the key ${found[0]}`;
  return `package-repo "${stepId}": ${url} ${what}, but the playbook pins ${normalizeFingerprint(wanted)}; nothing was written to the node — ` +
    'check the key with the repository\'s owner and fix key_fingerprint (or key_url)';
}

/** Downloads the key on the worker and checks it holds exactly the pinned key; returns its armored text. */
export async function fetchPinnedKey(step: PackageRepoStep): Promise<string> {
  const problem = checkAllowlist(step.key_url, repoUrl);
  if (problem !== undefined) throw permanentFailure('StepRefused', `package-repo "${step.id}": key_url is ${problem}; fix it in the playbook`);
  let text: string;
  try {
    const response = await fetch(step.key_url, { redirect: 'follow' });
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`);
    text = await response.text();
  } catch (err) {
    throw transientFailure(PackageRepoUnreachable, `The worker could not download the key ${step.key_url} of package-repo "${step.id}": ${(err as Error).message}; trying again`, err);
  }
  const home = await mkdtemp(join(tmpdir(), 'katafleet-gpg-'));
  try {
    const file = join(home, 'key');
    await writeFile(file, text);
    const shown = await run('gpg', ['--homedir', home, '--batch', '--with-colons', '--show-keys', file], { timeout: 30_000 }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
    const found = primaryFingerprints(shown.stdout);
    if (found.length !== 1 || found[0] !== normalizeFingerprint(step.key_fingerprint)) {
      throw permanentFailure(PackageRepoKeyMismatch, keyMismatchMessage(step.id, step.key_url, step.key_fingerprint, found));
    }
  } finally {
    await rm(home, { recursive: true, force: true });
  }
  if (!/^-----BEGIN PGP PUBLIC KEY BLOCK-----/m.test(text)) {
    throw permanentFailure(PackageRepoKeyMismatch, `package-repo "${step.id}": ${step.key_url} is not an ASCII-armored key (apt's signed-by= and rpm --import need the .asc text); nothing was written to the node`);
  }
  return text;
}

/** The package-install step the packages go through (package-install's apt code, marker and undo). */
function installStep(step: PackageRepoStep): PackageInstallStep {
  return { id: step.id, kind: 'package-install', timeout: step.timeout, action: 'install', packages: step.packages, manager: step.manager, remove_on_rollback: step.remove_on_rollback };
}

/** Runs the step: see the file's header. */
export async function packageRepo(shell: NodeShell, request: StepRequest<PackageRepoStep>): Promise<StepOutcome> {
  const { step, runId } = request;
  const manager = step.manager;
  const { source, key } = repoFiles(step.name, manager);
  const journalPath = repoJournalPath(runId, step.id);
  const sourceText = repoSourceText(step);
  const rpmKey = manager === 'apt' ? undefined : rpmKeyName(step.key_fingerprint);
  const facts = { packageManager: manager, keyFingerprint: normalizeFingerprint(step.key_fingerprint) };

  // (1) Before anything on the node: the key must be the pinned one.
  const keyText = await fetchPinnedKey(step);

  const [currentSource, currentKey, journalText] = await Promise.all([shell.readFile(source), shell.readFile(key), shell.readFile(journalPath)]);
  // The programs it runs, from the probe that came with the reads above: one missing fails the step here, unchanged.
  const bin = await shell.programs(`package-repo "${step.id}"`, [...REPO_PROGRAMS, ...PACKAGE_PROGRAMS[manager]]);
  const keyImported = rpmKey === undefined ? false : await rpmHasKey(shell, rpmKey);
  if (currentSource !== undefined && currentSource !== sourceText && !journalText) {
    throw permanentFailure('PackageRepoConflict', `Node ${shell.name}: ${source} exists with other content; katafleet does not overwrite what it did not write — remove it or give the package-repo step another name. Nothing was changed`);
  }
  // (2) Journal: whether the source, the key file and (rpm) the key in the rpm database were there before this run.
  const journal: Record<string, string> = journalText
    ? Object.fromEntries(journalText.split('\n').filter(Boolean).map((line) => line.split('=') as [string, string]))
    : {
      createdSource: currentSource === undefined ? '1' : '0',
      createdKey: currentKey === undefined ? '1' : '0',
      ...(rpmKey === undefined ? {} : { importedKey: keyImported ? '0' : '1' }),
    };
  if (!journalText) await shell.writeFileAtomic(journalPath, Object.entries(journal).map(([k, v]) => `${k}=${v}\n`).join(''));

  // (3) Key and source, after the intent: the run's undo (derived from the node's journal) removes what this step
  // adds — the packages that were not installed before, the source, the key — not only the packages.
  const wroteFiles = currentSource !== sourceText || currentKey !== keyText || (rpmKey !== undefined && !keyImported);
  const names = step.packages.map((spec) => spec.name);
  const before = await installedVersions(shell, manager, names);
  const missing = step.packages.filter((spec) => !versionMatches(before.get(spec.name) ?? '', spec.version ?? '', manager));
  const intended = repoUndo(step, request.journal ? packageMarkerPath(runId, step.id) : undefined, missing.filter((spec) => !before.has(spec.name)).map((spec) => spec.name), journal, { source, key, rpmKey });
  if (wroteFiles || missing.length > 0) {
    await writeIntent(shell, request, intended, `add repository ${step.url} (${source}) and install ${step.packages.map((spec) => `${spec.name} ${spec.version}`).join(', ')} with ${manager}`, { keepFirst: true });
  }
  if (currentKey !== keyText) {
    const keyDir = manager === 'apt' ? APT_KEYRINGS_DIR : RPM_KEYS_DIR;
    await shell.run(sh`${bin.mkdir} -p ${keyDir} && ${bin.chmod} 0755 ${keyDir}`);
    await shell.writeFileAtomic(key, keyText);
    await shell.run(sh`${bin.chmod} 0644 ${key}`);
  }
  if (currentSource !== sourceText) {
    if (manager !== 'apt') await shell.run(sh`${bin.mkdir} -p ${posix.dirname(source)}`);
    await shell.writeFileAtomic(source, sourceText);
  }
  if (rpmKey !== undefined && !keyImported) await shell.run(cmd(shell.tool('rpm'), [flag('--import'), key]));

  // (4) This source alone, so that its signature is what decides.
  try {
    if (manager === 'apt') await aptUpdateSource(shell, step, journal, { source, key, journalPath });
    else await rpmRefresh(shell, step, journal, { source, key, journalPath, rpmKey: rpmKey! });
  } catch (err) {
    // Refused and taken back: nothing of this step is left for the run's undo.
    await dropIntent(shell, request);
    throw err;
  }

  // (5) The packages (package-install's code; the intent above already covers them).
  const installed = await packageInstall(shell, { ...request, journal: false, step: installStep(step) }).catch((err: Error) => {
    // A package the pinned key did not sign (dnf/zypper check each one with gpgcheck=1).
    if (/GPG check FAILED|Public key for .* is not installed|Signature verification failed|NOKEY|BAD signature/i.test(err.message)) {
      throw permanentFailure(PackageRepoSignatureInvalid, `Node ${shell.name}: a package of ${step.url} is not signed by the pinned key ${normalizeFingerprint(step.key_fingerprint)} (${err.message}); ` +
        'the repository stays configured until the rollback — check the key_fingerprint and the url', err);
    }
    throw err;
  });
  const packages = installed.undo?.kind === 'remove-packages' ? installed.undo.packages : [];
  const changed = installed.changed || wroteFiles || journal.createdSource === '1' || journal.createdKey === '1' || journal.importedKey === '1';
  if (!changed) {
    await shell.run(sh`${bin.rm} -f ${journalPath}`);
    return { changed: false, summary: `repository ${step.name} and ${installed.summary.replace(/^already installed: /, '')} already in place`, facts };
  }
  const undo = repoUndo(step, request.journal ? packageMarkerPath(runId, step.id) : undefined, packages, journal, { source, key, rpmKey });
  const keyWhere = manager === 'apt' ? `signed-by ${key}` : `gpgkey ${key}, imported as ${rpmKey}`;
  return {
    changed: true,
    summary: `added repository ${step.url} (${source}, ${keyWhere}, key ${normalizeFingerprint(step.key_fingerprint)}); ${installed.summary}`,
    undo,
    facts,
  };
}

/** The undo of a package-repo step: `packages` (when remove_on_rollback), and what the journal says this run created. */
function repoUndo(step: PackageRepoStep, marker: string | undefined, packages: readonly string[], journal: Record<string, string>,
  files: { source: string; key: string; rpmKey?: string }): Undo {
  return {
    kind: 'remove-package-repo',
    stepId: step.id,
    packages: step.remove_on_rollback ? [...packages] : [],
    ...(marker !== undefined ? { marker } : {}),
    ...(journal.createdSource === '1' ? { source: files.source } : {}),
    ...(journal.createdKey === '1' ? { key: files.key } : {}),
    ...(step.manager !== 'apt' ? { manager: step.manager } : {}),
    ...(journal.importedKey === '1' && files.rpmKey !== undefined ? { rpmKey: files.rpmKey } : {}),
  };
}

/** Whether the rpm database holds the key `name` (`gpg-pubkey-XXXXXXXX`); read as the login user. */
async function rpmHasKey(shell: NodeShell, name: string): Promise<boolean> {
  const result = await shell.run(cmd(shell.userTool('rpm'), [flag('-q'), name]), { asRoot: false, allowExitCodes: [0, 1] });
  return result.exitCode === 0;
}

interface RepoPaths {
  source: string;
  key: string;
  journalPath: string;
}

/** apt-get update of the step's source alone; refuses (and takes back) when the pinned key does not verify it. */
async function aptUpdateSource(shell: NodeShell, step: PackageRepoStep, journal: Record<string, string>, paths: RepoPaths): Promise<void> {
  const update = await shell.run(sh`${shell.tool('apt-get')} update -o ${`Dir::Etc::sourcelist=${paths.source}`} -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0`,
    { allowExitCodes: [...Array(256).keys()], timeoutMs: 5 * 60_000 });
  const output = `${update.stdout}\n${update.stderr}`;
  const signatureProblem = output.split('\n').find((line) => /NO_PUBKEY|is not signed|signatures couldn't be verified|signatures were invalid|BADSIG|Signed-By|The repository .* is not signed/.test(line));
  if (update.exitCode !== 0 || signatureProblem !== undefined) {
    const unreachable = /Failed to fetch|Could not connect|Connection refused|Temporary failure resolving|404\s+Not Found/.test(output) && signatureProblem === undefined;
    await takeBack(shell, journal, paths);
    const lines = output.split('\n').filter((line) => /^(E|W|Err):/.test(line.trim())).slice(-3).join('; ');
    if (unreachable) throw transientFailure(PackageRepoUnreachable, `Node ${shell.name}: apt-get update could not fetch ${step.url} (${lines}); the source and key were taken back; trying again`);
    throw permanentFailure(PackageRepoSignatureInvalid, `Node ${shell.name}: the repository ${step.url} does not verify with the pinned key ${normalizeFingerprint(step.key_fingerprint)} (${signatureProblem?.trim() ?? lines}); ` +
      'the source and key were taken back — check the key_fingerprint and the url');
  }
}

/** The refresh command of the step's repository alone (dnf makecache, zypper refresh). */
export function rpmRefreshCommand(manager: 'dnf' | 'zypper', name: string, program: string = manager) {
  return manager === 'dnf'
    ? cmd(program, [flag('-y'), 'makecache', flag('--repo'), repoId(name)])
    : cmd(program, [flag('--non-interactive'), 'refresh', repoId(name)]);
}

/** What dnf and zypper print when a repository's repomd.xml is unsigned or signed by another key. */
const RPM_SIGNATURE_PROBLEM = /GPG signature verification error|GPG verification is enabled, but GPG signature is not available|Bad GPG signature|Signature verification failed|is unsigned|New repository or package signing key received|reject the key/;
/** What they print when the repository cannot be fetched (connection, DNS, HTTP error on repomd.xml). */
const RPM_UNREACHABLE = /Cannot download repomd\.xml|Curl error|Could not resolve host|Couldn't connect|Connection refused|Download \(curl\) error|Valid metadata not found|Status code: [45]\d\d/;

/** dnf makecache / zypper refresh of the step's repository; refuses (and takes back) when the pinned key does not verify it. */
async function rpmRefresh(shell: NodeShell, step: PackageRepoStep, journal: Record<string, string>, paths: RepoPaths & { rpmKey: string }): Promise<void> {
  const manager = step.manager as 'dnf' | 'zypper';
  const result = await shell.run(rpmRefreshCommand(manager, step.name, shell.tool(manager)), { allowExitCodes: [...Array(256).keys()], timeoutMs: 5 * 60_000 });
  if (result.exitCode === 0) return;
  const output = `${result.stdout}\n${result.stderr}`;
  const lines = output.split('\n').map((l) => l.trim()).filter(Boolean);
  const signatureProblem = lines.find((line) => RPM_SIGNATURE_PROBLEM.test(line));
  await takeBack(shell, journal, paths);
  const detail = (lines.filter((l) => /^(Error|error|Errors|- |\[|Repository .* is invalid)/.test(l)).slice(-3).join('; ') || lines.slice(-3).join('; '));
  if (signatureProblem === undefined && RPM_UNREACHABLE.test(output)) {
    throw transientFailure(PackageRepoUnreachable, `Node ${shell.name}: ${result.command} could not fetch ${step.url} (${detail}); the repository and key were taken back; trying again`);
  }
  throw permanentFailure(PackageRepoSignatureInvalid, `Node ${shell.name}: the repository ${step.url} does not verify with the pinned key ${normalizeFingerprint(step.key_fingerprint)} ` +
    `(${signatureProblem ?? detail}); the repository and key were taken back — check the key_fingerprint and the url`);
}

/** Removes the source and key this run created (after a refused update), the key it imported into rpm, and the journal. */
async function takeBack(shell: NodeShell, journal: Record<string, string>, paths: RepoPaths & { rpmKey?: string }): Promise<void> {
  const files = [...(journal.createdSource === '1' ? [paths.source] : []), ...(journal.createdKey === '1' ? [paths.key] : []), paths.journalPath];
  if (journal.importedKey === '1' && paths.rpmKey !== undefined) await removeRpmKey(shell, paths.rpmKey);
  await shell.run(sh`${shell.tool('rm')} -f ${files}`);
}

/** `rpm -e gpg-pubkey-XXXXXXXX` when the rpm database holds it. */
async function removeRpmKey(shell: NodeShell, name: string): Promise<boolean> {
  if (!(await rpmHasKey(shell, name))) return false;
  await shell.run(cmd(shell.tool('rpm'), [flag('-e'), name]));
  return true;
}

/** The undo: the packages this run installed, then the source and key it created, then apt's view of them. */
export async function removePackageRepo(shell: NodeShell, undo: Extract<Undo, { kind: 'remove-package-repo' }>): Promise<string> {
  const done: string[] = [];
  if (undo.packages.length > 0) {
    const removed = await purgeInstalled(shell, undo.manager ?? 'apt', undo.packages);
    done.push(removed.length > 0 ? `removed ${removed.join(', ')}` : `packages ${undo.packages.join(', ')} already removed`);
  }
  const files = [undo.marker, undo.source, undo.key].filter((file): file is string => file !== undefined);
  if (files.length > 0) await shell.run(sh`${shell.tool('rm')} -f ${files}`);
  if (undo.source) done.push(`removed ${undo.source}`);
  if (undo.key) done.push(`removed ${undo.key}`);
  if (undo.rpmKey && (await removeRpmKey(shell, undo.rpmKey))) done.push(`removed ${undo.rpmKey} from the rpm database`);
  await shell.run(sh`${shell.tool('rm')} -f ${PACKAGE_MARKER_DIR}/repo-*-${undo.stepId}.state`);
  return done.length > 0 ? done.join('; ') : 'nothing to remove';
}

/** What differs from the step's state (drift check): the source line, the key file, the pinned packages. */
export async function checkPackageRepo(shell: NodeShell, step: PackageRepoStep): Promise<string[]> {
  const { source, key } = repoFiles(step.name, step.manager);
  const [currentSource, keyExists] = await Promise.all([shell.readFile(source), shell.exists(key)]);
  const found: string[] = [];
  const sourceKind = step.manager === 'apt' ? 'apt source' : `${step.manager} repository`;
  if (currentSource === undefined) found.push(`${sourceKind} ${source} is missing`);
  else if (currentSource !== repoSourceText(step)) found.push(`${sourceKind} ${source} differs from the playbook's repository`);
  if (!keyExists) found.push(`repository key ${key} is missing`);
  else if (step.manager !== 'apt' && !(await rpmHasKey(shell, rpmKeyName(step.key_fingerprint)))) found.push(`repository key ${rpmKeyName(step.key_fingerprint)} is not in the rpm database`);
  const installed = await installedVersions(shell, step.manager, step.packages.map((spec) => spec.name));
  for (const spec of step.packages) {
    const version = installed.get(spec.name);
    if (version === undefined) found.push(`package ${spec.name} is not installed (want ${spec.version})`);
    else if (spec.version !== undefined && !versionMatches(version, spec.version, step.manager)) found.push(`package ${spec.name} is ${version}, not ${spec.version}`);
  }
  return found;
}
