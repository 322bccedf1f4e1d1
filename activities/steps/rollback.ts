/**
 * `rollback` (a step kind): undoes an earlier katafleet rollout on the node from what that rollout
 * left on the node itself — the newest backup next to the config (restored byte for byte), the
 * labels recorded in the Node's annotation, and (when asked) the packages listed in its markers.
 */
import { Kubectl } from '../kubectl';
import { sh, type SshPool } from '../ssh';
import type { RollbackStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest } from '../node-types';
import type { NodeShell } from './node-shell';
import { labelsAddedByKatafleet, removeLabels } from './node-label';
import { PACKAGE_MARKER_DIR, detectPackageManager, purgeInstalled } from './package-install';
import { restoreContainerdConfig } from './undo';

/** The newest of this config's backups (`.bak`) and no-config markers (`.absent`), by the time each was made. */
async function newestBackup(shell: NodeShell, configPath: string): Promise<string | undefined> {
  const listing = await shell.output(sh`ls -1tc ${configPath}.katafleet-*.bak ${configPath}.katafleet-*.absent 2>/dev/null || true`);
  return listing.split('\n').map((line) => line.trim()).find(Boolean);
}

export async function rollback(shell: NodeShell, pool: SshPool, request: StepRequest<RollbackStep>): Promise<StepOutcome> {
  const { step, node } = request;
  const done: string[] = [];
  let changed = false;

  const backup = await newestBackup(shell, step.config_path);
  if (backup === undefined) {
    done.push(`no katafleet backup next to ${step.config_path}: config left as it is`);
  } else {
    const restored = await restoreContainerdConfig(shell, {
      configPath: step.config_path,
      backupPath: backup.endsWith('.bak') ? backup : undefined,
      service: 'containerd',
    });
    changed ||= restored.changed;
    done.push(restored.summary);
  }

  if (request.kubernetes) {
    const kubectl = new Kubectl(pool, request.kubernetes);
    const current = await kubectl.getNode(node);
    const keys = labelsAddedByKatafleet(current).filter((key) => key in (current.metadata.labels ?? {}));
    if (keys.length > 0) {
      await removeLabels(kubectl, node.name, keys);
      changed = true;
      done.push(`removed labels ${keys.join(', ')}`);
    }
    if (current.spec?.unschedulable) done.push('node is cordoned: left as it is (katafleet does not know who cordoned it)');
  } else {
    done.push('labels not checked (no [kubernetes] in the inventory)');
  }

  if (step.remove_packages) {
    const markers = (await shell.output(sh`cat ${PACKAGE_MARKER_DIR}/installed-*.packages 2>/dev/null || true`)).split('\n').map((l) => l.trim()).filter(Boolean);
    const names = [...new Set(markers)];
    if (names.length > 0) {
      const removed = await purgeInstalled(shell, await detectPackageManager(shell, 'auto'), names);
      if (removed.length > 0) {
        changed = true;
        done.push(`removed ${removed.join(', ')}`);
      }
      await shell.run(sh`rm -f ${PACKAGE_MARKER_DIR}/installed-*.packages`);
    }
  }
  return { changed, summary: done.join('; ') };
}
