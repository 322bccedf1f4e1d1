import { z } from 'zod';

/** Allowlist for names that end up in files and commands on nodes: RFC 1123 label. */
export const RuntimeName = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be an RFC 1123 label (lowercase letters, digits, "-")');

/**
 * One containerd runtime handler that a playbook adds, as it appears under
 * `[[steps.runtimes]]` of a `containerd-patch` step. Keys keep the TOML spelling so that
 * error paths point at what the user wrote.
 */
export const RuntimeSpec = z.strictObject({
  /** The handler name: the RuntimeClass `handler` and the key under `runtimes.` in containerd's config. */
  name: RuntimeName,
  /** containerd shim, e.g. `io.containerd.kata.v2` or `io.containerd.runsc.v1`. */
  runtime_type: z.string().regex(/^io\.containerd\.[a-z0-9-]+(\.[a-z0-9-]+)*\.v[0-9]+$/, 'must look like io.containerd.NAME.vN'),
  privileged_without_host_devices: z.boolean().optional(),
  pod_annotations: z.array(z.string().regex(/^[A-Za-z0-9./_*-]+$/, 'annotation patterns may hold letters, digits and . / _ * -')).optional(),
  snapshotter: z.string().regex(/^[a-z0-9_-]+$/).optional(),
  /** Written to the runtime's `.options` table, e.g. `ConfigPath`. */
  options: z.record(z.string().regex(/^[A-Za-z][A-Za-z0-9_]*$/), z.union([z.string(), z.number(), z.boolean()])).optional(),
});
export type RuntimeSpec = z.infer<typeof RuntimeSpec>;
