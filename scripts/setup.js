#!/usr/bin/env node
// Installs everything katafleet needs on a fresh machine, once: npm dependencies, the Temporal CLI,
// the simulated fleet's host packages and builds, and the Temporal server for `katafleet cluster`. Each part lives in scripts/setup/ and is
// skipped when its result is already cached (under ~/.cache/katafleet or node_modules).
// Runs before `npm test` and `npm run demo`; `node scripts/setup.js` runs it by hand.
'use strict';
const { existsSync } = require('node:fs');
const { join } = require('node:path');
const { run, log } = require('./setup/util.js');

const root = join(__dirname, '..');
const quiet = process.argv.includes('--quiet');

async function main() {
  if (!existsSync(join(root, 'node_modules', '.package-lock.json'))) {
    log('installing npm dependencies (npm ci)');
    run('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root });
  }
  const parts = ['temporal', 'host-packages', 'kubernetes', 'temporal-server'];
  for (const name of parts) {
    const file = join(__dirname, 'setup', `${name}.js`);
    if (!existsSync(file)) continue;
    const part = require(file);
    if (await part.isInstalled()) {
      if (!quiet) log(`${part.title}: already installed`);
      continue;
    }
    const started = Date.now();
    log(`${part.title}: installing`);
    await part.install();
    log(`${part.title}: installed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
}

main().catch((err) => {
  console.error(`setup failed: ${err.message}`);
  process.exit(1);
});
