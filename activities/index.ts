import { hostname } from 'node:os';

/** Dependencies shared by activities (the SSH pool, a logger, ...), injected by the worker. */
export interface ActivityDeps {
  version: string;
}

/**
 * Builds the activities the worker registers. Workflows import only the *type* of the result:
 * `proxyActivities<ReturnType<typeof createActivities>>(...)`.
 */
export function createActivities(deps: ActivityDeps) {
  return {
    /** Who is running activities: used by `katafleet doctor`. */
    async describeWorker(): Promise<{ hostname: string; pid: number; node: string; katafleet: string }> {
      return { hostname: hostname(), pid: process.pid, node: process.version, katafleet: deps.version };
    },
  };
}
