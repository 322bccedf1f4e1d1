/**
 * Undo records, run by nodeWorkflow newest first after a failure (or by an abort with rollback):
 * each takes back exactly what one step of this run changed, and is safe to run twice.
 */
import { Kubectl, requireKubernetes } from '../kubectl';
import { sh, type SshPool } from '../ssh';
import type { KubernetesTarget, Undo, UndoOutcome } from '../node-types';
import type { NodeShell } from './node-shell';
import { removeLabels, setLabels } from './node-label';
import { PACKAGE_MARKER_DIR, purgeInstalled, reinstallPackages } from './package-install';
import { restoreFile } from './prereq-check';
import { removeRelease, restoreRelease } from './release-tarball';
import { removePackageRepo } from './package-repo';
import { ContainersLostOnRestart, CORDON_ANNOTATION, guardRunningContainers, readDaemonState, uncordonOwned, waitForService } from './service-restart';
import { checkResolvedPaths, checkUndo, nodePathsOfUndo, StepRefused } from '../step-policy';
import { permanentFailure, transientFailure } from './step-runtime';

/** How long an undo waits for containerd to come back after restoring its config. */
const RESTORE_RESTART_TIMEOUT_MS = 2 * 60_000;

/** The backup an undo should restore is gone. Never retried. */
export const ContainerdBackupMissing = 'ContainerdBackupMissing';
/** The backup's sha256 is not the one recorded when it was made. Never retried. */
export const ContainerdBackupCorrupted = 'ContainerdBackupCorrupted';
/** The config is neither what this run wrote nor the original: someone changed it since. Never retried. */
export const ContainerdConfigChangedSinceWritten = 'ContainerdConfigChangedSinceWritten';

/**
 * Undo failures no retry can fix: the node must be looked at (quarantine). A restart that would kill running
 * containers (RestartWouldKillContainers) is not among them: refused before the undo changed anything, it is tried
 * again until `rollback_for` runs out, so a KillMode drop-in added meanwhile lets the rollback finish.
 */
export const permanentUndoFailures = [ContainerdBackupMissing, ContainerdBackupCorrupted, ContainerdConfigChangedSinceWritten, StepRefused, 'FileBackupMissing', 'FileBackupCorrupted', ContainersLostOnRestart];

type RestoreUndo = Extract<Undo, { kind: 'restore-containerd-config' }>;

/**
 * Puts the original config back byte for byte (copy of the backup to a temp file, rename), checks the
 * result's sha256, deletes a drop-in the step created, and restarts the service when the files changed
 * or it is not active, until it is active again. That restart keeps running containers as service-restart's
 * does: when it would kill them (KillMode), the undo is refused before it changes anything; after it, every
 * container shim running before must still run. Returns one line for people.
 */
export async function restoreContainerdConfig(shell: NodeShell, undo: Omit<RestoreUndo, 'kind' | 'stepId'>): Promise<{ changed: boolean; summary: string }> {
  const { configPath, backupPath } = undo;
  const done: string[] = [];
  const current = await shell.sha256(configPath);
  // When the files will change, containerd must restart: whether that keeps running containers is checked before
  // anything is changed (otherwise right before a restart the undo needs anyway).
  const filesChange = (backupPath ? current !== undo.sha256 : current !== undefined) || (undo.createdDropIn !== undefined && (await shell.exists(undo.createdDropIn)));
  const containersKept = filesChange ? await guardRunningContainers(shell, undo.service, 'rollback') : undefined;
  if (undo.writtenSha256 !== undefined && current !== undefined && current !== undo.writtenSha256 && current !== undo.sha256) {
    throw permanentFailure(ContainerdConfigChangedSinceWritten,
      `Node ${shell.name}: ${configPath} has sha256 ${current}, neither what katafleet wrote (${undo.writtenSha256}) nor the original (${undo.sha256 ?? 'no file'}): ` +
      `it changed since katafleet wrote it, so katafleet does not put ${backupPath ?? 'the earlier state'} back over it`);
  }
  if (backupPath && undo.sha256 !== undefined && current === undo.sha256) {
    // The swap never happened (or was already taken back): the config has the original bytes.
    done.push(`${configPath} already has the original bytes (sha256 ${current.slice(0, 12)}…)`);
  } else if (backupPath) {
    const backupSha = await shell.sha256(backupPath);
    if (backupSha === undefined) {
      throw permanentFailure(ContainerdBackupMissing, `Node ${shell.name}: the backup ${backupPath} of ${configPath} is gone, so the original cannot be restored; restore ${configPath} by hand`);
    }
    if (undo.sha256 && backupSha !== undo.sha256) {
      throw permanentFailure(ContainerdBackupCorrupted,
        `Node ${shell.name}: the backup ${backupPath} has sha256 ${backupSha}, but ${undo.sha256} was recorded when it was made; it was changed since — restore ${configPath} by hand`);
    }
    if (current !== backupSha) {
      const temp = `${configPath}.katafleet-restore`;
      await shell.run(sh`${shell.tool('cp')} -p ${backupPath} ${temp} && ${shell.tool('sync')} ${temp} && ${shell.tool('mv')} -f ${temp} ${configPath}`, { signal: undefined });
      const restoredSha = await shell.sha256(configPath);
      if (restoredSha !== backupSha) {
        throw transientFailure('ContainerdRestoreFailed', `Node ${shell.name}: ${configPath} has sha256 ${restoredSha} after restoring ${backupPath} (sha256 ${backupSha}); trying again`);
      }
      done.push(`restored ${configPath} from ${backupPath} (sha256 ${backupSha.slice(0, 12)}…, equal to the original)`);
    } else {
      done.push(`${configPath} already equals ${backupPath} (sha256 ${backupSha.slice(0, 12)}…)`);
    }
  } else if (current !== undefined) {
    await shell.run(sh`${shell.tool('rm')} -f ${configPath} ${configPath}.katafleet-*.absent`, { signal: undefined });
    done.push(`deleted ${configPath} (there was none before)`);
  }
  if (undo.createdDropIn && (await shell.exists(undo.createdDropIn))) {
    await shell.run(sh`${shell.tool('rm')} -f ${undo.createdDropIn} ${undo.createdDropIn}.katafleet-*.created`);
    done.push(`deleted ${undo.createdDropIn}`);
  }

  const changed = done.some((line) => !line.includes('already'));
  const state = await readDaemonState(shell, undo.service);
  if (changed || !state.active || state.stale) {
    const check = containersKept ?? (await guardRunningContainers(shell, undo.service, 'rollback'));
    await shell.run(sh`${shell.tool('systemctl')} restart ${undo.service}`, { allowExitCodes: [0, 1], timeoutMs: RESTORE_RESTART_TIMEOUT_MS, signal: undefined });
    await waitForService(shell, undo.service, [], RESTORE_RESTART_TIMEOUT_MS);
    done.push(`restarted ${undo.service}: active${await check()}`);
  } else {
    done.push(`${undo.service} active`);
  }
  return { changed: changed || done.some((line) => line.startsWith('restarted')), summary: done.join('; ') };
}

/** Runs one undo record. Throws (typed) when it cannot; nodeWorkflow records that as a failed undo. */
export async function runUndo(shell: NodeShell, pool: SshPool, kubernetes: KubernetesTarget | undefined, recorded: Undo): Promise<UndoOutcome> {
  // Undo records come from workflow history and from the node's journal: both are checked like a step's input.
  const undo = checkUndo(recorded, shell.target);
  await checkResolvedPaths(shell, `the undo ${undo.kind} of step "${undo.stepId}" on node ${shell.name}`, nodePathsOfUndo(undo));
  const outcome = (summary: string): UndoOutcome => ({ stepId: undo.stepId, kind: undo.kind, ok: true, summary });
  switch (undo.kind) {
    case 'restore-containerd-config':
      return outcome((await restoreContainerdConfig(shell, undo)).summary);
    case 'remove-packages': {
      const removed = await purgeInstalled(shell, undo.manager, undo.packages);
      // Only this run's marker; an undo recorded before markers were named in it falls back to the step's.
      await shell.run(undo.marker ? sh`${shell.tool('rm')} -f ${undo.marker}` : sh`${shell.tool('rm')} -f ${PACKAGE_MARKER_DIR}/installed-*-${undo.stepId}.packages`);
      return outcome(removed.length > 0 ? `removed ${removed.join(', ')}` : `packages ${undo.packages.join(', ')} already removed`);
    }
    case 'remove-node-labels': {
      const kubectl = new Kubectl(pool, requireKubernetes(kubernetes, 'removing node labels'));
      const node = await kubectl.getNode(shell.target);
      const present = undo.keys.filter((key) => key in (node.metadata.labels ?? {}));
      if (present.length === 0) return outcome(`labels ${undo.keys.join(', ')} already absent`);
      await removeLabels(kubectl, shell.name, present);
      return outcome(`removed labels ${present.join(', ')}`);
    }
    case 'restore-file':
      return outcome(await restoreFile(shell, undo));
    case 'remove-release':
      return outcome(await removeRelease(shell, undo));
    case 'restore-release':
      return outcome(await restoreRelease(shell, undo));
    case 'remove-package-repo':
      return outcome(await removePackageRepo(shell, undo));
    case 'uncordon-node': {
      const kubectl = new Kubectl(pool, requireKubernetes(kubernetes, 'uncordoning the node'));
      const node = await kubectl.getNode(shell.target);
      const owner = node.metadata.annotations?.[CORDON_ANNOTATION];
      if (undo.owner !== undefined && owner !== undo.owner) {
        return outcome(node.spec?.unschedulable ? `node cordoned, but not by this run (${owner ? `by ${owner}` : 'no katafleet annotation'}): left as it is` : 'node schedulable');
      }
      if (!node.spec?.unschedulable && owner === undefined) return outcome('node already schedulable');
      await uncordonOwned(kubectl, shell.name);
      return outcome('uncordoned the node (katafleet had cordoned it)');
    }
    case 'restore-node-labels': {
      const kubectl = new Kubectl(pool, requireKubernetes(kubernetes, 'restoring node labels'));
      const node = await kubectl.getNode(shell.target);
      const missing = Object.entries(undo.labels).filter(([key, value]) => node.metadata.labels?.[key] !== value);
      if (missing.length === 0) return outcome(`labels ${Object.keys(undo.labels).join(', ')} already set`);
      await setLabels(kubectl, shell.name, Object.fromEntries(missing));
      return outcome(`put back labels ${missing.map(([k, v]) => `${k}=${v}`).join(', ')}`);
    }
    case 'reinstall-packages': {
      const installed = await reinstallPackages(shell, undo.manager, undo.packages);
      return outcome(installed.length > 0 ? `installed again ${installed.join(', ')}` : `packages ${undo.packages.map((p) => p.name).join(', ')} already installed`);
    }
  }
}
