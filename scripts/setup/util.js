'use strict';
const { spawnSync } = require('node:child_process');
const { homedir } = require('node:os');
const { join } = require('node:path');

/** Where heavy, reusable artefacts live: survives clones, shared by CI runs on the same machine. */
const cacheDir = process.env.KATAFLEET_CACHE ?? join(homedir(), '.cache', 'katafleet');

function log(message) {
  process.stderr.write(`[setup] ${message}\n`);
}

/** Runs a command with inherited output; throws with the command line when it fails. */
function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: ['ignore', 'inherit', 'inherit'], ...options });
  if (result.error) throw new Error(`${command} ${args.join(' ')}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${result.status}`);
  return result;
}

module.exports = { cacheDir, log, run };
