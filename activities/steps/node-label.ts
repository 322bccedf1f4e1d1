/**
 * `node-label`: sets (or removes) labels on the Kubernetes Node, touching only labels that differ.
 *
 * Labels this run adds are recorded in an annotation on the Node in the same merge patch, so an
 * attempt retried after a worker crash still knows which keys its undo must remove.
 */
import { Kubectl, requireKubernetes, type KubeNode } from '../kubectl';
import type { SshPool } from '../ssh';
import type { NodeLabelStep } from '../../playbooks/schema';
import type { StepOutcome, StepRequest, Undo } from '../node-types';
import { runTag } from './containerd-patch';
import { writeIntent } from './journal';
import type { NodeShell } from './node-shell';

/** Annotation naming the labels a run added: `{"run":"<12 chars of the run id>","keys":[...]}`. */
export const LABELS_ANNOTATION = 'katafleet.dev/labels-added';

interface AddedLabels {
  run: string;
  keys: string[];
}

function readAdded(node: KubeNode): AddedLabels | undefined {
  const text = node.metadata.annotations?.[LABELS_ANNOTATION];
  if (!text) return undefined;
  try {
    const parsed = JSON.parse(text) as AddedLabels;
    return Array.isArray(parsed.keys) && typeof parsed.run === 'string' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** The keys a katafleet run recorded as added to this Node (for the `rollback` step). */
export function labelsAddedByKatafleet(node: KubeNode): string[] {
  return readAdded(node)?.keys ?? [];
}

export async function nodeLabel(shell: NodeShell, pool: SshPool, request: StepRequest<NodeLabelStep>): Promise<StepOutcome> {
  const { step, node, runId } = request;
  const kubectl = new Kubectl(pool, requireKubernetes(request.kubernetes, `node-label "${step.id}"`));
  const current = await kubectl.getNode(node);
  const labels = current.metadata.labels ?? {};

  if (step.action === 'remove') {
    const present = Object.keys(step.labels).filter((key) => key in labels);
    if (present.length === 0) return { changed: false, summary: `labels ${Object.keys(step.labels).join(', ')} not set` };
    const undo: Undo = { kind: 'restore-node-labels', stepId: step.id, labels: Object.fromEntries(present.map((key) => [key, labels[key]])) };
    await writeIntent(shell, request, undo, `remove labels ${present.join(', ')} from Node ${node.name}`);
    await removeLabels(kubectl, node.name, present);
    return { changed: true, summary: `removed labels ${present.join(', ')}`, undo };
  }

  const differing = Object.entries(step.labels).filter(([key, value]) => labels[key] !== value);
  const added = readAdded(current);
  const ours = added?.run === runTag(runId) ? added.keys : [];
  if (differing.length === 0) {
    const summary = `labels already set: ${Object.entries(step.labels).map(([k, v]) => `${k}=${v}`).join(', ')}`;
    if (ours.length === 0) return { changed: false, summary };
    return { changed: true, summary: `${summary} (by an earlier attempt of this run)`, undo: { kind: 'remove-node-labels', stepId: step.id, keys: ours } };
  }
  const newKeys = [...new Set([...ours, ...differing.filter(([key]) => !(key in labels)).map(([key]) => key)])];
  if (newKeys.length > 0) await writeIntent(shell, request, { kind: 'remove-node-labels', stepId: step.id, keys: newKeys }, `add labels ${newKeys.join(', ')} to Node ${node.name}`);
  const patch = {
    metadata: {
      labels: Object.fromEntries(differing),
      ...(newKeys.length > 0 ? { annotations: { [LABELS_ANNOTATION]: JSON.stringify({ run: runTag(runId), keys: newKeys }) } } : {}),
    },
  };
  await kubectl.patchNode(node.name, patch);
  const overwritten = differing.filter(([key]) => key in labels).map(([key, value]) => `${key}=${value} (was ${labels[key]})`);
  return {
    changed: true,
    summary: `labeled ${differing.map(([k, v]) => (k in labels ? overwritten.find((o) => o.startsWith(`${k}=`)) : `${k}=${v}`)).join(', ')}`,
    undo: newKeys.length > 0 ? { kind: 'remove-node-labels', stepId: step.id, keys: newKeys } : undefined,
  };
}

/** Removes label keys (and katafleet's record of them) from the Node; absent keys are ignored. */
export async function removeLabels(kubectl: Kubectl, node: string, keys: readonly string[]): Promise<void> {
  const patch = { metadata: { labels: Object.fromEntries(keys.map((key) => [key, null])), annotations: { [LABELS_ANNOTATION]: null } } };
  await kubectl.patchNode(node, patch);
}

/** Sets labels on the Node (the undo of a `node-label` remove). */
export async function setLabels(kubectl: Kubectl, node: string, labels: Record<string, string>): Promise<void> {
  await kubectl.patchNode(node, { metadata: { labels } }, false);
}
