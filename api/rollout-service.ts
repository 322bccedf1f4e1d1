import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/common';
import { decodeFromPayloadsAtIndex } from '@temporalio/common/lib/internal-non-workflow';
import { WorkflowUpdateFailedError, type Client, type WorkflowExecutionInfo } from '@temporalio/client';
import type { KubernetesTarget, NodeTarget } from '../activities/node-types';
import { defaultCredentialsFile } from '../playbooks/credentials';
import { checkPlaybookAgainstInventory } from '../playbooks/load';
import { resolveNodeSsh, rolloutNodes, type Inventory, type InventoryNode, type Playbook, type RolloutOverrides } from '../playbooks/schema';
import { taskQueue, workflowUiLink } from '../worker/connection';
import { parseDuration } from '../playbooks/duration';
import type { RolloutInput, RolloutLimits } from '../workflows/rollout';
import { abortUpdate, maxProgressPageSize, pauseUpdate, progressPage, resumeUpdate, rolloutProgressQuery, type AbortRequest, type ProgressPageRequest, type RolloutPhase, type RolloutProgress } from '../workflows/rollout-messages';
import { searchAttributes } from '../workflows/search-attributes';
import { inventoryPieceSignal, splitInventory } from '../workflows/inventory-pieces';
import { piecesInHistory } from '../activities/inventory-history';

/** A failure of a rollout operation that maps to an HTTP status (and a CLI exit status). */
export class RolloutServiceError extends Error {
  override name = 'RolloutServiceError';
  constructor(
    readonly type: 'RolloutNotFound' | 'RolloutConflict' | 'RolloutRequestRejected' | 'RolloutTooLarge' | 'TemporalLimit' | 'TemporalNotReady' | 'InvalidPageToken' | 'WorkerUnavailable',
    message: string,
  ) {
    super(message);
  }
}

const rolloutPrefix = 'katafleet-rollout-';

/** Workflow id of a rollout: its id is the caller's request id, so the same request never starts twice. */
export function rolloutWorkflowId(rolloutId: string): string {
  return `${rolloutPrefix}${rolloutId}`;
}

/**
 * How to reach a node, from the inventory: address and connection settings, and where the worker reads the
 * login — the credential profile in effect, or else the operator's inventory file itself. No key path travels.
 */
export function toNodeTarget(inventory: Inventory, node: InventoryNode): NodeTarget {
  const ssh = resolveNodeSsh(inventory, node);
  return {
    name: node.name,
    address: node.address,
    port: ssh.port,
    maxSessions: ssh.max_sessions,
    connectTimeoutMs: parseDuration(ssh.connect_timeout),
    credentials:
      ssh.profile !== undefined
        ? { profile: ssh.profile, file: inventory.credentials?.file ?? defaultCredentialsFile() }
        : { inventory: path.resolve(inventory.source.file), node: node.name },
  };
}

/** kubectl on the inventory's control-plane host, if it names one. */
export function toKubernetesTarget(inventory: Inventory): KubernetesTarget | undefined {
  const settings = inventory.kubernetes;
  if (!settings) return undefined;
  if (settings.control_plane === undefined) {
    const worker = settings.profile !== undefined
      ? { profile: settings.profile, file: inventory.credentials?.file ?? defaultCredentialsFile() }
      : { inventory: path.resolve(inventory.source.file) };
    return { kubectl: settings.kubectl, worker };
  }
  const host = inventory.nodes.find((node) => node.name === settings.control_plane);
  if (!host) throw new Error(`${inventory.source.file}: kubernetes.control_plane names "${settings.control_plane}", which is not a node of the inventory`);
  return { host: toNodeTarget(inventory, host), kubectl: settings.kubectl, kubeconfig: settings.kubeconfig };
}

/** The plain, typed input of rolloutWorkflow: built outside workflows from validated files. */
export function buildRolloutInput(playbook: Playbook, inventory: Inventory, rolloutId: string, overrides: RolloutOverrides = {}): RolloutInput & { nodes: NodeTarget[] } {
  checkPlaybookAgainstInventory(playbook, inventory);
  const given = Object.fromEntries(Object.entries(overrides).filter(([, value]) => value !== undefined));
  return {
    rolloutId,
    playbook: { name: playbook.playbook.name, file: playbook.source.file, sha256: playbook.source.sha256 },
    steps: playbook.steps,
    rollout: { ...playbook.rollout, ...given },
    nodes: rolloutNodes(inventory).map((node) => toNodeTarget(inventory, node)),
    kubernetes: toKubernetesTarget(inventory),
  };
}

export interface StartedRollout {
  rolloutId: string;
  workflowId: string;
  uiLink: string;
  /** false when a rollout with this request id already existed (nothing new was started). */
  started: boolean;
}

/**
 * Starts a rollout. The request id (default: a new UUID) becomes the rollout id: the same id twice
 * starts one rollout. Refuses (RolloutConflict) while another running rollout works on one of the nodes.
 */
export async function startRollout(
  client: Client,
  playbook: Playbook,
  inventory: Inventory,
  options: {
    requestId?: string;
    overrides?: RolloutOverrides;
    /** Lower per-run limits, for tests that cross them with a small fleet (the API and CLI never set it). */
    limits?: RolloutLimits;
    /** Nodes per inventory piece. @default inventoryPieceNodes (500) */
    pieceNodes?: number;
  } = {},
): Promise<StartedRollout> {
  const requestId = options.requestId ?? randomUUID();
  // It becomes a workflow id and appears in visibility queries: the API's pattern, for the CLI's --request-id too.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(requestId)) {
    throw new RolloutServiceError('RolloutRequestRejected', `request id ${JSON.stringify(requestId)}: use letters, digits, ".", "_" and "-" (at most 100, starting with a letter or digit)`);
  }
  const input = buildRolloutInput(playbook, inventory, requestId, options.overrides);
  const tooLarge = rolloutSizeProblem(input.nodes.length, inventory.source.file);
  if (tooLarge) throw new RolloutServiceError('RolloutTooLarge', tooLarge);
  const workflowId = rolloutWorkflowId(requestId);
  const existing = await describeOrUndefined(client, workflowId);
  if (existing) return { rolloutId: requestId, workflowId, uiLink: workflowUiLink(workflowId), started: false };
  await refuseBusyNodes(client, input.nodes.map((node) => node.name), workflowId);
  // The inventory travels in pieces (issue 13): the start input names their count and digest, the first piece
  // comes with the start (signalWithStart), the others as signals; no payload grows with the fleet.
  const { manifest, pieces } = splitInventory(input.nodes, options.pieceNodes);
  // signalWithStart signals a rollout that a simultaneous request with the same id started a moment before instead of
  // failing: the token in the input tells which request started the run (only that one sends the other pieces).
  const startToken = randomUUID();
  const startInput: RolloutInput = { ...input, nodes: undefined, inventory: manifest, startToken, ...(options.limits ? { limits: options.limits } : {}) };
  try {
    const handle = await client.workflow.signalWithStart('rolloutWorkflow', {
      taskQueue,
      workflowId,
      args: [startInput],
      signal: inventoryPieceSignal,
      signalArgs: [pieces[0] ?? { index: 0, nodes: [] }],
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      staticSummary: `${playbook.playbook.name} on ${input.nodes.length} nodes`,
      staticDetails: `Playbook ${playbook.source.file} (sha256 ${playbook.source.sha256.slice(0, 12)}), inventory ${inventory.source.file}`,
      typedSearchAttributes: [
        { key: searchAttributes.phase, value: 'running' },
        { key: searchAttributes.playbook, value: playbook.playbook.name },
        { key: searchAttributes.nodesTotal, value: input.nodes.length },
      ],
    });
    const runInput = await runInputOf(client, workflowId, handle.signaledRunId);
    if (runInput?.startToken !== startToken) return { rolloutId: requestId, workflowId, uiLink: workflowUiLink(workflowId), started: false };
    for (const piece of pieces.slice(1)) await handle.signal(inventoryPieceSignal, piece);
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { rolloutId: requestId, workflowId, uiLink: workflowUiLink(workflowId), started: false };
    throw asTemporalRefusal(err, `starting rollout ${requestId} (${input.nodes.length} nodes)`) ?? err;
  }
  return { rolloutId: requestId, workflowId, uiLink: workflowUiLink(workflowId), started: true };
}

/**
 * The most nodes one rollout takes. The inventory travels in pieces of 500 nodes and the state carried across
 * continue-as-new is one character a node, so every payload stays under 256 KiB at this size (measured:
 * test/scale-payloads.test.ts), every answer is a bounded page, and each run's history and children in flight are
 * capped (docs/scale.md has the arithmetic). It is also about what an inventory file of at most 1 MiB holds. A larger
 * fleet is split into several inventories, rolled out one after the other or side by side.
 */
export const maxRolloutNodes = 10_000;

/** Why a rollout of `nodes` nodes is refused before anything starts, or undefined. Pure. */
export function rolloutSizeProblem(nodes: number, inventoryFile: string): string | undefined {
  if (nodes <= maxRolloutNodes) return undefined;
  return `${inventoryFile}: ${nodes} nodes to roll out; one rollout takes at most ${maxRolloutNodes} (the limit that keeps every Temporal payload and history under half of its limit, see docs/scale.md): split the inventory into several of at most ${maxRolloutNodes} nodes and roll them out one after the other`;
}

/**
 * Refuses while another rollout runs on one of the nodes; `ownWorkflowId` is not another (a simultaneous duplicate
 * request). The nodes of a running rollout are read from its current run's input (the first event of its history),
 * so the check needs no search attribute that grows with the fleet and no worker; rollouts that started on older
 * code also carry `KatafleetNodes`, which the input makes redundant.
 */
async function refuseBusyNodes(client: Client, nodes: string[], ownWorkflowId: string): Promise<void> {
  if (nodes.length === 0) return;
  const wanted = new Set(nodes);
  const query = `WorkflowType = 'rolloutWorkflow' AND ExecutionStatus = 'Running' AND WorkflowId != '${ownWorkflowId}'`;
  for await (const execution of client.workflow.list({ query })) {
    const held = await nodesOfRunningRollout(client, execution.workflowId, execution.runId);
    const busy = held.filter((name) => wanted.has(name));
    if (busy.length > 0) {
      throw new RolloutServiceError('RolloutConflict', `rollout ${rolloutIdOf(execution.workflowId)} is still running on ${listCapped(busy, 20)}: wait for it, or abort it, before starting another rollout on these nodes`);
    }
  }
}

/**
 * The node names of a rollout's current run: in its input (rollouts started before the inventory came in pieces:
 * one history event is read), else in the pieces its history holds (signals, or readInventoryPiece results).
 */
async function nodesOfRunningRollout(client: Client, workflowId: string, runId: string): Promise<string[]> {
  const input = await runInputOf(client, workflowId, runId);
  if (input?.nodes || !input?.inventory) return (input?.nodes ?? []).map((node) => node.name);
  const pieces = await piecesInHistory(client, { workflowId, runId });
  return [...pieces.values()].flat().map((node) => node.name);
}

/** The input of a rollout's run (`runId` empty: its latest run): its history's first event (one event is read). */
export async function runInputOf(client: Client, workflowId: string, runId: string): Promise<RolloutInput | undefined> {
  const response = await client.workflowService.getWorkflowExecutionHistory({ namespace: client.options.namespace, execution: { workflowId, runId }, maximumPageSize: 1 });
  const started = response.history?.events?.[0]?.workflowExecutionStartedEventAttributes;
  return decodeFromPayloadsAtIndex<RolloutInput | undefined>(client.options.loadedDataConverter, 0, started?.input?.payloads);
}

/** `a, b, c and 17 more`: at most `cap` names of a list, so that no message grows with the fleet. Pure. */
export function listCapped(names: readonly string[], cap: number): string {
  if (names.length <= cap) return names.join(', ');
  return `${names.slice(0, cap).join(', ')} and ${names.length - cap} more`;
}

/** gRPC status codes Temporal answers with when it refuses a request (not an outage). */
const grpcInvalidArgument = 3;
const grpcFailedPrecondition = 9;
const grpcResourceExhausted = 8;
const grpcDeadlineExceeded = 4;

/**
 * A refusal by Temporal as a failure that names the limit, the value and the fix (a RolloutServiceError), or
 * undefined when `err` is something else (an outage, a bug: those stay internal errors). Pure; `what` says what
 * was being done, e.g. `starting rollout r-1 (2000 nodes)`.
 */
export function asTemporalRefusal(err: unknown, what: string): RolloutServiceError | undefined {
  const refusal = describeTemporalRefusal(err, what);
  return refusal && new RolloutServiceError(refusal.type, refusal.message);
}

/** The type and message of {@link asTemporalRefusal}. Pure. */
export function describeTemporalRefusal(err: unknown, what: string): { type: 'TemporalLimit' | 'TemporalNotReady'; message: string } | undefined {
  const found = grpcCause(err);
  if (!found) return undefined;
  const { code, details } = found;
  if (![grpcInvalidArgument, grpcFailedPrecondition, grpcResourceExhausted].includes(code)) return undefined;
  const attribute = /search attribute[s]? ([A-Za-z0-9_]+)/i.exec(details)?.[1] ?? /no mapping defined for search attribute ([A-Za-z0-9_]+)/i.exec(details)?.[1];
  if (/no mapping defined|is not defined|not registered|unknown search attribute/i.test(details)) {
    return {
      type: 'TemporalNotReady',
      message: `Temporal refused ${what}: search attribute ${attribute ?? '(see below)'} is not registered in this namespace (${details}). Fix: start the dev server with \`katafleet server\` (it registers them), or on a cluster run the commands \`katafleet server --print-attributes\` prints`,
    };
  }
  const size = /size (?:of )?(\d+)[^\d]+(?:limit|exceeds)[^\d]*(\d+)/i.exec(details) ?? /(\d+) bytes? .*?(?:limit|exceeds)[^\d]*(\d+)/i.exec(details);
  if (attribute || /search attribute/i.test(details)) {
    return {
      type: 'TemporalLimit',
      message: `Temporal refused ${what}: a search attribute${attribute ? ` (${attribute})` : ''} is over the namespace's limit${size ? ` (${size[1]} bytes, limit ${size[2]})` : ''}: ${details}. Fix: fewer nodes per rollout (at most ${maxRolloutNodes}), or raise frontend.searchAttributesSizeOfValueLimit on the cluster`,
    };
  }
  if (/blob|payload|size|too large|exceeds/i.test(details) || code === grpcResourceExhausted) {
    return {
      type: 'TemporalLimit',
      message: `Temporal refused ${what}: a payload is over the server's size limit${size ? ` (${size[1]} bytes, limit ${size[2]})` : ''}: ${details}. Fix: fewer nodes per rollout (at most ${maxRolloutNodes}), or raise limit.blobSize.error on the cluster`,
    };
  }
  return { type: 'TemporalLimit', message: `Temporal refused ${what}: ${details}. Fix: the refusal names the limit; change the request to stay within it` };
}

/** The gRPC status of a client error (a ServiceError wrapping a grpc error), if it has one. */
function grpcCause(err: unknown): { code: number; details: string } | undefined {
  for (let current: unknown = err, depth = 0; current && depth < 5; current = (current as { cause?: unknown }).cause, depth++) {
    const candidate = current as { code?: unknown; details?: unknown; message?: unknown };
    if (typeof candidate.code === 'number' && (typeof candidate.details === 'string' || typeof candidate.message === 'string')) {
      return { code: candidate.code, details: String(candidate.details ?? candidate.message) };
    }
  }
  return undefined;
}

async function describeOrUndefined(client: Client, workflowId: string) {
  try {
    return await client.workflow.getHandle(workflowId).describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
}

function rolloutIdOf(workflowId: string): string {
  return workflowId.startsWith(rolloutPrefix) ? workflowId.slice(rolloutPrefix.length) : workflowId;
}

/** A rollout in lists: what the Temporal visibility store knows, without querying the workflow. */
export interface RolloutSummary {
  rolloutId: string;
  status: string;
  phase?: string;
  playbook?: string;
  nodesTotal?: number;
  nodesDone?: number;
  nodesFailed?: number;
  startTime: string;
  closeTime?: string;
  uiLink: string;
}

/** The newest rollouts first (at most `limit`). */
export async function listRollouts(client: Client, limit = 50): Promise<RolloutSummary[]> {
  const summaries: RolloutSummary[] = [];
  for await (const execution of client.workflow.list({ query: `WorkflowType = 'rolloutWorkflow'`, pageSize: limit })) {
    summaries.push(toSummary(execution));
    if (summaries.length >= limit) break;
  }
  return summaries;
}

function toSummary(execution: WorkflowExecutionInfo): RolloutSummary {
  const attributes = execution.typedSearchAttributes;
  return {
    rolloutId: rolloutIdOf(execution.workflowId),
    status: execution.status.name,
    phase: attributes.get(searchAttributes.phase),
    playbook: attributes.get(searchAttributes.playbook),
    nodesTotal: attributes.get(searchAttributes.nodesTotal),
    nodesDone: attributes.get(searchAttributes.nodesDone),
    nodesFailed: attributes.get(searchAttributes.nodesFailed),
    startTime: execution.startTime.toISOString(),
    closeTime: execution.closeTime?.toISOString(),
    uiLink: workflowUiLink(execution.workflowId),
  };
}

/**
 * Progress of one rollout, running or finished: counts, phase, the capped list of failed nodes, and one page of
 * per-node results (`page`: from the previous answer's `nodesPage.nextPageToken`). Every answer is bounded
 * whatever the fleet size; {@link getRolloutAllPages} reads every page.
 */
export async function getRollout(client: Client, rolloutId: string, page: ProgressPageRequest = {}): Promise<RolloutProgress & { status: string; uiLink: string }> {
  const workflowId = rolloutWorkflowId(rolloutId);
  const handle = client.workflow.getHandle(workflowId);
  const description = await describeOrUndefined(client, workflowId);
  if (!description) throw new RolloutServiceError('RolloutNotFound', `no rollout with id "${rolloutId}" (katafleet status lists them)`);
  if (page.pageToken !== undefined && !/^n\d{1,9}$/.test(page.pageToken)) {
    throw new RolloutServiceError('InvalidPageToken', `page_token ${JSON.stringify(page.pageToken)} was not handed out by rollout ${rolloutId}: use nodesPage.nextPageToken of the previous answer, or none for the first page`);
  }
  // A closed workflow still answers queries (replayed by a worker); this keeps one code path for both.
  let progress: RolloutProgress;
  try {
    progress = await handle.query(rolloutProgressQuery, page);
  } catch (err) {
    if (err instanceof Error && /was not handed out/.test(err.message)) throw new RolloutServiceError('InvalidPageToken', err.message);
    if (grpcCause(err)?.code === grpcDeadlineExceeded || (err instanceof Error && /Failed to query Workflow|deadline exceeded/i.test(err.message))) {
      throw new RolloutServiceError('WorkerUnavailable', `no katafleet worker answered the progress query of rollout ${rolloutId} in time (${err instanceof Error ? err.message : String(err)}): check that \`katafleet worker\` runs and is not overloaded, then ask again; the rollout itself goes on`);
    }
    throw asTemporalRefusal(err, `reading rollout ${rolloutId}`) ?? err;
  }
  // A worker on code older than issue 13 answers every node at once: page it here, so the answer stays bounded.
  const paged = progress.nodesPage ? progress : progressPage(progress, page);
  return { ...paged, status: description.status.name, uiLink: workflowUiLink(workflowId) };
}

/** Every node of a rollout, read page by page ({@link maxProgressPageSize} at a time), as one progress. */
export async function getRolloutAllPages(client: Client, rolloutId: string): Promise<RolloutProgress & { status: string; uiLink: string }> {
  const first = await getRollout(client, rolloutId, { pageSize: maxProgressPageSize });
  const nodes = [...first.nodes];
  const waves = first.waves.map((wave) => [...wave]);
  for (let token = first.nodesPage?.nextPageToken; token !== undefined; ) {
    const next = await getRollout(client, rolloutId, { pageToken: token, pageSize: maxProgressPageSize });
    nodes.push(...next.nodes);
    next.waves.forEach((wave, index) => (waves[index] ??= []).push(...wave));
    token = next.nodesPage?.nextPageToken;
  }
  return { ...first, nodes, waves, nodesPage: { pageSize: nodes.length } };
}

/** Sends a control update; a refusal of the workflow's validator becomes a RolloutRequestRejected. */
export async function controlRollout(client: Client, rolloutId: string, action: 'pause' | 'resume' | 'abort', abort: AbortRequest = {}): Promise<RolloutPhase> {
  const workflowId = rolloutWorkflowId(rolloutId);
  if (!(await describeOrUndefined(client, workflowId))) {
    throw new RolloutServiceError('RolloutNotFound', `no rollout with id "${rolloutId}"`);
  }
  const handle = client.workflow.getHandle(workflowId);
  try {
    if (action === 'pause') return await handle.executeUpdate(pauseUpdate);
    if (action === 'resume') return await handle.executeUpdate(resumeUpdate);
    return await handle.executeUpdate(abortUpdate, { args: [abort] });
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) {
      throw new RolloutServiceError('RolloutRequestRejected', err.cause?.message ?? err.message);
    }
    if (err instanceof WorkflowNotFoundError) {
      throw new RolloutServiceError('RolloutRequestRejected', `rollout "${rolloutId}" has already finished`);
    }
    throw err;
  }
}
