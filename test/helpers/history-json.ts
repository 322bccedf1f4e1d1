// Workflow histories as JSON files for the replay test, written and read with @temporalio/proto's own
// types. Not `historyToJSON`/`historyFromJSON` of @temporalio/common: with this install's layout
// (protobufjs 7 hoisted for grpc, a separate protobufjs 8 copy under @temporalio/common and one under
// @temporalio/proto) protojson's `instanceof Type` check fails across the two copies ("type must be a Type").
import type { WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

type History = temporal.api.history.v1.History;
const { History } = temporal.api.history.v1;

/** JSON text of a history: int64 as strings, enums by name, bytes (payloads) in base64. */
export function historyToJsonText(history: Awaited<ReturnType<WorkflowHandle['fetchHistory']>>): string {
  return JSON.stringify(History.toObject(History.fromObject(history), { longs: String, enums: String, bytes: String }));
}

/** The history a JSON text of {@link historyToJsonText} holds. */
export function historyFromJsonText(text: string): History {
  return History.fromObject(JSON.parse(text) as Record<string, unknown>);
}
