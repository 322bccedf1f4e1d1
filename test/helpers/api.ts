// The HTTP API as the tests start it: a real listening server on a loopback port.
import type { Client } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { buildApi, type ApiOptions } from '../../api/server';

/** A token of the minimum length (32). */
export const testToken = 'test-token-0123456789abcdef0123456789';

/** An inventory as API callers send it: nodes and addresses only (the nodes do not exist; workflows never get far). */
export const apiInventoryToml = `
[ssh]
identity_file = "/nonexistent/id_ed25519"
known_hosts = "/nonexistent/known_hosts"

[kubernetes]
control_plane = "cp"

[[nodes]]
name = "cp"
address = "127.0.1.250"
role = "control-plane"

[[nodes]]
name = "api-node-1"
address = "127.0.1.251"

[[nodes]]
name = "api-node-2"
address = "127.0.1.252"
`;

/** Builds the API with `testToken` (plus `options`) and listens on a free loopback port. */
export async function startTestApi(client: Client, options: Partial<ApiOptions> = {}): Promise<{ app: FastifyInstance; port: number; baseUrl: string }> {
  const app = await buildApi({ client, token: testToken, ...options });
  const baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, port: Number(new URL(baseUrl).port), baseUrl };
}
