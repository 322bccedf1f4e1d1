import { z } from 'zod';
import { absolutePath, allowlisted, checkAllowlist, dnsLabel, kataInstallPath, type Allowlist } from './allowlists';

/** Allowlist for names that end up in files and commands on nodes: RFC 1123 label. */
export const RuntimeName = allowlisted(dnsLabel);

const runtimeType: Allowlist = {
  pattern: /^io\.containerd\.[a-z0-9-]+(\.[a-z0-9-]+)*\.v[0-9]+$/,
  char: /[a-z0-9.-]/,
  maxLength: 128,
  rule: 'a runtime_type looks like "io.containerd.NAME.vN", e.g. "io.containerd.kata.v2"',
};

const podAnnotationPattern: Allowlist = {
  pattern: /^[A-Za-z0-9./_*-]+$/,
  char: /[A-Za-z0-9./_*-]/,
  maxLength: 253,
  rule: 'an annotation pattern holds only letters, digits and ". / _ * -", e.g. "io.katacontainers.*"',
};

const snapshotterName: Allowlist = {
  pattern: /^[a-z0-9_-]+$/,
  char: /[a-z0-9_-]/,
  maxLength: 64,
  rule: 'a snapshotter name holds only lowercase letters, digits, "_" and "-", e.g. "overlayfs" or "devmapper"',
};

/** A shim binary named without a path (`runc`), found on containerd's PATH. */
const bareBinaryName: Allowlist = {
  pattern: /^[a-z0-9][a-z0-9._-]*$/,
  char: /[a-z0-9._-]/,
  maxLength: 64,
  rule: 'a binary name holds only lowercase letters, digits and ". _ -"',
};

/** A runc state or checkpoint directory: under /run/ or /var/lib/. */
const stateDirectory: Allowlist = {
  ...absolutePath,
  rule: 'a state directory is an absolute path under "/run/" or "/var/lib/", without ".." segments',
  extra: (value) => absolutePath.extra?.(value) ?? (/^\/(run|var\/lib)\/./.test(value) ? undefined : 'it is not under "/run/" or "/var/lib/"'),
};

/** gVisor's `TypeUrl`, e.g. `io.containerd.runsc.v1.options`. */
const typeUrl: Allowlist = {
  pattern: /^io\.containerd\.[a-z0-9-]+(\.[a-z0-9-]+)*$/,
  char: /[a-z0-9.-]/,
  maxLength: 128,
  rule: 'a TypeUrl looks like "io.containerd.runsc.v1.options"',
};

type OptionValue = string | number | boolean;

/** Why `value` is refused for an option of this kind, or undefined. */
type OptionCheck = (value: OptionValue) => string | undefined;

const isBoolean: OptionCheck = (value) => (typeof value === 'boolean' ? undefined : `expected true or false, got ${JSON.stringify(value)}`);
const isId: OptionCheck = (value) => (Number.isInteger(value) && (value as number) >= 0 ? undefined : `expected a user or group id (an integer ≥ 0), got ${JSON.stringify(value)}`);
const stringOf = (list: Allowlist): OptionCheck => (value) => (typeof value === 'string' ? checkAllowlist(value, list) : `expected a string, got ${JSON.stringify(value)}`);
const binary: OptionCheck = (value) => (typeof value === 'string' && !value.startsWith('/') ? checkAllowlist(value, bareBinaryName) : stringOf(kataInstallPath)(value));

/**
 * The option keys a runtime may set under `.options`, and what each accepts: those of containerd's runc shim
 * (`runtime/v2/runc/options/oci.proto`: `BinaryName`, `Root`, `SystemdCgroup`, `NoPivotRoot`, `NoNewKeyring`, `ShimCgroup`,
 * `IoUid`, `IoGid`, `CriuPath`, `CriuImagePath`, `CriuWorkPath`), Kata's (`ConfigPath`) and gVisor's (`TypeUrl`, `ConfigPath`).
 * Path-valued ones that name something containerd executes or Kata loads only under {@link INSTALL_PREFIXES}:
 * `BinaryName = "/dev/shm/x"` would have containerd run that file as root for every pod of the handler.
 */
export const RUNTIME_OPTIONS: Record<string, OptionCheck> = {
  BinaryName: binary,
  ConfigPath: stringOf(kataInstallPath),
  CriuPath: stringOf(kataInstallPath),
  Root: stringOf(stateDirectory),
  CriuImagePath: stringOf(stateDirectory),
  CriuWorkPath: stringOf(stateDirectory),
  ShimCgroup: stringOf(absolutePath),
  SystemdCgroup: isBoolean,
  NoPivotRoot: isBoolean,
  NoNewKeyring: isBoolean,
  IoUid: isId,
  IoGid: isId,
  TypeUrl: stringOf(typeUrl),
};

/** `options` of a runtime: known keys only ({@link RUNTIME_OPTIONS}), each value checked by its kind. */
const RuntimeOptions = z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).superRefine((options, ctx) => {
  for (const [key, value] of Object.entries(options)) {
    const check = Object.prototype.hasOwnProperty.call(RUNTIME_OPTIONS, key) ? RUNTIME_OPTIONS[key] : undefined;
    const message = check === undefined
      ? `unknown option ${JSON.stringify(key.length > 64 ? `${key.slice(0, 61)}…` : key)}: katafleet sets only ${Object.keys(RUNTIME_OPTIONS).join(', ')}`
      : check(value);
    if (message !== undefined) ctx.addIssue({ code: 'custom', path: [key], message });
  }
});

/**
 * One containerd runtime handler that a playbook adds, as it appears under
 * `[[steps.runtimes]]` of a `containerd-patch` step. Keys keep the TOML spelling so that
 * error paths point at what the user wrote.
 */
export const RuntimeSpec = z.strictObject({
  /** The handler name: the RuntimeClass `handler` and the key under `runtimes.` in containerd's config. */
  name: RuntimeName,
  /** containerd shim, e.g. `io.containerd.kata.v2` or `io.containerd.runsc.v1`. */
  runtime_type: allowlisted(runtimeType),
  /**
   * The shim binary by absolute path (containerd ≥ 1.6 CRI `runtime_path`: containerd then ignores the name derived
   * from `runtime_type`), e.g. `/opt/kata/bin/containerd-shim-kata-v2` as kata-deploy 3.8+ writes it; under the
   * install prefixes only.
   */
  runtime_path: allowlisted(kataInstallPath).optional(),
  /** Privileged pods of this runtime do not get the host's devices (recommended for VM runtimes). */
  privileged_without_host_devices: z.boolean().optional(),
  /** Pod annotations passed through to the runtime, e.g. `["io.katacontainers.*"]`. */
  pod_annotations: z.array(allowlisted(podAnnotationPattern)).optional(),
  /**
   * Container annotations passed through to the runtime, e.g. `["io.kubernetes.container.terminationMessage*"]` as
   * kata-deploy 3.30+ writes it (KATA.md §3.2).
   */
  container_annotations: z.array(allowlisted(podAnnotationPattern)).optional(),
  /** containerd snapshotter for this runtime, e.g. `devmapper`. */
  snapshotter: allowlisted(snapshotterName).optional(),
  /** Written to the runtime's `.options` table, e.g. `ConfigPath`; only the keys of {@link RUNTIME_OPTIONS}. */
  options: RuntimeOptions.optional(),
});
export type RuntimeSpec = z.infer<typeof RuntimeSpec>;
