// The Kubernetes API from the worker (issue 14): with `[kubernetes] kubeconfig` the Kubernetes steps send HTTPS
// requests from the worker process instead of starting kubectl per call. Against the simulated fleet's real
// kube-apiserver, with deploy/rbac.yaml's ServiceAccount (least privilege): the whole kata playbook on one node,
// kubectl started once (to read the kubeconfig); a TLS failure, a 401 and a 403 each fail clearly, naming the server,
// the kubeconfig and the fix; a kubeconfig with an exec plugin keeps working through kubectl. The pure parts (the
// kubeconfig view, the messages, the exec stream's frames) are checked without servers.
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createNodeActivities } from '../activities/node-activities';
import type { KubernetesTarget, NodeTarget, StepOutcome, StepRequest } from '../activities/node-types';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import {
  ExecFrames, KubeApi, KubeconfigUnusable, KubeApiForbidden, KubeApiTlsFailed, KubeApiUnauthorized, kubeApiConfigFromView, kubeApiFailureMessage, kubeApiFailureType,
  observeKubeApi, type KubeApiEvent,
} from '../activities/kube-api';
import { SshPool } from '../activities/ssh';
import { WatchRefusals, watchRefusalKey } from '../activities/kubectl';
import { toKubernetesTarget, toNodeTarget } from '../api/rollout-service';
import { loadInventory, loadPlaybook } from '../playbooks/load';
import type { Step } from '../playbooks/schema';
import { kubernetesBinaries } from '../sim/control-plane';
import { startFleet, type Fleet } from '../sim/fleet';
import { activityByKind } from '../workflows/step-activities';
import { writeFleetInventory } from './helpers/cli';
import { kubectlRunner, serviceAccountKubeconfig } from './kube-helpers';

describe('the kubeconfig, as the worker reads it (pure)', () => {
  const view = (user: Record<string, unknown>, cluster: Record<string, unknown> = { server: 'https://10.0.0.1:6443' }) => ({
    'current-context': 'c', contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }], clusters: [{ name: 'k', cluster }], users: [{ name: 'u', user }],
  });

  it('takes server, CA, client certificate and token from the current context', () => {
    const ca = Buffer.from('-----BEGIN CERTIFICATE-----\nCA\n').toString('base64');
    expect(kubeApiConfigFromView(view({ token: 't0k', 'client-certificate-data': Buffer.from('CERT').toString('base64'), 'client-key-data': Buffer.from('KEY').toString('base64') },
      { server: 'https://10.0.0.1:6443/', 'certificate-authority-data': ca }), '/k')).toEqual({
      server: 'https://10.0.0.1:6443', kubeconfig: '/k', ca: '-----BEGIN CERTIFICATE-----\nCA\n', cert: 'CERT', key: 'KEY', token: 't0k',
      tokenFile: undefined, insecureSkipTlsVerify: false, tlsServerName: undefined,
    });
  });

  it.each([
    [{ exec: { command: 'aws' } }, {}, 'its user authenticates with an exec plugin'],
    [{ 'auth-provider': { name: 'gcp' } }, {}, 'its user authenticates with an auth-provider'],
    [{ username: 'admin', password: 'x' }, {}, 'its user authenticates with a username and password'],
    [{ as: 'someone' }, {}, 'its user impersonates another'],
    [{ token: 't' }, { 'proxy-url': 'http://proxy:3128' }, 'its cluster is reached through a proxy-url'],
  ])('leaves credentials it does not speak to kubectl: %j %j', (user, cluster, why) => {
    expect(kubeApiConfigFromView(view(user, { server: 'https://10.0.0.1:6443', ...cluster }), '/k')).toEqual({ kubectlOnly: why });
  });

  it.each([
    [{ clusters: [] }, 'the kubeconfig /etc/kc names no API server in its current context — set current-context to a context whose cluster has a server'],
    [view({}, { server: 'not a url' }), 'the kubeconfig /etc/kc names the API server "not a url", which is not a URL — set the cluster\'s server to https://<host>:<port>'],
    [view({}, { server: 'ftp://10.0.0.1' }), 'the kubeconfig /etc/kc names the API server ftp://10.0.0.1: only https:// (or http://) servers are supported'],
  ])('refuses a kubeconfig with no usable server, naming the file and the fix: %j', (bad, message) => {
    expect(() => kubeApiConfigFromView(bad, '/etc/kc')).toThrow(message);
  });
});

describe('a hostile token in the kubeconfig', () => {
  // A token is copied into the Authorization header: one that carries a line break would add headers of its own.
  const hostile = [
    'abc\r\nX-Injected: 1', 'abc\nHost: evil.example', 'two words', 'nul\u0000byte', 'tab\there', 'ünïcode-token', 'a'.repeat(8_000) + '\r\n',
  ];

  it.each(hostile.map((token) => [JSON.stringify(token).slice(0, 40), token]))('%s: refused as KubeconfigUnusable before any connection, the token not echoed', async (_label, token) => {
    let connections = 0;
    const server = createServer((socket) => { connections += 1; socket.destroy(); });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      const api = new KubeApi({ server: `http://127.0.0.1:${port}`, kubeconfig: '/etc/kc', token });
      for (const call of [() => api.request('GET', '/api/v1/nodes/x'), () => api.exec('ns', 'pod', 'c', ['uname', '-r'])]) {
        const error = await call().then(() => undefined, (err: unknown) => err as Error & { type?: string; nonRetryable?: boolean });
        expect(error).toMatchObject({ type: KubeconfigUnusable, nonRetryable: true });
        expect(error!.message).toContain('the kubeconfig /etc/kc has a token with characters a bearer token cannot have');
        expect(error!.message).not.toContain(token);
        expect(error!.message).not.toMatch(/[\r\n\0]/);
      }
      expect(connections).toBe(0);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('failures of the API, in one line (pure)', () => {
  const config = { server: 'https://10.0.0.1:6443', kubeconfig: '/etc/katafleet/kubeconfig' };

  it.each([
    [{ request: 'GET /api/v1/nodes/n1', message: 'self-signed certificate in certificate chain', code: 'SELF_SIGNED_CERT_IN_CHAIN' }, KubeApiTlsFailed,
      'GET /api/v1/nodes/n1: TLS with the Kubernetes API server https://10.0.0.1:6443 (kubeconfig /etc/katafleet/kubeconfig) failed: self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN) — set the cluster\'s certificate-authority-data in the kubeconfig to the CA that signed the server\'s certificate (and its server to a name that certificate carries)'],
    [{ request: 'GET /api/v1/nodes/n1', status: 401, message: 'Unauthorized' }, KubeApiUnauthorized,
      'GET /api/v1/nodes/n1: the Kubernetes API server https://10.0.0.1:6443 (kubeconfig /etc/katafleet/kubeconfig) refused the kubeconfig\'s credentials (401 Unauthorized: Unauthorized) — renew the token or client certificate in /etc/katafleet/kubeconfig (for deploy/rbac.yaml\'s ServiceAccount: kubectl -n katafleet-system create token katafleet)'],
    [{ request: 'POST /api/v1/namespaces/default/pods', status: 403, message: 'pods is forbidden: User "system:serviceaccount:katafleet-system:katafleet" cannot create resource "pods" in API group "" in the namespace "default"' }, KubeApiForbidden,
      'POST /api/v1/namespaces/default/pods: the Kubernetes API server https://10.0.0.1:6443 (kubeconfig /etc/katafleet/kubeconfig) forbids it (403: pods is forbidden: User "system:serviceaccount:katafleet-system:katafleet" cannot create resource "pods" in API group "" in the namespace "default") — bind the kubeconfig\'s user to the roles of deploy/rbac.yaml (kubectl apply -f deploy/rbac.yaml)'],
    [{ request: 'POST /api/v1/namespaces/v/pods', status: 403, message: 'pods "p" is forbidden: violates PodSecurity "restricted:latest"' }, KubeApiForbidden,
      'POST /api/v1/namespaces/v/pods: the Kubernetes API server https://10.0.0.1:6443 (kubeconfig /etc/katafleet/kubeconfig) refused it (403: pods "p" is forbidden: violates PodSecurity "restricted:latest")'],
    [{ request: 'GET /api/v1/nodes/n1', message: 'connect ECONNREFUSED 10.0.0.1:6443', code: 'ECONNREFUSED' }, 'KubeApiUnavailable',
      'GET /api/v1/nodes/n1: the Kubernetes API server https://10.0.0.1:6443 (kubeconfig /etc/katafleet/kubeconfig) cannot be reached: connect ECONNREFUSED 10.0.0.1:6443 (ECONNREFUSED) — check that the server is up and reachable from the worker'],
    [{ request: 'GET /api/v1/nodes/n1', status: 503, message: 'etcd leader changed\nmore' }, 'KubeApiUnavailable',
      'GET /api/v1/nodes/n1: the Kubernetes API server https://10.0.0.1:6443 (kubeconfig /etc/katafleet/kubeconfig) answered 503: etcd leader changed'],
    [{ request: 'PATCH /api/v1/nodes/n1', status: 422, message: 'invalid label' }, 'KubeApiRejected',
      'PATCH /api/v1/nodes/n1: the Kubernetes API server https://10.0.0.1:6443 (kubeconfig /etc/katafleet/kubeconfig) rejected it (422: invalid label)'],
  ])('%j is %s', (problem, type, message) => {
    expect(kubeApiFailureType(problem)).toBe(type);
    expect(kubeApiFailureMessage(config, problem)).toBe(message);
  });
});

describe('the exec stream (pure)', () => {
  /** A WebSocket frame as a server sends it (unmasked), or as a client does (`mask`). */
  const frame = (opcode: number, payload: Buffer, fin = true, mask?: Buffer): Buffer => {
    const length = payload.length < 126 ? Buffer.from([payload.length | (mask ? 0x80 : 0)])
      : Buffer.concat([Buffer.from([126 | (mask ? 0x80 : 0)]), Buffer.from([payload.length >> 8, payload.length & 0xff])]);
    const body = mask ? Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4])) : payload;
    return Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | opcode]), length, ...(mask ? [mask] : []), body]);
  };
  const channel = (n: number, text: string) => Buffer.concat([Buffer.from([n]), Buffer.from(text)]);
  const fail = (problem: { message: string }) => new Error(problem.message);

  it('splits stdout, stderr and the exit status, across fragments, long frames and chunk boundaries', () => {
    const long = 'x'.repeat(300);
    const bytes = Buffer.concat([
      frame(2, channel(1, '6.12.47-')), frame(2, Buffer.from([1]), false), frame(0, Buffer.from('kata\n')),
      frame(2, channel(2, long)), frame(2, channel(3, '{"status":"Success"}')), frame(8, Buffer.from([3, 232])),
    ]);
    const frames = new ExecFrames();
    const done = [...Array(bytes.length).keys()].map((i) => frames.push(bytes.subarray(i, i + 1)));
    expect(done.indexOf(true)).toBe(bytes.length - 1);
    expect(frames.result('exec', fail)).toEqual({ stdout: '6.12.47-kata\n', stderr: long, exitCode: 0 });
  });

  it('reads the exit code of a command that failed, and unmasks masked frames', () => {
    const frames = new ExecFrames();
    frames.push(frame(2, channel(3, '{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"127"}]}}'), true, Buffer.from([1, 2, 3, 4])));
    expect(frames.result('exec', fail)).toEqual({ stdout: '', stderr: '', exitCode: 127 });
  });

  it('a stream that ends with no status, or a failure status with no exit code, is a failure', () => {
    const empty = new ExecFrames();
    empty.push(frame(2, channel(1, 'half')));
    expect(() => empty.result('exec', fail)).toThrow('the stream ended without an exit status');
    const refused = new ExecFrames();
    refused.push(frame(2, channel(3, '{"status":"Failure","message":"container not found (\\"verify\\")"}')));
    expect(() => refused.result('exec', fail)).toThrow('container not found ("verify")');
  });
});

describe('an exec, against a server that answers as it likes (a local HTTP server that upgrades)', () => {
  const frame = (payload: Buffer, opcode = 2) => Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
  const channel = (n: number, text: string) => Buffer.concat([Buffer.from([n]), Buffer.from(text)]);

  /** exec() against a server that upgrades and sends `frames`, then closes (`close`) or leaves the socket open. */
  async function execAgainst(frames: Buffer[], close: boolean) {
    const server = createHttpServer();
    const upgraded: import('node:stream').Duplex[] = [];
    server.on('upgrade', (_request, socket) => {
      upgraded.push(socket);
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n');
      socket.write(Buffer.concat(frames));
      if (close) socket.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const api = new KubeApi({ server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, kubeconfig: '/k', token: 'token-0123456789' });
      return await api.exec('v', 'p', 'c', ['uname', '-r'], { timeoutMs: 5_000 }).then((value): { value?: unknown; error?: Error } => ({ value }), (error: unknown) => ({ error: error as Error }));
    } finally {
      for (const socket of upgraded) socket.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  it('fails the exec, and only it, when the server ends with a failure status that has no exit code, or with no status at all', async () => {
    const uncaught: unknown[] = [];
    const record = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', record);
    try {
      // As kwok answers an exec it has no handler for: the close frame comes with the status (the 'data' path)…
      const refused = await execAgainst([frame(channel(3, '{"status":"Failure","message":"error executing command in container: no exec found for container \\"c\\""}')), frame(Buffer.from([3, 232]), 8)], false);
      expect(refused.error?.message).toContain('exec uname -r in v/p');
      expect(refused.error?.message).toContain('no exec found for container "c"');
      // …or the socket just closes after it (the 'close' path), or with nothing at all.
      const closed = await execAgainst([frame(channel(3, '{"status":"Failure","message":"container not found"}'))], true);
      expect(closed.error?.message).toContain('container not found');
      const silent = await execAgainst([frame(channel(1, 'half'))], true);
      expect(silent.error?.message).toContain('the stream ended without an exit status');
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      process.off('uncaughtException', record);
    }
    expect(uncaught).toEqual([]);
  });
});

describe('a pod watch, against a server that answers as it likes (a local HTTP server)', () => {
  type Pod = { metadata: { name: string }; status: { phase: string } };
  const pod = (phase: string): Pod => ({ metadata: { name: 'p' }, status: { phase } });
  const event = (type: string, object: unknown) => `${JSON.stringify({ type, object })}\n`;

  /** A KubeApi on a local server whose answer to the watch is `answer`; the paths it was asked. */
  async function watchAgainst(answer: (response: import('node:http').ServerResponse) => void, timeoutMs = 5_000) {
    const asked: string[] = [];
    const server = createHttpServer((request, response) => {
      asked.push(request.url ?? '');
      answer(response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const api = new KubeApi({ server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, kubeconfig: '/k', token: 'token-0123456789' });
      const result = await api.watchOne<Pod>('/api/v1/namespaces/v/pods', 'p', (p) => p.status.phase === 'Running', { timeoutMs });
      return { result, asked };
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  it('sees the change as the server streams it, across chunk boundaries, and asks for one object by name', async () => {
    const { result, asked } = await watchAgainst((response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      const text = event('ADDED', pod('Pending')) + event('MODIFIED', pod('Running'));
      // One byte a write: events split anywhere.
      let at = 0;
      const next = () => (at < text.length ? response.write(text[at++], next) : undefined);
      next();
    });
    expect(result).toEqual({ done: true, last: pod('Running') });
    expect(asked).toEqual(['/api/v1/namespaces/v/pods?watch=1&fieldSelector=metadata.name%3Dp&timeoutSeconds=5']);
  });

  it('ends without done on an ERROR or DELETED event, a line that is not JSON, or the end of the stream, keeping the last object seen', async () => {
    for (const tail of [event('ERROR', { kind: 'Status', code: 410 }), event('DELETED', pod('Pending')), 'not json\n', '']) {
      const { result } = await watchAgainst((response) => {
        response.writeHead(200);
        response.end(event('ADDED', pod('Pending')) + tail + event('MODIFIED', pod('Running')).repeat(tail === '' ? 0 : 1));
      });
      expect({ tail, result }).toEqual({ tail, result: { done: false, last: pod('Pending') } });
    }
  });

  it('gives up on a line longer than any event (an endless stream with no newline), without holding it all', async () => {
    const { result } = await watchAgainst((response) => {
      response.writeHead(200);
      const chunk = 'x'.repeat(1024 * 1024);
      let sent = 0;
      const more = () => {
        if (sent++ < 64 && !response.destroyed) response.write(chunk, more);
      };
      more();
    });
    expect(result).toEqual({ done: false });
  });

  it('a 403 (RBAC without watch) is KubeApiForbidden, which the step turns into polling', async () => {
    const refused = watchAgainst((response) => {
      response.writeHead(403, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ kind: 'Status', message: 'pods is forbidden: User "u" cannot watch resource "pods"' }));
    });
    await expect(refused).rejects.toMatchObject({ type: KubeApiForbidden, message: expect.stringContaining('cannot watch resource "pods"') });
  });

  it('ends when the server never answers more, after its timeout', async () => {
    const { result } = await watchAgainst((response) => {
      response.writeHead(200);
      response.write(event('ADDED', pod('Pending')));
    }, 1_000);
    expect(result).toEqual({ done: false, last: pod('Pending') });
  }, 20_000);
});

// A refused pod watch is remembered per API target, process-wide (activities/kubectl.ts): a step's Kubectl lives
// for one step, so a memory per instance paid one refused watch per verification with an old RBAC.
describe('the memory of refused pod watches (pure, with a clock of its own)', () => {
  it('polls a refusing target until retryMs passed, then asks again; forgets the oldest past its limit', () => {
    let now = 0;
    const refusals = new WatchRefusals(10 * 60_000, 2, () => now);
    refusals.remember('a');
    now = 10 * 60_000 - 1;
    expect(refusals.refused('a')).toBe(true);
    now = 10 * 60_000;
    expect(refusals.refused('a')).toBe(false);
    expect(refusals.size).toBe(0);
    refusals.remember('a');
    refusals.remember('b');
    refusals.remember('c');
    expect([refusals.refused('a'), refusals.refused('b'), refusals.refused('c'), refusals.size]).toEqual([false, true, true, 2]);
  });

  it('tells targets apart by server, kubeconfig, credentials and namespace, and holds no credential', () => {
    const config = { server: 'https://10.0.0.1:6443', kubeconfig: '/etc/kf/a.kubeconfig', token: 'secret-token-0123456789abcdef0123' };
    const key = watchRefusalKey(config, 'katafleet-verify');
    expect(key).not.toContain('secret');
    expect(watchRefusalKey({ ...config }, 'katafleet-verify')).toBe(key);
    for (const other of [watchRefusalKey({ ...config, server: 'https://10.0.0.2:6443' }, 'katafleet-verify'), watchRefusalKey({ ...config, kubeconfig: '/etc/kf/b.kubeconfig' }, 'katafleet-verify'),
      watchRefusalKey({ ...config, token: 'another-token-0123456789abcdef01' }, 'katafleet-verify'), watchRefusalKey(config, 'default')]) {
      expect(other).not.toBe(key);
    }
  });
});

describe('the Kubernetes steps through the API from the worker, on a real cluster', () => {
  let fleet: Fleet;
  let work: string;
  let pool: SshPool;
  let node: NodeTarget;
  let kataSteps: Step[];
  let kubectlLog: string;
  let server: string;
  let caData: string;
  let saKubeconfig: string;
  let admin: ReturnType<typeof kubectlRunner>;
  const runId = '3c9a4e1b-5d2f-4a6b-9e8c-7f1a2b3c4d5e';
  const previousKubectl = process.env.KATAFLEET_KUBECTL;

  /** An inventory of node-1 whose [kubernetes] is `kubeconfig` on the worker; its target. */
  async function targetWith(name: string, kubeconfigLines: string[]): Promise<KubernetesTarget> {
    const kubeconfig = join(work, `${name}.kubeconfig`);
    await writeFile(kubeconfig, [...kubeconfigLines, ''].join('\n'), { mode: 0o600 });
    await chmod(kubeconfig, 0o600);
    const file = await writeFleetInventory(fleet, work, name, ['node-1']);
    await writeFile(file, `${await readFile(file, 'utf8')}\n[kubernetes]\nkubeconfig = ${JSON.stringify(kubeconfig)}\n`);
    return toKubernetesTarget(await loadInventory(file))!;
  }

  const kubeconfigLines = (cluster: string[], user: string[]) => [
    'apiVersion: v1', 'kind: Config', 'clusters:', '- name: sim', '  cluster:', ...cluster.map((l) => `    ${l}`),
    'users:', '- name: u', '  user:', ...user.map((l) => `    ${l}`),
    'contexts:', '- name: sim', '  context:', '    cluster: sim', '    user: u', 'current-context: sim',
  ];

  async function runStep(kubernetes: KubernetesTarget, step: Step, run = runId): Promise<StepOutcome> {
    const fn = createNodeActivities({ pool })[activityByKind[step.kind]] as (request: StepRequest) => Promise<StepOutcome>;
    const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 120_000 }, { logger: new DefaultLogger('ERROR') });
    return (await env.run(fn, { runId: run, rolloutId: 'kube-api-test', node, kubernetes, step, drain: false })) as StepOutcome;
  }
  const kataStep = <K extends Step['kind']>(id: string) => kataSteps.find((s) => s.id === id) as Extract<Step, { kind: K }>;
  const kubectlCalls = async () => (await readFile(kubectlLog, 'utf8').catch(() => '')).split('\n').filter(Boolean);

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'kf-kube-api-'));
    fleet = await startFleet({ nodes: [{ name: 'node-1', containerd: '1.6' }], kubernetes: true, dir: join(work, 'fleet') });
    const kubectlPath = join(kubernetesBinaries().binDir, 'kubectl');
    // Every kubectl the worker starts goes through this wrapper, which writes its arguments down.
    kubectlLog = join(work, 'kubectl-calls.log');
    const wrapper = join(work, 'kubectl');
    await writeFile(wrapper, `#!/bin/sh\necho "$*" >> '${kubectlLog}'\nexec '${kubectlPath}' "$@"\n`, { mode: 0o755 });
    process.env.KATAFLEET_KUBECTL = wrapper;
    admin = kubectlRunner(kubectlPath, fleet.controlPlane!.kubeconfig);
    saKubeconfig = join(work, 'sa.kubeconfig');
    await serviceAccountKubeconfig(admin, join(__dirname, '..', 'deploy', 'rbac.yaml'), saKubeconfig);
    [caData, server] = (await admin(['config', 'view', '--raw', '-o', 'jsonpath={.clusters[0].cluster.certificate-authority-data} {.clusters[0].cluster.server}'])).stdout.trim().split(' ');
    const inventory = await loadInventory(await writeFleetInventory(fleet, work, 'plain', ['node-1']));
    node = toNodeTarget(inventory, inventory.nodes[0]);
    kataSteps = (await loadPlaybook('kata')).steps;
    pool = new SshPool();
  }, 300_000);
  afterAll(async () => {
    if (previousKubectl === undefined) delete process.env.KATAFLEET_KUBECTL;
    else process.env.KATAFLEET_KUBECTL = previousKubectl;
    await pool?.closeAll();
    await fleet?.stop();
  });

  it('rolls the kata playbook out with deploy/rbac.yaml\'s ServiceAccount, starting kubectl once (to read the kubeconfig), and the pod proves a VM', async () => {
    const kubernetes = await targetWith('sa', (await readFile(saKubeconfig, 'utf8')).trimEnd().split('\n'));
    const outcomes: Record<string, StepOutcome> = {};
    for (const step of kataSteps) outcomes[step.id] = await runStep(kubernetes, step);
    expect(Object.fromEntries(Object.entries(outcomes).map(([id, o]) => [id, o.changed]))).toEqual({
      prereq: true, install: true, 'kata-check': false, containerd: true, restart: true, ready: false, label: true, 'runtime-class': true, verify: false,
    });
    expect(outcomes.ready.summary).toMatch(/^Ready; /);
    expect(outcomes.label.summary).toBe('labeled katacontainers.io/kata-runtime=true');
    expect(outcomes['runtime-class'].summary).toMatch(/^created RuntimeClass kata \(handler kata/);
    expect(outcomes.verify.facts?.hostKernel).toBe('6.1.0-katafleet-sim');
    expect(outcomes.verify.facts?.guestKernel).toMatch(/kata/);
    expect(outcomes.verify.summary).toMatch(/\(runs in a VM\)$/);
    // Another run changes nothing, still without kubectl.
    for (const id of ['label', 'runtime-class']) expect((await runStep(kubernetes, kataStep(id), '5e1f2a3b-0000-4000-8000-000000000002')).changed).toBe(false);
    expect(await kubectlCalls()).toEqual([`--kubeconfig ${join(work, 'sa.kubeconfig')} config view --raw --minify --flatten -o json`]);
  }, 600_000);

  /** The verification step's requests to the API server, as the worker sent them (method and path). */
  async function verifyRequests(kubernetes: KubernetesTarget, run: string): Promise<{ outcome: StepOutcome; requests: string[] }> {
    const seen: KubeApiEvent[] = [];
    observeKubeApi((event) => seen.push(event));
    try {
      const outcome = await runStep(kubernetes, kataStep('verify'), run);
      return { outcome, requests: seen.map((event) => `${event.method} ${event.exec ? 'exec' : event.path}`) };
    } finally {
      observeKubeApi(undefined);
    }
  }

  it('watches the verification pod until it runs (one watch request, no poll), as deploy/rbac.yaml grants', async () => {
    const kubernetes = await targetWith('sa-watch', (await readFile(saKubeconfig, 'utf8')).trimEnd().split('\n'));
    const { outcome, requests } = await verifyRequests(kubernetes, '5e1f2a3b-0000-4000-8000-00000000000a');
    expect(outcome.summary).toMatch(/\(runs in a VM\)$/);
    const pods = '/api/v1/namespaces/katafleet-verify/pods';
    expect(requests.filter((request) => request.startsWith(`GET ${pods}?watch=1&fieldSelector=metadata.name%3Dkatafleet-verify-node-1-5e1f2a3b-1&`))).toHaveLength(1);
    // No GET of the pod itself: the change was seen on the watch, not by polling.
    expect(requests.filter((request) => new RegExp(`^GET ${pods}/[^/?]+$`).test(request))).toEqual([]);
    expect(requests.map((request) => request.replace(/katafleet-verify-node-1-[^/?&]+/g, 'POD').replace(/\?.*$/, '?…'))).toEqual([
      `POST ${pods}`, `GET ${pods}?…`, 'GET exec', `DELETE ${pods}/POD`,
    ]);
  }, 300_000);

  it('polls the verification pod where RBAC grants no watch on pods (a deploy/rbac.yaml older than the watch), and still verifies', async () => {
    const kubernetes = await targetWith('sa-no-watch', (await readFile(saKubeconfig, 'utf8')).trimEnd().split('\n'));
    const role = ['-n', 'katafleet-verify', 'patch', 'role', 'katafleet-verify', '--type', 'json', '-p'];
    expect((await admin([...role, JSON.stringify([{ op: 'replace', path: '/rules/0/verbs', value: ['create', 'get', 'list', 'delete'] }])])).code).toBe(0);
    try {
      const { outcome, requests } = await verifyRequests(kubernetes, '5e1f2a3b-0000-4000-8000-00000000000b');
      expect(outcome.summary).toMatch(/\(runs in a VM\)$/);
      const pods = '/api/v1/namespaces/katafleet-verify/pods';
      expect(requests.filter((request) => request.includes('watch=1'))).toHaveLength(1);
      expect(requests.filter((request) => new RegExp(`^GET ${pods}/[^/?]+$`).test(request)).length).toBeGreaterThanOrEqual(1);
      // The next verification (another step, so another Kubectl) remembers the refusal: it polls at once, no watch.
      const second = await verifyRequests(kubernetes, '5e1f2a3b-0000-4000-8000-00000000000c');
      expect(second.outcome.summary).toMatch(/\(runs in a VM\)$/);
      expect(second.requests.filter((request) => request.includes('watch=1'))).toEqual([]);
      expect(second.requests.filter((request) => new RegExp(`^GET ${pods}/[^/?]+$`).test(request)).length).toBeGreaterThanOrEqual(1);
    } finally {
      expect((await admin(['apply', '-f', join(__dirname, '..', 'deploy', 'rbac.yaml')])).code).toBe(0);
    }
  }, 300_000);

  it('a server certificate the kubeconfig\'s CA does not sign is KubeApiTlsFailed, naming the server, the kubeconfig and the fix', async () => {
    const kubernetes = await targetWith('no-ca', kubeconfigLines([`server: ${server}`], ['token: whatever-token-0123456789']));
    await expect(runStep(kubernetes, kataStep('ready'))).rejects.toMatchObject({
      type: KubeApiTlsFailed, nonRetryable: true,
      message: expect.stringMatching(new RegExp(`^GET /api/v1/nodes/node-1: TLS with the Kubernetes API server ${server} \\(kubeconfig ${join(work, 'no-ca.kubeconfig')}\\) failed: .* — set the cluster's certificate-authority-data in the kubeconfig to the CA`)),
    });
  }, 120_000);

  it('a token the server does not know is KubeApiUnauthorized, naming how to renew it', async () => {
    const kubernetes = await targetWith('bad-token', kubeconfigLines([`server: ${server}`, `certificate-authority-data: ${caData}`], ['token: not-a-token-the-server-knows-0123456789']));
    await expect(runStep(kubernetes, kataStep('label'))).rejects.toMatchObject({
      type: KubeApiUnauthorized, nonRetryable: true,
      message: `GET /api/v1/nodes/node-1: the Kubernetes API server ${server} (kubeconfig ${join(work, 'bad-token.kubeconfig')}) refused the kubeconfig's credentials (401 Unauthorized: Unauthorized) — renew the token or client certificate in ${join(work, 'bad-token.kubeconfig')} (for deploy/rbac.yaml's ServiceAccount: kubectl -n katafleet-system create token katafleet)`,
    });
  }, 120_000);

  it('what deploy/rbac.yaml does not grant (a verification pod in namespace default) is KubeApiForbidden, naming deploy/rbac.yaml', async () => {
    const kubernetes = await targetWith('sa-default', (await readFile(saKubeconfig, 'utf8')).trimEnd().split('\n'));
    await expect(runStep(kubernetes, { ...kataStep<'verification-pod'>('verify'), namespace: 'default' })).rejects.toMatchObject({
      type: KubeApiForbidden, nonRetryable: true,
      message: expect.stringMatching(/^POST \/api\/v1\/namespaces\/default\/pods: .* forbids it \(403: pods is forbidden: User "system:serviceaccount:katafleet-system:katafleet" cannot create resource "pods" .*\) — bind the kubeconfig's user to the roles of deploy\/rbac\.yaml/),
    });
  }, 120_000);

  it('a kubeconfig whose user authenticates with an exec plugin keeps working, through kubectl', async () => {
    const token = (await readFile(saKubeconfig, 'utf8')).match(/token: (\S+)/)![1];
    const credential = JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token } });
    const kubernetes = await targetWith('exec-plugin', kubeconfigLines([`server: ${server}`, `certificate-authority-data: ${caData}`], [
      'exec:', '  apiVersion: client.authentication.k8s.io/v1', '  interactiveMode: Never', '  command: /bin/sh', `  args: ["-c", ${JSON.stringify(`printf '%s' '${credential}'`)}]`,
    ]));
    const before = (await kubectlCalls()).length;
    expect(await runStep(kubernetes, kataStep('ready'))).toMatchObject({ changed: false, summary: expect.stringMatching(/^Ready; /) });
    expect((await kubectlCalls()).slice(before).map((call) => call.split(' ').slice(2).join(' '))).toEqual([
      'config view --raw --minify --flatten -o json', 'get node node-1 --ignore-not-found -o json',
    ]);
  }, 120_000);
});
