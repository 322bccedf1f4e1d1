'use strict';
// A real Kubernetes control plane for the simulated fleet, built once from the Go module proxy and
// cached under ~/.cache/katafleet/k8s/<version>/bin:
//   kube-apiserver, kube-scheduler, kube-controller-manager, kubectl  (k8s.io/kubernetes, with every
//     k8s.io/* staging module, listed as v0.0.0 in its go.mod, replaced by v0.<minor>.<patch>)
//   etcd   (a tiny main calling go.etcd.io/etcd/server/v3/etcdmain.Main, the etcd version that
//     Kubernetes itself requires, so it shares the module graph and the build cache)
//   kwok   (go install sigs.k8s.io/kwok/cmd/kwok@<pinned>): the simulated kubelets
// Nothing is downloaded at test time. A marker file records a complete build; delete the folder
// to rebuild. Builds run `nice`d, with at most 2 parallel compile jobs, because CI machines are small.
const { existsSync, mkdirSync, writeFileSync, readFileSync, rmSync, renameSync, copyFileSync } = require('node:fs');
const { spawnSync } = require('node:child_process');
const { join } = require('node:path');
const { cacheDir, run, runTimed, log, runStandalone } = require('./util.js');

// Shared with sim/control-plane.ts, which starts these binaries.
const { kubernetes: version, kwok: kwokVersion } = require('./kubernetes.json');
const root = join(cacheDir, 'k8s', version);
const binDir = join(root, 'bin');
const srcDir = join(root, 'src');
const marker = join(binDir, '.complete');
const kubeBinaries = ['kube-apiserver', 'kube-scheduler', 'kube-controller-manager', 'kubectl', 'etcd'];
const binaries = [...kubeBinaries, 'kwok'];
// kwok's CRDs that sim/ uses (per-pod Exec for `kubectl exec`), copied from the kwok module.
const kwokCrds = ['kwok.x-k8s.io_execs.yaml'];
const crdDir = join(binDir, 'kwok-crds');

function goEnv(extra = {}) {
  const goflags = [process.env.GOFLAGS ?? '', '-trimpath', '-buildvcs=false'].join(' ').trim();
  return { ...process.env, GOFLAGS: goflags, GOTOOLCHAIN: process.env.GOTOOLCHAIN ?? 'local', CGO_ENABLED: '0', ...extra };
}

function goOutput(args, cwd) {
  const r = spawnSync('go', args, { cwd, env: goEnv(), encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`go ${args.join(' ')}: ${r.error.message} (is Go installed and on PATH?)`);
  if (r.status !== 0) throw new Error(`go ${args.join(' ')} (in ${cwd}) exited with ${r.status}:\n${r.stderr}`);
  return r.stdout;
}

/** The k8s.io/* staging modules that k8s.io/kubernetes's go.mod requires as v0.0.0. */
function stagingModules(kubernetesGoMod) {
  const mods = new Set();
  for (const m of kubernetesGoMod.matchAll(/^\s*(k8s\.io\/[A-Za-z0-9._/-]+) v0\.0\.0(\s|$)/gm)) mods.add(m[1]);
  if (mods.size < 10) throw new Error(`found only ${mods.size} staging modules in k8s.io/kubernetes@${version}'s go.mod; the recipe expects ~30`);
  return [...mods].sort();
}

function ldflags() {
  const [major, minor] = version.slice(1).split('.');
  const x = [];
  for (const pkg of ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']) {
    x.push(`-X ${pkg}.gitVersion=${version}`, `-X ${pkg}.gitMajor=${major}`, `-X ${pkg}.gitMinor=${minor}`,
      `-X ${pkg}.gitTreeState=clean`, `-X ${pkg}.buildDate=1970-01-01T00:00:00Z`);
  }
  return ['-s', '-w', ...x].join(' ');
}

module.exports = {
  title: `Kubernetes ${version} control plane + etcd + kwok ${kwokVersion} (built from the Go module proxy)`,
  version,
  kwokVersion,
  binDir,
  binaries,
  crdDir,
  async isInstalled() {
    return existsSync(marker) && binaries.every((b) => existsSync(join(binDir, b))) && kwokCrds.every((f) => existsSync(join(crdDir, f)));
  },
  async install() {
    const started = Date.now();
    mkdirSync(binDir, { recursive: true });
    const report = {};
    if (!kubeBinaries.every((b) => existsSync(join(binDir, b)))) report.kubernetesBuildSeconds = await buildKubernetes();
    if (!existsSync(join(binDir, 'kwok'))) report.kwokBuildSeconds = await buildKwok();
    copyKwokCrds();
    writeFileSync(marker, JSON.stringify({ version, kwokVersion, ...report, totalSeconds: Math.round((Date.now() - started) / 1000) }) + '\n');
    log(`Kubernetes binaries in ${binDir} (total ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  },
};

/** Builds kube-apiserver, kube-scheduler, kube-controller-manager, kubectl and etcd into binDir; returns seconds taken. */
async function buildKubernetes() {
  const started = Date.now();
  const jobs = process.env.KATAFLEET_GO_JOBS ?? '2';
  mkdirSync(join(srcDir, 'cmd', 'etcd'), { recursive: true });

  log(`downloading k8s.io/kubernetes@${version} (module zip, once)`);
  const info = JSON.parse(goOutput(['mod', 'download', '-json', `k8s.io/kubernetes@${version}`], root));
  if (!info.GoMod) throw new Error(`go mod download gave no GoMod for k8s.io/kubernetes@${version}: ${JSON.stringify(info)}`);
  const kubernetesGoMod = readFileSync(info.GoMod, 'utf8');
  const staging = stagingModules(kubernetesGoMod);
  const stagingVersion = `v0.${version.slice(1).split('.').slice(1).join('.')}`;
  const etcdVersion = /go\.etcd\.io\/etcd\/client\/v3 (v3\.[0-9.]+)/.exec(kubernetesGoMod)?.[1];
  if (!etcdVersion) throw new Error(`k8s.io/kubernetes@${version}'s go.mod names no go.etcd.io/etcd/client/v3 version`);

  writeFileSync(join(srcDir, 'go.mod'), [
    'module katafleet.local/k8s-build',
    '',
    'go 1.24.0',
    '',
    'require (',
    `\tk8s.io/kubernetes ${version}`,
    `\tgo.etcd.io/etcd/server/v3 ${etcdVersion}`,
    ')',
    '',
    'replace (',
    ...staging.map((m) => `\t${m} => ${m} ${stagingVersion}`),
    ')',
    '',
  ].join('\n'));
  writeFileSync(join(srcDir, 'cmd', 'etcd', 'main.go'), [
    `// etcd, built from its module: the server version Kubernetes ${version} requires.`,
    'package main',
    '',
    'import (',
    '\t"os"',
    '',
    '\t"go.etcd.io/etcd/server/v3/etcdmain"',
    ')',
    '',
    'func main() { etcdmain.Main(os.Args) }',
    '',
  ].join('\n'));

  log(`resolving modules (${staging.length} staging modules → ${stagingVersion}, etcd ${etcdVersion})`);
  const cmds = ['kube-apiserver', 'kube-scheduler', 'kube-controller-manager', 'kubectl'].map((c) => `k8s.io/kubernetes/cmd/${c}`);
  // Pin every package to its version: a bare `go get PKG` would upgrade k8s.io/kubernetes to the newest release.
  run('go', ['get', ...cmds.map((p) => `${p}@${version}`), `go.etcd.io/etcd/server/v3/etcdmain@${etcdVersion}`], { cwd: srcDir, env: goEnv() });

  const out = join(root, 'bin.tmp');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const t = Date.now();
  await runTimed(`go build -p ${jobs}: kube-apiserver kube-scheduler kube-controller-manager kubectl etcd ${version}`, 'kubernetes',
    'nice', ['-n', '10', 'go', 'build', '-p', jobs, '-ldflags', ldflags(), '-o', out + '/', ...cmds, './cmd/etcd'], { cwd: srcDir, env: goEnv() });
  log(`built Kubernetes ${version} + etcd ${etcdVersion} in ${((Date.now() - t) / 1000).toFixed(0)} s`);
  for (const b of kubeBinaries) {
    if (!existsSync(join(out, b))) throw new Error(`go build finished but ${join(out, b)} is missing`);
    renameSync(join(out, b), join(binDir, b));
  }
  rmSync(out, { recursive: true, force: true });
  return Math.round((Date.now() - started) / 1000);
}

/** go install sigs.k8s.io/kwok/cmd/kwok@kwokVersion into binDir; returns seconds taken. */
async function buildKwok() {
  const started = Date.now();
  const jobs = process.env.KATAFLEET_GO_JOBS ?? '2';
  await runTimed(`go install kwok ${kwokVersion}`, 'kwok', 'nice', ['-n', '10', 'go', 'install', '-p', jobs, '-ldflags', '-s -w', `sigs.k8s.io/kwok/cmd/kwok@${kwokVersion}`],
    { cwd: root, env: goEnv({ GOBIN: binDir }) });
  return Math.round((Date.now() - started) / 1000);
}

function copyKwokCrds() {
  const info = JSON.parse(goOutput(['mod', 'download', '-json', `sigs.k8s.io/kwok@${kwokVersion}`], root));
  mkdirSync(crdDir, { recursive: true });
  for (const f of kwokCrds) copyFileSync(join(info.Dir, 'kustomize', 'crd', 'bases', f), join(crdDir, f));
}

if (require.main === module) runStandalone(module.exports, binDir);
