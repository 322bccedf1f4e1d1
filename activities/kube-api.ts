/**
 * The Kubernetes API from the worker itself: plain HTTPS with the kubeconfig's server, CA and client certificate or
 * token, one keep-alive connection pool per kubeconfig, so a step's get, patch or poll costs a request rather than a
 * kubectl process. The kubeconfig is read with `kubectl config view --raw --minify --flatten -o json` (kubectl
 * resolves contexts, relative paths and files), once per file and version for the worker's life.
 *
 * Kubeconfigs that authenticate with an exec plugin or an auth-provider (the cloud CLIs of EKS, GKE, AKS) are not
 * spoken here: {@link kubeApiConfigFromView} says why, and the steps keep running kubectl with them.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';

/** How the worker reaches one API server: what a kubeconfig's current context says. */
export interface KubeApiConfig {
  /** `https://host:port`, without a trailing slash. */
  server: string;
  /** The kubeconfig file, for messages. */
  kubeconfig: string;
  /** PEM of the CA that signed the server's certificate; absent: the system's CAs. */
  ca?: string;
  /** PEM client certificate and key (x509 authentication). */
  cert?: string;
  key?: string;
  /** A bearer token, or a file holding it (read at each use: projected tokens rotate). */
  token?: string;
  tokenFile?: string;
  insecureSkipTlsVerify?: boolean;
  tlsServerName?: string;
}

/** The Kubernetes API server refused the worker's credentials (401). Never retried: the kubeconfig must change. */
export const KubeApiUnauthorized = 'KubeApiUnauthorized';
/** The API server forbids the request (403): RBAC, or an admission plugin such as PodSecurity. Never retried. */
export const KubeApiForbidden = 'KubeApiForbidden';
/** The server's certificate does not verify against the kubeconfig's CA (or the kubeconfig's own certificate is bad). Never retried. */
export const KubeApiTlsFailed = 'KubeApiTlsFailed';
/** The API server could not be reached, or answered 429/5xx. Retried. */
export const KubeApiUnavailable = 'KubeApiUnavailable';
/** The API server rejected the request as invalid (other 4xx). Never retried. */
export const KubeApiRejected = 'KubeApiRejected';
/** The kubeconfig cannot be used (no current context, no server, unreadable credentials). Never retried. */
export const KubeconfigUnusable = 'KubeconfigUnusable';

interface ViewCluster { server?: string; 'certificate-authority-data'?: string; 'insecure-skip-tls-verify'?: boolean; 'tls-server-name'?: string; 'proxy-url'?: string }
interface ViewUser {
  token?: string; tokenFile?: string; 'client-certificate-data'?: string; 'client-key-data'?: string;
  exec?: unknown; 'auth-provider'?: unknown; username?: string; impersonate?: string; as?: string;
}
/** The parts of `kubectl config view --minify --flatten -o json` read here. */
export interface KubeconfigView {
  'current-context'?: string;
  clusters?: { name: string; cluster?: ViewCluster }[];
  users?: { name: string; user?: ViewUser }[];
  contexts?: { name: string; context?: { cluster?: string; user?: string } }[];
}

const decode = (data: string | undefined) => (data ? Buffer.from(data, 'base64').toString('utf8') : undefined);

/**
 * The API config of a minified, flattened kubeconfig; `{ kubectlOnly: why }` when its credentials need kubectl
 * (exec plugin, auth-provider, basic auth, impersonation, a proxy). Pure.
 * @throws Error naming the kubeconfig and the fix when it has no server
 */
export function kubeApiConfigFromView(view: KubeconfigView, kubeconfig: string): KubeApiConfig | { kubectlOnly: string } {
  const context = view.contexts?.find((c) => c.name === view['current-context'])?.context ?? view.contexts?.[0]?.context;
  const cluster = view.clusters?.find((c) => c.name === context?.cluster)?.cluster ?? view.clusters?.[0]?.cluster;
  const user = view.users?.find((u) => u.name === context?.user)?.user ?? view.users?.[0]?.user ?? {};
  if (!cluster?.server) throw new Error(`the kubeconfig ${kubeconfig} names no API server in its current context — set current-context to a context whose cluster has a server`);
  if (user.exec !== undefined) return { kubectlOnly: 'its user authenticates with an exec plugin' };
  if (user['auth-provider'] !== undefined) return { kubectlOnly: 'its user authenticates with an auth-provider' };
  if (user.username !== undefined) return { kubectlOnly: 'its user authenticates with a username and password' };
  if (user.as !== undefined || user.impersonate !== undefined) return { kubectlOnly: 'its user impersonates another' };
  if (cluster['proxy-url'] !== undefined) return { kubectlOnly: 'its cluster is reached through a proxy-url' };
  let url: URL;
  try {
    url = new URL(cluster.server);
  } catch {
    throw new Error(`the kubeconfig ${kubeconfig} names the API server ${JSON.stringify(cluster.server)}, which is not a URL — set the cluster's server to https://<host>:<port>`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`the kubeconfig ${kubeconfig} names the API server ${cluster.server}: only https:// (or http://) servers are supported`);
  return {
    server: cluster.server.replace(/\/+$/, ''),
    kubeconfig,
    ca: decode(cluster['certificate-authority-data']),
    cert: decode(user['client-certificate-data']),
    key: decode(user['client-key-data']),
    token: user.token,
    tokenFile: user.tokenFile,
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    tlsServerName: cluster['tls-server-name'],
  };
}

/** The `Status` object the API server answers failures with. */
interface StatusBody { message?: string; reason?: string; details?: { causes?: { reason?: string; message?: string }[] } }

/** What went wrong with one request, for {@link kubeApiFailureMessage}. */
export interface KubeApiProblem {
  /** `GET /api/v1/nodes/kube-1` */
  request: string;
  status?: number;
  /** The server's Status message, or the socket's error. */
  message: string;
  /** The socket's error code (`ECONNREFUSED`, `DEPTH_ZERO_SELF_SIGNED_CERT`, ...). */
  code?: string;
}

const tlsCodes = /^(ERR_TLS_|ERR_SSL_|UNABLE_TO_|CERT_|DEPTH_ZERO|SELF_SIGNED|ERR_OSSL)/;

/** The failure type of a problem: see the constants above. Pure. */
export function kubeApiFailureType(problem: KubeApiProblem): string {
  if (problem.status === undefined) return problem.code && tlsCodes.test(problem.code) ? KubeApiTlsFailed : KubeApiUnavailable;
  if (problem.status === 401) return KubeApiUnauthorized;
  if (problem.status === 403) return KubeApiForbidden;
  if (problem.status === 429 || problem.status >= 500) return KubeApiUnavailable;
  return KubeApiRejected;
}

/** One line: what failed, on which server with which kubeconfig, and the fix. Pure. */
export function kubeApiFailureMessage(config: Pick<KubeApiConfig, 'server' | 'kubeconfig'>, problem: KubeApiProblem): string {
  const where = `the Kubernetes API server ${config.server} (kubeconfig ${config.kubeconfig})`;
  const said = problem.message.trim().split('\n')[0];
  switch (kubeApiFailureType(problem)) {
    case KubeApiTlsFailed:
      return `${problem.request}: TLS with ${where} failed: ${said}${problem.code ? ` (${problem.code})` : ''} — set the cluster's certificate-authority-data in the kubeconfig to the CA that signed the server's certificate (and its server to a name that certificate carries)`;
    case KubeApiUnauthorized:
      return `${problem.request}: ${where} refused the kubeconfig's credentials (401 Unauthorized${said ? `: ${said}` : ''}) — renew the token or client certificate in ${config.kubeconfig} (for deploy/rbac.yaml's ServiceAccount: kubectl -n katafleet-system create token katafleet)`;
    case KubeApiForbidden:
      return /cannot [a-z]+ resource/.test(said)
        ? `${problem.request}: ${where} forbids it (403: ${said}) — bind the kubeconfig's user to the roles of deploy/rbac.yaml (kubectl apply -f deploy/rbac.yaml)`
        : `${problem.request}: ${where} refused it (403: ${said})`;
    case KubeApiUnavailable:
      return problem.status === undefined
        ? `${problem.request}: ${where} cannot be reached: ${said}${problem.code ? ` (${problem.code})` : ''} — check that the server is up and reachable from the worker`
        : `${problem.request}: ${where} answered ${problem.status}${said ? `: ${said}` : ''}`;
    default:
      return `${problem.request}: ${where} rejected it (${problem.status}${said ? `: ${said}` : ''})`;
  }
}

/** The failure for a problem: permanent unless the server was unreachable or busy; `cause` kept. */
export function kubeApiFailure(config: Pick<KubeApiConfig, 'server' | 'kubeconfig'>, problem: KubeApiProblem, cause?: unknown): ApplicationFailure {
  const type = kubeApiFailureType(problem);
  return ApplicationFailure.create({
    type, message: kubeApiFailureMessage(config, problem), nonRetryable: type !== KubeApiUnavailable,
    cause: cause instanceof Error ? cause : undefined, details: problem.status === undefined ? [] : [{ status: problem.status }],
  });
}

/** A finished request: status and parsed body (undefined for an empty one). */
export interface KubeApiResponse<T> {
  status: number;
  body: T | undefined;
}

/** Options of {@link KubeApi.request}. */
export interface KubeApiRequestOptions {
  body?: unknown;
  /** @default 'application/json' */
  contentType?: string;
  /** Statuses returned rather than thrown (200–299 always are). */
  allow?: readonly number[];
  signal?: AbortSignal;
  /** @default 60_000 */
  timeoutMs?: number;
}

/** Observes each request the worker sends (the benchmark records them to replay with no engine). */
export type KubeApiObserver = (event: KubeApiEvent) => void;

/** One request as {@link observeKubeApi} sees it: for an exec, `exec` is the command (namespace, pod and container in `path`). */
export interface KubeApiEvent { server: string; method: string; path: string; body?: string; contentType?: string; exec?: string[]; container?: string }
let observer: KubeApiObserver | undefined;
/** Sets (or clears) the observer of every request; for benchmarks. */
export function observeKubeApi(next: KubeApiObserver | undefined): void {
  observer = next;
}

const agents = new Map<string, https.Agent | http.Agent>();
/** The message of an error answer: its Status's `message`, else the start of its text. Pure. */
function statusMessage(text: string): string {
  try {
    return (JSON.parse(text) as StatusBody).message ?? text.slice(0, 300);
  } catch {
    return text.slice(0, 300);
  }
}

/** The longest line a watch reads before it gives up on the stream (characters). */
const maxWatchLine = 4 * 1024 * 1024;

/** A client of one API server with one kubeconfig's credentials; its connections are kept alive and shared. */
export class KubeApi {
  private readonly url: URL;
  private token?: string;

  constructor(readonly config: KubeApiConfig) {
    this.url = new URL(config.server);
  }

  private agent(): https.Agent | http.Agent {
    const key = JSON.stringify([this.config.server, this.config.ca, this.config.cert, this.config.key, this.config.insecureSkipTlsVerify, this.config.tlsServerName]);
    let agent = agents.get(key);
    if (!agent) {
      agent = this.url.protocol === 'http:'
        ? new http.Agent({ keepAlive: true })
        : new https.Agent({
          keepAlive: true, ca: this.config.ca, cert: this.config.cert, key: this.config.key,
          rejectUnauthorized: !this.config.insecureSkipTlsVerify, servername: this.config.tlsServerName,
        });
      agents.set(key, agent);
    }
    return agent;
  }

  private headers(): Record<string, string> {
    if (this.token === undefined && this.config.tokenFile) {
      try {
        this.token = readFileSync(this.config.tokenFile, 'utf8').trim();
      } catch (error) {
        throw ApplicationFailure.create({ type: KubeconfigUnusable, nonRetryable: true,
          message: `the kubeconfig ${this.config.kubeconfig} names the tokenFile ${this.config.tokenFile}, which cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}) — fix the path or its permissions` });
      }
    }
    const token = this.config.token ?? this.token;
    // A token with a control character or a space cannot go into a header: Node would throw a plain (retried) error.
    // Say which kubeconfig, never the token.
    if (token && !/^[\x21-\x7e]+$/.test(token)) {
      throw ApplicationFailure.create({ type: KubeconfigUnusable, nonRetryable: true,
        message: `the kubeconfig ${this.config.kubeconfig} has a token with characters a bearer token cannot have (a line break, a space, a control or non-ASCII character) — put the token on one line, without spaces` });
    }
    return { accept: 'application/json', 'user-agent': 'katafleet', ...(token ? { authorization: `Bearer ${token}` } : {}) };
  }

  private options(method: string, path: string, headers: Record<string, string>): https.RequestOptions {
    return {
      method, protocol: this.url.protocol, hostname: this.url.hostname.replace(/^\[|\]$/g, ''), port: this.url.port || undefined,
      path: `${this.url.pathname.replace(/\/+$/, '')}${path}`, agent: this.agent(), headers: { ...this.headers(), ...headers },
    };
  }

  /** `METHOD path` with a JSON body; 2xx and `allow`ed statuses are returned, others thrown as {@link kubeApiFailure}. */
  request<T>(method: string, path: string, options: KubeApiRequestOptions = {}): Promise<KubeApiResponse<T>> {
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    observer?.({ server: this.config.server, method, path, body, contentType: body === undefined ? undefined : options.contentType ?? 'application/json' });
    const what = `${method} ${path}`;
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = body === undefined ? {} : { 'content-type': options.contentType ?? 'application/json', 'content-length': String(Buffer.byteLength(body)) };
      let request: http.ClientRequest;
      try {
        request = (this.url.protocol === 'http:' ? http : https).request(this.options(method, path, headers));
      } catch (error) {
        reject(error);
        return;
      }
      const onAbort = () => request.destroy(options.signal?.reason instanceof Error ? options.signal.reason : new Error('cancelled'));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      request.setTimeout(options.timeoutMs ?? 60_000, () => request.destroy(Object.assign(new Error(`no answer within ${(options.timeoutMs ?? 60_000) / 1000} s`), { code: 'ETIMEDOUT' })));
      request.on('error', (error: NodeJS.ErrnoException) => {
        options.signal?.removeEventListener('abort', onAbort);
        if (options.signal?.aborted) reject(options.signal.reason);
        else reject(kubeApiFailure(this.config, { request: what, message: error.message, code: error.code }, error));
      });
      request.on('response', (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', (error) => request.emit('error', error));
        response.on('end', () => {
          options.signal?.removeEventListener('abort', onAbort);
          const text = Buffer.concat(chunks).toString('utf8');
          const status = response.statusCode ?? 0;
          let parsed: unknown;
          try {
            parsed = text.trim() === '' ? undefined : JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          if ((status >= 200 && status < 300) || options.allow?.includes(status)) {
            resolve({ status, body: parsed as T | undefined });
          } else {
            const message = (parsed as StatusBody | undefined)?.message ?? text.slice(0, 300);
            reject(kubeApiFailure(this.config, { request: what, status, message }));
          }
        });
      });
      request.end(body);
    });
  }

  /**
   * Watches one object of a collection (`collection` is its list path, e.g. `/api/v1/namespaces/ns/pods`) until
   * `done(object)` says so: a `?watch=1&fieldSelector=metadata.name=…` request whose answer streams one JSON event a
   * line (ADDED with the object as it is now, then MODIFIED per change), so a change is seen as the server makes it,
   * with no poll. Resolves with the object that was `done`, or `{ done: false, last }` when the server ended the
   * watch (its timeout, `timeoutMs`, a deletion, an ERROR event) first. A refusal (403: an RBAC without `watch`)
   * rejects like {@link request}.
   */
  watchOne<T>(collection: string, name: string, done: (object: T) => boolean, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<{ done: boolean; last?: T }> {
    const timeoutMs = Math.max(1_000, options.timeoutMs ?? 60_000);
    const query = new URLSearchParams([['watch', '1'], ['fieldSelector', `metadata.name=${name}`], ['timeoutSeconds', String(Math.ceil(timeoutMs / 1000))]]);
    const path = `${collection}?${query.toString()}`;
    observer?.({ server: this.config.server, method: 'GET', path });
    const what = `GET ${path}`;
    return new Promise((resolve, reject) => {
      let request: http.ClientRequest;
      try {
        request = (this.url.protocol === 'http:' ? http : https).request(this.options('GET', path, {}));
      } catch (error) {
        reject(error);
        return;
      }
      let last: T | undefined;
      let settled = false;
      const finish = (result: { done: boolean; last?: T } | { error: unknown }) => {
        if (settled) return;
        settled = true;
        options.signal?.removeEventListener('abort', onAbort);
        clearTimeout(timer);
        if ('error' in result) reject(result.error);
        else resolve(result);
        request.destroy();
      };
      const onAbort = () => finish({ error: options.signal?.reason ?? new Error('cancelled') });
      options.signal?.addEventListener('abort', onAbort, { once: true });
      // The server ends the watch after timeoutSeconds; this is the bound if it does not.
      const timer = setTimeout(() => finish({ done: false, last }), timeoutMs + 5_000);
      request.on('error', (error: NodeJS.ErrnoException) => finish({ error: kubeApiFailure(this.config, { request: what, message: error.message, code: error.code }, error) }));
      request.on('response', (response) => {
        const status = response.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            finish({ error: kubeApiFailure(this.config, { request: what, status, message: statusMessage(Buffer.concat(chunks).toString('utf8')) }) });
          });
          return;
        }
        let buffered = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          buffered += chunk;
          // One event is one object (a Pod is a few KiB): a line this long is no event; end the watch, the caller GETs.
          if (buffered.length > maxWatchLine) {
            finish({ done: false, last });
            return;
          }
          for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
            const line = buffered.slice(0, end).trim();
            buffered = buffered.slice(end + 1);
            if (line === '') continue;
            let event: { type?: string; object?: T };
            try {
              event = JSON.parse(line) as { type?: string; object?: T };
            } catch {
              finish({ done: false, last });
              return;
            }
            if (event.type === 'ADDED' || event.type === 'MODIFIED') {
              last = event.object;
              if (last !== undefined && done(last)) {
                finish({ done: true, last });
                return;
              }
            } else if (event.type === 'DELETED' || event.type === 'ERROR') {
              finish({ done: false, last });
              return;
            }
          }
        });
        response.on('end', () => finish({ done: false, last }));
        response.on('error', () => finish({ done: false, last }));
      });
      request.end();
    });
  }

  /** GET an object; undefined when it does not exist (404). */
  async get<T>(path: string, signal?: AbortSignal): Promise<T | undefined> {
    const response = await this.request<T>('GET', path, { allow: [404], signal });
    return response.status === 404 ? undefined : response.body;
  }

  /**
   * Runs `command` in a container (the `exec` subresource over WebSocket, channel protocol v5/v4, as kubectl ≥ 1.30
   * does) and returns its stdout, stderr and exit code.
   */
  exec(namespace: string, pod: string, container: string, command: readonly string[], options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const query = new URLSearchParams([...command.map((part): [string, string] => ['command', part]), ['container', container], ['stdout', 'true'], ['stderr', 'true']]);
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/exec?${query.toString()}`;
    observer?.({ server: this.config.server, method: 'GET', path, exec: [...command], container });
    const what = `exec ${command.join(' ')} in ${namespace}/${pod}`;
    const timeoutMs = options.timeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      let request: http.ClientRequest;
      try {
        request = (this.url.protocol === 'http:' ? http : https).request(this.options('GET', path, {
        connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'),
        'sec-websocket-protocol': 'v5.channel.k8s.io, v4.channel.k8s.io',
        }));
      } catch (error) {
        reject(error);
        return;
      }
      let socket: Socket | undefined;
      let settled = false;
      const done = (error: unknown, value?: { stdout: string; stderr: string; exitCode: number }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        socket?.destroy();
        if (error) reject(error);
        else resolve(value!);
      };
      const timer = setTimeout(() => { request.destroy(); done(kubeApiFailure(this.config, { request: what, message: `no end within ${timeoutMs / 1000} s`, code: 'ETIMEDOUT' })); }, timeoutMs);
      const onAbort = () => { request.destroy(); done(options.signal?.reason); };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      request.on('error', (error: NodeJS.ErrnoException) => done(kubeApiFailure(this.config, { request: what, message: error.message, code: error.code }, error)));
      request.on('response', (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          done(kubeApiFailure(this.config, { request: what, status: response.statusCode, message: statusMessage(Buffer.concat(chunks).toString('utf8')) }));
        });
      });
      request.on('upgrade', (_response, upgraded: Socket, head: Buffer) => {
        socket = upgraded;
        const frames = new ExecFrames();
        // The result, or its failure (a stream with no status, a failure status such as "no exec found"): a throw
        // here would leave the socket's event handler and end the worker's process.
        const finish = () => {
          if (settled) return;
          let result: { stdout: string; stderr: string; exitCode: number };
          try {
            result = frames.result(what, (problem) => kubeApiFailure(this.config, problem));
          } catch (error) {
            done(error);
            return;
          }
          done(undefined, result);
        };
        const take = (chunk: Buffer) => {
          if (frames.push(chunk)) finish();
        };
        upgraded.on('data', take);
        upgraded.on('error', (error: NodeJS.ErrnoException) => done(kubeApiFailure(this.config, { request: what, message: error.message, code: error.code }, error)));
        upgraded.on('close', finish);
        if (head.length > 0) take(head);
      });
      request.end();
    });
  }
}

/**
 * The server's side of an exec WebSocket, decoded: each binary message's first byte is its channel (1 stdout,
 * 2 stderr, 3 the final Status), per k8s.io/apimachinery/pkg/util/remotecommand (v4/v5.channel.k8s.io).
 */
export class ExecFrames {
  private buffer = Buffer.alloc(0);
  private message: Buffer[] = [];
  private readonly streams: Record<number, Buffer[]> = { 1: [], 2: [], 3: [] };
  private closed = false;

  /** Adds bytes from the socket; true once the server sent its close frame. */
  push(chunk: Buffer): boolean {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return this.closed;
      const fin = (this.buffer[0] & 0x80) !== 0;
      const opcode = this.buffer[0] & 0x0f;
      const masked = (this.buffer[1] & 0x80) !== 0;
      let length = this.buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return this.closed;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return this.closed;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      const maskOffset = offset;
      if (masked) offset += 4;
      if (this.buffer.length < offset + length) return this.closed;
      const payload = Buffer.from(this.buffer.subarray(offset, offset + length));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i] ^= this.buffer[maskOffset + (i % 4)];
      this.buffer = this.buffer.subarray(offset + length);
      if (opcode === 0x8) this.closed = true;
      else if (opcode === 0x0 || opcode === 0x1 || opcode === 0x2) {
        this.message.push(payload);
        if (fin) {
          const whole = Buffer.concat(this.message);
          this.message = [];
          if (whole.length > 0) this.streams[whole[0]]?.push(whole.subarray(1));
        }
      }
      if (this.closed) return true;
    }
  }

  /** stdout, stderr and the exit code the Status channel gave (0 on Success); a Status with no exit code is a failure. */
  result(what: string, failure: (problem: KubeApiProblem) => Error): { stdout: string; stderr: string; exitCode: number } {
    const text = (channel: number) => Buffer.concat(this.streams[channel]).toString('utf8');
    const stdout = text(1);
    const stderr = text(2);
    const statusText = text(3);
    if (statusText === '') throw failure({ request: what, message: 'the stream ended without an exit status', code: 'ECONNRESET' });
    let status: StatusBody & { status?: string };
    try {
      status = JSON.parse(statusText) as StatusBody & { status?: string };
    } catch {
      throw failure({ request: what, message: `the exit status was not a Status object: ${statusText.slice(0, 200)}`, code: 'EPROTO' });
    }
    if (status.status === 'Success') return { stdout, stderr, exitCode: 0 };
    const exitCode = Number(status.details?.causes?.find((cause) => cause.reason === 'ExitCode')?.message);
    if (Number.isInteger(exitCode)) return { stdout, stderr, exitCode };
    throw failure({ request: what, status: 500, message: status.message ?? statusText.slice(0, 200) });
  }
}

/** The kubeconfig's API config, cached per file, version (mtime, size, inode) and kubectl for the worker's life. */
const configs = new Map<string, Promise<KubeApiConfig | { kubectlOnly: string }>>();

/**
 * The API config of `kubeconfig`, read once per version of the file and `reader` (the kubectl that reads it) with
 * `view` (which runs `kubectl config view ...`).
 * @throws the failure of `view`, or a permanent `KubeconfigUnusable`
 */
export function kubeApiConfigFor(kubeconfig: string, view: () => Promise<string>, reader = ''): Promise<KubeApiConfig | { kubectlOnly: string }> {
  const stat = statSync(kubeconfig);
  const key = JSON.stringify([kubeconfig, stat.ino, stat.size, stat.mtimeMs, reader]);
  let found = configs.get(key);
  if (!found) {
    found = view().then((text) => {
      let parsed: KubeconfigView;
      try {
        parsed = JSON.parse(text) as KubeconfigView;
      } catch {
        throw new Error(`kubectl config view of ${kubeconfig} did not print JSON: ${text.slice(0, 200)}`);
      }
      return kubeApiConfigFromView(parsed, kubeconfig);
    }).catch((error: unknown) => {
      configs.delete(key);
      throw error instanceof ApplicationFailure ? error : ApplicationFailure.create({ type: KubeconfigUnusable, nonRetryable: true, message: (error as Error).message, cause: error as Error });
    });
    for (const old of configs.keys()) if (JSON.parse(old)[0] === kubeconfig) configs.delete(old);
    configs.set(key, found);
  }
  return found;
}
