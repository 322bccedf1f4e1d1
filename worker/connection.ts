import { readFileSync } from 'node:fs';
import { Client, Connection, type ConnectionOptions } from '@temporalio/client';

/** The task queue every katafleet worker polls and every workflow is started on. */
export const taskQueue = 'katafleet';

/** Where to find Temporal: the embedded dev server by default, or an existing cluster. */
export interface TemporalTarget {
  address: string;
  namespace: string;
  /** true when TEMPORAL_ADDRESS names an existing cluster: katafleet then starts no server. */
  external: boolean;
  tls?: ConnectionOptions['tls'];
  apiKey?: string;
}

/** Address of the dev server that `katafleet server` starts when TEMPORAL_ADDRESS is unset. */
export const embeddedAddress = '127.0.0.1:7233';

/**
 * Reads the same environment variables as the `temporal` CLI: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
 * TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_CLIENT_CERT_PATH / _KEY_PATH, TEMPORAL_TLS_SERVER_CA_CERT_PATH,
 * TEMPORAL_TLS_SERVER_NAME, TEMPORAL_TLS_DISABLE_HOST_VERIFICATION.
 */
export function temporalTargetFromEnv(env: NodeJS.ProcessEnv = process.env): TemporalTarget {
  const address = env.TEMPORAL_ADDRESS?.trim();
  const namespace = env.TEMPORAL_NAMESPACE?.trim() || 'default';
  const apiKey = env.TEMPORAL_API_KEY?.trim() || undefined;
  const certPath = env.TEMPORAL_TLS_CLIENT_CERT_PATH;
  const keyPath = env.TEMPORAL_TLS_CLIENT_KEY_PATH;
  if (Boolean(certPath) !== Boolean(keyPath)) {
    throw new Error('TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH must be set together (mutual TLS needs both)');
  }
  const wantsTls = isTrue(env.TEMPORAL_TLS) || Boolean(certPath) || Boolean(apiKey) || Boolean(env.TEMPORAL_TLS_SERVER_CA_CERT_PATH);
  const tls: ConnectionOptions['tls'] = wantsTls
    ? {
        serverNameOverride: env.TEMPORAL_TLS_SERVER_NAME || undefined,
        serverRootCACertificate: env.TEMPORAL_TLS_SERVER_CA_CERT_PATH ? readFileSync(env.TEMPORAL_TLS_SERVER_CA_CERT_PATH) : undefined,
        clientCertPair: certPath && keyPath ? { crt: readFileSync(certPath), key: readFileSync(keyPath) } : undefined,
      }
    : undefined;
  return { address: address || embeddedAddress, namespace, external: Boolean(address), tls, apiKey };
}

function isTrue(value: string | undefined): boolean {
  return value !== undefined && ['1', 'true', 'yes'].includes(value.toLowerCase());
}

/** Opens a connection to the target; fails with a message that says how to start the embedded server. */
export async function connectTemporal(target: TemporalTarget = temporalTargetFromEnv()): Promise<{ connection: Connection; client: Client }> {
  let connection: Connection;
  try {
    connection = await Connection.connect({ address: target.address, tls: target.tls, apiKey: target.apiKey, connectTimeout: '5s' });
  } catch (err) {
    const hint = target.external
      ? 'check TEMPORAL_ADDRESS and the TLS / API key variables'
      : 'start the embedded server with `katafleet server` (or `katafleet up`), or set TEMPORAL_ADDRESS to an existing cluster';
    throw new Error(`Cannot reach Temporal at ${target.address}: ${(err as Error).message} — ${hint}`, { cause: err });
  }
  return { connection, client: new Client({ connection, namespace: target.namespace }) };
}

/** Runs `work` with a client of the target and closes the connection afterwards. */
export async function withTemporalClient<T>(work: (client: Client) => Promise<T>, target: TemporalTarget = temporalTargetFromEnv()): Promise<T> {
  const { client, connection } = await connectTemporal(target);
  try {
    return await work(client);
  } finally {
    await connection.close();
  }
}

/** Link to a workflow in the Temporal Web UI (the embedded server's UI, or TEMPORAL_UI_URL). */
export function workflowUiLink(workflowId: string, target: TemporalTarget = temporalTargetFromEnv(), env: NodeJS.ProcessEnv = process.env): string {
  const base = env.TEMPORAL_UI_URL?.replace(/\/$/, '') ?? 'http://127.0.0.1:8233';
  return `${base}/namespaces/${encodeURIComponent(target.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}
