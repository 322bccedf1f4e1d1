// Every workflow the katafleet worker registers. The worker bundles this file (workflowsPath).
export { doctorWorkflow } from './doctor';
export { nodeWorkflow, nodeReleaseWorkflow } from './node';
export { rolloutWorkflow } from './rollout';
export { driftWorkflow, driftInventoryWorkflow } from './drift';
