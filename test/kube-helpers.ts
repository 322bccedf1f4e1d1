// kubectl for tests: the real binary against the simulated fleet's real API server.
import { execFile } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function kubectlRunner(kubectlPath: string, kubeconfig: string) {
  return (args: string[], input?: string): Promise<KubectlResult> =>
    new Promise((resolve) => {
      const child = execFile(kubectlPath, [`--kubeconfig=${kubeconfig}`, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
      child.stdin?.end(input ?? '');
    });
}

/** Polls `probe` every 500 ms until it returns a value other than undefined, or fails with `what` after `timeoutMs`. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(500);
  }
}

export const kataRuntimeClass = (nodeSelector: Record<string, string>): string => JSON.stringify({
  apiVersion: 'node.k8s.io/v1',
  kind: 'RuntimeClass',
  metadata: { name: 'kata' },
  handler: 'kata',
  scheduling: { nodeSelector },
});

/** `onNode` selects the node through the scheduler (nodeSelector on its hostname); `bindTo` sets spec.nodeName, bypassing it. */
export const podManifest = (name: string, opts: { runtimeClassName?: string; onNode?: string; bindTo?: string } = {}): string => JSON.stringify({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name },
  spec: {
    ...(opts.runtimeClassName ? { runtimeClassName: opts.runtimeClassName } : {}),
    ...(opts.onNode ? { nodeSelector: { 'kubernetes.io/hostname': opts.onNode } } : {}),
    ...(opts.bindTo ? { nodeName: opts.bindTo } : {}),
    containers: [{ name: 'main', image: 'busybox:1.36', command: ['sleep', '3600'] }],
  },
});

/**
 * Applies deploy/rbac.yaml with `admin` and writes `file` (mode 600): a kubeconfig for the katafleet ServiceAccount's
 * token, against the API server `admin` talks to. Used by the tests that run kubectl on the worker as katafleet.
 */
export async function serviceAccountKubeconfig(admin: ReturnType<typeof kubectlRunner>, rbacYaml: string, file: string): Promise<void> {
  const applied = await admin(['apply', '-f', rbacYaml]);
  if (applied.code !== 0) throw new Error(`kubectl apply -f ${rbacYaml}: ${applied.stderr}`);
  const token = await admin(['-n', 'katafleet-system', 'create', 'token', 'katafleet', '--duration=2h']);
  if (token.code !== 0) throw new Error(`kubectl create token: ${token.stderr}`);
  const view = await admin(['config', 'view', '--raw', '-o', 'jsonpath={.clusters[0].cluster.certificate-authority-data} {.clusters[0].cluster.server}']);
  const [caData, server] = view.stdout.trim().split(' ');
  await writeFile(file, [
    'apiVersion: v1', 'kind: Config',
    'clusters:', '- name: sim', '  cluster:', `    server: ${server}`, `    certificate-authority-data: ${caData}`,
    'users:', '- name: katafleet', '  user:', `    token: ${token.stdout.trim()}`,
    'contexts:', '- name: sim', '  context:', '    cluster: sim', '    user: katafleet', 'current-context: sim', '',
  ].join('\n'), { mode: 0o600 });
  await chmod(file, 0o600);
}
