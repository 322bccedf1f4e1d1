import { z } from 'zod';
import { allowlisted, dnsLabel, type Allowlist } from './allowlists';

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

const optionName: Allowlist = {
  pattern: /^[A-Za-z][A-Za-z0-9_]*$/,
  char: /[A-Za-z0-9_]/,
  maxLength: 64,
  rule: 'an option name starts with a letter and holds only letters, digits and "_", e.g. "ConfigPath"',
};

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
  /** Privileged pods of this runtime do not get the host's devices (recommended for VM runtimes). */
  privileged_without_host_devices: z.boolean().optional(),
  /** Pod annotations passed through to the runtime, e.g. `["io.katacontainers.*"]`. */
  pod_annotations: z.array(allowlisted(podAnnotationPattern)).optional(),
  /** containerd snapshotter for this runtime, e.g. `devmapper`. */
  snapshotter: allowlisted(snapshotterName).optional(),
  /** Written to the runtime's `.options` table, e.g. `ConfigPath`. */
  options: z.record(allowlisted(optionName), z.union([z.string(), z.number(), z.boolean()])).optional(),
});
export type RuntimeSpec = z.infer<typeof RuntimeSpec>;
