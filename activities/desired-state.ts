/**
 * The node's desired state: which playbook (name and sha256) the node's last successful rollout applied,
 * kept on the node itself in {@link desiredStatePath}. rolloutWorkflow writes it after a node's child
 * succeeded, and marks it `rolled-back` when an abort undid the node; driftWorkflow repairs a node only
 * back to the playbook recorded there, so a drift schedule of another playbook (or an older version of
 * the same one) never reverts a rollout, and never re-applies what an abort took back.
 */
import type { SshPool } from './ssh';
import type { NodeTarget } from './node-types';
import { NodeShell } from './steps/node-shell';

/** Where the desired state lives on each node (JSON, see {@link DesiredState}). */
export const desiredStatePath = '/var/lib/katafleet/desired.json';

/** Where safety-node's quarantine marker lives on each node (JSON: rolloutId, runId, reason, fix, since). */
export const quarantinePath = '/var/lib/katafleet/quarantine.json';

/** The content of {@link desiredStatePath}. */
export interface DesiredState {
  playbook: { name: string; sha256: string };
  /** The rollout that applied it (or last rolled it back). */
  rolloutId: string;
  /** `applied`: the rollout succeeded on the node; `rolled-back`: an abort with rollback undid it. */
  state: 'applied' | 'rolled-back';
  /** ISO time of the write, from the workflow's clock. */
  since: string;
}

/** The quarantine marker safety-node's nodeWorkflow writes; only what drift shows is read here. */
export interface QuarantineMarker {
  rolloutId?: string;
  reason?: string;
  fix?: string;
  since?: string;
}

/** Parses {@link desiredStatePath}; undefined when it is absent, and an explicit error when it is not ours. */
export function parseDesiredState(text: string | undefined, node: string): DesiredState | undefined {
  if (text === undefined) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error(`node ${node}: ${desiredStatePath} is not JSON: fix or delete the file (a rollout writes it again)`);
  }
  const value = data as Partial<DesiredState>;
  if (typeof value.playbook?.name !== 'string' || typeof value.playbook.sha256 !== 'string' || typeof value.rolloutId !== 'string' || (value.state !== 'applied' && value.state !== 'rolled-back')) {
    throw new Error(`node ${node}: ${desiredStatePath} lacks playbook.name, playbook.sha256, rolloutId or state: fix or delete the file (a rollout writes it again)`);
  }
  return value as DesiredState;
}

/** Writes {@link desiredStatePath} on the node (atomically: a temp file renamed over it). */
export async function writeDesiredState(shell: NodeShell, desired: DesiredState): Promise<void> {
  await shell.writeFileAtomic(desiredStatePath, desiredStateText(desired));
}

/** desired.json's bytes as katafleet writes them. */
export function desiredStateText(desired: DesiredState): string {
  return `${JSON.stringify(desired, null, 2)}\n`;
}

/** Builds the desired-state activities; register them with the worker (`workerActivities` does). */
export function createDesiredStateActivities(deps: { pool: SshPool }) {
  return {
    /** Records on the node what the rollout applied (or that an abort rolled it back). Idempotent: the same write twice is one. */
    async recordDesiredState(request: { node: NodeTarget; desired: DesiredState }): Promise<void> {
      await writeDesiredState(new NodeShell(deps.pool, request.node), request.desired);
    },
  };
}
