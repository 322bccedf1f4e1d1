/**
 * `rollback` (a step kind): undoes the newest katafleet run recorded on the node that changed this
 * config, from what that run left on the node itself. Succeeded runs of journaling katafleet versions
 * leave an applied record (`/var/lib/katafleet/applied/NNNNNN-<run>.json`, numbered in the order runs
 * finished, never by file times) with their undos: the config is restored from that run's backup,
 * only while its sha256 is the one recorded and the config is still what that run wrote; the labels
 * that run added are removed; with `remove_packages`, only the packages that run installed are purged
 * (never another playbook's). Nodes without such a record (changed by an older katafleet) fall back to
 * the newest backup next to the config and the packages recorded by the run that made that backup.
 */
import { Kubectl } from '../kubectl';
import { sh, type SshPool } from '../ssh';
import type { RollbackStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest, Undo } from '../node-types';
import { newestApplied } from './journal';
import type { NodeShell } from './node-shell';
import { labelsAddedByKatafleet, removeLabels } from './node-label';
import { PACKAGE_MARKER_DIR, detectPackageManager, purgeInstalled } from './package-install';
import { restoreContainerdConfig, runUndo } from './undo';

/** The newest of this config's backups (`.bak`) and no-config markers (`.absent`), by the time each was made. */
async function newestBackup(shell: NodeShell, configPath: string): Promise<string | undefined> {
  const listing = await shell.output(sh`ls -1tc ${configPath}.katafleet-*.bak ${configPath}.katafleet-*.absent 2>/dev/null || true`);
  return listing.split('\n').map((line) => line.trim()).find(Boolean);
}

export async function rollback(shell: NodeShell, pool: SshPool, request: StepRequest<RollbackStep>): Promise<StepOutcome> {
  const { step } = request;
  const applied = await newestApplied(shell, (record) => record.undos.some((undo) => undo.kind === 'restore-containerd-config' && undo.configPath === step.config_path));
  if (applied) {
    const done: string[] = [`rolling back run ${applied.record.runId} of ${applied.record.rolloutId} (${applied.file})`];
    let changed = false;
    const undos = applied.record.undos.filter((undo: Undo) =>
      undo.kind === 'restore-containerd-config' || undo.kind === 'remove-node-labels' || (undo.kind === 'remove-packages' && step.remove_packages));
    for (const undo of undos) {
      if (undo.kind === 'remove-node-labels' && !request.kubernetes) {
        done.push('labels not checked (no [kubernetes] in the inventory)');
        continue;
      }
      const outcome = await runUndo(shell, pool, request.kubernetes, undo);
      changed ||= !/already/.test(outcome.summary);
      done.push(outcome.summary);
    }
    if (!step.remove_packages && applied.record.undos.some((undo) => undo.kind === 'remove-packages')) done.push('packages left installed (remove_packages = false)');
    await shell.run(sh`${shell.tool('rm')} -f ${applied.file}`);
    return { changed, summary: done.join('; ') };
  }

  // No applied record: a node changed by a katafleet without the journal.
  const done: string[] = [];
  let changed = false;
  const backup = await newestBackup(shell, step.config_path);
  if (backup === undefined) {
    done.push(`no katafleet record or backup for ${step.config_path}: config left as it is`);
  } else {
    const restored = await restoreContainerdConfig(shell, { configPath: step.config_path, backupPath: backup.endsWith('.bak') ? backup : undefined, service: 'containerd' });
    changed ||= restored.changed;
    done.push(`no applied record: newest backup ${backup}; ${restored.summary}`);
  }
  if (request.kubernetes) {
    const kubectl = new Kubectl(pool, request.kubernetes);
    const current = await kubectl.getNode(request.node);
    const keys = labelsAddedByKatafleet(current).filter((key) => key in (current.metadata.labels ?? {}));
    if (keys.length > 0) {
      await removeLabels(kubectl, request.node.name, keys);
      changed = true;
      done.push(`removed labels ${keys.join(', ')}`);
    }
  }
  if (step.remove_packages && backup !== undefined) {
    // Only the packages the run that made this backup installed (its markers carry the same run tag).
    const tag = /\.katafleet-([^.]+)\.(bak|absent)$/.exec(backup)?.[1];
    const names = tag ? [...new Set((await shell.output(sh`${shell.tool('cat')} ${PACKAGE_MARKER_DIR}/installed-${tag}-*.packages 2>/dev/null || true`)).split('\n').map((l) => l.trim()).filter(Boolean))] : [];
    if (tag && names.length > 0) {
      const removed = await purgeInstalled(shell, await detectPackageManager(shell, 'auto'), names);
      if (removed.length > 0) {
        changed = true;
        done.push(`removed ${removed.join(', ')} (installed by the run of that backup)`);
      }
      await shell.run(sh`${shell.tool('rm')} -f ${PACKAGE_MARKER_DIR}/installed-${tag}-*.packages`);
    }
  }
  return { changed, summary: done.join('; ') };
}
