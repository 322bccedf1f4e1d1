import { proxyActivities } from '@temporalio/workflow';
import type { createActivities } from '../activities';

const { describeWorker } = proxyActivities<ReturnType<typeof createActivities>>({
  startToCloseTimeout: '10s',
  retry: { maximumAttempts: 3 },
});

/** What `katafleet doctor` learns from one round trip client → server → worker → activity. */
export interface DoctorReport {
  workflowTime: string;
  worker: Awaited<ReturnType<typeof describeWorker>>;
}

/** Proves that a worker polls the katafleet task queue and can run activities. */
export async function doctorWorkflow(): Promise<DoctorReport> {
  const worker = await describeWorker();
  return { workflowTime: new Date().toISOString(), worker };
}
