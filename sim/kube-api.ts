// A minimal client for the simulated fleet's own Kubernetes API server: JSON over HTTPS with a
// bearer token and the server's self-signed CA. Used by sim/kubelet-controller.ts (the parts of a
// kubelet kwok does not simulate) and by sim/control-plane.ts to wait for readiness.
import { Agent, request } from 'node:https';

/** The API server answered with a non-2xx status (`status` is the HTTP code, `reason` the Status reason). */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(`${method} ${path}: HTTP ${status} ${reason}: ${message}`);
  }
}

export interface KubeApiOptions {
  /** https://127.0.0.1:PORT */
  server: string;
  token: string;
  /** PEM bundle that signed the server's certificate. */
  ca: string;
}

export type PatchType = 'merge' | 'strategic' | 'json';

const patchContentTypes: Record<PatchType, string> = {
  merge: 'application/merge-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  json: 'application/json-patch+json',
};

export class KubeApi {
  private readonly agent: Agent;
  private readonly url: URL;

  constructor(private readonly opts: KubeApiOptions) {
    this.url = new URL(opts.server);
    this.agent = new Agent({ keepAlive: true, maxSockets: 4, ca: opts.ca });
  }

  get<T>(path: string): Promise<T> {
    return this.send<T>('GET', path);
  }

  /** GET of a plain-text endpoint such as /readyz. */
  getText(path: string): Promise<string> {
    return this.send<string>('GET', path, undefined, undefined, false);
  }

  create<T>(path: string, body: unknown): Promise<T> {
    return this.send<T>('POST', path, body);
  }

  patch<T>(path: string, body: unknown, type: PatchType = 'merge'): Promise<T> {
    return this.send<T>('PATCH', path, body, patchContentTypes[type]);
  }

  delete<T>(path: string): Promise<T> {
    return this.send<T>('DELETE', path);
  }

  /** GET that returns undefined on 404 instead of throwing. */
  async find<T>(path: string): Promise<T | undefined> {
    try {
      return await this.get<T>(path);
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  close(): void {
    this.agent.destroy();
  }

  private send<T>(method: string, path: string, body?: unknown, contentType = 'application/json', json = true): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          agent: this.agent,
          hostname: this.url.hostname,
          port: this.url.port,
          method,
          path,
          timeout: 15_000,
          headers: {
            authorization: `Bearer ${this.opts.token}`,
            accept: json ? 'application/json' : '*/*',
            ...(payload ? { 'content-type': contentType, 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              if (!json) return resolve(text as T);
              try {
                resolve((text ? JSON.parse(text) : undefined) as T);
              } catch (err) {
                reject(new Error(`${method} ${path}: response is not JSON: ${text.slice(0, 200)}`, { cause: err }));
              }
              return;
            }
            let reason = res.statusMessage ?? '';
            let message = text.slice(0, 500);
            try {
              const s = JSON.parse(text) as { reason?: string; message?: string };
              reason = s.reason ?? reason;
              message = s.message ?? message;
            } catch {
              // not a Status object: keep the raw text
            }
            reject(new KubeApiError(method, path, status, reason, message));
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer from ${this.opts.server} within 15 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }
}
