// Whether a drift schedule still exists: asked by the schedule's inventory workflow (driftInventoryWorkflow), which
// ends itself once the schedule is gone, also when the schedule was deleted straight through Temporal (the UI,
// `temporal schedule delete`) rather than by `katafleet drift unschedule`, which terminates it at once.
import { Context } from '@temporalio/activity';
import { ScheduleNotFoundError, type Client } from '@temporalio/client';

/** The activities of a drift schedule's inventory workflow; they use the worker's own Temporal client. */
export function createDriftScheduleActivities(clientOf: () => Client = () => Context.current().client) {
  return {
    /** True while the schedule `scheduleId` exists, false once it is deleted. Other errors (the server away) are retried. */
    async driftScheduleExists(scheduleId: string): Promise<boolean> {
      try {
        await clientOf().schedule.getHandle(scheduleId).describe();
        return true;
      } catch (err) {
        if (err instanceof ScheduleNotFoundError) return false;
        throw err;
      }
    },
  };
}
