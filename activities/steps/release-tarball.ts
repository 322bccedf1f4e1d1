/**
 * `release-tarball`: installs a Kata Containers static release the way upstream ships it
 * (`kata-static-<version>-<arch>.tar.{xz,zst}`, members `./opt/kata/...`; reality/KATA.md §1), side by side:
 *
 *   /opt/kata-releases/<version>/opt/kata/…        the extracted tree (+ `.katafleet-release`, its marker)
 *   /opt/kata → /opt/kata-releases/<version>/opt/kata   a symlink, switched with `ln -sfn` + `mv -T` (one rename)
 *   /usr/local/bin/{kata-runtime,containerd-shim-kata-v2} → /opt/kata/bin/…   kata-manager-style links
 *
 * Side effects are few and ordered so that a re-run after a crash finishes the job: (1) a journal file names
 * what was there before (the previous `/opt/kata` target, whether the version directory and links existed);
 * (2) the tarball is checked (sha256, member paths) and extracted into a temporary directory, renamed into
 * place; (3) `/opt/kata` is switched; (4) the links are made. The undo reads nothing from the node's past but
 * its own record: it switches `/opt/kata` back (or removes it), removes the links and version directory it
 * created, and deletes the journal.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { checkAllowlist, KATA_LINK_DIR, KATA_RELEASES_DIR, kataVersion, releaseUrl } from '../../playbooks/allowlists';
import { KATA_ARCHES, type KataArch, type ReleaseTarballStep } from '../../playbooks/schema';
import { flag, sh, type Command } from '../ssh';
import type { ProbedProgram } from '../ssh/programs';
import type { StepOutcome, StepRequest, Undo } from '../node-types';
import { dropIntent, intentWrite, printText, writeIntent } from './journal';
import type { NodeShell, PartResult } from './node-shell';
import { permanentFailure, transientFailure, whileHeartbeating } from './step-runtime';

/** `/opt/kata` (or a link in /usr/local/bin) is something katafleet did not make: never overwritten. */
export const KataInstallConflict = 'KataInstallConflict';
/** The downloaded tarball's sha256 is not the pinned one. Never retried: the pin or the URL must change. */
export const ReleaseChecksumMismatch = 'ReleaseChecksumMismatch';
/** The playbook pins no sha256 for the node's architecture, or the architecture has no Kata release. */
export const ReleaseArchUnsupported = 'ReleaseArchUnsupported';
/** The tarball could not be downloaded (network, HTTP error); retried. */
export const ReleaseDownloadFailed = 'ReleaseDownloadFailed';
/** The tarball holds members outside `./opt/kata/`, or is not a readable tar. Never retried. */
export const ReleaseTarballUnsafe = 'ReleaseTarballUnsafe';

/** The path containerd, kata-manager and kata-deploy expect Kata under. */
export const KATA_PATH = '/opt/kata';
/** The links kata-manager makes (KATA.md §1.3), here in /usr/local/bin. */
export const KATA_LINK_NAMES = ['kata-runtime', 'containerd-shim-kata-v2'] as const;
/** Where the step's journal lives on the node, next to package-install's markers. */
export const RELEASE_JOURNAL_DIR = '/var/lib/katafleet';

/** `/opt/kata-releases/<version>`: one directory per installed version. */
export function releaseDir(version: string): string {
  return posix.join(KATA_RELEASES_DIR, version);
}

/** The extracted `opt/kata` tree of `version`; `/opt/kata` points here. */
export function releaseTree(version: string): string {
  return posix.join(releaseDir(version), 'opt', 'kata');
}

/** Whether `path` is a version tree of {@link releaseTree}'s form, e.g. `/opt/kata-releases/3.31.0/opt/kata`. */
export function isReleaseTree(path: string): boolean {
  return /^\/opt\/kata-releases\/[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.+~^_-]*\/opt\/kata$/.test(path) && !path.split('/').includes('..');
}

/** The marker katafleet writes into each tree it extracted: `version=…` and `sha256=…`. */
export function releaseMarker(tree: string): string {
  return posix.join(tree, '.katafleet-release');
}

/** The journal of run `runId`'s step `stepId`: what was there before it changed anything. */
export function releaseJournalPath(runId: string, stepId: string): string {
  return posix.join(RELEASE_JOURNAL_DIR, `release-${runId.slice(0, 12)}-${stepId}.state`);
}

/** The Kata asset name of a machine (`uname -m`), or undefined when Kata publishes none for it. */
export function kataArchOf(machine: string): KataArch | undefined {
  const byMachine: Record<string, KataArch> = { x86_64: 'amd64', amd64: 'amd64', aarch64: 'arm64', arm64: 'arm64', s390x: 's390x', ppc64le: 'ppc64le' };
  return byMachine[machine.trim()];
}

/** `tar.zst` from 3.21.0 (upstream commit ad240a39e6), `tar.xz` before. */
export function releaseExtension(version: string): 'tar.xz' | 'tar.zst' {
  const [major, minor] = version.split('.').map((part) => Number.parseInt(part, 10));
  return major > 3 || (major === 3 && minor >= 21) ? 'tar.zst' : 'tar.xz';
}

/** The URL template with `{version}`, `{arch}`, `{ext}` replaced. */
export function expandReleaseUrl(template: string, version: string, arch: KataArch): string {
  return template.replaceAll('{version}', version).replaceAll('{arch}', arch).replaceAll('{ext}', releaseExtension(version));
}

/**
 * The worker's environment variable naming a mirror of GitHub release downloads (an air-gapped site's own,
 * or the simulated fleet's): when set, a URL under `https://github.com/` is fetched from the same path under
 * it. The pinned sha256 still decides; the mirror only changes where the bytes come from.
 */
export const RELEASE_MIRROR_ENV = 'KATAFLEET_RELEASE_MIRROR';

/** `url` with `https://github.com/` replaced by the mirror (see {@link RELEASE_MIRROR_ENV}), or as is. */
export function mirroredUrl(url: string, mirror: string | undefined = process.env[RELEASE_MIRROR_ENV]): string {
  const github = 'https://github.com/';
  if (!mirror || !url.startsWith(github)) return url;
  return `${mirror.replace(/\/+$/, '')}/${url.slice(github.length)}`;
}

/** Compression from the file name, as upstream names it. */
export function compressionOf(url: string): 'xz' | 'zstd' {
  return url.endsWith('.tar.zst') ? 'zstd' : 'xz';
}

/**
 * Members that kata-manager would refuse ("contains unexpected paths": anything but `./`, `./opt/`,
 * `./opt/kata/…`), plus any `..` segment. Empty = the listing is safe to extract.
 */
export function unsafeMembers(listing: string): string[] {
  return listing.split('\n').map((line) => line.trim()).filter(Boolean)
    .filter((member) => !/^(\.\/)?(opt\/?(kata(\/.*)?)?)?$/.test(member) || member.split('/').includes('..'));
}

/** What the node holds now, read in one command. */
export interface ReleaseState {
  machine: string;
  /** What `/opt/kata` is. */
  kata: 'link' | 'dir' | 'other' | 'absent';
  /** `readlink /opt/kata` when it is a link. */
  target?: string;
  /** Marker fields of the tree `/opt/kata` leads to (link or directory). */
  current: Record<string, string>;
  /** Marker fields of this version's tree, when it exists. */
  wanted?: Record<string, string>;
  versionDirExists: boolean;
  /** Whether `/opt/kata-releases` exists. */
  releasesDir: boolean;
  /** link path → `readlink` (or `file` for a non-link). Absent = no such file. */
  links: Record<string, string>;
  /** This run's journal, when an earlier attempt wrote it. */
  journal?: Record<string, string>;
}

/** Parses the probe's `key=value` lines (prefix `current.`, `wanted.`, `link.`, `journal.`). */
export function parseReleaseState(output: string): ReleaseState {
  const state: ReleaseState = { machine: '', kata: 'absent', current: {}, versionDirExists: false, releasesDir: false, links: {} };
  for (const line of output.split('\n')) {
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'machine') state.machine = value;
    else if (key === 'kata') state.kata = value as ReleaseState['kata'];
    else if (key === 'target') state.target = value;
    else if (key === 'versiondir') state.versionDirExists = value === 'yes';
    else if (key === 'releasesdir') state.releasesDir = value === 'yes';
    else if (key.startsWith('current.')) state.current[key.slice(8)] = value;
    else if (key.startsWith('wanted.')) (state.wanted ??= {})[key.slice(7)] = value;
    else if (key.startsWith('link.')) state.links[key.slice(5)] = value;
    else if (key.startsWith('journal.')) (state.journal ??= {})[key.slice(8)] = value;
  }
  return state;
}

/** The release's tarballs, `{ url, sha256 }` each: `tarballs`, or the one of `url` + `sha256`. */
export function releaseParts(step: Pick<ReleaseTarballStep, 'url' | 'sha256' | 'tarballs'>): { url: string; sha256: Partial<Record<KataArch, string>> }[] {
  return step.tarballs ?? [{ url: step.url, sha256: step.sha256 ?? {} }];
}

/** What the marker of an installed release records as its `sha256`: the tarballs' sha256 for `arch`, joined by ",". */
export function releasePin(step: Pick<ReleaseTarballStep, 'url' | 'sha256' | 'tarballs'>, arch: KataArch): string | undefined {
  const shas = releaseParts(step).map((part) => part.sha256[arch]);
  return shas.every((sha) => sha !== undefined) ? shas.join(',') : undefined;
}

function linkPaths(step: Pick<ReleaseTarballStep, 'links'>): string[] {
  return step.links ? KATA_LINK_NAMES.map((name) => posix.join(KATA_LINK_DIR, name)) : [];
}

/** Reads `/opt/kata`, the wanted version's tree and marker, the links and this run's journal. */
export async function readReleaseState(shell: NodeShell, version: string, links: readonly string[], journal?: string): Promise<ReleaseState> {
  const readlink = shell.tool('readlink');
  const output = await shell.output(sh`k=${KATA_PATH}
echo "machine=$(uname -m)"
if test -L "$k"; then echo kata=link; echo "target=$(${readlink} "$k")"; elif test -d "$k"; then echo kata=dir; elif test -e "$k"; then echo kata=other; else echo kata=absent; fi
if test -f "$k/.katafleet-release"; then sed 's/^/current./' "$k/.katafleet-release"; fi
if test -d ${releaseDir(version)}; then echo versiondir=yes; fi
if test -d ${KATA_RELEASES_DIR}; then echo releasesdir=yes; fi
if test -f ${releaseMarker(releaseTree(version))}; then sed 's/^/wanted./' ${releaseMarker(releaseTree(version))}; fi
for l in ${[...links]}; do if test -L "$l"; then echo "link.$l=$(${readlink} "$l")"; elif test -e "$l"; then echo "link.$l=file"; fi; done
${journal === undefined ? sh`true` : sh`if test -f ${journal}; then sed 's/^/journal./' ${journal}; fi`}`, { asRoot: true });
  return parseReleaseState(output);
}

/** The message of a conflict: what was found, and what to do about it. */
export function installConflictMessage(node: string, found: string, fix: string): string {
  return `Node ${node}: ${found}; katafleet installs Kata only where it does not overwrite what it did not make — ${fix}. Nothing was changed`;
}

/** Refuses (KataInstallConflict) what the install would overwrite; pure, over the state read. */
export function findConflicts(node: string, state: ReleaseState, links: readonly string[], journal: Record<string, string> | undefined): void {
  if (state.kata === 'other') {
    throw permanentFailure(KataInstallConflict, installConflictMessage(node, `${KATA_PATH} is neither a directory nor a symlink`, `move ${KATA_PATH} aside and run the rollout again`));
  }
  if (state.kata === 'link' && !isReleaseTree(state.target ?? '')) {
    throw permanentFailure(KataInstallConflict, installConflictMessage(node, `${KATA_PATH} is a symlink to ${state.target}, not into ${KATA_RELEASES_DIR}`,
      `remove the link (rm ${KATA_PATH}) if that install is no longer used, then run the rollout again`));
  }
  if (state.kata === 'dir' && (state.current.version === undefined || checkAllowlist(state.current.version, kataVersion) !== undefined)) {
    throw permanentFailure(KataInstallConflict, installConflictMessage(node,
      `${KATA_PATH} is a directory that katafleet did not install (no ${releaseMarker(KATA_PATH)}: a kata-containers package, kata-manager or kata-deploy?)`,
      `remove that install first (apt-get purge kata-containers, kata-deploy's cleanup, or move ${KATA_PATH} aside by hand), then run the rollout again`));
  }
  const createdByUs = new Set((journal?.links ?? '').split(',').filter(Boolean));
  for (const link of links) {
    const found = state.links[link];
    const name = posix.basename(link);
    if (found === undefined || found === posix.join(KATA_PATH, 'bin', name) || createdByUs.has(link)) continue;
    throw permanentFailure(KataInstallConflict, installConflictMessage(node, `${link} exists and ${found === 'file' ? 'is not a symlink' : `points to ${found}`}, not to ${posix.join(KATA_PATH, 'bin', name)}`,
      `remove it if it belongs to an old install, or set links = false in the release-tarball step`));
  }
}

// ───────────────────────────── the worker's download cache ─────────────────────────────

/** Where the worker keeps downloaded tarballs, one file per sha256. */
export function releaseCacheDir(): string {
  return process.env.KATAFLEET_RELEASE_CACHE ?? join(tmpdir(), 'katafleet-release-cache');
}

const downloads = new Map<string, Promise<Buffer>>();

/** The message when a tarball's sha256 is not the pinned one. */
export function checksumMismatchMessage(url: string, wanted: string, got: string, where: string): string {
  return `The Kata release ${url} has sha256 ${got} (${where}), but the playbook pins ${wanted}: a changed or corrupted file, or a wrong pin — ` +
    'check the file and fix the sha256 table (or the url) of the release-tarball step';
}

/**
 * The tarball's bytes, downloaded by the worker once per sha256 (concurrent callers share the download; later
 * ones read the cache) and checked against `sha256` before anything uses them.
 */
export function workerDownload(url: string, sha256: string): Promise<Buffer> {
  let pending = downloads.get(sha256);
  if (!pending) {
    pending = downloadOnce(url, sha256).finally(() => downloads.delete(sha256));
    downloads.set(sha256, pending);
  }
  return pending;
}

async function downloadOnce(url: string, sha256: string): Promise<Buffer> {
  const cached = join(releaseCacheDir(), sha256);
  const hit = await readFile(cached).catch(() => undefined);
  if (hit && createHash('sha256').update(hit).digest('hex') === sha256) return hit;
  let body: Buffer;
  try {
    const response = await fetch(url, { redirect: 'follow' });
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`);
    body = Buffer.from(await response.arrayBuffer());
  } catch (err) {
    throw transientFailure(ReleaseDownloadFailed, `The worker could not download the Kata release ${url}: ${(err as Error).message}; trying again`, err);
  }
  const got = createHash('sha256').update(body).digest('hex');
  if (got !== sha256) throw permanentFailure(ReleaseChecksumMismatch, checksumMismatchMessage(url, sha256, got, 'downloaded by the worker'));
  await mkdir(releaseCacheDir(), { recursive: true, mode: 0o700 });
  await writeFile(`${cached}.tmp-${process.pid}`, body, { mode: 0o600 });
  await rename(`${cached}.tmp-${process.pid}`, cached);
  return body;
}

// ───────────────────────────── the step ─────────────────────────────

/** A release-tarball step that installs: its version is set. */
type InstallStep = ReleaseTarballStep & { version: string };

/** Runs the step: installs (see the file's header) or, with `action = "remove"`, removes katafleet's releases. */
export async function releaseTarball(shell: NodeShell, request: StepRequest<ReleaseTarballStep>): Promise<StepOutcome> {
  const { step } = request;
  if (step.action === 'remove') return removeReleases(shell, request);
  if (step.version === undefined) throw permanentFailure('StepRefused', `release-tarball "${step.id}": version is required to install; set version in the playbook`);
  return installRelease(shell, { ...request, step: { ...step, version: step.version } });
}

async function installRelease(shell: NodeShell, request: StepRequest<InstallStep>): Promise<StepOutcome> {
  const { step, runId } = request;
  const links = linkPaths(step);
  const journalPath = releaseJournalPath(runId, step.id);
  const tree = releaseTree(step.version);
  const state = await readReleaseState(shell, step.version, links, journalPath);

  const arch = step.arch === 'auto' ? kataArchOf(state.machine) : step.arch;
  if (arch === undefined) {
    throw permanentFailure(ReleaseArchUnsupported, `Node ${shell.name}: Kata publishes no static release for machine "${state.machine}" (only ${KATA_ARCHES.join(', ')}); leave this node out or set arch in the release-tarball step`);
  }
  const parts = releaseParts(step);
  const missing = parts.findIndex((part) => part.sha256[arch] === undefined);
  if (missing >= 0) {
    const pinned = Object.keys(parts[missing].sha256).join(', ');
    const which = parts.length > 1 ? `tarballs[${missing}] (${posix.basename(parts[missing].url)})` : `kata-static-${step.version}-${arch}.${releaseExtension(step.version)}`;
    throw permanentFailure(ReleaseArchUnsupported, `Node ${shell.name} is ${arch}, but release-tarball "${step.id}" pins a sha256 only for ${pinned}: add ${arch} = "<sha256 of ${which}>" to its sha256 table`);
  }
  const tarballs = parts.map((part) => ({ url: mirroredUrl(expandReleaseUrl(part.url, step.version, arch)), sha256: part.sha256[arch]! }));
  for (const { url } of tarballs) {
    const urlProblem = checkAllowlist(url, releaseUrl);
    if (urlProblem !== undefined) throw permanentFailure('StepRefused', `release-tarball "${step.id}": the url expands to ${urlProblem}; fix url in the playbook (or ${RELEASE_MIRROR_ENV} on the worker)`);
  }
  const url = tarballs.map((t) => t.url).join(' ');
  const sha256 = tarballs.map((t) => t.sha256).join(',');
  // The programs the install runs, found by the probe that came with the read above: one missing fails here, before any change.
  const needsTree = state.wanted?.sha256 !== sha256;
  const bin = await shell.programs(`release-tarball "${step.id}"`, installPrograms(needsTree ? tarballs.map((t) => t.url) : []), step.fetch === 'node' ? ['curl', 'wget'] : []);
  if (needsTree && step.fetch === 'node' && !bin.curl && !bin.wget) {
    throw permanentFailure(ReleaseDownloadFailed, `Node ${shell.name} has neither curl nor wget (searched ${shell.rootPath}), so it cannot fetch ${url}: install one, or use fetch = "worker" (the worker downloads and sends the tarball over SSH); nothing was changed`);
  }

  const facts = { version: step.version, arch, url, sha256, fetch: step.fetch };
  const linksOk = links.every((link) => state.links[link] === posix.join(KATA_PATH, 'bin', posix.basename(link)));
  const installed = state.kata === 'link' && state.target === tree && state.wanted?.sha256 === sha256;
  if (installed && linksOk) {
    if (state.journal !== undefined) {
      return { changed: true, summary: `Kata ${step.version} active at ${KATA_PATH} → ${tree} (by an earlier attempt of this run)`, undo: undoOf(step, state.journal), facts };
    }
    return { changed: false, summary: `Kata ${step.version} already active at ${KATA_PATH} → ${tree} (sha256 ${sha256.slice(0, 12)}…)`, facts };
  }

  findConflicts(shell.name, state, links, state.journal);
  if (state.versionDirExists && state.wanted?.sha256 !== sha256 && state.journal?.createdDir !== '1') {
    throw permanentFailure(KataInstallConflict, installConflictMessage(shell.name,
      `${releaseDir(step.version)} exists but ${state.wanted ? `holds a tarball with sha256 ${state.wanted.sha256}` : 'is not a tree katafleet extracted'}`,
      `remove ${releaseDir(step.version)} (no /opt/kata points to it) and run the rollout again`));
  }

  // (1) Journal: what was there before this run changed anything (kept from an earlier attempt).
  const journal = state.journal ?? {
    previous: state.kata === 'link' ? state.target! : state.kata === 'dir' ? releaseTree(state.current.version) : '',
    createdDir: state.versionDirExists ? '0' : '1',
    links: links.filter((link) => state.links[link] === undefined).join(','),
    createdReleasesDir: state.releasesDir ? '0' : '1',
  };
  // The node's journal too (journaling runs): a run terminated from here on is taken back by the next run on the node.
  // Both records are small: their text rides in the script (journal.ts printText), in front of the first change,
  // which is the first tarball's receive when a tree is extracted (one command), or a command of their own.
  const stateWrite = state.journal === undefined
    ? sh`${bin.mkdir} -p ${RELEASE_JOURNAL_DIR} && ${bin.tee} ${`${journalPath}.katafleet-tmp`} >/dev/null && ${bin.mv} -f ${`${journalPath}.katafleet-tmp`} ${journalPath}`
    : undefined;
  const stateText = Object.entries(journal).map(([key, value]) => `${key}=${value}\n`).join('');
  const intent = intentWrite(shell, request, undoOf(step, journal), `install Kata ${step.version} at ${tree} and switch ${KATA_PATH} to it`, { keepFirst: true });
  const writes = [...(intent ? [{ command: intent.command, text: intent.stdin }] : []), ...(stateWrite ? [{ command: stateWrite, text: stateText }] : [])];
  const printed = writes.map((write) => printText(write.text));
  let records: Command | undefined;
  if (writes.length > 0 && printed.every((print) => print !== undefined)) {
    records = writes.map((write, i) => sh`${printed[i]!} | { ${write.command}
}`).reduce((all, one) => sh`${all} && ${one}`);
  } else {
    for (const write of writes) await shell.run(write.command, { stdin: write.text, signal: undefined });
  }
  if (records && !needsTree) {
    await shell.run(records, { signal: undefined });
    records = undefined;
  }

  // (4) The switch (one rename) and (5) the kata-manager-style links, one after the other in one command, then the version.
  const linking = links.map((link) => sh` && ${bin.ln} -sfn ${posix.join(KATA_PATH, 'bin', posix.basename(link))} ${link}`).reduce((all, one) => sh`${all}${one}`, sh``);
  const switchCommands = {
    switch: sh`${bin.ln} -sfn ${tree} ${KATA_PATH}.katafleet-new && ${bin.mv} -T ${KATA_PATH}.katafleet-new ${KATA_PATH}${linking}`,
    version: sh`${posix.join(KATA_PATH, 'bin', 'kata-runtime')} --version`,
  };
  // (2) The version's tree: checked and extracted beside, renamed into place; when no tree at /opt/kata must move
  // first (3), the switch rides on the extract's command, run only once the extract succeeded.
  let switched: Record<'switch' | 'version', PartResult> | undefined;
  if (needsTree) {
    try {
      switched = await extractRelease(shell, bin, { version: step.version, fetch: step.fetch, tarballs, pin: sha256, runId, records }, state.kata === 'dir' ? undefined : switchCommands);
    } catch (err) {
      // Nothing was switched yet: a first attempt that fails here leaves no journal and no /opt/kata-releases it made.
      if (state.journal === undefined) {
        await shell.run(sh`${bin.rm} -f ${journalPath}${state.releasesDir ? sh`` : sh`; ${bin.rmdir} ${KATA_RELEASES_DIR} 2>/dev/null || true`}`);
        await dropIntent(shell, request);
      }
      throw err;
    }
  }

  // (3) An earlier katafleet tree that is a real directory at /opt/kata moves to its versioned place.
  if (state.kata === 'dir') {
    const aside = releaseTree(state.current.version);
    if (await shell.exists(aside)) {
      throw permanentFailure(KataInstallConflict, installConflictMessage(shell.name, `${KATA_PATH} is katafleet's Kata ${state.current.version} as a directory, and ${aside} exists too`,
        `remove one of them, then run the rollout again`));
    }
    await shell.run(sh`${bin.mkdir} -p ${posix.dirname(aside)} && ${bin.mv} -T ${KATA_PATH} ${aside}`);
  }
  switched ??= await shell.readAll(switchCommands);
  if (switched.switch.exitCode !== 0) {
    throw transientFailure('CommandFailed', `Node ${shell.name}: switching ${KATA_PATH} to ${tree}${links.length > 0 ? ` and linking ${links.join(', ')}` : ''} exited with ${switched.switch.exitCode}; trying again (the journal holds the undo)`);
  }
  const version = switched.version;
  const from = journal.previous ? ` (was ${journal.previous})` : '';
  return {
    changed: true,
    summary: `installed Kata ${step.version} (${arch}, sha256 ${sha256.slice(0, 12)}…) at ${tree}; ${KATA_PATH} → it${from}` +
      `${links.length > 0 ? `; links ${links.join(', ')}` : ''}; ${version.stdout.split('\n')[0].replace(/\s+/g, ' ').trim() || 'kata-runtime --version said nothing'}`,
    undo: undoOf(step, journal),
    facts,
  };
}

function undoOf(step: InstallStep, journal: Record<string, string>): Undo {
  return {
    kind: 'remove-release',
    stepId: step.id,
    version: step.version,
    ...(journal.previous ? { previous: journal.previous } : {}),
    createdVersionDir: journal.createdDir === '1',
    createdLinks: (journal.links ?? '').split(',').filter(Boolean),
    ...(journal.createdReleasesDir === '1' ? { createdReleasesDir: true } : {}),
  };
}

/** The programs an install runs: coreutils', and tar with each tarball's decompressor when a tree is extracted. Pure. */
export function installPrograms(urls: readonly string[]): ProbedProgram[] {
  const base: ProbedProgram[] = ['ln', 'mv', 'rm', 'mkdir', 'tee', 'rmdir'];
  if (urls.length === 0) return base;
  return [...base, 'chmod', 'sha256sum', 'tar', ...new Set(urls.map((url) => (compressionOf(url) === 'zstd' ? 'zstd' as const : 'xz' as const)))];
}

/** The programs extractRelease runs (probed paths). */
type ExtractPrograms = Record<'ln' | 'mv' | 'rm' | 'mkdir' | 'tee' | 'rmdir', string> & Partial<Record<ProbedProgram, string>>;

/** The tar option of a tarball's compression. */
function compressionFlag(url: string) {
  return flag(compressionOf(url) === 'zstd' ? '--zstd' : '--xz');
}

/** Exit status of the extract command when the extracted tree holds no Kata shim (tar itself exits 0, 1 or 2). */
const NO_SHIM_EXIT = 73;

/**
 * Gets each tarball onto the node (pushed by the worker or fetched there), checks it (sha256, members), extracts
 * them in order into one staging tree beside, and renames that into place with the marker (`sha256` = `pin`).
 * Commands: one per tarball to receive it, read its sha256 and list its members; one to extract, check for a shim,
 * write the marker and rename, which with `then` also switches /opt/kata and reads the version, only once the extract
 * succeeded (their answers are returned: a failed switch is the caller's to report, the tree being in place).
 */
async function extractRelease(shell: NodeShell, bin: ExtractPrograms, o: { version: string; tarballs: { url: string; sha256: string }[]; pin: string; fetch: 'worker' | 'node'; runId: string; records?: Command },
  then?: Record<'switch' | 'version', Command>): Promise<Record<'switch' | 'version', PartResult> | undefined> {
  const run12 = o.runId.slice(0, 12).replace(/[^A-Za-z0-9-]/g, '');
  const staging = posix.join(KATA_RELEASES_DIR, `.extract-${run12}`);
  const dir = releaseDir(o.version);
  const incomings = o.tarballs.map((_, i) => posix.join(KATA_RELEASES_DIR, `.incoming-${run12}-${i}.${releaseExtension(o.version)}`));
  const cleanup = () => shell.run(sh`${bin.rm} -f ${incomings}`);
  // The step's records (journal intent, state file) first when given: written before anything of the release reaches the node.
  const prepare = sh`${o.records ? sh`${o.records} && ` : sh``}${bin.mkdir} -p ${KATA_RELEASES_DIR} && ${bin.chmod!} 0755 ${KATA_RELEASES_DIR} && ${bin.rm} -rf ${staging} ${incomings}`;
  for (const [i, tarball] of o.tarballs.entries()) {
    let received;
    try {
      received = await receiveTarball(shell, bin, tarball, incomings[i], o.fetch, i === 0 ? prepare : undefined);
    } catch (err) {
      // The worker refuses a download before anything reaches the node; earlier tarballs of the list did reach it.
      await cleanup();
      throw err;
    }
    const { listing } = received;
    const unsafe = listing.exitCode === 0 ? unsafeMembers(listing.stdout) : [];
    if (listing.exitCode !== 0 || unsafe.length > 0) {
      await cleanup();
      throw permanentFailure(ReleaseTarballUnsafe, listing.exitCode !== 0
        ? `Node ${shell.name}: tar cannot read ${tarball.url} (${listing.stdout.trim().split('\n').slice(-1)[0]}); nothing was extracted — check the url`
        : `Node ${shell.name}: ${tarball.url} holds members outside ./opt/kata/ (${unsafe.slice(0, 3).join(', ')}${unsafe.length > 3 ? ', …' : ''}), which kata-manager refuses too; nothing was extracted — check the url and the pinned sha256`);
    }
  }
  const tree = posix.join(staging, 'opt', 'kata');
  const shims = [posix.join(tree, 'bin', 'containerd-shim-kata-v2'), posix.join(tree, 'runtime-rs', 'bin', 'containerd-shim-kata-v2')];
  const extract = o.tarballs.map((tarball, i) => sh` && ${bin.tar!} ${compressionFlag(tarball.url)} -xf ${incomings[i]} -C ${staging}`).reduce((all, one) => sh`${all}${one}`, sh``);
  const extractCommand = sh`${bin.mkdir} -p ${staging}${extract} && { test -x ${shims[0]} || test -x ${shims[1]} || { ${bin.rm} -rf ${staging}; exit ${NO_SHIM_EXIT}; }; } && printf 'version=%s\nsha256=%s\n' ${o.version} ${o.pin} | ${bin.tee} ${releaseMarker(tree)} >/dev/null && ${bin.rm} -rf ${dir} && ${bin.mv} -T ${staging} ${dir} && ${bin.rm} -f ${incomings}`;
  let result: { exitCode: number | null; stderr: string };
  let switched: Record<'switch' | 'version', PartResult> | undefined;
  if (then) {
    // The switch and the version read run in the same command only once the extract succeeded (NodeShell.runInOrder).
    const [extracted, switchPart, versionPart] = await shell.runInOrder([
      { command: extractCommand },
      { command: then.switch, when: { ok: [0] } },
      { command: then.version, when: { ok: [1] } },
    ], { timeoutMs: 10 * 60_000 });
    result = { exitCode: extracted!.exitCode, stderr: extracted!.stdout };
    if (result.exitCode !== 0 && result.exitCode !== NO_SHIM_EXIT) {
      throw transientFailure('CommandFailed', `Node ${shell.name}: extracting ${o.tarballs.map((t) => t.url).join(' + ')} into ${dir} exited with ${result.exitCode}: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    }
    if (switchPart !== undefined) switched = { switch: switchPart, version: versionPart ?? { stdout: '', exitCode: -1 } };
  } else {
    result = await whileHeartbeating(shell.run(extractCommand, { timeoutMs: 10 * 60_000, allowExitCodes: [0, NO_SHIM_EXIT] }));
  }
  if (result.exitCode === NO_SHIM_EXIT) {
    await cleanup();
    throw permanentFailure(ReleaseTarballUnsafe, `Node ${shell.name}: ${o.tarballs.map((t) => t.url).join(' + ')} hold no Kata shim (neither opt/kata/bin/containerd-shim-kata-v2 nor opt/kata/runtime-rs/bin/containerd-shim-kata-v2); nothing was installed — a Kata 4.1+ release needs both kata-static and kata-go-static in tarballs, or check the url`);
  }
  return switched;
}

/**
 * Puts one tarball at `incoming` on the node (sent by the worker, or fetched there), after `prepare` when given, and
 * reads its sha256 and its member list in the same command; checks the sha256 (ReleaseChecksumMismatch) and returns
 * the listing (its stdout holds tar's error when it could not read the file).
 */
async function receiveTarball(shell: NodeShell, bin: ExtractPrograms, o: { url: string; sha256: string }, incoming: string, fetch: 'worker' | 'node', prepare: Command | undefined): Promise<{ listing: PartResult }> {
  const first = prepare ? sh`${prepare} && ` : sh``;
  const check = {
    sha256: sh`${bin.sha256sum!} ${incoming}`,
    listing: sh`${bin.tar!} ${compressionFlag(o.url)} -tf ${incoming} 2>&1`,
  };
  let parts: Record<'receive' | 'sha256' | 'listing', PartResult>;
  if (fetch === 'worker') {
    // A real tarball is hundreds of MB: heartbeat while it downloads, or the workflow's heartbeat timeout ends the attempt.
    const bytes = await whileHeartbeating(workerDownload(o.url, o.sha256));
    parts = await shell.readAll({ receive: sh`${first}${bin.tee} ${incoming} >/dev/null`, ...check }, { stdin: bytes, timeoutMs: 30 * 60_000 });
  } else {
    const get = bin.curl ? sh`${bin.curl} -fsSL --retry 2 -o ${incoming} ${o.url} 2>&1` : sh`${bin.wget!} -q -O ${incoming} ${o.url} 2>&1`;
    parts = await shell.readAll({ receive: sh`${first}${get}`, ...check }, { timeoutMs: 30 * 60_000 });
  }
  if (parts.receive.exitCode !== 0) {
    if (fetch === 'worker') throw transientFailure('CommandFailed', `Node ${shell.name}: receiving ${o.url} into ${incoming} exited with ${parts.receive.exitCode}; trying again`);
    throw transientFailure(ReleaseDownloadFailed, `Node ${shell.name} could not download ${o.url} (exit ${parts.receive.exitCode}: ${parts.receive.stdout.trim().split('\n').slice(-2).join('; ')}); trying again — a node without internet needs fetch = "worker"`);
  }
  const onNode = parts.sha256.exitCode === 0 ? parts.sha256.stdout.trim().split(/\s+/)[0] : undefined;
  if (onNode !== o.sha256) {
    throw permanentFailure(ReleaseChecksumMismatch, checksumMismatchMessage(o.url, o.sha256, onNode ?? 'none (the file is missing)', `as received by node ${shell.name}`));
  }
  return { listing: parts.listing };
}

/**
 * The undo: switch `/opt/kata` back (or remove it), remove the links, the version directory and `/opt/kata-releases`
 * (when empty) this run created, drop the journal. Two commands: one reads, one changes.
 */
export async function removeRelease(shell: NodeShell, undo: Extract<Undo, { kind: 'remove-release' }>): Promise<string> {
  const tree = releaseTree(undo.version);
  const dir = releaseDir(undo.version);
  const reads: Record<string, PartResult> = await shell.readAll<string>({
    target: sh`${shell.tool('readlink')} ${KATA_PATH}`,
    ...Object.fromEntries(undo.createdLinks.map((link, i) => [`link${i}`, sh`${shell.tool('readlink')} ${link}`])),
    versionDir: sh`test -e ${dir}`,
  });
  const bin = await shell.programs('the undo of release-tarball', ['ln', 'mv', 'rm', 'rmdir', 'readlink']);
  const done: string[] = [];
  const changes: Command[] = [];
  const target = reads.target.stdout.trim();
  if (target === tree) {
    if (undo.previous) {
      changes.push(sh`${bin.ln} -sfn ${undo.previous} ${KATA_PATH}.katafleet-new && ${bin.mv} -T ${KATA_PATH}.katafleet-new ${KATA_PATH}`);
      done.push(`${KATA_PATH} → ${undo.previous} again`);
    } else {
      changes.push(sh`${bin.rm} -f ${KATA_PATH}`);
      done.push(`removed ${KATA_PATH}`);
    }
  } else {
    done.push(target ? `${KATA_PATH} → ${target} (not ${tree}), left alone` : `${KATA_PATH} is not a link to ${tree}, left alone`);
  }
  undo.createdLinks.forEach((link, i) => {
    if (reads[`link${i}`].stdout.trim() !== posix.join(KATA_PATH, 'bin', posix.basename(link))) return;
    changes.push(sh`${bin.rm} -f ${link}`);
    done.push(`removed ${link}`);
  });
  const removeDir = undo.createdVersionDir && reads.versionDir.exitCode === 0;
  if (removeDir) {
    // Removed only when /opt/kata no longer leads to it once the switch above is done (read on the node, in the same command).
    changes.push(sh`if test "$(${bin.readlink} ${KATA_PATH})" = ${tree}; then echo kept-version-dir; else ${bin.rm} -rf ${dir}; fi`);
  }
  // /opt/kata-releases only when this run made it and nothing else is in it now (rmdir removes only an empty one).
  if (undo.createdReleasesDir) changes.push(sh`if ${bin.rmdir} ${KATA_RELEASES_DIR} 2>/dev/null; then echo removed-releases-dir; fi`);
  changes.push(sh`${bin.rm} -f ${RELEASE_JOURNAL_DIR}/release-*-${undo.stepId}.state`);
  const { stdout } = await shell.run(changes.reduce((all, one) => sh`${all} && ${one}`));
  if (removeDir) done.push(stdout.includes('kept-version-dir') ? `kept ${dir}: ${KATA_PATH} still points to it` : `removed ${dir}`);
  if (stdout.includes('removed-releases-dir')) done.push(`removed ${KATA_RELEASES_DIR.replace(/\/$/, '')} (this run created it, and it is empty now)`);
  return done.join('; ');
}

/** What differs from the installed release the step leaves (drift check): tree + marker, the /opt/kata link, the links. */
export function releaseDrift(step: ReleaseTarballStep, state: ReleaseState): string[] {
  if (step.action === 'remove' || step.version === undefined) return removalDrift(state);
  const tree = releaseTree(step.version);
  const arch = step.arch === 'auto' ? kataArchOf(state.machine) : step.arch;
  const sha256 = arch === undefined ? undefined : releasePin(step, arch);
  const found: string[] = [];
  if (!state.wanted) found.push(`Kata ${step.version} is not installed at ${tree}`);
  else if (sha256 !== undefined && state.wanted.sha256 !== sha256) found.push(`Kata ${step.version} at ${tree} is from a tarball with sha256 ${state.wanted.sha256}, not the pinned ${sha256}`);
  if (state.kata !== 'link' || state.target !== tree) found.push(`${KATA_PATH} ${state.kata === 'link' ? `points to ${state.target}` : state.kata === 'absent' ? 'is missing' : `is a ${state.kata === 'dir' ? 'directory' : 'file'}`}, not a link to ${tree}`);
  for (const link of linkPaths(step)) {
    const expected = posix.join(KATA_PATH, 'bin', posix.basename(link));
    if (state.links[link] !== expected) found.push(`${link} ${state.links[link] === undefined ? 'is missing' : `is ${state.links[link] === 'file' ? 'not a symlink' : `a link to ${state.links[link]}`}`}, not a link to ${expected}`);
  }
  return found;
}

/** Reads the node and returns the drift of a release-tarball step. */
export async function checkRelease(shell: NodeShell, step: ReleaseTarballStep): Promise<string[]> {
  const links = step.action === 'remove' ? KATA_LINK_NAMES.map((name) => posix.join(KATA_LINK_DIR, name)) : linkPaths(step);
  return releaseDrift(step, await readReleaseState(shell, step.version ?? '0.0.0', links));
}

/** What a removal leaves behind that katafleet installed (drift of `action = "remove"`). */
export function removalDrift(state: ReleaseState): string[] {
  const found: string[] = [];
  if (state.kata === 'link' && isReleaseTree(state.target ?? '')) found.push(`${KATA_PATH} is still a link to ${state.target}; the playbook removes Kata`);
  if (state.kata === 'dir' && state.current.version !== undefined) found.push(`${KATA_PATH} still holds katafleet's Kata ${state.current.version}; the playbook removes Kata`);
  if (state.releasesDir) found.push(`${KATA_RELEASES_DIR} still exists; the playbook removes Kata`);
  for (const [link, target] of Object.entries(state.links)) {
    if (target === posix.join(KATA_PATH, 'bin', posix.basename(link))) found.push(`${link} is still a link to ${target}; the playbook removes Kata`);
  }
  return found;
}

// ───────────────────────────── action = "remove" ─────────────────────────────

/** Where a removal of run `runId` sets the release trees aside, so that its undo needs no download. */
export function releasesAside(runId: string): string {
  return `${KATA_RELEASES_DIR.replace(/\/$/, '')}.katafleet-removed-${runId.slice(0, 12).replace(/[^A-Za-z0-9-]/g, '')}`;
}

/**
 * Removes what release-tarball installed: `/opt/kata` (a link into `/opt/kata-releases`), the links to
 * `/opt/kata/bin/…` and the trees, which are moved aside in one rename ({@link releasesAside}) with a note of the
 * previous `/opt/kata` target inside; the trees an earlier removal set aside are deleted first. Anything at
 * `/opt/kata` that katafleet did not make is refused (KataInstallConflict), nothing changed.
 */
async function removeReleases(shell: NodeShell, request: StepRequest<ReleaseTarballStep>): Promise<StepOutcome> {
  const { step, runId } = request;
  const aside = releasesAside(runId);
  const note = posix.join(aside, '.katafleet-removed');
  const links = KATA_LINK_NAMES.map((name) => posix.join(KATA_LINK_DIR, name));
  const state = await readReleaseState(shell, '0.0.0', links);
  const ours = links.filter((link) => state.links[link] === posix.join(KATA_PATH, 'bin', posix.basename(link)));
  // The programs it runs, from the probe that came with the read above: one missing fails the step here, unchanged.
  const bin = await shell.programs(`release-tarball "${step.id}"`, ['cat', 'rm', 'mv', 'mkdir', 'tee']);
  const done = (await shell.run(sh`test -f ${note} && ${bin.cat} ${note}`, { allowExitCodes: [0, 1] })).stdout;
  if (done) {
    // An earlier attempt of this run moved the trees aside: finish what it began, report its undo.
    const recorded = parseReleaseState(done.split('\n').map((line) => `journal.${line}`).join('\n')).journal ?? {};
    if (state.kata === 'link' && isReleaseTree(state.target ?? '')) await shell.run(sh`${bin.rm} -f ${KATA_PATH}`);
    for (const link of ours) await shell.run(sh`${bin.rm} -f ${link}`);
    return { changed: true, summary: `Kata releases set aside in ${aside} (by an earlier attempt of this run)`, undo: restoreUndo(step.id, aside, recorded) };
  }
  if (state.kata === 'other' || (state.kata === 'link' && !isReleaseTree(state.target ?? '')) || (state.kata === 'dir' && state.current.version === undefined)) {
    throw permanentFailure(KataInstallConflict, `Node ${shell.name}: ${KATA_PATH} is ${state.kata === 'link' ? `a symlink to ${state.target}` : state.kata === 'dir' ? 'a directory' : 'a file'} that katafleet did not install; ` +
      'katafleet removes only what it installed — remove that install with the tool that made it (apt-get purge kata-containers, kata-deploy\'s cleanup, or by hand), then run the rollout again. Nothing was changed');
  }
  if (state.kata === 'dir') {
    throw permanentFailure(KataInstallConflict, installConflictMessage(shell.name, `${KATA_PATH} is katafleet's Kata ${state.current.version} as a plain directory (an older layout)`,
      `move it to ${releaseTree(state.current.version!)} and link ${KATA_PATH} to it (or delete it by hand), then run the rollout again`));
  }
  if (state.kata === 'absent' && !state.releasesDir && ours.length === 0) {
    return { changed: false, summary: `no Kata release installed by katafleet (${KATA_PATH} and ${KATA_RELEASES_DIR} absent)` };
  }
  const recorded = { previous: state.kata === 'link' ? state.target! : '', links: ours.join(',') };
  // The node's journal (journaling runs): a run terminated from here on is put back by the next run on the node.
  await writeIntent(shell, request, restoreUndo(step.id, aside, recorded), `set the Kata releases aside in ${aside} and remove ${KATA_PATH}`, { keepFirst: true });
  await shell.run(sh`for d in ${KATA_RELEASES_DIR.replace(/\/$/, '')}.katafleet-removed-*; do test "$d" = ${aside} || ${bin.rm} -rf "$d"; done`);
  if (state.releasesDir) {
    await shell.run(sh`printf 'previous=%s\nlinks=%s\n' ${recorded.previous} ${recorded.links} | ${bin.tee} ${posix.join(KATA_RELEASES_DIR, '.katafleet-removed')} >/dev/null && ${bin.mv} -T ${KATA_RELEASES_DIR} ${aside}`);
  } else {
    await shell.run(sh`${bin.mkdir} -p ${aside} && printf 'previous=%s\nlinks=%s\n' ${recorded.previous} ${recorded.links} | ${bin.tee} ${note} >/dev/null`);
  }
  if (state.kata === 'link') await shell.run(sh`${bin.rm} -f ${KATA_PATH}`);
  for (const link of ours) await shell.run(sh`${bin.rm} -f ${link}`);
  return {
    changed: true,
    summary: `removed Kata${state.target ? ` (${KATA_PATH} → ${state.target})` : ''}${ours.length > 0 ? `, links ${ours.join(', ')}` : ''}; the release trees are set aside in ${aside} until the next removal`,
    undo: restoreUndo(step.id, aside, recorded),
  };
}

function restoreUndo(stepId: string, aside: string, recorded: Record<string, string>): Undo {
  return { kind: 'restore-release', stepId, aside, ...(recorded.previous ? { previous: recorded.previous } : {}), links: (recorded.links ?? '').split(',').filter(Boolean) };
}

/** The undo of a removal: the trees back to `/opt/kata-releases`, `/opt/kata` and the links as they were. */
export async function restoreRelease(shell: NodeShell, undo: Extract<Undo, { kind: 'restore-release' }>): Promise<string> {
  const done: string[] = [];
  const bin = await shell.programs('the undo of release-tarball', ['rm', 'mv', 'rmdir', 'ln']);
  if (await shell.exists(undo.aside)) {
    if (await shell.exists(KATA_RELEASES_DIR)) {
      throw permanentFailure(KataInstallConflict, `Node ${shell.name}: ${KATA_RELEASES_DIR} exists again, so the releases set aside in ${undo.aside} cannot go back; move one of them by hand`);
    }
    await shell.run(sh`${bin.rm} -f ${posix.join(undo.aside, '.katafleet-removed')} && ${bin.mv} -T ${undo.aside} ${KATA_RELEASES_DIR}`);
    done.push(`${KATA_RELEASES_DIR} back`);
    if ((await shell.run(sh`ls -A ${KATA_RELEASES_DIR}`)).stdout.trim() === '') await shell.run(sh`${bin.rmdir} ${KATA_RELEASES_DIR}`);
  }
  if (undo.previous && !(await shell.exists(KATA_PATH))) {
    await shell.run(sh`${bin.ln} -sfn ${undo.previous} ${KATA_PATH}.katafleet-new && ${bin.mv} -T ${KATA_PATH}.katafleet-new ${KATA_PATH}`);
    done.push(`${KATA_PATH} → ${undo.previous} again`);
  }
  for (const link of undo.links) {
    if ((await shell.run(sh`test -e ${link} || test -L ${link}`, { allowExitCodes: [0, 1] })).exitCode === 0) continue;
    await shell.run(sh`${bin.ln} -s ${posix.join(KATA_PATH, 'bin', posix.basename(link))} ${link}`);
    done.push(`link ${link} again`);
  }
  return done.length > 0 ? done.join('; ') : 'nothing to put back';
}
