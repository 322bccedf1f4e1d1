/**
 * `runtime-class`: applies (server-side, field manager `katafleet`) or deletes a cluster-wide
 * `node.k8s.io/v1` RuntimeClass. Shared by every node, so it has no undo: taking it back on one
 * failed node would break the others. A rollout runs it once (workflows/cluster-objects.ts): apply before
 * the first node, delete after the last. A delete keeps the class while any node still carries the labels
 * of its `scheduling.nodeSelector` (Kata pods may still run there).
 */
import type { SshPool } from '../ssh';
import { Kubectl, requireKubernetes } from '../kubectl';
import type { RuntimeClassStep } from '../../playbooks/schema';
import type { KubernetesTarget, StepOutcome, StepRequest } from '../node-types';
import { permanentFailure } from './step-runtime';

/** A RuntimeClass of that name exists with another handler (handler is immutable). Never retried. */
export const RuntimeClassConflict = 'RuntimeClassConflict';

export interface RuntimeClassObject {
  apiVersion: string;
  kind: 'RuntimeClass';
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string>; uid?: string };
  handler: string;
  scheduling?: { nodeSelector?: Record<string, string> };
  overhead?: { podFixed?: Record<string, string> };
}

/**
 * The annotation a rollout puts on a RuntimeClass it creates (not on one it finds): its rollout id. A rollout that
 * halts or is rolled back deletes the class only when it carries its own id ({@link takeBackRuntimeClass}).
 */
export const CREATED_BY_ROLLOUT = 'katafleet.io/created-by-rollout';

/** The manifest the step applies; `createdBy`: the rollout id, when the class does not exist yet. */
export function runtimeClassManifest(step: RuntimeClassStep, createdBy?: string): RuntimeClassObject {
  const podFixed = Object.fromEntries(Object.entries(step.overhead ?? {}).filter(([, v]) => v !== undefined)) as Record<string, string>;
  return {
    apiVersion: step.api_version,
    kind: 'RuntimeClass',
    metadata: { name: step.name, labels: { 'app.kubernetes.io/managed-by': 'katafleet' }, ...(createdBy !== undefined ? { annotations: { [CREATED_BY_ROLLOUT]: createdBy } } : {}) },
    handler: step.handler,
    ...(Object.keys(step.node_selector).length > 0 ? { scheduling: { nodeSelector: step.node_selector } } : {}),
    ...(Object.keys(podFixed).length > 0 ? { overhead: { podFixed } } : {}),
  };
}

/** Whether the cluster's object already says what the manifest says (quantities compared as written). */
export function sameRuntimeClass(existing: RuntimeClassObject, wanted: RuntimeClassObject): boolean {
  const same = (a: Record<string, string> | undefined, b: Record<string, string> | undefined) =>
    JSON.stringify(Object.entries(a ?? {}).sort()) === JSON.stringify(Object.entries(b ?? {}).sort());
  return existing.handler === wanted.handler &&
    same(existing.scheduling?.nodeSelector, wanted.scheduling?.nodeSelector) &&
    same(existing.overhead?.podFixed, wanted.overhead?.podFixed) &&
    existing.metadata.labels?.['app.kubernetes.io/managed-by'] === 'katafleet';
}

/** The step on one node (playbooks run by older rollouts, and drift repairs): the same as once per rollout. */
export function runtimeClass(pool: SshPool, request: StepRequest<RuntimeClassStep>): Promise<StepOutcome> {
  return runtimeClassOnCluster(pool, request.kubernetes, request.step);
}

/** `a=b,c=d`: a label selector for kubectl. */
function selectorOf(labels: Record<string, string>): string {
  return Object.entries(labels).map(([key, value]) => `${key}=${value}`).join(',');
}

/** Deletes `existing` unless a node still carries the labels of its nodeSelector (Kata pods may run there). */
async function deleteUnlessLabelled(kubectl: Kubectl, step: RuntimeClassStep, existing: RuntimeClassObject, why = ''): Promise<StepOutcome> {
  const selector = existing.scheduling?.nodeSelector ?? step.node_selector;
  if (Object.keys(selector).length > 0) {
    const still = await kubectl.nodesWithLabels(selector);
    if (still.length > 0) {
      return { changed: false, summary: `kept RuntimeClass ${step.name}: ${still.length} node(s) still carry ${selectorOf(selector)} (${still.slice(0, 5).join(', ')}${still.length > 5 ? ', …' : ''}); it is deleted once none does` };
    }
  }
  await kubectl.deleteRuntimeClass(step.name);
  return { changed: true, summary: `deleted RuntimeClass ${step.name} (handler ${step.handler})${why}${Object.keys(selector).length > 0 ? `: no node carries ${selectorOf(selector)} any more` : ''}` };
}

/**
 * Applies or deletes the RuntimeClass, once for the cluster. `rolloutId`: the rollout that applies it once; a class
 * it creates carries {@link CREATED_BY_ROLLOUT} with it, so that its halt or rollback can take back that class only.
 */
export async function runtimeClassOnCluster(pool: SshPool, kubernetes: KubernetesTarget | undefined, step: RuntimeClassStep, rolloutId?: string): Promise<StepOutcome> {
  const kubectl = new Kubectl(pool, requireKubernetes(kubernetes, `runtime-class "${step.name}"`));
  const existing = await kubectl.getRuntimeClass<RuntimeClassObject>(step.name);

  if (step.action === 'delete') {
    if (!existing) return { changed: false, summary: `RuntimeClass ${step.name} does not exist` };
    if (existing.handler !== step.handler) throw conflict(step, existing, 'deleted');
    return deleteUnlessLabelled(kubectl, step, existing);
  }

  const manifest = runtimeClassManifest(step, existing ? undefined : rolloutId);
  if (existing && existing.handler !== step.handler) throw conflict(step, existing, 'changed');
  if (existing && sameRuntimeClass(existing, manifest)) {
    return { changed: false, summary: `RuntimeClass ${step.name} already up to date (handler ${step.handler})` };
  }
  const conflictReason = await kubectl.applyRuntimeClass(manifest);
  if (conflictReason !== undefined) {
    throw permanentFailure(RuntimeClassConflict,
      `RuntimeClass ${step.name} is managed by another field manager and differs from the playbook: ${conflictReason.split('\n')[0]} — ` +
      'align the playbook with it, or let katafleet own it (kubectl apply --server-side --field-manager=katafleet --force-conflicts)');
  }
  const details = [
    `handler ${step.handler}`,
    manifest.scheduling?.nodeSelector && `nodeSelector ${Object.entries(manifest.scheduling.nodeSelector).map(([k, v]) => `${k}=${v}`).join(',')}`,
    manifest.overhead?.podFixed && `overhead ${Object.entries(manifest.overhead.podFixed).map(([k, v]) => `${k}=${v}`).join(',')}`,
  ].filter(Boolean).join(', ');
  return { changed: true, summary: `${existing ? 'updated' : 'created'} RuntimeClass ${step.name} (${details})` };
}

/**
 * Takes back what rollout `rolloutId` applied for `step` when it halts or is rolled back: deletes the RuntimeClass
 * only if this rollout created it ({@link CREATED_BY_ROLLOUT} is its id) and no node carries the labels of its
 * nodeSelector; a class that existed before the rollout is left as it is.
 */
export async function takeBackRuntimeClass(pool: SshPool, kubernetes: KubernetesTarget | undefined, step: RuntimeClassStep, rolloutId: string): Promise<StepOutcome> {
  const kubectl = new Kubectl(pool, requireKubernetes(kubernetes, `runtime-class "${step.name}"`));
  const existing = await kubectl.getRuntimeClass<RuntimeClassObject>(step.name);
  if (!existing) return { changed: false, summary: `RuntimeClass ${step.name} does not exist` };
  if (existing.metadata.annotations?.[CREATED_BY_ROLLOUT] !== rolloutId) {
    return { changed: false, summary: `kept RuntimeClass ${step.name}: it existed before this rollout` };
  }
  return deleteUnlessLabelled(kubectl, step, existing, ', created by this rollout');
}

function conflict(step: RuntimeClassStep, existing: RuntimeClassObject, what: string) {
  return permanentFailure(RuntimeClassConflict,
    `RuntimeClass ${step.name} exists with handler ${existing.handler}, not ${step.handler}: it was not ${what} (the handler of a RuntimeClass cannot change) — ` +
    'use another RuntimeClass name in the playbook, or delete the existing one if nothing uses it');
}
