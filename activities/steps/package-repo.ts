/**
 * `package-repo`: adds an apt repository with its signing key, then installs pinned packages from it (the seed's
 * method for distributions that do not ship Kata; Kata's own OBS repositories were the 1.x way, KATA.md §2).
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
 * The undo removes the packages this run installed, then the source and the key if this run created them.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';
import { APT_KEYRINGS_DIR, APT_SOURCES_DIR, checkAllowlist, repoUrl } from '../../playbooks/allowlists';
import type { PackageInstallStep, PackageRepoStep } from '../../playbooks/schema';
import { sh } from '../ssh';
import type { StepOutcome, StepRequest, Undo } from '../node-types';
import type { NodeShell } from './node-shell';
import { PACKAGE_MARKER_DIR, installedVersions, packageInstall, purgeInstalled, versionMatches } from './package-install';
import { permanentFailure, transientFailure } from './step-runtime';

const run = promisify(execFile);

/** The downloaded key is not exactly one key with the pinned fingerprint. Never retried: the pin or key_url must change. */
export const PackageRepoKeyMismatch = 'PackageRepoKeyMismatch';
/** The repository's signed metadata does not verify with the pinned key (or is unsigned). Never retried. */
export const PackageRepoSignatureInvalid = 'PackageRepoSignatureInvalid';
/** The key or the repository could not be downloaded (network, HTTP error); retried. */
export const PackageRepoUnreachable = 'PackageRepoUnreachable';
/** dnf and zypper repositories: in the schema, not implemented yet. */
export const PackageRepoUnsupported = 'PackageRepoUnsupported';

/** The files a step writes for repository `name`. */
export function repoFiles(name: string): { source: string; key: string } {
  return { source: posix.join(APT_SOURCES_DIR, `katafleet-${name}.list`), key: posix.join(APT_KEYRINGS_DIR, `katafleet-${name}.asc`) };
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
    throw permanentFailure(PackageRepoKeyMismatch, `package-repo "${step.id}": ${step.key_url} is not an ASCII-armored key (apt's signed-by= needs .asc text or a binary .gpg keyring); nothing was written to the node`);
  }
  return text;
}

/** The package-install step the packages go through (package-install's apt code, marker and undo). */
function installStep(step: PackageRepoStep): PackageInstallStep {
  return { id: step.id, kind: 'package-install', timeout: step.timeout, action: 'install', packages: step.packages, manager: 'apt', remove_on_rollback: step.remove_on_rollback };
}

/** Runs the step: see the file's header. */
export async function packageRepo(shell: NodeShell, request: StepRequest<PackageRepoStep>): Promise<StepOutcome> {
  const { step, runId } = request;
  if (step.manager !== 'apt') {
    throw permanentFailure(PackageRepoUnsupported, `package-repo "${step.id}": manager "${step.manager}" is not implemented yet (only apt); add the repository another way and use a package-install step`);
  }
  const { source, key } = repoFiles(step.name);
  const journalPath = repoJournalPath(runId, step.id);
  const sourceText = aptSourceText(step);

  // (1) Before anything on the node: the key must be the pinned one.
  const keyText = await fetchPinnedKey(step);

  const [currentSource, currentKey, journalText] = await Promise.all([shell.readFile(source), shell.readFile(key), shell.readFile(journalPath)]);
  if (currentSource !== undefined && currentSource !== sourceText && !journalText) {
    throw permanentFailure('PackageRepoConflict', `Node ${shell.name}: ${source} exists with other content; katafleet does not overwrite what it did not write — remove it or give the package-repo step another name. Nothing was changed`);
  }
  // (2) Journal: whether the source and key were there before this run.
  const journal = journalText
    ? Object.fromEntries(journalText.split('\n').filter(Boolean).map((line) => line.split('=') as [string, string]))
    : { createdSource: currentSource === undefined ? '1' : '0', createdKey: currentKey === undefined ? '1' : '0' };
  if (!journalText) await shell.writeFileAtomic(journalPath, `createdSource=${journal.createdSource}\ncreatedKey=${journal.createdKey}\n`);

  // (3) Key and source.
  const wroteFiles = currentSource !== sourceText || currentKey !== keyText;
  if (currentKey !== keyText) {
    await shell.run(sh`mkdir -p ${APT_KEYRINGS_DIR} && chmod 0755 ${APT_KEYRINGS_DIR}`);
    await shell.writeFileAtomic(key, keyText);
    await shell.run(sh`chmod 0644 ${key}`);
  }
  if (currentSource !== sourceText) await shell.writeFileAtomic(source, sourceText);

  // (4) This source alone, so that its signature is what decides.
  const update = await shell.run(sh`apt-get update -o ${`Dir::Etc::sourcelist=${source}`} -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0`,
    { allowExitCodes: [...Array(256).keys()], timeoutMs: 5 * 60_000 });
  const output = `${update.stdout}\n${update.stderr}`;
  const signatureProblem = output.split('\n').find((line) => /NO_PUBKEY|is not signed|signatures couldn't be verified|signatures were invalid|BADSIG|Signed-By|The repository .* is not signed/.test(line));
  if (update.exitCode !== 0 || signatureProblem !== undefined) {
    const unreachable = /Failed to fetch|Could not connect|Connection refused|Temporary failure resolving|404\s+Not Found/.test(output) && signatureProblem === undefined;
    await takeBack(shell, journal, source, key, journalPath);
    const lines = output.split('\n').filter((line) => /^(E|W|Err):/.test(line.trim())).slice(-3).join('; ');
    if (unreachable) throw transientFailure(PackageRepoUnreachable, `Node ${shell.name}: apt-get update could not fetch ${step.url} (${lines}); the source and key were taken back; trying again`);
    throw permanentFailure(PackageRepoSignatureInvalid, `Node ${shell.name}: the repository ${step.url} does not verify with the pinned key ${normalizeFingerprint(step.key_fingerprint)} (${signatureProblem?.trim() ?? lines}); ` +
      'the source and key were taken back — check the key_fingerprint and the url');
  }

  // (5) The packages.
  const installed = await packageInstall(shell, { ...request, step: installStep(step) });
  const packages = installed.undo?.kind === 'remove-packages' ? installed.undo.packages : [];
  const createdSource = journal.createdSource === '1';
  const createdKey = journal.createdKey === '1';
  const changed = installed.changed || wroteFiles || createdSource || createdKey;
  if (!changed) {
    await shell.run(sh`rm -f ${journalPath}`);
    return { changed: false, summary: `repository ${step.name} and ${installed.summary.replace(/^already installed: /, '')} already in place`, facts: { packageManager: 'apt', keyFingerprint: normalizeFingerprint(step.key_fingerprint) } };
  }
  const undo: Undo = {
    kind: 'remove-package-repo',
    stepId: step.id,
    packages: step.remove_on_rollback ? packages : [],
    ...(installed.undo?.kind === 'remove-packages' && installed.undo.marker ? { marker: installed.undo.marker } : {}),
    ...(createdSource ? { source } : {}),
    ...(createdKey ? { key } : {}),
  };
  return {
    changed: true,
    summary: `added repository ${step.url} (${source}, signed-by ${key}, key ${normalizeFingerprint(step.key_fingerprint)}); ${installed.summary}`,
    undo,
    facts: { packageManager: 'apt', keyFingerprint: normalizeFingerprint(step.key_fingerprint) },
  };
}

/** Removes the source and key this run created (after a refused update), and the journal. */
async function takeBack(shell: NodeShell, journal: Record<string, string>, source: string, key: string, journalPath: string): Promise<void> {
  const files = [...(journal.createdSource === '1' ? [source] : []), ...(journal.createdKey === '1' ? [key] : []), journalPath];
  await shell.run(sh`rm -f ${files}`);
}

/** The undo: the packages this run installed, then the source and key it created, then apt's view of them. */
export async function removePackageRepo(shell: NodeShell, undo: Extract<Undo, { kind: 'remove-package-repo' }>): Promise<string> {
  const done: string[] = [];
  if (undo.packages.length > 0) {
    const removed = await purgeInstalled(shell, 'apt', undo.packages);
    done.push(removed.length > 0 ? `removed ${removed.join(', ')}` : `packages ${undo.packages.join(', ')} already removed`);
  }
  const files = [undo.marker, undo.source, undo.key].filter((file): file is string => file !== undefined);
  if (files.length > 0) await shell.run(sh`rm -f ${files}`);
  if (undo.source) done.push(`removed ${undo.source}`);
  if (undo.key) done.push(`removed ${undo.key}`);
  await shell.run(sh`rm -f ${PACKAGE_MARKER_DIR}/repo-*-${undo.stepId}.state`);
  return done.length > 0 ? done.join('; ') : 'nothing to remove';
}

/** What differs from the step's state (drift check): the source line, the key file, the pinned packages. */
export async function checkPackageRepo(shell: NodeShell, step: PackageRepoStep): Promise<string[]> {
  const { source, key } = repoFiles(step.name);
  const [currentSource, keyExists] = await Promise.all([shell.readFile(source), shell.exists(key)]);
  const found: string[] = [];
  if (currentSource === undefined) found.push(`apt source ${source} is missing`);
  else if (currentSource !== aptSourceText(step)) found.push(`apt source ${source} differs from the playbook's repository`);
  if (!keyExists) found.push(`repository key ${key} is missing`);
  const installed = await installedVersions(shell, 'apt', step.packages.map((spec) => spec.name));
  for (const spec of step.packages) {
    const version = installed.get(spec.name);
    if (version === undefined) found.push(`package ${spec.name} is not installed (want ${spec.version})`);
    else if (spec.version !== undefined && !versionMatches(version, spec.version, 'apt')) found.push(`package ${spec.name} is ${version}, not ${spec.version}`);
  }
  return found;
}
