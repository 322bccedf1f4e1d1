/**
 * The playbook and inventory formats: one zod schema per table and per step kind, strict (an
 * unknown key is an error), with defaults. Each schema and its type share a name. Field docs here
 * are the source of `playbooks/README.md`.
 *
 * Shape only: cross-references (unique ids, handlers, runtime classes, duplicate nodes) are checked
 * by `playbooks/cross-checks.ts` once the shape is right.
 */
import { z } from 'zod';
import { durationFormatHint, isDuration } from './duration';
import {
  absolutePath,
  allowlisted,
  containerdConfigPath,
  containerdDropInPath,
  cpuFlag,
  dnsLabel,
  dnsSubdomain,
  failureType,
  imageReference,
  kataVersion,
  kernelModule,
  labelKey,
  labelValue,
  localPath,
  modulesLoadFile,
  nodeAddress,
  packageName,
  packageVersion,
  quantity,
  releaseUrlTemplate,
  repoUrl,
  aptSuite,
  keyFingerprint,
  serviceName,
  userName,
} from './allowlists';
import { profileNamePattern, type Credentials } from './credentials';
import { RuntimeSpec } from './runtime-spec';

/** A duration string such as `"30s"`, `"5m"`, `"1m30s"`; workflows read it with `parseDuration`. */
export const Duration = z.string().refine(isDuration, { message: `must be ${durationFormatHint}` });
export type Duration = z.infer<typeof Duration>;

const count = (min: number) => z.int().min(min);

/** Kubernetes labels: `{ "katacontainers.io/kata-runtime" = "true" }`. */
export const Labels = z.record(allowlisted(labelKey), allowlisted(labelValue));
export type Labels = z.infer<typeof Labels>;

// ───────────────────────────── playbook ─────────────────────────────

/** `[playbook]`: what this playbook is. */
export const PlaybookInfo = z.strictObject({
  /** Short name, an RFC 1123 label, e.g. `kata`. Shown in workflow ids and the UI. */
  name: allowlisted(dnsLabel),
  /** One or two sentences for people. @default "" */
  description: z.string().max(2000).default(''),
});
export type PlaybookInfo = z.infer<typeof PlaybookInfo>;

/** `[rollout]`: how nodes are grouped into waves and when the rollout stops. Every key has a default. */
export const RolloutSettings = z.strictObject({
  /** Nodes in the first wave; the rollout waits for it to succeed before going on. 0 = no canary. @default 1 */
  canary: count(0).default(1),
  /** Nodes per later wave: a count (`5`) or a percentage of all nodes (`"25%"`, rounded up). @default "25%" */
  wave_size: z
    .union([count(1), z.string().regex(/^(100|[1-9][0-9]?)%$/, 'must be a percentage from "1%" to "100%"')])
    .default('25%'),
  /** Nodes that did not succeed tolerated over the whole rollout; one more stops it (a canary that does not succeed always does). @default 0 */
  failure_budget: count(0).default(0),
  /** Wait between two waves, e.g. `"5m"`. @default "0s" */
  pause_between_waves: Duration.default('0s'),
  /** After the canary wave, wait for an explicit approval (resume signal) before the next wave. @default false */
  approval_after_canary: z.boolean().default(false),
  /** Cordon and drain each node around containerd restarts (a `service-restart` step may override). @default false */
  drain: z.boolean().default(false),
  /** Nodes of one wave worked on at the same time; absent = the whole wave at once. */
  max_parallel: count(1).optional(),
  /** Nodes an abort with rollback undoes at the same time (newest wave first); absent = the wave size. */
  max_parallel_rollback: count(1).optional(),
  /** How long a node's rollback keeps retrying (with backoff) before the node is quarantined as needs-attention. @default "1h" */
  rollback_for: Duration.default('1h'),
});
export type RolloutSettings = z.infer<typeof RolloutSettings>;

/**
 * Keys of `[rollout]` given at start time (API `options`, CLI flags) that override the playbook's,
 * e.g. a larger failure budget for one run. Same checks as in the file, no defaults.
 */
export const RolloutOverrides = z.strictObject(
  Object.fromEntries(Object.entries(RolloutSettings.shape).map(([key, schema]) => [key, (schema instanceof z.ZodDefault ? schema.unwrap() : schema).optional()])) as unknown as {
    [K in keyof typeof RolloutSettings.shape]: z.ZodOptional<z.ZodType<RolloutSettings[K]>>;
  },
);
export type RolloutOverrides = z.infer<typeof RolloutOverrides>;

/** `retry` table of a step: how the activity is retried after a transient failure. */
export const RetrySettings = z.strictObject({
  /** Attempts in total, the first included. @default 3 */
  max_attempts: count(1).default(3),
  /** Wait before the second attempt. @default "5s" */
  initial_interval: Duration.default('5s'),
  /** Factor by which each wait grows. @default 2 */
  backoff: z.number().min(1).max(10).default(2),
  /** Failure types (PascalCase) never retried, in addition to the ones each step kind declares. @default [] */
  non_retryable: z.array(allowlisted(failureType)).default([]),
});
export type RetrySettings = z.infer<typeof RetrySettings>;

/** Keys every step has. `timeout` defaults differ per kind. */
function stepBase<const Kind extends string>(kind: Kind, defaultTimeout: string) {
  return {
    /** Unique within the playbook, an RFC 1123 label, e.g. `install-kata`. Names the step in the UI and in undo records. */
    id: allowlisted(dnsLabel),
    kind: z.literal(kind),
    /** Longest time one attempt of this step may take. */
    timeout: Duration.default(defaultTimeout),
    /** Retry policy; absent = the defaults of {@link RetrySettings}. */
    retry: RetrySettings.optional(),
  };
}

/**
 * `prereq-check`: refuses the node unless it can run VMs. Loads missing modules and, with
 * `persist_modules`, lists them in `/etc/modules-load.d` so they load after a reboot.
 */
export const PrereqCheckStep = z.strictObject({
  ...stepBase('prereq-check', '2m'),
  /** At least one of these CPU flags must be present (`vmx` = Intel VT-x, `svm` = AMD-V). `[]` skips the check. @default ["vmx", "svm"] */
  cpu_flags: z.array(allowlisted(cpuFlag)).default(['vmx', 'svm']),
  /** `/dev/kvm` must exist. @default true */
  require_kvm: z.boolean().default(true),
  /** Kernel modules that must all be loaded, e.g. `["kvm", "vhost", "vhost_net", "vhost_vsock"]`. @default [] */
  modules: z.array(allowlisted(kernelModule)).default([]),
  /** Groups of modules of which at least one per group must load, e.g. `[["kvm_intel", "kvm_amd"]]`. @default [] */
  modules_any_of: z.array(z.array(allowlisted(kernelModule)).min(1)).default([]),
  /** Write the loaded modules to `modules_load_file` so they survive a reboot. @default true */
  persist_modules: z.boolean().default(true),
  /** File for `persist_modules`: under `/etc/modules-load.d/`, ending `.conf`. @default "/etc/modules-load.d/katafleet.conf" */
  modules_load_file: allowlisted(modulesLoadFile).default('/etc/modules-load.d/katafleet.conf'),
  /** Run `kata-runtime check` (needs Kata installed, so use it in a check after `package-install`). @default false */
  run_kata_check: z.boolean().default(false),
});
export type PrereqCheckStep = z.infer<typeof PrereqCheckStep>;

/** One package, pinned. */
export const PackageSpec = z.strictObject({
  /** Debian/RPM package name, e.g. `kata-containers`. */
  name: allowlisted(packageName),
  /** Exact version to install, e.g. `"3.2.0"`; required for `action = "install"`, ignored for `"remove"`. */
  version: allowlisted(packageVersion).optional(),
});
export type PackageSpec = z.infer<typeof PackageSpec>;

/**
 * `package-install`: installs pinned packages (nothing if already at that version), or removes them
 * with `action = "remove"`.
 */
export const PackageInstallStep = z.strictObject({
  ...stepBase('package-install', '10m'),
  /** `"install"` the pinned versions or `"remove"` the packages. @default "install" */
  action: z.enum(['install', 'remove']).default('install'),
  /** The packages, `[{ name = "kata-containers", version = "3.2.0" }]`. */
  packages: z.array(PackageSpec).min(1),
  /** Package manager; `"auto"` picks apt, dnf or zypper from what the node has. @default "auto" */
  manager: z.enum(['auto', 'apt', 'dnf', 'zypper']).default('auto'),
  /** On rollback, remove the packages this step installed (never ones that were there before). @default true */
  remove_on_rollback: z.boolean().default(true),
});
export type PackageInstallStep = z.infer<typeof PackageInstallStep>;

/**
 * `package-repo`: adds a package repository and its signing key (fingerprint pinned: a key with another
 * fingerprint is refused before anything is written), then installs pinned packages from it. apt writes
 * `/etc/apt/keyrings/katafleet-<name>.asc` and `/etc/apt/sources.list.d/katafleet-<name>.list` with
 * `signed-by=` that keyring (so the key vouches for this repository only). dnf and zypper write
 * `/etc/pki/rpm-gpg/RPM-GPG-KEY-katafleet-<name>` (also imported with `rpm --import`) and
 * `/etc/yum.repos.d/katafleet-<name>.repo` or `/etc/zypp/repos.d/katafleet-<name>.repo` with `gpgcheck=1`,
 * `repo_gpgcheck=1`. The undo removes the packages, the source and the key, only what the step created.
 */
export const PackageRepoStep = z.strictObject({
  ...stepBase('package-repo', '10m'),
  /** `apt` (Debian, Ubuntu), `dnf` (Fedora, RHEL and its rebuilds) or `zypper` (openSUSE, SLES). @default "apt" */
  manager: z.enum(['apt', 'dnf', 'zypper']).default('apt'),
  /** Names the files (`katafleet-<name>.list`/`.asc`, `katafleet-<name>.repo`, `RPM-GPG-KEY-katafleet-<name>`) and the dnf/zypper repository id `katafleet-<name>`. */
  name: allowlisted(dnsLabel),
  /** The repository's base URL, e.g. an OBS project's `…/Debian_12/` (apt) or `…/Fedora_40/` (dnf: the folder holding `repodata/`). */
  url: allowlisted(repoUrl),
  /** apt suite: `"/"` for a flat repository (OBS), or a codename with `components`. apt only. @default "/" */
  suite: allowlisted(aptSuite).default('/'),
  /** apt components after the suite, e.g. `["main"]`; none for a flat repository. apt only. @default [] */
  components: z.array(allowlisted(dnsLabel)).default([]),
  /** Where the repository's public key is (ASCII-armored), e.g. OBS's `<url>/Release.key` (apt) or `<url>/repodata/repomd.xml.key` (rpm-md). The worker downloads it. */
  key_url: allowlisted(repoUrl),
  /** The key's full fingerprint (40 hex): the downloaded key must be exactly this one key. */
  key_fingerprint: allowlisted(keyFingerprint),
  /** The packages to install from it, pinned: `[{ name = "kata-containers", version = "3.2.0" }]`. */
  packages: z.array(PackageSpec).min(1).superRefine((packages, ctx) => {
    packages.forEach((spec, i) => {
      if (spec.version === undefined) ctx.addIssue({ code: 'custom', path: [i, 'version'], message: 'required: pin the exact version, e.g. { name = "kata-containers", version = "3.2.0" }' });
    });
  }),
  /** On rollback, remove the packages this step installed, then the source and the key it added. @default true */
  remove_on_rollback: z.boolean().default(true),
}).superRefine((step, ctx) => {
  if (step.manager === 'apt') return;
  if (step.suite !== '/') ctx.addIssue({ code: 'custom', path: ['suite'], message: `apt only: a ${step.manager} repository is its url (the folder holding repodata/); remove suite` });
  if (step.components.length > 0) ctx.addIssue({ code: 'custom', path: ['components'], message: `apt only: a ${step.manager} repository has no components; remove them` });
});
export type PackageRepoStep = z.infer<typeof PackageRepoStep>;

/**
 * `containerd-patch`: adds runtime handlers to containerd's config (minimal edit, backup first,
 * validated on the node before the swap), or removes them with `action = "remove"`.
 */
export const ContainerdPatchStep = z.strictObject({
  ...stepBase('containerd-patch', '2m'),
  /**
   * `"add"` the runtimes, or `"remove"` them: only a runtime table whose `runtime_type` equals the
   * one given here is removed; a different one is an error. @default "add"
   */
  action: z.enum(['add', 'remove']).default('add'),
  /** containerd's main config on the node: under `/etc/containerd/`, ending `.toml`. @default "/etc/containerd/config.toml" */
  config_path: allowlisted(containerdConfigPath).default('/etc/containerd/config.toml'),
  /**
   * `"in-place"` edits `config_path`; `"drop-in"` writes the runtimes to `drop_in_path` and makes
   * sure `config_path` imports it (containerd ≥ 2.0). @default "in-place"
   */
  mode: z.enum(['in-place', 'drop-in']).default('in-place'),
  /** File written in `"drop-in"` mode: under `/etc/containerd/`, ending `.toml`. @default "/etc/containerd/conf.d/katafleet.toml" */
  drop_in_path: allowlisted(containerdDropInPath).default('/etc/containerd/conf.d/katafleet.toml'),
  /** Overwrite an existing runtime of the same name that differs; otherwise that is an error. @default false */
  replace: z.boolean().default(false),
  /** The runtimes, `[[steps.runtimes]]` tables (see {@link RuntimeSpec}); at least one. */
  runtimes: z.array(RuntimeSpec).min(1),
});
export type ContainerdPatchStep = z.infer<typeof ContainerdPatchStep>;

/**
 * `service-restart`: restarts a service (containerd), waits until it is active and the CRI lists
 * the handlers. Cordons/drains around it when asked.
 */
export const ServiceRestartStep = z.strictObject({
  ...stepBase('service-restart', '5m'),
  /** systemd unit to restart: `containerd`, `kubelet` or `crio`. @default "containerd" */
  service: allowlisted(serviceName).default('containerd'),
  /** Runtime handlers the CRI must report after the restart (`crictl info`). @default [] */
  wait_for_handlers: z.array(allowlisted(dnsLabel)).default([]),
  /** Cordon the node before and uncordon after; absent = follow `rollout.drain`. */
  cordon: z.boolean().optional(),
  /** Drain the node before (implies cordon) and uncordon after; absent = follow `rollout.drain`. */
  drain: z.boolean().optional(),
});
export type ServiceRestartStep = z.infer<typeof ServiceRestartStep>;

/**
 * `readiness-gate`: waits (up to `timeout`) until the node is Ready and, with containerd ≥ 2.0 on Kubernetes ≥ 1.31,
 * its `status.runtimeHandlers` lists the handlers.
 */
export const ReadinessGateStep = z.strictObject({
  ...stepBase('readiness-gate', '5m'),
  /** Handlers the kubelet must report in `status.runtimeHandlers` (skipped where the field is not reported: containerd 1.x, Kubernetes < 1.31). @default [] */
  require_runtime_handlers: z.array(allowlisted(dnsLabel)).default([]),
});
export type ReadinessGateStep = z.infer<typeof ReadinessGateStep>;

/** `node-label`: sets (or with `action = "remove"`, removes) labels on the Kubernetes node. */
export const NodeLabelStep = z.strictObject({
  ...stepBase('node-label', '1m'),
  /** `"add"` (or overwrite) the labels, or `"remove"` the keys. @default "add" */
  action: z.enum(['add', 'remove']).default('add'),
  /** `{ "katacontainers.io/kata-runtime" = "true" }`; keys need quotes in TOML when they hold "." or "/". */
  labels: Labels.refine((labels) => Object.keys(labels).length > 0, { message: 'must name at least one label' }),
});
export type NodeLabelStep = z.infer<typeof NodeLabelStep>;

/** Resources a pod of this RuntimeClass costs beyond its containers (the VM): `overhead.podFixed`. */
export const Overhead = z.strictObject({
  /** CPU, e.g. `"250m"`. */
  cpu: allowlisted(quantity).optional(),
  /** Memory, e.g. `"160Mi"`. */
  memory: allowlisted(quantity).optional(),
});
export type Overhead = z.infer<typeof Overhead>;

const runtimeClassApiVersion = 'node.k8s.io/v1';

/**
 * `runtime-class`: applies (or with `action = "delete"`, deletes) a cluster-scoped RuntimeClass
 * through kubectl on the control-plane host. Idempotent, so running it once per node is harmless.
 */
export const RuntimeClassStep = z.strictObject({
  ...stepBase('runtime-class', '1m'),
  /** `"apply"` the RuntimeClass or `"delete"` it (only if its handler is `handler`). @default "apply" */
  action: z.enum(['apply', 'delete']).default('apply'),
  /** RuntimeClass name (pods say `runtimeClassName: NAME`), an RFC 1123 subdomain. */
  name: allowlisted(dnsSubdomain),
  /** containerd runtime handler; a `containerd-patch` step of this playbook must add it. */
  handler: allowlisted(dnsLabel),
  /** `scheduling.nodeSelector`: pods of this class only go to nodes with these labels. @default {} */
  node_selector: Labels.default({}),
  /** `overhead.podFixed`. */
  overhead: Overhead.optional(),
  /**
   * Only `node.k8s.io/v1`: `node.k8s.io/v1beta1` was removed in Kubernetes 1.25 and `v1alpha1`
   * long before. @default "node.k8s.io/v1"
   */
  api_version: z
    .string()
    .refine((value) => value === runtimeClassApiVersion, {
      message: `must be "${runtimeClassApiVersion}": node.k8s.io/v1beta1 was removed in Kubernetes 1.25 (and v1alpha1 before it); RuntimeClass has been GA as node.k8s.io/v1 since 1.20 — change it or leave it out`,
    })
    .default(runtimeClassApiVersion),
});
export type RuntimeClassStep = z.infer<typeof RuntimeClassStep>;

/**
 * `verification-pod`: starts a pod pinned to the node with `runtimeClassName`, waits until it runs
 * (up to `timeout`), compares `uname -r` inside with the host's, deletes it. The pod passes PodSecurity
 * `restricted` (non-root, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault) and ends
 * by itself after `active_deadline` even if katafleet never deletes it.
 */
export const VerificationPodStep = z.strictObject({
  ...stepBase('verification-pod', '5m'),
  /** RuntimeClass the pod uses; a `runtime-class` step of this playbook must create it. */
  runtime_class: allowlisted(dnsSubdomain),
  /** Image with `uname` and `sleep`, pinned; use a mirror or a pre-pulled image where the cluster cannot reach Docker Hub. @default "docker.io/library/busybox:1.36.1" */
  image: allowlisted(imageReference).default('docker.io/library/busybox:1.36.1'),
  /** The container's `imagePullPolicy`: `"Never"` for an image pre-loaded on every node. @default "IfNotPresent" */
  image_pull_policy: z.enum(['IfNotPresent', 'Always', 'Never']).default('IfNotPresent'),
  /**
   * What an image that cannot be pulled means: `"warn"` lets the step pass unverified, saying so (a registry problem is
   * no reason to roll back a working Kata install); `"fail"` fails the node with `VerificationImagePullFailed`. @default "warn"
   */
  on_image_pull_failure: z.enum(['warn', 'fail']).default('warn'),
  /** The pod's `activeDeadlineSeconds`: a pod left behind (worker crash) ends by itself after this. @default "10m" */
  active_deadline: Duration.default('10m'),
  /** Namespace of the pod; `deploy/rbac.yaml` creates `katafleet-verify` (PodSecurity restricted) and grants pods there. @default "katafleet-verify" */
  namespace: allowlisted(dnsLabel).default('katafleet-verify'),
  /** Fail unless the kernel inside differs from the host's (proof of VM isolation); false for gVisor-like sandboxes is still right: runsc reports its own kernel. @default true */
  expect_kernel_differs: z.boolean().default(true),
});
export type VerificationPodStep = z.infer<typeof VerificationPodStep>;

/**
 * `rollback`: undoes an earlier katafleet rollout on the node from what it recorded: restores the
 * containerd config backup byte for byte, restarts containerd, removes the labels it set.
 */
export const RollbackStep = z.strictObject({
  ...stepBase('rollback', '10m'),
  /** The config whose recorded backup is restored: under `/etc/containerd/`, ending `.toml`. @default "/etc/containerd/config.toml" */
  config_path: allowlisted(containerdConfigPath).default('/etc/containerd/config.toml'),
  /** Also remove the packages that rollout installed. @default false */
  remove_packages: z.boolean().default(false),
});
export type RollbackStep = z.infer<typeof RollbackStep>;

/** CPU architectures Kata publishes static tarballs for (3.3.0+; KATA.md §1.1), by their asset-name spelling. */
export const KATA_ARCHES = ['amd64', 'arm64', 's390x', 'ppc64le'] as const;
export type KataArch = (typeof KATA_ARCHES)[number];

/** Upstream's release asset URL (GitHub); `{ext}` is `tar.xz` below 3.21 and `tar.zst` from 3.21. */
export const KATA_RELEASE_URL = 'https://github.com/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}';

/**
 * `release-tarball`: installs a Kata Containers static release (`kata-static-<version>-<arch>.tar.{xz,zst}`)
 * side by side under `/opt/kata-releases/<version>/` and switches `/opt/kata` to it with one atomic rename;
 * adds kata-manager-style links in `/usr/local/bin/`. The undo switches back and removes what it created.
 */
const Sha256Table = z
  .partialRecord(z.enum(KATA_ARCHES), z.string().regex(/^[0-9a-f]{64}$/, 'must be a sha256 in hex (64 characters 0-9a-f)'))
  .refine((table) => Object.keys(table).length > 0, { message: 'must pin the sha256 of at least one architecture, e.g. { amd64 = "<64 hex>" }' });

/** kata-go-static's URL (Kata 4.1+: the Go shim and kata-runtime apart from kata-static; KATA.md §1.1). */
export const KATA_GO_RELEASE_URL = 'https://github.com/kata-containers/kata-containers/releases/download/{version}/kata-go-static-{version}-{arch}.{ext}';

export const ReleaseTarballStep = z.strictObject({
  ...stepBase('release-tarball', '10m'),
  /**
   * `"install"`, or `"remove"`: take away every Kata release katafleet installed (`/opt/kata`, the versioned trees,
   * its links). The trees are moved aside (`/opt/kata-releases.katafleet-removed-<run>`), so the undo puts them back
   * without a download; the next removal deletes what an earlier one set aside. @default "install"
   */
  action: z.enum(['install', 'remove']).default('install'),
  /** Kata release, e.g. `"3.32.0"`: required to install. */
  version: allowlisted(kataVersion).optional(),
  /** Architecture in the asset name; `"auto"` maps the node's `uname -m` (x86_64 → amd64, aarch64 → arm64, …). @default "auto" */
  arch: z.enum(['auto', ...KATA_ARCHES]).default('auto'),
  /**
   * Where the tarball is, with `{version}`, `{arch}`, `{ext}` replaced; https, or http only to loopback.
   * @default "https://github.com/kata-containers/kata-containers/releases/download/{version}/kata-static-{version}-{arch}.{ext}"
   */
  url: allowlisted(releaseUrlTemplate).default(KATA_RELEASE_URL),
  /**
   * The tarball's sha256 per architecture, `{ amd64 = "<64 hex>" }`: required (unless `tarballs` lists the
   * release's tarballs), because upstream publishes no checksums; a node whose architecture has no entry is
   * refused before anything is downloaded.
   */
  sha256: Sha256Table.optional(),
  /**
   * Instead of `url` + `sha256`: every tarball of the release, each `{ url, sha256 }`, extracted in this order
   * into the same versioned tree. Kata 4.1 ships two: `kata-static` (runtime-rs and the shared kernel, image
   * and hypervisors) and `kata-go-static` (the Go shim and kata-runtime); KATA.md §1.1.
   */
  tarballs: z.array(z.strictObject({ url: allowlisted(releaseUrlTemplate), sha256: Sha256Table })).min(1).max(4).optional(),
  /**
   * `"worker"`: the worker downloads the tarball once (cached by sha256), checks it and sends it over SSH (for
   * offline nodes); `"node"`: the node downloads it with curl or wget and checks it. @default "worker"
   */
  fetch: z.enum(['worker', 'node']).default('worker'),
  /** Links `/usr/local/bin/kata-runtime` and `/usr/local/bin/containerd-shim-kata-v2` → `/opt/kata/bin/…`, as kata-manager links them. @default true */
  links: z.boolean().default(true),
}).superRefine((step, ctx) => {
  if (step.action === 'remove') return;
  if (step.version === undefined) ctx.addIssue({ code: 'custom', path: ['version'], message: 'required when action = "install": the Kata release, e.g. "3.32.0"' });
  if (step.tarballs === undefined && step.sha256 === undefined) {
    ctx.addIssue({ code: 'custom', path: ['sha256'], message: 'required: the sha256 of the tarball per architecture, e.g. { amd64 = "<64 hex>" } (upstream publishes none), or a tarballs list' });
  }
  if (step.tarballs !== undefined && step.sha256 !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['tarballs'], message: 'give either url + sha256 (one tarball) or tarballs (each with its url and sha256), not both' });
  }
});
export type ReleaseTarballStep = z.infer<typeof ReleaseTarballStep>;

/** One step of a playbook, by `kind`. */
export const Step = z.discriminatedUnion('kind', [
  PrereqCheckStep,
  PackageInstallStep,
  PackageRepoStep,
  ReleaseTarballStep,
  ContainerdPatchStep,
  ServiceRestartStep,
  ReadinessGateStep,
  NodeLabelStep,
  RuntimeClassStep,
  VerificationPodStep,
  RollbackStep,
]);
export type Step = z.infer<typeof Step>;

/** The step kinds, in the order a typical playbook uses them. */
export const stepKinds = [
  'prereq-check',
  'package-install',
  'package-repo',
  'release-tarball',
  'containerd-patch',
  'service-restart',
  'readiness-gate',
  'node-label',
  'runtime-class',
  'verification-pod',
  'rollback',
] as const satisfies readonly Step['kind'][];
export type StepKind = (typeof stepKinds)[number];

/** Where a loaded file came from, so later records can say which bytes they ran. */
export interface SourceInfo {
  /** The file as the user named it. */
  file: string;
  /** SHA-256 of the file's text (hex). */
  sha256: string;
}

/** A playbook file. */
export const Playbook = z.strictObject({
  playbook: PlaybookInfo,
  rollout: RolloutSettings.prefault({}),
  /** Run in this order on every node; at least one. */
  steps: z.array(Step).min(1),
});
/** A validated playbook plus its {@link SourceInfo}. */
export type Playbook = z.infer<typeof Playbook> & { source: SourceInfo };

// ───────────────────────────── inventory ─────────────────────────────

const profileName = z.string().regex(profileNamePattern, 'a profile name holds lowercase letters, digits, ".", "_" and "-" (at most 64)');

/**
 * `[ssh]` of an inventory: how to reach every node unless the node overrides it. The login (`user`,
 * `identity_file`, `known_hosts`, `sudo`, `trust_on_first_use`) comes either from these keys (inventories the
 * operator passes to the CLI) or from a server-side credential profile named by `profile` (the only way for an
 * inventory sent through the HTTP API).
 */
export const SshSettings = z.strictObject({
  /** Name of a credential profile (playbooks/credentials.ts) that sets the login; see the credentials file. */
  profile: profileName.optional(),
  /** Login user. @default "root" */
  user: allowlisted(userName).default('root'),
  /** @default 22 */
  port: z.int().min(1).max(65535).default(22),
  /** Private key; relative paths are relative to the inventory file, `~/` is the home directory. Needed (here or in a profile): katafleet does not use the SSH agent. */
  identity_file: allowlisted(localPath).optional(),
  /** known_hosts file that host keys are checked against. @default "~/.ssh/known_hosts" */
  known_hosts: allowlisted(localPath).default('~/.ssh/known_hosts'),
  /** Prefix commands with `sudo -n` (needed unless `user` is root). @default false */
  sudo: z.boolean().default(false),
  /** Accept and record an unknown host key on first contact. A *changed* key is always refused. @default false */
  trust_on_first_use: z.boolean().default(false),
  /** Concurrent SSH channels per host (OpenSSH allows 10 by default, hardened hosts 2–3). @default 4 */
  max_sessions: z.int().min(1).max(64).default(4),
  /** How long to wait for the TCP connection and SSH handshake. @default "20s" */
  connect_timeout: Duration.default('20s'),
});
export type SshSettings = z.infer<typeof SshSettings>;

/** `ssh` table of one node: any key of `[ssh]`, overriding it for this node. */
export const SshOverride = z.strictObject({
  profile: profileName.optional(),
  user: allowlisted(userName).optional(),
  port: z.int().min(1).max(65535).optional(),
  identity_file: allowlisted(localPath).optional(),
  known_hosts: allowlisted(localPath).optional(),
  sudo: z.boolean().optional(),
  trust_on_first_use: z.boolean().optional(),
  max_sessions: z.int().min(1).max(64).optional(),
  connect_timeout: Duration.optional(),
});
export type SshOverride = z.infer<typeof SshOverride>;

/** `[[nodes]]`: one host. */
export const InventoryNode = z.strictObject({
  /** The Kubernetes node name (RFC 1123 subdomain), as `kubectl get nodes` shows it. */
  name: allowlisted(dnsSubdomain),
  /** Where SSH connects: IPv4, IPv6 or host name. */
  address: allowlisted(nodeAddress),
  /** `"worker"` nodes are rolled out to; a `"control-plane"` entry is a host for kubectl only. @default "worker" */
  role: z.enum(['worker', 'control-plane']).default('worker'),
  /** Overrides of `[ssh]` for this node. */
  ssh: SshOverride.optional(),
  /** Labels to select nodes by in this inventory (not applied to Kubernetes). @default {} */
  labels: Labels.default({}),
});
export type InventoryNode = z.infer<typeof InventoryNode>;

/**
 * `[kubernetes]`: how katafleet reaches the Kubernetes API. Either kubectl on the worker with a kubeconfig on the
 * worker (`kubeconfig`, or `profile` naming a credential profile that holds it: the only way an inventory sent
 * through the API may say it, so an API caller never chooses a file on the worker), or kubectl over SSH on a
 * host of the inventory (`control_plane`, with `kubeconfig` on that host).
 */
export const KubernetesSettings = z
  .strictObject({
    /** Name of a `[[nodes]]` entry (usually `role = "control-plane"`) on which kubectl runs over SSH; absent = kubectl runs on the worker. */
    control_plane: allowlisted(dnsSubdomain).optional(),
    /** With `control_plane`: the kubeconfig on that host (absent = kubectl's default). Without: the kubeconfig on the worker. */
    kubeconfig: allowlisted(absolutePath).optional(),
    /** A credential profile (of the server's credentials file) whose `kubeconfig` the worker uses; kubectl runs on the worker. */
    profile: profileName.optional(),
    /** kubectl command: `kubectl` (found on PATH) or an absolute path; on the worker, `KATAFLEET_KUBECTL` overrides it. @default "kubectl" */
    kubectl: z.union([z.literal('kubectl'), allowlisted(absolutePath)]).default('kubectl'),
  })
  .superRefine((settings, ctx) => {
    if (settings.control_plane !== undefined && settings.profile !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['profile'], message: 'profile (a kubeconfig on the worker) and control_plane (kubectl over SSH on a host) do not mix — keep one' });
    } else if (settings.control_plane === undefined && settings.profile === undefined && settings.kubeconfig === undefined) {
      ctx.addIssue({ code: 'custom', path: ['kubeconfig'], message: 'required: set kubeconfig = "<file on the worker>" (or profile = "NAME" of a credential profile with a kubeconfig), or control_plane = "<node that runs kubectl>"' });
    } else if (settings.profile !== undefined && settings.kubeconfig !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['kubeconfig'], message: 'kubeconfig and a credential profile do not mix — define kubeconfig in the profile, or drop the profile' });
    }
  });
export type KubernetesSettings = z.infer<typeof KubernetesSettings>;

/** An inventory file. */
export const Inventory = z.strictObject({
  ssh: SshSettings.prefault({}),
  /** Needed by playbooks with Kubernetes steps (readiness-gate, node-label, runtime-class, verification-pod, drain). */
  kubernetes: KubernetesSettings.optional(),
  /** The hosts; at least one. */
  nodes: z.array(InventoryNode).min(1),
});
/**
 * A validated inventory (local paths resolved to absolute ones) plus its {@link SourceInfo}, and the
 * credentials file its profiles were found in (when it names profiles).
 */
export type Inventory = z.infer<typeof Inventory> & { source: SourceInfo; credentials?: Credentials };

/**
 * The SSH settings in effect for `node`: its own `ssh` table over the inventory's `[ssh]`, and the login of
 * the credential profile in effect over both (when the inventory's credentials are loaded).
 */
export function resolveNodeSsh(inventory: Pick<Inventory, 'ssh' | 'credentials'>, node: Pick<InventoryNode, 'ssh'>): Omit<SshSettings, 'sudo'> & { sudo: boolean | 'narrow' } {
  const override = Object.fromEntries(Object.entries(node.ssh ?? {}).filter(([, value]) => value !== undefined));
  const settings: SshSettings = { ...inventory.ssh, ...override };
  const profile = settings.profile === undefined ? undefined : inventory.credentials?.profiles[settings.profile];
  return profile ? { ...settings, ...profile } : settings;
}

/** The nodes a rollout works on: every `role = "worker"` node, in inventory order. */
export function rolloutNodes(inventory: Pick<Inventory, 'nodes'>): InventoryNode[] {
  return inventory.nodes.filter((node) => node.role === 'worker');
}
