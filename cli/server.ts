import { join } from 'node:path';
import { searchAttributeTypeName, startDevServer, stopDevServerOf } from '../worker/dev-server';
import { temporalTargetFromEnv } from '../worker/connection';
import { allSearchAttributes } from '../workflows/search-attributes';
import { parseCommandArgs, UsageError, type Command } from './command';

export const serverCommand: Command = {
  name: 'server',
  summary: 'run the embedded Temporal dev server (SQLite under .katafleet/, Web UI on 8233)',
  usage: `Usage: katafleet server [--db FILE] [--port N] [--ui-port N] [--print-attributes]
       katafleet server stop [--db FILE]

Runs until Ctrl-C or SIGTERM. \`katafleet server stop\` stops a dev server that runs on the database (one started by
\`katafleet server\` in another terminal, or left behind by a killed \`katafleet up\`), through the pid file next to it.

  --db FILE            SQLite database that keeps history across restarts (default .katafleet/temporal.db)
  --port N             frontend port (default 7233)
  --ui-port N          Web UI port (default 8233)
  --print-attributes   print the commands that register katafleet's search attributes on an existing
                       cluster (TEMPORAL_ADDRESS) and exit

With TEMPORAL_ADDRESS set, katafleet uses that cluster and this command starts nothing.`,
  async run(args) {
    const { values, positionals } = parseCommandArgs(this, args, { db: { type: 'string' }, port: { type: 'string' }, 'ui-port': { type: 'string' }, 'print-attributes': { type: 'boolean' } }, { min: 0, max: 1 });
    const dbFile = values.db ?? join('.katafleet', 'temporal.db');
    if (positionals[0] !== undefined) {
      if (positionals[0] !== 'stop') throw new UsageError(`katafleet server: unknown action "${positionals[0]}" (the only one is "stop")`, this.usage);
      const pid = await stopDevServerOf(dbFile);
      process.stdout.write(pid === undefined ? `No dev server runs on ${dbFile}.\n` : `Stopped the dev server on ${dbFile} (pid ${pid}).\n`);
      return 0;
    }
    const target = temporalTargetFromEnv();
    if (values['print-attributes']) {
      for (const key of allSearchAttributes) {
        process.stdout.write(`temporal operator search-attribute create --namespace ${target.namespace} --name ${key.name} --type ${searchAttributeTypeName(key.type)}\n`);
      }
      return 0;
    }
    if (target.external) {
      process.stderr.write(`TEMPORAL_ADDRESS is set (${target.address}): katafleet uses that cluster and starts no server. Unset it to run the embedded one.\n`);
      return 2;
    }
    const server = await startDevServer({
      dbFile,
      port: values.port ? Number(values.port) : undefined,
      uiPort: values['ui-port'] ? Number(values['ui-port']) : undefined,
      namespace: target.namespace,
    });
    process.stdout.write(`Temporal dev server on ${server.address}, Web UI ${server.uiUrl} (Ctrl-C stops it; history is kept)\n`);
    const stop = () => void server.stop();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    await new Promise((resolve) => server.process.once('exit', resolve));
    return 0;
  },
};
