import { katafleetVersion } from '../worker/version';
import { UsageError, type Command } from './command';
import { reportError } from './report-error';

/**
 * One sub-command as `katafleet --help` lists it, and how to load it. Commands are loaded only when run, so
 * `katafleet validate` does not pay for Temporal, fastify and the simulator (it answers in well under a second;
 * `bench/validate.ts` prints the figure). `test/security/validate-fast.test.ts` checks that each summary here
 * is the loaded command's own.
 */
export interface CommandEntry {
  name: string;
  summary: string;
  load(): Promise<Command>;
}

/**
 * A command module, loaded with require() (tsx's CommonJS hook): no ESM loader thread, which alone costs 0.3–0.8 s.
 * The ids are literal paths next to this file.
 */
function loadCommand<M>(id: string, exported: keyof M): Promise<Command> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return Promise.resolve((require(id) as M)[exported] as Command);
}

export const commandEntries: CommandEntry[] = [
  { name: 'validate', summary: 'check a playbook (and an inventory) and report every problem at once', load: () => loadCommand<typeof import('./validate')>('./validate', 'validateCommand') },
  { name: 'plan', summary: 'show the waves, nodes and steps a rollout would run, in order (changes nothing)', load: () => loadCommand<typeof import('./plan')>('./plan', 'planCommand') },
  { name: 'patch-config', summary: "print a containerd config with the playbook's runtimes added (or a diff), offline", load: () => loadCommand<typeof import('./patch-config')>('./patch-config', 'patchConfigCommand') },
  { name: 'rollout', summary: 'start a rollout of a playbook on an inventory (--follow shows it live)', load: () => loadCommand<typeof import('./rollout')>('./rollout', 'rolloutCommand') },
  { name: 'status', summary: 'list rollouts, or show one with its per-node results', load: () => loadCommand<typeof import('./rollout')>('./rollout', 'statusCommand') },
  { name: 'pause', summary: 'pause a rollout: no new node starts until resume', load: () => loadCommand<typeof import('./rollout')>('./rollout', 'pauseCommand') },
  { name: 'resume', summary: 'resume a paused rollout (or approve it after the canary)', load: () => loadCommand<typeof import('./rollout')>('./rollout', 'resumeCommand') },
  { name: 'abort', summary: 'abort a rollout; --rollback also undoes the nodes it changed', load: () => loadCommand<typeof import('./rollout')>('./rollout', 'abortCommand') },
  { name: 'drift', summary: 'check nodes against a playbook and repair drift, now or on a Temporal Schedule', load: () => loadCommand<typeof import('./drift')>('./drift', 'driftCommand') },
  { name: 'node', summary: 'act on one node: release it from quarantine', load: () => loadCommand<typeof import('./node')>('./node', 'nodeCommand') },
  { name: 'server', summary: 'run the embedded Temporal dev server (SQLite under .katafleet/, Web UI on 8233)', load: () => loadCommand<typeof import('./server')>('./server', 'serverCommand') },
  { name: 'cluster', summary: 'run a local Temporal cluster (Temporal server + PostgreSQL) under .katafleet/cluster', load: () => loadCommand<typeof import('./cluster')>('./cluster', 'clusterCommand') },
  { name: 'worker', summary: 'run a worker on task queue "katafleet" (workflows + SSH activities)', load: () => loadCommand<typeof import('./worker')>('./worker', 'workerCommand') },
  { name: 'api', summary: 'serve the HTTP API (bearer token from KATAFLEET_API_TOKEN or --token-file)', load: () => loadCommand<typeof import('./api')>('./api', 'apiCommand') },
  { name: 'up', summary: 'run the embedded Temporal, a worker and the API together, for local use', load: () => loadCommand<typeof import('./api')>('./api', 'upCommand') },
  { name: 'doctor', summary: 'check that Temporal is reachable and a worker runs activities', load: () => loadCommand<typeof import('./doctor')>('./doctor', 'doctorCommand') },
  { name: 'sim', summary: 'start, break and stop the simulated fleet of test hosts (sshd, containerd, apt on 127.0.1.x)', load: () => loadCommand<typeof import('./sim')>('./sim', 'simCliCommand') },
  { name: 'demo', summary: 'the main job, on the embedded default: Temporal + a simulated fleet, kata rolled out through the HTTP API', load: () => loadCommand<typeof import('./demo')>('./demo', 'demoCommand') },
];

function overview(): string {
  const width = Math.max(...commandEntries.map((command) => command.name.length));
  return [
    'katafleet: roll Kata Containers out to Kubernetes nodes, safely, with durable Temporal workflows over SSH',
    '',
    'Usage: katafleet COMMAND [ARGS]   (katafleet COMMAND --help for details)',
    '',
    ...commandEntries.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    'Environment: TEMPORAL_ADDRESS (and TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*) selects an existing',
    'Temporal cluster instead of the embedded dev server.',
  ].join('\n');
}

/** Runs the CLI and returns its exit status: 0 ok, 1 operation failed, 2 invalid input. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${overview()}\n`);
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${katafleetVersion()}\n`);
    return 0;
  }
  const entry = commandEntries.find((candidate) => candidate.name === name);
  if (!entry) {
    return reportError(new UsageError(`katafleet: unknown command "${name}"`, overview()));
  }
  try {
    const command = await entry.load();
    if (args.includes('--help') || args.includes('-h')) {
      process.stdout.write(`${command.usage}\n`);
      return 0;
    }
    return await command.run(args);
  } catch (err) {
    return reportError(err);
  }
}
