/** The failure `promise` ends with: its type (an ApplicationFailure's) and message; throws when it succeeds. */
export async function failure(promise: Promise<unknown>): Promise<{ type?: string; message: string }> {
  try {
    await promise;
  } catch (err) {
    return { type: (err as { type?: string }).type, message: (err as Error).message };
  }
  throw new Error('expected a failure');
}
