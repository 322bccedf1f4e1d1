import { join } from 'node:path';
import { searchAttributeTypeName, startDevServer } from '../worker/dev-server';
import { temporalTargetFromEnv } from '../worker/connection';
import { allSearchAttributes } from '../workflows/search-attributes';
import { parseCommandArgs, type Command } from './command';

export const serverCommand: Command = {
  name: 'server',
  summary: 'run the embedded Temporal dev server (SQLite under .katafleet/, Web UI on 8233)',
  usage: `Usage: katafleet server [--db FILE] [--port N] [--ui-port N] [--print-attributes]

  --db FILE            SQLite database that keeps history across restarts (default .katafleet/temporal.db)
  --port N             frontend port (default 7233)
  --ui-port N          Web UI port (default 8233)
  --print-attributes   print the commands that register katafleet's search attributes on an existing
                       cluster (TEMPORAL_ADDRESS) and exit

With TEMPORAL_ADDRESS set, katafleet uses that cluster and this command starts nothing.`,
  async run(args) {
    const { values } = parseCommandArgs(this, args, { db: { type: 'string' }, port: { type: 'string' }, 'ui-port': { type: 'string' }, 'print-attributes': { type: 'boolean' } }, { min: 0, max: 0 });
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
      dbFile: values.db ?? join('.katafleet', 'temporal.db'),
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
