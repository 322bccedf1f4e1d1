// Where the fleet finds the programs it runs, and the environment its node processes get.
import { homedir } from 'node:os';
import { join } from 'node:path';

const cacheDir = process.env.KATAFLEET_CACHE ?? join(homedir(), '.cache', 'katafleet');

/** crictl, built by scripts/setup/host-packages.js. */
export const crictlPath = join(cacheDir, 'bin', 'crictl');
/** containerd 2.x, built by scripts/setup/host-packages.js (optional: nodes use Debian's 1.6 without it). */
export const containerd2Path = join(cacheDir, 'bin', 'containerd-2');

/** The environment every node process starts with: nothing of the caller's (no pyenv, no proxies). */
export const nodeProcessEnv = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
  DEBIAN_FRONTEND: 'noninteractive',
};
