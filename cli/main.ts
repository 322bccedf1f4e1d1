import { katafleetVersion } from '../worker/version';
import { UsageError, type Command } from './command';
import { apiCommand, upCommand } from './api';
import { demoCommand } from './demo';
import { doctorCommand } from './doctor';
import { driftCommand } from './drift';
import { nodeCommand } from './node';
import { patchConfigCommand } from './patch-config';
import { planCommand } from './plan';
import { reportError } from './report-error';
import { abortCommand, pauseCommand, resumeCommand, rolloutCommand, statusCommand } from './rollout';
import { serverCommand } from './server';
import { clusterCommand } from './cluster';
import { simCliCommand } from './sim';
import { validateCommand } from './validate';
import { workerCommand } from './worker';

const commands: Command[] = [
  validateCommand,
  planCommand,
  patchConfigCommand,
  rolloutCommand,
  statusCommand,
  pauseCommand,
  resumeCommand,
  abortCommand,
  driftCommand,
  nodeCommand,
  serverCommand,
  clusterCommand,
  workerCommand,
  apiCommand,
  upCommand,
  doctorCommand,
  simCliCommand,
  demoCommand,
];

function overview(): string {
  const width = Math.max(...commands.map((command) => command.name.length));
  return [
    'katafleet: roll Kata Containers out to Kubernetes nodes, safely, with durable Temporal workflows over SSH',
    '',
    'Usage: katafleet COMMAND [ARGS]   (katafleet COMMAND --help for details)',
    '',
    ...commands.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
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
  const command = commands.find((candidate) => candidate.name === name);
  if (!command) {
    return reportError(new UsageError(`katafleet: unknown command "${name}"`, overview()));
  }
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(args);
  } catch (err) {
    return reportError(err);
  }
}
