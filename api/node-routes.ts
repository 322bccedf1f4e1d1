/**
 * Node endpoints: `POST /v1/nodes/{name}/release` lifts a node's quarantine (what `katafleet node release`
 * does), under the node's lock: it runs as workflow `katafleet-node-<name>`, so never while a rollout or a
 * drift repair works on the node (409 then).
 */
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Inventory } from '../playbooks/schema';
import { taskQueue } from '../worker/connection';
import { nodeWorkflowId, type NodeReleaseResult, type nodeReleaseWorkflow } from '../workflows/node';
import { toKubernetesTarget, toNodeTarget } from './rollout-service';
import { ErrorBody, ReleaseNodeBody } from './schemas';

/** A release the service refuses; `type` picks the HTTP status (NodeUnknown 400, NodeBusy 409). */
export class NodeServiceError extends Error {
  override name = 'NodeServiceError';
  constructor(readonly type: 'NodeUnknown' | 'NodeBusy', message: string) {
    super(message);
  }
}

/** HTTP status of each {@link NodeServiceError} type. */
export const nodeStatusByType: Record<NodeServiceError['type'], 400 | 409> = { NodeUnknown: 400, NodeBusy: 409 };

/**
 * Lifts the quarantine of node `name` of the inventory: removes `/var/lib/katafleet/quarantine.json` and sets
 * aside the journals left on the node. Waits for the release workflow to finish.
 */
export async function releaseNode(client: Client, inventory: Inventory, name: string): Promise<NodeReleaseResult> {
  const node = inventory.nodes.find((candidate) => candidate.name === name);
  if (!node) {
    throw new NodeServiceError('NodeUnknown',
      `${inventory.source.file}: no node "${name}" in the inventory (nodes: ${inventory.nodes.map((n) => n.name).join(', ') || 'none'}); name a node of the inventory the rollout used`);
  }
  try {
    const handle = await client.workflow.start<typeof nodeReleaseWorkflow>('nodeReleaseWorkflow', {
      taskQueue,
      workflowId: nodeWorkflowId(name),
      args: [{ node: toNodeTarget(inventory, node), kubernetes: toKubernetesTarget(inventory) }],
    });
    return await handle.result();
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      throw new NodeServiceError('NodeBusy', `node ${name} is busy: a rollout, drift repair or release works on it now (workflow ${nodeWorkflowId(name)}); release it when that has ended`);
    }
    throw err;
  }
}

/** One line for people: what a release did. Pure. */
export function describeRelease(result: NodeReleaseResult): string {
  const what = result.marker
    ? `released node ${result.node} (quarantined since ${result.marker.since} by run ${result.marker.runId} of ${result.marker.rolloutId}: ${result.marker.reason})`
    : `node ${result.node} was not quarantined; nothing to release`;
  return `${what}${result.journals.length > 0 ? `; set aside the journals of runs ${result.journals.join(', ')} in /var/lib/katafleet/journal-released/` : ''}`;
}

const NodeNameParams = z.object({ name: z.string().regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'a Kubernetes node name (RFC 1123 subdomain)') });
const ReleasedBody = z.object({
  node: z.string(),
  released: z.boolean().describe('false when the node was not quarantined'),
  reason: z.string().optional().describe('why the node was quarantined'),
  journals_set_aside: z.array(z.string()),
  message: z.string(),
});

/**
 * Registers the node endpoints on the API. `inventoryOf` reads the body's inventory the way the rollout routes do:
 * by name from the configured folder, or inline with credential profiles only.
 */
export function registerNodeRoutes(app: FastifyInstance, client: Client, inventoryOf: (body: z.infer<typeof ReleaseNodeBody>) => Promise<Inventory>): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.post('/v1/nodes/:name/release', { schema: { params: NodeNameParams, body: ReleaseNodeBody, response: { 200: ReleasedBody, 400: ErrorBody, 409: ErrorBody } } }, async (request, reply) => {
    const inventory = await inventoryOf(request.body);
    try {
      const result = await releaseNode(client, inventory, request.params.name);
      return { node: result.node, released: result.marker !== undefined, reason: result.marker?.reason, journals_set_aside: result.journals, message: describeRelease(result) };
    } catch (err) {
      if (err instanceof NodeServiceError) return reply.code(nodeStatusByType[err.type]).send({ error: err.type, message: err.message });
      throw err;
    }
  });
}
