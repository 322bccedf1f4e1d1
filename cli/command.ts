import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A mistake in how a command was called: printed with the command's usage, exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  constructor(message: string, readonly usage?: string) {
    super(message);
  }
}

/** One `katafleet` sub-command. */
export interface Command {
  name: string;
  /** One line for `katafleet --help`. */
  summary: string;
  /** Full usage text for `katafleet NAME --help`. */
  usage: string;
  run(args: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses a command's arguments strictly (unknown flags are errors) and checks the number of
 * positionals, so every command reports misuse the same way.
 */
export function parseCommandArgs<T extends Options>(command: Pick<Command, 'name' | 'usage'>, args: string[], options: T, positionals: { min: number; max: number }) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(`katafleet ${command.name}: ${(err as Error).message}`, command.usage);
  }
  const count = parsed.positionals.length;
  if (count < positionals.min || count > positionals.max) {
    const expected = positionals.min === positionals.max ? `${positionals.min}` : `${positionals.min} to ${positionals.max}`;
    throw new UsageError(`katafleet ${command.name}: expected ${expected} argument(s), got ${count}`, command.usage);
  }
  return parsed;
}

/** Reads a required option, failing with a usage error that names it. */
export function requireOption(command: Pick<Command, 'name' | 'usage'>, value: string | undefined, flag: string): string {
  if (!value) throw new UsageError(`katafleet ${command.name}: ${flag} is required`, command.usage);
  return value;
}
