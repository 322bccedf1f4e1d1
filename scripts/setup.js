#!/usr/bin/env node
// Installs everything katafleet needs on a fresh machine, once: npm dependencies, the Temporal CLI,
// the simulated fleet's host packages and builds, and the Temporal server for `katafleet cluster`. Each part lives in scripts/setup/ and is
// skipped when its result is already cached (under ~/.cache/katafleet or node_modules).
// Runs before `npm test` and `npm run demo`; `node scripts/setup.js` runs it by hand.
'use strict';
const { existsSync, readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { run, log } = require('./setup/util.js');

const root = join(__dirname, '..');
const quiet = process.argv.includes('--quiet');
// `--for demo`: only what `npm run demo` needs before it starts; containerd 2.x (~10 min) is built by `npm test`.
const forDemo = process.argv.includes('--for') && process.argv[process.argv.indexOf('--for') + 1] === 'demo';
if (forDemo && !process.env.KATAFLEET_SKIP_CONTAINERD2) {
  process.env.KATAFLEET_SKIP_CONTAINERD2 = '1';
  if (!quiet) log('containerd 2.x: not needed by the demo (every demo node runs containerd 1.6); `npm test` builds it');
}

/**
 * Every simulated node runs its own containerd, whose CRI plugin takes inotify instances; Debian's default of 128
 * per user runs out at ~20 nodes plus the tests' other watchers ("too many open files" from containerd's CRI).
 * Raised for the machine when we are root and it is lower; otherwise said once.
 */
function raiseInotifyLimits() {
  const limits = { 'fs.inotify.max_user_instances': 8192, 'fs.inotify.max_user_watches': 1048576 };
  for (const [key, wanted] of Object.entries(limits)) {
    const file = `/proc/sys/${key.replaceAll('.', '/')}`;
    let current;
    try {
      current = Number(readFileSync(file, 'utf8').trim());
    } catch {
      continue;
    }
    if (current >= wanted) continue;
    try {
      writeFileSync(file, `${wanted}\n`);
      if (!quiet) log(`${key}: raised from ${current} to ${wanted} (each simulated node's containerd takes inotify instances)`);
    } catch {
      log(`${key} is ${current}: large simulated fleets may fail with "too many open files"; raise it: sysctl -w ${key}=${wanted}`);
    }
  }
}

async function main() {
  if (!existsSync(join(root, 'node_modules', '.package-lock.json'))) {
    log('installing npm dependencies (npm ci)');
    run('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root });
  }
  raiseInotifyLimits();
  // The Temporal server build serves only `katafleet cluster` (and its test), never the demo.
  const parts = forDemo ? ['temporal', 'host-packages', 'kubernetes'] : ['temporal', 'host-packages', 'kubernetes', 'temporal-server'];
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
