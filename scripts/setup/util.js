'use strict';
const { spawn, spawnSync } = require('node:child_process');
const { homedir } = require('node:os');
const { join } = require('node:path');

/** Where heavy, reusable artefacts live: survives clones, shared by CI runs on the same machine. */
const cacheDir = process.env.KATAFLEET_CACHE ?? join(homedir(), '.cache', 'katafleet');

/**
 * Build times measured on a 2-core machine (seconds), shown as the expected time of each build on a first run.
 * kubernetes and kwok come from the marker of a real build (~/.cache/katafleet/k8s/<version>/bin/.complete).
 */
const expectedSeconds = {
  kubernetes: 1015,
  kwok: 417,
  crictl: 120,
  containerd2: 600,
  'temporal-cli': 20,
  apt: 60,
  npm: 60,
};

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

/** `95` → `1m35s`. */
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** The progress line of one build: what, time elapsed, time expected. */
function progressLine(label, elapsedSeconds, expected) {
  return `[setup] ${label}: ${duration(elapsedSeconds)} elapsed, ~${duration(expected)} expected`;
}

/**
 * Runs one long build with one progress line: on a terminal the line is rewritten in place every second (elapsed,
 * expected); otherwise it is printed when the build starts and when it ends. The command's own output is kept off the
 * terminal unless it fails (then its last 4 KiB are in the error).
 */
function runTimed(label, expectedKey, command, args, options = {}) {
  const expected = expectedSeconds[expectedKey] ?? 60;
  const started = Date.now();
  const tty = process.stderr.isTTY;
  const elapsed = () => (Date.now() - started) / 1000;
  if (!tty) process.stderr.write(`${progressLine(label, 0, expected)}\n`);
  const ticker = tty ? setInterval(() => process.stderr.write(`\r\x1b[K${progressLine(label, elapsed(), expected)}`), 1000) : undefined;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (chunk) => { output = (output + chunk.toString()).slice(-4096); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const finish = (error) => {
      if (ticker) clearInterval(ticker);
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}[setup] ${label}: ${error ? 'FAILED after' : 'done in'} ${duration(elapsed())} (~${duration(expected)} expected)\n`);
      if (error) reject(error); else resolve();
    };
    child.on('error', (err) => finish(new Error(`${command} ${args.join(' ')}: ${err.message}`)));
    child.on('exit', (code) => finish(code === 0 ? undefined : new Error(`${command} ${args.join(' ')} exited with ${code}:\n${output}`)));
  });
}

/** Runs one setup part on its own (`node scripts/setup/<part>.js`): install it unless it is already there. */
function runStandalone(part, where) {
  part.isInstalled().then(async (ok) => {
    if (ok) { log(`${part.title}: already installed in ${where}`); return; }
    const started = Date.now();
    await part.install();
    log(`${part.title}: installed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }).catch((err) => { console.error(`setup failed: ${err.message}`); process.exit(1); });
}

module.exports = { cacheDir, runStandalone, expectedSeconds, log, run, runTimed, progressLine, duration };
