// The HTTP API as the tests start it: a real listening server on a loopback port.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { buildApi, type ApiOptions } from '../../api/server';

/** A token of the minimum length (32). */
export const testToken = 'test-token-0123456789abcdef0123456789';

/** An inventory as API callers send it: nodes and addresses only (the nodes do not exist; workflows never get far). */
export const apiInventoryToml = `
[ssh]
profile = "test"

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

/** A credentials file (mode 600) with the profile `test` that {@link apiInventoryToml} names. */
export function writeTestCredentials(dir = mkdtempSync(join(tmpdir(), 'katafleet-credentials-'))): string {
  const file = join(dir, 'credentials.toml');
  writeFileSync(file, '[profiles.test]\nidentity_file = "/nonexistent/id_ed25519"\nknown_hosts = "/nonexistent/known_hosts"\nhosts = ["*"]\n', { mode: 0o600 });
  return file;
}

/** Builds the API with `testToken` and test credentials (plus `options`) and listens on a free loopback port. */
export async function startTestApi(client: Client, options: Partial<ApiOptions> = {}): Promise<{ app: FastifyInstance; port: number; baseUrl: string }> {
  const app = await buildApi({ client, token: testToken, credentialsFile: writeTestCredentials(), ...options });
  const baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, port: Number(new URL(baseUrl).port), baseUrl };
}
