/**
 * The activities' own wall: every step, undo record and node target an activity receives is checked again with
 * the playbook schema's allowlists, because a workflow can be started straight on Temporal (anyone who can write
 * to the namespace can) without `katafleet validate` or the API ever seeing its input. A refusal is the
 * non-retryable `StepRefused`, raised before anything is sent to the node, and names the field, the value's
 * problem and what is allowed. Paths that pass are then resolved on the node (`realpath -m`) before anything is
 * written, so a symlink cannot carry a write out of its directory.
 */
import { z } from 'zod';
import {
  allowlisted,
  absolutePath,
  checkAllowlist,
  containerdConfigPath,
  containerdDropInPath,
  dnsLabel,
  dnsSubdomain,
  kataVersion,
  labelKey,
  labelValue,
  modulesLoadFile,
  nodeAddress,
  packageName,
  packageVersion,
  serviceName,
  type Allowlist,
} from '../playbooks/allowlists';
import { profileNamePattern } from '../playbooks/credentials';
import { Step } from '../playbooks/schema';
import { problemsFromZod } from '../playbooks/zod-issues';
import { activityByKind } from '../workflows/step-activities';
import type { Problem } from '../playbooks/errors';
import { sh } from './ssh';
import type { KubernetesTarget, NodeTarget, Undo } from './node-types';
import type { NodeShell } from './steps/node-shell';
import { permanentFailure, transientFailure } from './steps/step-runtime';

/** An activity's input breaks the playbook or inventory rules (e.g. a path outside its directory). Never retried. */
export const StepRefused = 'StepRefused';

/** The part of a node target that reaches a node or a command: checked, the rest passes through. */
const NodeTargetShape = z.looseObject({
  name: allowlisted(dnsSubdomain),
  address: allowlisted(nodeAddress),
  port: z.int().min(1).max(65535),
  // The login itself (user, key, known_hosts) is read by the worker from this reference, never from the input.
  credentials: z.union([
    z.strictObject({ profile: z.string().regex(profileNamePattern, 'must be a profile name (a-z, 0-9, ".", "_", "-")'), file: allowlisted(absolutePath) }),
    z.strictObject({ inventory: allowlisted(absolutePath), node: allowlisted(dnsSubdomain) }),
  ]),
});

const KubernetesTargetShape = z.looseObject({
  host: NodeTargetShape.optional(),
  kubectl: z.union([z.literal('kubectl'), allowlisted(absolutePath)]),
  kubeconfig: allowlisted(absolutePath).optional(),
  // Like the login, the worker's kubeconfig is read from this reference, never from the input.
  worker: z.union([
    z.strictObject({ profile: z.string().regex(profileNamePattern, 'must be a profile name (a-z, 0-9, ".", "_", "-")'), file: allowlisted(absolutePath) }),
    z.strictObject({ inventory: allowlisted(absolutePath) }),
  ]).optional(),
}).refine((target) => (target.host === undefined) !== (target.worker === undefined), 'names either a host (kubectl over SSH) or a kubeconfig reference on the worker, exactly one');

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be a sha256 in hex (64 characters 0-9a-f)');

/** A backup katafleet made next to `file`: `<file>.katafleet-<run>.bak`. */
function backupOf(file: string | undefined, backup: string): string | undefined {
  const reason = checkAllowlist(backup, absolutePath);
  if (reason !== undefined) return reason;
  return file !== undefined && new RegExp(`^${escapeRegExp(file)}\\.katafleet-[A-Za-z0-9-]{1,12}\\.bak$`).test(backup)
    ? undefined
    : `${JSON.stringify(backup)} is not a katafleet backup of ${JSON.stringify(file)} (${file}.katafleet-RUN.bak)`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const UndoShape = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('restore-containerd-config'),
    stepId: allowlisted(dnsLabel),
    configPath: allowlisted(containerdConfigPath),
    backupPath: z.string().optional(),
    sha256: sha256.optional(),
    createdDropIn: allowlisted(containerdDropInPath).optional(),
    writtenSha256: sha256.optional(),
    service: allowlisted(serviceName),
  }),
  z.strictObject({
    kind: z.literal('remove-packages'),
    stepId: allowlisted(dnsLabel),
    packages: z.array(allowlisted(packageName)),
    manager: z.enum(['apt', 'dnf', 'zypper']),
    // This run's package marker: only under katafleet's own directory on the node.
    marker: z.string().regex(/^\/var\/lib\/katafleet\/installed-[A-Za-z0-9-]{1,12}-[a-z0-9-]{1,63}\.packages$/, 'must be a katafleet package marker (/var/lib/katafleet/installed-RUN-STEP.packages)').optional(),
  }),
  z.strictObject({
    kind: z.literal('reinstall-packages'),
    stepId: allowlisted(dnsLabel),
    packages: z.array(z.strictObject({ name: allowlisted(packageName), version: allowlisted(packageVersion) })),
    manager: z.enum(['apt', 'dnf', 'zypper']),
  }),
  z.strictObject({ kind: z.literal('remove-node-labels'), stepId: allowlisted(dnsLabel), keys: z.array(allowlisted(labelKey)) }),
  z.strictObject({ kind: z.literal('restore-node-labels'), stepId: allowlisted(dnsLabel), labels: z.record(allowlisted(labelKey), allowlisted(labelValue)) }),
  z.strictObject({ kind: z.literal('uncordon-node'), stepId: allowlisted(dnsLabel), owner: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'must be a run id').optional() }),
  z.strictObject({
    kind: z.literal('remove-release'),
    stepId: allowlisted(dnsLabel),
    version: allowlisted(kataVersion),
    previous: z.string().regex(/^\/opt\/kata-releases\/[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.+~^_-]*\/opt\/kata$/, 'must be /opt/kata-releases/VERSION/opt/kata').optional(),
    createdVersionDir: z.boolean(),
    createdReleasesDir: z.boolean().optional(),
    createdLinks: z.array(z.enum(['/usr/local/bin/kata-runtime', '/usr/local/bin/containerd-shim-kata-v2'])),
  }),
  z.strictObject({
    kind: z.literal('remove-package-repo'),
    stepId: allowlisted(dnsLabel),
    packages: z.array(allowlisted(packageName)),
    marker: z.string().regex(/^\/var\/lib\/katafleet\/installed-[A-Za-z0-9-]{1,12}-[a-z0-9-]{1,63}\.packages$/, 'must be a katafleet package marker (/var/lib/katafleet/installed-RUN-STEP.packages)').optional(),
    source: z.string().regex(/^(\/etc\/apt\/sources\.list\.d\/katafleet-[a-z0-9-]{1,63}\.list|\/etc\/(yum\.repos\.d|zypp\/repos\.d)\/katafleet-[a-z0-9-]{1,63}\.repo)$/,
      'must be /etc/apt/sources.list.d/katafleet-NAME.list, /etc/yum.repos.d/katafleet-NAME.repo or /etc/zypp/repos.d/katafleet-NAME.repo').optional(),
    key: z.string().regex(/^(\/etc\/apt\/keyrings\/katafleet-[a-z0-9-]{1,63}\.asc|\/etc\/pki\/rpm-gpg\/RPM-GPG-KEY-katafleet-[a-z0-9-]{1,63})$/,
      'must be /etc/apt/keyrings/katafleet-NAME.asc or /etc/pki/rpm-gpg/RPM-GPG-KEY-katafleet-NAME').optional(),
    manager: z.enum(['apt', 'dnf', 'zypper']).optional(),
    rpmKey: z.string().regex(/^gpg-pubkey-[0-9a-f]{8}$/, 'must be gpg-pubkey-XXXXXXXX (8 lower-case hex digits)').optional(),
  }),
  z.strictObject({
    kind: z.literal('restore-release'),
    stepId: allowlisted(dnsLabel),
    aside: z.string().regex(/^\/opt\/kata-releases\.katafleet-removed-[A-Za-z0-9-]{1,12}$/, 'must be /opt/kata-releases.katafleet-removed-RUN'),
    previous: z.string().regex(/^\/opt\/kata-releases\/[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.+~^_-]*\/opt\/kata$/, 'must be /opt/kata-releases/VERSION/opt/kata').optional(),
    links: z.array(z.enum(['/usr/local/bin/kata-runtime', '/usr/local/bin/containerd-shim-kata-v2'])),
  }),
  z.strictObject({
    kind: z.literal('restore-file'),
    stepId: allowlisted(dnsLabel),
    path: allowlisted(modulesLoadFile),
    backupPath: z.string().optional(),
    sha256: sha256.optional(),
  }),
]).superRefine((undo, ctx) => {
  if (!('backupPath' in undo) || undo.backupPath === undefined) return;
  const reason = backupOf(undo.kind === 'restore-file' ? undo.path : undo.configPath, undo.backupPath);
  if (reason !== undefined) ctx.addIssue({ code: 'custom', path: ['backupPath'], message: reason });
});

/**
 * The message of a refusal: what was refused, every problem with its field, and why the activity checks at all.
 *
 * @example `Refusing step "containerd" (containerd-patch) on node worker-1: runtimes[0].options.BinaryName: "/tmp/x" is refused: …`
 */
export function stepRefusedMessage(what: string, problems: readonly Pick<Problem, 'path' | 'message'>[]): string {
  const listed = problems.slice(0, 10).map((problem) => (problem.path ? `${problem.path}: ${problem.message}` : problem.message));
  const more = problems.length > 10 ? ` (and ${problems.length - 10} more)` : '';
  return `Refusing ${what}: ${listed.join('; ')}${more}. Nothing was sent to the node. ` +
    'katafleet validate and the API refuse the same input; this one reached the worker without them (a workflow started straight on Temporal?) — fix the playbook or inventory and start it through katafleet';
}

function refuse(what: string, problems: readonly Pick<Problem, 'path' | 'message'>[]): never {
  throw permanentFailure(StepRefused, stepRefusedMessage(what, problems));
}

function check<T>(schema: z.ZodType<T>, value: unknown, what: string, prefix = ''): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = problemsFromZod('', parsed.error.issues, schema, value);
  return refuse(what, problems.map((problem) => ({ ...problem, path: [prefix, problem.path].filter(Boolean).join('.') })));
}

/** Short name of a value for messages, whatever the input held. */
function shown(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 61)}…` : text);
}

function nodeName(node: unknown): string {
  return shown((node as { name?: unknown } | null)?.name);
}

/** Checks the node (and the Kubernetes host) an activity is asked to reach; throws `StepRefused`. */
export function checkTargets(node: NodeTarget, kubernetes: KubernetesTarget | undefined): void {
  check(NodeTargetShape, node, `the node target ${nodeName(node)}`, 'node');
  if (kubernetes !== undefined) check(KubernetesTargetShape, kubernetes, `the Kubernetes target of node ${nodeName(node)}`, 'kubernetes');
}

/** Checks the Kubernetes target and the step of a cluster-wide step the rollout runs once; throws `StepRefused`. */
export function checkClusterRequest<S extends Step>(kubernetes: KubernetesTarget, step: S): S {
  check(KubernetesTargetShape, kubernetes, 'the Kubernetes target of the rollout', 'kubernetes');
  const raw = step as unknown as { id?: unknown; kind?: unknown } | null;
  return check(Step, step, `cluster step ${shown(raw?.id)} (${shown(raw?.kind)})`) as S;
}

/**
 * The step as the playbook schema reads it (defaults filled in), or `StepRefused` naming every field that breaks
 * a rule: `runtimes[0].options.BinaryName: "/tmp/x" is refused: it is not under "/opt/kata/" …`.
 */
export function checkStep<S extends Step>(step: S, node: NodeTarget): S {
  const raw = step as unknown as { id?: unknown; kind?: unknown } | null;
  return check(Step, step, `step ${shown(raw?.id)} (${shown(raw?.kind)}) on node ${nodeName(node)}`) as S;
}

/** The most steps a playbook's run can place: a step index at or above it is refused. */
const maxStepIndex = 9_999;

/**
 * Checks where a request places its step: its index in the run (journal entries, lease ranks) and the attempts it had
 * in a run of steps before this activity (patch `node-step-runs`; at most the step's `max_attempts`). Both are whole
 * numbers a workflow started straight on Temporal could set to anything; throws `StepRefused`.
 */
export function checkStepPlace(request: { stepIndex?: unknown; attemptsBefore?: unknown }, step: Step, node: NodeTarget): void {
  const what = `the place of step ${shown(step.id)} (${step.kind}) on node ${nodeName(node)}`;
  const shape = z.strictObject({ stepIndex: z.int().min(0).max(maxStepIndex).optional(), attemptsBefore: z.int().min(0).optional() });
  const place = check(shape, { stepIndex: request.stepIndex, attemptsBefore: request.attemptsBefore }, what);
  const maxAttempts = step.retry?.max_attempts ?? 3;
  if ((place.attemptsBefore ?? 0) > maxAttempts) refuse(what, [{ path: 'attemptsBefore', message: `must not exceed the step's retry.max_attempts (${maxAttempts}), got ${place.attemptsBefore}` }]);
}

/**
 * Checks a run of steps (patch `node-step-runs`) before any of its steps: at least one step, a whole `firstIndex` that
 * leaves every step's index in bounds, and for the run's first steps (`firstOfRun`: the run checks the node first)
 * index 0 and the same steps as the run's, in order. Each step is then checked as its own activity checks it.
 */
export function checkStepRun(request: { steps?: unknown; firstIndex?: unknown; firstOfRun?: { steps?: unknown } }, node: NodeTarget): void {
  const what = `the run of steps on node ${nodeName(node)}`;
  const shape = z.strictObject({
    // Each step is checked in full by its own activity's code; here only what picks that code.
    steps: z.array(z.looseObject({ id: z.string(), kind: z.enum(Object.keys(activityByKind) as [Step['kind'], ...Step['kind'][]]) })).min(1).max(maxStepIndex + 1),
    firstIndex: z.int().min(0).max(maxStepIndex),
  });
  const run = check(shape, { steps: request.steps, firstIndex: request.firstIndex }, what);
  if (run.firstIndex + run.steps.length > maxStepIndex + 1) refuse(what, [{ path: 'firstIndex', message: `places the last step at index ${run.firstIndex + run.steps.length - 1}, above ${maxStepIndex}` }]);
  if (request.firstOfRun === undefined) return;
  const all = check(z.array(z.looseObject({ id: z.string() })), request.firstOfRun?.steps, what, 'firstOfRun.steps');
  if (run.firstIndex !== 0) refuse(what, [{ path: 'firstIndex', message: `must be 0 when the run checks the node first (firstOfRun), not ${run.firstIndex}` }]);
  const ids = (steps: { id: string }[]) => JSON.stringify(steps.map((step) => step.id));
  if (ids(all) !== ids(run.steps)) refuse(what, [{ path: 'firstOfRun.steps', message: `must be the run's steps (${shown(ids(run.steps))}), not ${shown(ids(all))}` }]);
}

/** The undo record as recorded by the step that made it, or `StepRefused`. */
export function checkUndo(undo: Undo, node: NodeTarget): Undo {
  const raw = undo as unknown as { stepId?: unknown; kind?: unknown } | null;
  return check(UndoShape, undo, `the undo ${shown(raw?.kind)} of step ${shown(raw?.stepId)} on node ${nodeName(node)}`, 'undo') as Undo;
}

/** One node path an activity will write, with the rule it must still meet once symlinks are resolved. */
export interface NodePath {
  field: string;
  path: string;
  list: Allowlist;
}

/** The node paths a step writes (or, for rollback, restores). */
export function nodePathsOfStep(step: Step): NodePath[] {
  switch (step.kind) {
    case 'prereq-check':
      return step.persist_modules ? [{ field: 'modules_load_file', path: step.modules_load_file, list: modulesLoadFile }] : [];
    case 'containerd-patch':
      return [
        { field: 'config_path', path: step.config_path, list: containerdConfigPath },
        ...(step.mode === 'drop-in' ? [{ field: 'drop_in_path', path: step.drop_in_path, list: containerdDropInPath }] : []),
      ];
    case 'rollback':
      return [{ field: 'config_path', path: step.config_path, list: containerdConfigPath }];
    default:
      return [];
  }
}

/** The node paths an undo writes or deletes. */
export function nodePathsOfUndo(undo: Undo): NodePath[] {
  switch (undo.kind) {
    case 'restore-containerd-config':
      return [
        { field: 'undo.configPath', path: undo.configPath, list: containerdConfigPath },
        ...(undo.createdDropIn ? [{ field: 'undo.createdDropIn', path: undo.createdDropIn, list: containerdDropInPath }] : []),
      ];
    case 'restore-file':
      return [{ field: 'undo.path', path: undo.path, list: modulesLoadFile }];
    default:
      return [];
  }
}

/** `realpath -m` of the paths, one line each: what {@link checkResolvedPaths} sends. */
function resolveCommand(paths: readonly NodePath[]) {
  return sh`realpath -m ${paths.map((p) => p.path)}`;
}

/** Refuses (StepRefused) any path whose real location, as `realpath -m` printed it, breaks its rule. */
function refuseResolved(what: string, paths: readonly NodePath[], answer: string): void {
  const resolved = answer.trim().split('\n');
  const problems = paths.flatMap((entry, i) => {
    const real = resolved[i] ?? '';
    if (real === entry.path) return [];
    const reason = checkAllowlist(real, entry.list);
    return reason === undefined ? [] : [{ path: entry.field, message: `${JSON.stringify(entry.path)} is a symlink on the node; its target ${reason}` }];
  });
  if (problems.length > 0) refuse(what, problems);
}

/**
 * Resolves `paths` on the node (`realpath -m`: symlinks followed, missing parts allowed) and refuses any whose
 * real location breaks its rule, e.g. `/etc/containerd/config.toml` as a symlink to `/etc/shadow`. One command of
 * its own; a step uses {@link queueResolvedPathsCheck} instead.
 */
export async function checkResolvedPaths(shell: NodeShell, what: string, paths: readonly NodePath[]): Promise<void> {
  if (paths.length === 0) return;
  refuseResolved(what, paths, await shell.output(resolveCommand(paths)));
}

/**
 * {@link checkResolvedPaths} riding on the shell's next command ({@link NodeShell.queueRead}): the step's first
 * read carries the `realpath -m`, and the refusal (StepRefused, the same message) is raised before the step gets
 * anything that read answered, so before it changes anything on the node (the lease that command took is released
 * by the step's failure path). A `realpath` that fails is a retryable CommandFailed, as a command of its own was.
 */
export function queueResolvedPathsCheck(shell: NodeShell, what: string, paths: readonly NodePath[]): void {
  if (paths.length === 0) return;
  const command = resolveCommand(paths);
  shell.queueRead(command, (answer) => {
    if (answer.exitCode !== 0) {
      throw transientFailure('CommandFailed', `Node ${shell.name}: ${command.display} exited with ${answer.exitCode}; checking the paths of ${what} again`);
    }
    refuseResolved(what, paths, answer.stdout);
  });
}
