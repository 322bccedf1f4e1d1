/**
 * Undo records, run by nodeWorkflow newest first after a failure (or by an abort with rollback):
 * each takes back exactly what one step of this run changed, and is safe to run twice.
 */
import { Kubectl, requireKubernetes } from '../kubectl';
import { sh, type SshPool } from '../ssh';
import type { KubernetesTarget, Undo, UndoOutcome } from '../node-types';
import type { NodeShell } from './node-shell';
import { removeLabels } from './node-label';
import { PACKAGE_MARKER_DIR, purgeInstalled } from './package-install';
import { restoreFile } from './prereq-check';
import { removeRelease } from './release-tarball';
import { readDaemonState, waitForService } from './service-restart';
import { permanentFailure, transientFailure } from './step-runtime';

/** How long an undo waits for containerd to come back after restoring its config. */
const RESTORE_RESTART_TIMEOUT_MS = 2 * 60_000;

/** The backup an undo should restore is gone. Never retried. */
export const ContainerdBackupMissing = 'ContainerdBackupMissing';
/** The backup's sha256 is not the one recorded when it was made. Never retried. */
export const ContainerdBackupCorrupted = 'ContainerdBackupCorrupted';

type RestoreUndo = Extract<Undo, { kind: 'restore-containerd-config' }>;

/**
 * Puts the original config back byte for byte (copy of the backup to a temp file, rename), checks the
 * result's sha256, deletes a drop-in the step created, and restarts the service when the files changed
 * or it is not active, until it is active again. Returns one line for people.
 */
export async function restoreContainerdConfig(shell: NodeShell, undo: Omit<RestoreUndo, 'kind' | 'stepId'>): Promise<{ changed: boolean; summary: string }> {
  const { configPath, backupPath } = undo;
  const done: string[] = [];
  if (backupPath) {
    const backupSha = await shell.sha256(backupPath);
    if (backupSha === undefined) {
      throw permanentFailure(ContainerdBackupMissing, `Node ${shell.name}: the backup ${backupPath} of ${configPath} is gone, so the original cannot be restored; restore ${configPath} by hand`);
    }
    if (undo.sha256 && backupSha !== undo.sha256) {
      throw permanentFailure(ContainerdBackupCorrupted,
        `Node ${shell.name}: the backup ${backupPath} has sha256 ${backupSha}, but ${undo.sha256} was recorded when it was made; it was changed since — restore ${configPath} by hand`);
    }
    if ((await shell.sha256(configPath)) !== backupSha) {
      const temp = `${configPath}.katafleet-restore`;
      await shell.run(sh`cp -p ${backupPath} ${temp} && mv -f ${temp} ${configPath}`);
      const restoredSha = await shell.sha256(configPath);
      if (restoredSha !== backupSha) {
        throw transientFailure('ContainerdRestoreFailed', `Node ${shell.name}: ${configPath} has sha256 ${restoredSha} after restoring ${backupPath} (sha256 ${backupSha}); trying again`);
      }
      done.push(`restored ${configPath} from ${backupPath} (sha256 ${backupSha.slice(0, 12)}…, equal to the original)`);
    } else {
      done.push(`${configPath} already equals ${backupPath} (sha256 ${backupSha.slice(0, 12)}…)`);
    }
  } else if (await shell.exists(configPath)) {
    await shell.run(sh`rm -f ${configPath} ${configPath}.katafleet-*.absent`);
    done.push(`deleted ${configPath} (there was none before)`);
  }
  if (undo.createdDropIn && (await shell.exists(undo.createdDropIn))) {
    await shell.run(sh`rm -f ${undo.createdDropIn} ${undo.createdDropIn}.katafleet-*.created`);
    done.push(`deleted ${undo.createdDropIn}`);
  }

  const changed = done.some((line) => !line.includes('already equals'));
  const state = await readDaemonState(shell, undo.service);
  if (changed || !state.active || state.stale) {
    await shell.run(sh`systemctl restart ${undo.service}`, { allowExitCodes: [0, 1], timeoutMs: RESTORE_RESTART_TIMEOUT_MS });
    await waitForService(shell, undo.service, [], RESTORE_RESTART_TIMEOUT_MS);
    done.push(`restarted ${undo.service}: active`);
  } else {
    done.push(`${undo.service} active`);
  }
  return { changed: changed || done.some((line) => line.startsWith('restarted')), summary: done.join('; ') };
}

/** Runs one undo record. Throws (typed) when it cannot; nodeWorkflow records that as a failed undo. */
export async function runUndo(shell: NodeShell, pool: SshPool, kubernetes: KubernetesTarget | undefined, undo: Undo): Promise<UndoOutcome> {
  const outcome = (summary: string): UndoOutcome => ({ stepId: undo.stepId, kind: undo.kind, ok: true, summary });
  switch (undo.kind) {
    case 'restore-containerd-config':
      return outcome((await restoreContainerdConfig(shell, undo)).summary);
    case 'remove-packages': {
      const removed = await purgeInstalled(shell, undo.manager, undo.packages);
      await shell.run(sh`rm -f ${PACKAGE_MARKER_DIR}/installed-*-${undo.stepId}.packages`);
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
    case 'uncordon-node': {
      const kubectl = new Kubectl(pool, requireKubernetes(kubernetes, 'uncordoning the node'));
      const node = await kubectl.getNode(shell.target);
      if (!node.spec?.unschedulable) return outcome('node already schedulable');
      await kubectl.run(['uncordon', shell.name]);
      return outcome('uncordoned the node');
    }
  }
}
