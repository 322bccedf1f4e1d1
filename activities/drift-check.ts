import type { SshPool } from './ssh';
import type { DriftCheck, DriftCheckRequest } from './node-types';

/**
 * The read-only drift check driftWorkflow runs on every node.
 * Contract only: implemented in the drift issue (see `issues show 7`).
 */
export function createDriftActivities(deps: { pool: SshPool }) {
  return {
    async checkDrift(request: DriftCheckRequest): Promise<DriftCheck> {
      void deps;
      throw new Error(`checkDrift is not implemented yet (node ${request.node.name})`);
    },
  };
}
