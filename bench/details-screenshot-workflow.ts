// The one workflow of bench/details-screenshot.ts: shows the Markdown it is given as its current details until
// signalled, so a browser can render exactly what katafleet's workflows would show.
import { condition, defineSignal, setCurrentDetails, setHandler } from '@temporalio/workflow';

/** Ends {@link showDetailsWorkflow}. */
export const doneSignal = defineSignal('done');

/** Sets `markdown` as the workflow's current details and waits for {@link doneSignal}. */
export async function showDetailsWorkflow(markdown: string): Promise<void> {
  let done = false;
  setHandler(doneSignal, () => void (done = true));
  setCurrentDetails(markdown);
  await condition(() => done);
}
