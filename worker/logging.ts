/**
 * The worker's log: one JSON object per line (time, level, message, node, step, rollout id), to a file when the
 * worker shares a terminal with progress output (`katafleet demo`, `katafleet up`), else to stderr.
 * An expected activity failure (a typed `ApplicationFailure`: a node that fails its prerequisite check, a transient
 * error a retry fixes) is one INFO line with its type and reason; only unexpected errors keep their stack.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { Runtime, type ActivityInboundCallsInterceptor, type ActivityInterceptors, type LogLevel, type LogMetadata, type Logger } from '@temporalio/worker';

/** Levels of `--log-level`, lowest first. */
export const logLevels = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type WorkerLogLevel = (typeof logLevels)[number];

/** The `--log-level` value, checked; undefined when not given. */
export function parseLogLevel(value: string | undefined): WorkerLogLevel | undefined {
  if (value === undefined) return undefined;
  const level = value.toLowerCase() as WorkerLogLevel;
  if (!logLevels.includes(level)) throw new Error(`--log-level: expected one of ${logLevels.join(' | ')}, got "${value}"`);
  return level;
}

const rank = (level: string) => logLevels.indexOf(level.toLowerCase() as WorkerLogLevel);

/** The first line of an error's message, the way a person reads a failure at a glance. */
function firstLine(text: string): string {
  return text.split('\n')[0].trim();
}

/** `katafleet-node-<name>` → `<name>`; `katafleet-rollout-<id>` → rollout `<id>`. */
function fromWorkflowId(workflowId: unknown): { node?: string; rollout?: string } {
  if (typeof workflowId !== 'string') return {};
  if (workflowId.startsWith('katafleet-node-')) return { node: workflowId.slice('katafleet-node-'.length) };
  if (workflowId.startsWith('katafleet-rollout-')) return { rollout: workflowId.slice('katafleet-rollout-'.length) };
  return {};
}

/**
 * One log event as its JSON line, and the level it is written at. An activity failure that is an
 * `ApplicationFailure` (thrown on purpose, typed) is expected: INFO, its type and first line, no stack.
 */
export function logRecord(level: LogLevel, message: string, meta: LogMetadata | undefined, now: Date): { level: LogLevel; line: string } {
  const { error, node, step, rolloutId, workflowId, activityType, attempt, ...rest } = (meta ?? {}) as Record<string, unknown>;
  const ids = fromWorkflowId(workflowId);
  const record: Record<string, unknown> = {
    time: now.toISOString(),
    level: level.toLowerCase(),
    msg: message,
    node: node ?? ids.node,
    step: step ?? activityType,
    rollout: rolloutId ?? ids.rollout,
    workflowId,
    attempt,
  };
  let effective = level;
  if (error instanceof ApplicationFailure && message === 'Activity failed') {
    effective = 'INFO';
    record.level = 'info';
    record.failure = error.type ?? 'ApplicationFailure';
    record.reason = firstLine(error.message);
  } else if (error instanceof Error) {
    record.reason = firstLine(error.message);
    record.stack = error.stack;
  } else if (error !== undefined) {
    record.reason = String(error);
  }
  for (const [key, value] of Object.entries(rest)) {
    if (!(key in record) && (typeof value !== 'object' || value === null)) record[key] = value;
  }
  return { level: effective, line: JSON.stringify(record, (_key, value: unknown) => (value === undefined ? undefined : value)) };
}

/** A Temporal `Logger` writing {@link logRecord} lines at or above `level` to `write`. */
export class JsonLineLogger implements Logger {
  constructor(private readonly write: (line: string) => void, private readonly level: WorkerLogLevel = 'info') {}

  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    // logRecord only ever lowers a level (an expected activity failure to info), so a call below this logger's
    // level is dropped before its line is made: the SDK logs every activity's start and end at debug.
    if (rank(level) < rank(this.level)) return;
    const record = logRecord(level, message, meta, new Date());
    if (rank(record.level) >= rank(this.level)) this.write(`${record.line}\n`);
  }

  trace(message: string, meta?: LogMetadata): void { this.log('TRACE', message, meta); }
  debug(message: string, meta?: LogMetadata): void { this.log('DEBUG', message, meta); }
  info(message: string, meta?: LogMetadata): void { this.log('INFO', message, meta); }
  warn(message: string, meta?: LogMetadata): void { this.log('WARN', message, meta); }
  error(message: string, meta?: LogMetadata): void { this.log('ERROR', message, meta); }
}

/** Where the worker logs and from what level. */
export interface WorkerLogging {
  /** @default 'info' */
  level?: WorkerLogLevel;
  /** A file (appended, created with its folder) instead of stderr. */
  file?: string;
  /**
   * Whether the Temporal SDK shuts the worker down on SIGINT/SIGTERM itself. Commands that stop several things in
   * order (`katafleet up`, `katafleet demo`) handle the signals themselves. @default true
   */
  sdkHandlesSignals?: boolean;
}

let fileDescriptor: number | undefined;

/**
 * Installs the process-wide Temporal runtime with the JSON line logger (once per process; a second call changes
 * nothing). Returns where the log goes (a file name, `stderr`, or `the logger installed before`).
 */
export function installWorkerLogging(options: WorkerLogging = {}): string {
  const destination = options.file ?? 'stderr';
  let write: (line: string) => void = (line) => process.stderr.write(line);
  if (options.file) {
    mkdirSync(dirname(options.file), { recursive: true });
    const fd = openSync(options.file, 'a', 0o600);
    write = (line) => { writeSync(fd, line); };
    fileDescriptor = fd;
  }
  try {
    const level = options.level ?? 'info';
    const coreLevel = level.toUpperCase() as LogLevel;
    Runtime.install({
      logger: new JsonLineLogger(write, level),
      // The SDK's native core prints its own warnings (e.g. a slow workflow task) straight to the terminal
      // unless they are forwarded: forward them into the same log.
      telemetryOptions: { logging: { filter: { core: coreLevel, other: coreLevel }, forward: {} } },
      shutdownSignals: options.sdkHandlesSignals === false ? [] : undefined,
    });
  } catch {
    // Already installed (a test, or a second worker in this process): that runtime's logger stays.
    if (fileDescriptor !== undefined) closeSync(fileDescriptor);
    fileDescriptor = undefined;
    return 'the logger installed before';
  }
  return destination;
}

/**
 * Adds the node, step id and rollout id of the step being run to every log line of an activity (from its request:
 * `{ node: { name }, step: { id }, rolloutId }`).
 */
export function activityLogAttributes(): ActivityInterceptors {
  let attributes: Record<string, unknown> = {};
  const inbound: ActivityInboundCallsInterceptor = {
    async execute(input, next) {
      const request = input.args[0] as { node?: { name?: unknown }; step?: { id?: unknown }; rolloutId?: unknown } | undefined;
      if (request && typeof request === 'object') {
        attributes = {
          node: typeof request.node?.name === 'string' ? request.node.name : undefined,
          step: typeof request.step?.id === 'string' ? request.step.id : undefined,
          rolloutId: typeof request.rolloutId === 'string' ? request.rolloutId : undefined,
        };
      }
      return next(input);
    },
  };
  return {
    inbound,
    outbound: { getLogAttributes: (input, next) => next({ ...input, ...Object.fromEntries(Object.entries(attributes).filter(([, v]) => v !== undefined)) }) },
  };
}
