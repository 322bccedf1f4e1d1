'use strict';
// The Temporal server (go.temporal.io/server, its cmd/server main) and Temporal's SQL schema tool
// (cmd/tools/sql → temporal-sql-tool), built once from the Go module proxy and cached under
// ~/.cache/katafleet/temporal-server/<version>/: bin/ holds the two binaries, schema/postgresql/v12/ the
// schema files the tool applies (copied from the module; never committed). `katafleet cluster up` runs
// them against a private PostgreSQL (docs/cluster.md).
//
// The version is the one the pinned Temporal CLI embeds (CLI 1.9.1 → Server 1.32.x), at the newest patch whose
// go.mod this machine's Go accepts (v1.32.2 asks for go 1.26.10; v1.32.1 for 1.26.8). The Go build cache lives
// in ~/.cache/katafleet/go-build, so a rebuild on a warm machine links in seconds. Builds run `nice`d, with at
// most 2 parallel compile jobs (KATAFLEET_GO_JOBS), because CI machines are small. A stamp file records a
// complete build; delete the version's folder to rebuild.
const { existsSync, mkdirSync, writeFileSync, readFileSync, rmSync, renameSync, cpSync, chmodSync, readdirSync, statSync } = require('node:fs');
const { spawn, spawnSync } = require('node:child_process');
const { join } = require('node:path');
const { cacheDir, log, runStandalone } = require('./util.js');

const { server: version, module: modulePath } = require('./temporal-server.json');
const root = join(cacheDir, 'temporal-server', version);
const binDir = join(root, 'bin');
const schemaDir = join(root, 'schema', 'postgresql', 'v12');
const stamp = join(root, '.complete');
const goCache = join(cacheDir, 'go-build');
/** Package in the module → installed binary name. */
const builds = [['./cmd/server', 'server', 'temporal-server'], ['./cmd/tools/sql', 'sql', 'temporal-sql-tool']];
// Measured on the 2-core machine (docs/cluster.md): a cold build is ~9.6 CPU-minutes (~6 min on two idle cores,
// 33 min when five other builds share them); a warm one (Go build cache filled) mostly links: 80 s.
const expectedColdSeconds = 600;
const expectedWarmSeconds = 90;
// .ci/run starts this script in the background before npm ci and apt, so the build overlaps them; scripts/setup.js
// then runs it again, and this lock makes that second run wait for the first instead of building twice.
const lockFile = join(cacheDir, 'temporal-server', `.building-${version}`);

function goEnv() {
  const goflags = [process.env.GOFLAGS ?? '', '-trimpath', '-buildvcs=false'].join(' ').trim();
  return { ...process.env, GOFLAGS: goflags, GOTOOLCHAIN: process.env.GOTOOLCHAIN ?? 'local', CGO_ENABLED: '0', GOCACHE: goCache };
}

function goOutput(args, cwd) {
  const r = spawnSync('go', args, { cwd, env: goEnv(), encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`go ${args.join(' ')}: ${r.error.message} (is Go installed and on PATH?)`);
  if (r.status !== 0) throw new Error(`go ${args.join(' ')} (in ${cwd}) exited with ${r.status}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Whether the Go build cache already holds compiled packages (then the build is the warm one). */
function goCacheWarm() {
  try {
    return readdirSync(goCache).length > 16 && statSync(join(goCache, 'README')).isFile();
  } catch {
    return false;
  }
}

/** Runs a command asynchronously, printing a progress line (elapsed / expected) every minute. */
function runWithProgress(command, args, options, what, expectedSeconds) {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit'], ...options });
    const ticker = setInterval(() => {
      log(`${what}: ${Math.round((Date.now() - started) / 1000)} s elapsed (expected ~${expectedSeconds} s on 2 cores)`);
    }, 60_000);
    child.once('error', (err) => { clearInterval(ticker); reject(new Error(`${command} ${args.join(' ')}: ${err.message}`)); });
    child.once('exit', (code, signal) => {
      clearInterval(ticker);
      if (code === 0) resolve(Math.round((Date.now() - started) / 1000));
      else reject(new Error(`${command} ${args.join(' ')} exited with ${code ?? signal}`));
    });
  });
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Takes the build lock, first waiting for another live build (its pid in the lock) to finish. Returns false when that build installed it. */
async function takeLock(isInstalled) {
  mkdirSync(join(cacheDir, 'temporal-server'), { recursive: true });
  for (let reported = false; ;) {
    try {
      writeFileSync(lockFile, String(process.pid), { flag: 'wx' });
      return true;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
    }
    const holder = Number(readFileSync(lockFile, 'utf8')) || 0;
    if (!holder || !alive(holder)) {
      rmSync(lockFile, { force: true });
      continue;
    }
    if (!reported) log(`another build of the Temporal server (pid ${holder}) is running: waiting for it`);
    reported = true;
    await new Promise((resolve) => setTimeout(resolve, 2000));
    if (!existsSync(lockFile) && (await isInstalled())) return false;
  }
}

module.exports = {
  title: `Temporal server ${version} + temporal-sql-tool (built from the Go module proxy)`,
  version,
  binDir,
  schemaDir,
  goCache,
  async isInstalled() {
    return existsSync(stamp) && builds.every(([, , name]) => existsSync(join(binDir, name))) && existsSync(join(schemaDir, 'temporal', 'versioned'));
  },
  async install() {
    if (!(await takeLock(() => this.isInstalled()))) {
      log(`Temporal server ${version}: built by the other run`);
      return;
    }
    try {
      await build();
    } finally {
      rmSync(lockFile, { force: true });
    }
  },
};

/** Downloads the module, builds both binaries into binDir, copies the schema, writes the stamp. */
async function build() {
  const started = Date.now();
  mkdirSync(root, { recursive: true });
  mkdirSync(goCache, { recursive: true });
  log(`downloading ${modulePath}@${version} (module zip, once)`);
  const info = JSON.parse(goOutput(['mod', 'download', '-json', `${modulePath}@${version}`], root));
  if (!info.Dir || info.Error) throw new Error(`go mod download ${modulePath}@${version} failed: ${info.Error ?? JSON.stringify(info)}`);

  const warm = goCacheWarm();
  const expected = warm ? expectedWarmSeconds : expectedColdSeconds;
  const jobs = process.env.KATAFLEET_GO_JOBS ?? '2';
  const out = join(root, 'bin.tmp');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const what = `go build -p ${jobs} temporal-server + temporal-sql-tool (${warm ? 'warm' : 'cold'} Go build cache ${goCache})`;
  log(`${what}: expected ~${expected} s`);
  // Built in the module's own directory (read-only in the module cache; go build writes only to -o and GOCACHE),
  // so the module's go.mod and go.sum decide every dependency's version.
  const buildSeconds = await runWithProgress('nice', ['-n', '10', 'go', 'build', '-p', jobs, '-ldflags', '-s -w', '-o', out + '/', ...builds.map(([pkg]) => pkg)],
    { cwd: info.Dir, env: goEnv() }, what, expected);
  log(`built Temporal server ${version} in ${buildSeconds} s`);
  mkdirSync(binDir, { recursive: true });
  for (const [, built, name] of builds) {
    if (!existsSync(join(out, built))) throw new Error(`go build finished but ${join(out, built)} is missing`);
    renameSync(join(out, built), join(binDir, name));
  }
  rmSync(out, { recursive: true, force: true });

  // The PostgreSQL schema (temporal + visibility, with their versioned upgrades) as the module ships it.
  rmSync(schemaDir, { recursive: true, force: true });
  cpSync(join(info.Dir, 'schema', 'postgresql', 'v12'), schemaDir, { recursive: true });
  chmodSync(schemaDir, 0o755);
  for (const name of readdirSync(schemaDir, { recursive: true })) {
    const path = join(schemaDir, String(name));
    chmodSync(path, statSync(path).isDirectory() ? 0o755 : 0o644);
  }
  writeFileSync(stamp, JSON.stringify({ version, goCache: warm ? 'warm' : 'cold', buildSeconds, totalSeconds: Math.round((Date.now() - started) / 1000) }) + '\n');
  log(`Temporal server in ${binDir}, schema in ${schemaDir} (total ${((Date.now() - started) / 1000).toFixed(0)} s)`);
}

if (require.main === module) runStandalone(module.exports, binDir);
