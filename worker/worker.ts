import { setFlagsFromString } from 'node:v8';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createActivities } from '../activities';
import { createDesiredStateActivities } from '../activities/desired-state';
import { createDriftActivities } from '../activities/drift-check';
import { createDriftScheduleActivities } from '../activities/drift-schedule';
import { createNodeActivities } from '../activities/node-activities';
import { createInventoryActivities } from '../activities/inventory-history';
import { SshPool } from '../activities/ssh';
import { markAttemptStarted } from '../activities/steps/step-runtime';
import { taskQueue, temporalTargetFromEnv, type TemporalTarget } from './connection';
import { activityLogAttributes } from './logging';
import { katafleetVersion } from './version';
import { bundleInChildProcess } from './workflow-bundle';

/** Options for {@link createWorker}; defaults come from the environment (see `temporalTargetFromEnv`). */
export interface WorkerOptions {
  target?: TemporalTarget;
  /** @default 'katafleet' */
  taskQueue?: string;
  /**
   * Bounded so a worker on a small machine does not open thousands of SSH sessions at once; a step mostly waits on
   * its node, so one wave of 100 nodes should not queue (at 50, bench/rollout-vs-floor.ts measured a median of 7 s
   * between scheduling a step and starting it at 100 nodes). @default 200
   */
  maxConcurrentActivityTaskExecutions?: number;
  /** The SSH pool the activities share; the worker closes it in `close()`. @default a new pool */
  pool?: SshPool;
  /**
   * Bundle the workflows in a child process (webpack's memory stays out of the worker: about 125 MB of RSS less).
   * false: bundle in this process, as the SDK does by default. `katafleet worker` sets it; `katafleet up` (one
   * process for API, worker and signals) does not. @default false
   */
  bundleInChild?: boolean;
  /**
   * Workflows kept in the worker's cache between their tasks (Temporal's `maxCachedWorkflows`). Each costs about
   * 1 MB with its activities; one not cached replays its (short) history at its next task. @default
   * KATAFLEET_MAX_CACHED_WORKFLOWS, else the SDK's default (from the V8 heap size: about 2,000 on a large machine)
   */
  maxCachedWorkflows?: number;
}

/** Creates (but does not run) a worker for katafleet's workflows and activities. */
export async function createWorker(options: WorkerOptions = {}): Promise<{ worker: Worker; close(): Promise<void> }> {
  const target = options.target ?? temporalTargetFromEnv();
  const pool = options.pool ?? new SshPool();
  const workflowsPath = require.resolve('../workflows');
  const workflows = options.bundleInChild !== true ? { workflowsPath } : { workflowBundle: { code: await bundleInChildProcess(workflowsPath) } };
  const connection = await NativeConnection.connect({ address: target.address, tls: target.tls, apiKey: target.apiKey });
  const worker = await Worker.create({
    connection,
    namespace: target.namespace,
    taskQueue: options.taskQueue ?? taskQueue,
    ...workflows,
    activities: workerActivities(pool),
    maxConcurrentActivityTaskExecutions: options.maxConcurrentActivityTaskExecutions ?? 200,
    ...cacheOption(options.maxCachedWorkflows ?? process.env.KATAFLEET_MAX_CACHED_WORKFLOWS),
    // Each attempt's start, as it begins: its start-to-close counts from here, not from when it was scheduled.
    interceptors: { activity: [(context) => (markAttemptStarted(context), activityLogAttributes())] },
    // A step's activity stops within seconds of a cancel; a shutdown must not wait longer than that (katafleet up: 10 s).
    shutdownGraceTime: '5s',
    shutdownForceTime: '8s',
    ...isolateTimeout,
  });
  const sampler = memorySampler(process.env.KATAFLEET_MEMORY_SAMPLE_MS, () => worker.getStatus());
  return {
    worker,
    /** After the worker stopped: closes the SSH connections and the Temporal connection. */
    async close() {
      clearInterval(sampler);
      await pool.closeAll();
      await connection.close();
    },
  };
}

/**
 * How long one workflow activation may run in the workflow thread's V8 isolate before the SDK interrupts it (the SDK's
 * default: 5 s; an option it does not document yet, taken by `Worker.create` as given). On a starved machine (load
 * 35 on 2 cores, `bench/scale.ts --nodes 2000`) workflow tasks took 7–9 s and the worker died with "async hook stack
 * has become corrupted", most likely from that interrupt (interrupting a vm script corrupts Node's async hook stack:
 * temporalio/sdk-typescript#939, nodejs/node#38503). katafleet's workflows do a bounded amount of
 * work per activation, so a longer bound only matters on a starved machine.
 */
const isolateTimeout = { isolateExecutionTimeout: '60s' } as Record<string, unknown>;

/**
 * An environment setting that must be a whole number from 0 to `max` in ASCII digits (surrounding blanks ignored, no
 * more digits than `max` has): that number, `fallback` when unset or blank, undefined for anything else.
 */
function wholeNumberSetting(value: string | undefined, fallback: number, max: number): number | undefined {
  const text = value?.trim() ?? '';
  if (text === '') return fallback;
  if (!new RegExp(`^[0-9]{1,${String(max).length}}$`).test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

/** The workflow thread's V8 semi-space, MB, unless KATAFLEET_WORKFLOW_SEMI_SPACE_MB says otherwise (0: the process's own, i.e. the main thread's). */
export const workflowSemiSpaceMb = 2;

/**
 * Bounds the young generation of the V8 isolates created from now on, the SDK's workflow thread among them (it creates
 * that thread in `Worker.create`, without `resourceLimits`, so V8's process-wide `--max-semi-space-size` applies to
 * it). V8's default lets a semi-space grow to 16 MB, i.e. a new space of 32 MB per isolate under a steady allocation
 * rate such as a worker's; 2 MB keeps it at 4 MB, for more scavenges of a space that is mostly garbage anyway
 * (docs/scale.md "Worker memory" has the figures). It changes a process-wide V8 flag, so only a process that runs a
 * worker calls it, when it starts (`katafleet worker`, `katafleet up`), never `createWorker`. The main thread's
 * isolate exists already: its semi-space comes from the command line, which bin/katafleet.js sets.
 * @throws Error naming KATAFLEET_WORKFLOW_SEMI_SPACE_MB and the fix when it is not a whole number of MB from 0 to 64.
 */
export function limitWorkflowThreadYoungGeneration(value: string | undefined): number {
  const mb = wholeNumberSetting(value, workflowSemiSpaceMb, 64);
  if (mb === undefined) {
    throw new Error(`KATAFLEET_WORKFLOW_SEMI_SPACE_MB=${JSON.stringify(value)}: use a whole number of MB from 0 to 64 (e.g. 2), 0 for the process's own (the main thread's), or unset it for ${workflowSemiSpaceMb}`);
  }
  if (mb > 0) setFlagsFromString(`--max-semi-space-size=${mb}`);
  return mb;
}

/**
 * How much the old generation of a worker's V8 isolates may grow past what survived the last major GC before the next
 * one, %, unless KATAFLEET_HEAP_GROWING_PERCENT says otherwise (0: V8's own factor, which it picks from its GC and
 * allocation speeds, up to 4× on this machine's heap size, i.e. 300 %).
 */
export const heapGrowingPercent = 30;

/**
 * Bounds how far the old generation grows between major GCs, process-wide (`--heap-growing-percent`, which V8 reads at
 * every major GC, so setting it after start takes effect for the main thread's isolate too). A worker's old
 * generation is mostly garbage promoted from the young one (activations, SSH packets, API answers); with V8's own
 * factor it grew to 160 MB before a major GC, against 50–60 MB live, at 200 nodes in flight, and that moment decided
 * the peak RSS (300 and 376 MB in two runs; with 30 %: 250–262 MB in four, for 15.0–17.5 s of worker CPU against
 * 14.9–16.1 s; docs/scale.md "Worker memory"). Only a process that runs a worker calls it, when it starts (`katafleet worker`, `katafleet up`).
 * @throws Error naming KATAFLEET_HEAP_GROWING_PERCENT and the fix when it is not a whole number from 0 to 300.
 */
export function limitOldGenerationGrowth(value: string | undefined): number {
  const percent = wholeNumberSetting(value, heapGrowingPercent, 300);
  if (percent === undefined) {
    throw new Error(`KATAFLEET_HEAP_GROWING_PERCENT=${JSON.stringify(value)}: use a whole number from 0 to 300 (e.g. 30: a major GC once the old generation has grown 30 % past what the last one kept), 0 for V8's own factor, or unset it for ${heapGrowingPercent}`);
  }
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
  return percent;
}

/** glibc's arena count bin/katafleet.js gives a worker's process (MALLOC_ARENA_MAX), and its main thread's semi-space, MB. */
export const launcherDefaults = { mallocArenaMax: '2', mainSemiSpaceMb: '2' } as const;

/** The memory settings a worker's process runs with, as read from its environment and command line. */
export interface MemorySettings {
  /** MALLOC_ARENA_MAX, or undefined: glibc's own (8 arenas per core). */
  mallocArenaMax?: string;
  /** The main thread's --max-semi-space-size (the last one given, command line after NODE_OPTIONS), or undefined: V8's own. */
  mainSemiSpaceMb?: string;
}

/** The settings in effect: MALLOC_ARENA_MAX from `env`; --max-semi-space-size from NODE_OPTIONS, then `execArgv` (node's own order). */
export function memorySettings(env: NodeJS.ProcessEnv, execArgv: string[]): MemorySettings {
  let mainSemiSpaceMb: string | undefined;
  const args = [...(env.NODE_OPTIONS ?? '').split(/\s+/), ...execArgv];
  args.forEach((arg, i) => {
    const match = /^--max[-_]semi[-_]space[-_]size(?:=(.*))?$/.exec(arg);
    if (match) mainSemiSpaceMb = match[1] ?? args[i + 1];
  });
  return { mallocArenaMax: env.MALLOC_ARENA_MAX || undefined, mainSemiSpaceMb };
}

/**
 * `katafleet worker`'s (and `katafleet up`'s) line about its memory settings: what is in effect and who set it.
 */
export function memorySettingsLine(pid: number, settings: MemorySettings, workflowThreadMb: number, growingPercent: number): string {
  const arenas = settings.mallocArenaMax ?? "unset (glibc's 8 per core)";
  const main = settings.mainSemiSpaceMb ?? "unset (V8's 16)";
  const thread = workflowThreadMb === 0 ? "the main thread's" : `${workflowThreadMb} MB`;
  const growth = growingPercent === 0 ? "V8's own" : `${growingPercent} %`;
  return `katafleet worker: pid ${pid}, memory settings: MALLOC_ARENA_MAX=${arenas}, main thread --max-semi-space-size=${main}, workflow thread semi-space ${thread}, old generation growth between major GCs ${growth}`;
}

/**
 * A warning when the process runs without katafleet's memory settings, i.e. someone overrode them: another
 * MALLOC_ARENA_MAX or semi-space, KATAFLEET_MEMORY_DEFAULTS=0, or node started on bin/katafleet.js directly (which
 * skips its launcher). Measured at 200 nodes in flight (docs/scale.md "Worker memory"): 374 MB of peak RSS without
 * them, 306 MB with them. Empty when both are katafleet's.
 */
export function memorySettingsNote(settings: MemorySettings): string {
  const differ = [
    ...(settings.mallocArenaMax === launcherDefaults.mallocArenaMax ? [] : [`MALLOC_ARENA_MAX=${settings.mallocArenaMax ?? '(unset)'}`]),
    ...(settings.mainSemiSpaceMb === launcherDefaults.mainSemiSpaceMb ? [] : [`--max-semi-space-size=${settings.mainSemiSpaceMb ?? '(unset)'}`]),
  ];
  if (differ.length === 0) return '';
  return `katafleet worker: running with ${differ.join(' and ')} instead of katafleet's MALLOC_ARENA_MAX=2 and --max-semi-space-size=2 (overridden, KATAFLEET_MEMORY_DEFAULTS=0, or node started on bin/katafleet.js directly, which skips the launcher that sets them); with katafleet's a worker needed about 70 MB less at 200 nodes in flight (docs/scale.md "Worker memory")`;
}

/**
 * For a process that runs a worker, when it starts: bounds the workflow thread's young generation and the old
 * generation's growth (process-wide) and returns the lines to print: the settings in effect, and a warning when
 * they are not katafleet's.
 * @throws Error naming KATAFLEET_WORKFLOW_SEMI_SPACE_MB, KATAFLEET_HEAP_GROWING_PERCENT or KATAFLEET_MEMORY_DEFAULTS and the fix when it is invalid.
 */
export function prepareWorkerProcess(env: NodeJS.ProcessEnv = process.env, execArgv: string[] = process.execArgv): string[] {
  const defaults = env.KATAFLEET_MEMORY_DEFAULTS;
  if (defaults !== undefined && !['', '0', '1'].includes(defaults)) {
    throw new Error(`KATAFLEET_MEMORY_DEFAULTS=${JSON.stringify(defaults)}: use 0 to start without katafleet's MALLOC_ARENA_MAX=2 and --max-semi-space-size=2, or unset it (1) to have them`);
  }
  const workflowThreadMb = limitWorkflowThreadYoungGeneration(env.KATAFLEET_WORKFLOW_SEMI_SPACE_MB);
  const growingPercent = limitOldGenerationGrowth(env.KATAFLEET_HEAP_GROWING_PERCENT);
  const settings = memorySettings(env, execArgv);
  return [memorySettingsLine(process.pid, settings, workflowThreadMb, growingPercent), memorySettingsNote(settings)].filter((line) => line !== '');
}

/**
 * `maxCachedWorkflows` from a number or the environment's text; nothing (the SDK's default) when unset.
 * @throws Error naming KATAFLEET_MAX_CACHED_WORKFLOWS and the fix when it is not a whole number.
 */
export function cacheOption(value: number | string | undefined): { maxCachedWorkflows?: number } {
  if (value === undefined || (typeof value === 'string' && value.trim() === '')) return {};
  // Digits only: Number() would also take "0x10", "1e3" or "12.0".
  const count = typeof value === 'string' ? (/^\d{1,6}$/.test(value.trim()) ? Number(value.trim()) : NaN) : value;
  if (!Number.isInteger(count) || count < 0 || count > 100_000) {
    throw new Error(`KATAFLEET_MAX_CACHED_WORKFLOWS=${JSON.stringify(String(value))}: use a whole number of workflows from 0 to 100000 (e.g. 100), or unset it for Temporal's default`);
  }
  return { maxCachedWorkflows: count };
}

/**
 * With KATAFLEET_MEMORY_SAMPLE_MS set (e.g. 5000), one JSON line of `process.memoryUsage()` (MB), the workflows in
 * the worker's cache and the activities in flight to stderr per interval: where a worker's memory goes (bench/scale.ts reads them from the worker's log).
 */
function memorySampler(everyMs: string | undefined, status: () => { numCachedWorkflows: number; numInFlightActivities: number }): NodeJS.Timeout | undefined {
  const interval = Number(everyMs);
  if (!Number.isFinite(interval) || interval < 100) return undefined;
  return setInterval(() => {
    const mb = Object.fromEntries(Object.entries(process.memoryUsage()).map(([key, bytes]) => [key, Math.round(bytes / 1048576)]));
    const { numCachedWorkflows: cachedWorkflows, numInFlightActivities: activities } = status();
    process.stderr.write(`${JSON.stringify({ memoryMb: mb, cachedWorkflows, activities, at: new Date().toISOString() })}\n`);
  }, interval).unref();
}

/** Every activity a katafleet worker registers, sharing one SSH pool (one connection per node). */
export function workerActivities(pool: SshPool) {
  return { ...createActivities({ version: katafleetVersion() }), ...createNodeActivities({ pool }), ...createDriftActivities({ pool }), ...createDesiredStateActivities({ pool }), ...createInventoryActivities(), ...createDriftScheduleActivities() };
}
