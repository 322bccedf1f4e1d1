/**
 * containerd runtime handlers as kata-deploy writes them (reality/KATA.md §3.2 and §4, from
 * `KC@3.20.0:tools/packaging/kata-deploy/scripts/kata-deploy.sh` `configure_containerd_runtime` and
 * `KC@3.32.0:tools/packaging/kata-deploy/binary/src/runtime/containerd.rs` `write_containerd_runtime_config`):
 * handler `kata-<shim>`, `runtime_type = "io.containerd.kata-<shim>.v2"`, `runtime_path` to the Go shim
 * (`/opt/kata/bin/containerd-shim-kata-v2`) or, for runtime-rs shims, the Rust one
 * (`/opt/kata/runtime-rs/bin/containerd-shim-kata-v2`; same file name), `privileged_without_host_devices = true`,
 * `pod_annotations = ["io.katacontainers.*"]`, from 3.30 `container_annotations`, and `options.ConfigPath` to the
 * shim's configuration in the release tree. kata-deploy 3.27+ points ConfigPath at a copy it makes under
 * `…/kata-containers/runtimes/<shim>/`; katafleet installs the plain tarball, so it uses the tarball's own file
 * (the 3.8–3.26 form), which holds the same defaults.
 */
import type { RuntimeSpec } from '../../playbooks/runtime-spec';

/** kata-deploy's default shims of 3.32 that the static tarball serves on amd64 without extra hardware (KATA.md §4). */
export const KATA_DEPLOY_SHIMS = ['qemu', 'clh', 'fc', 'dragonball', 'qemu-runtime-rs', 'clh-runtime-rs'] as const;

/** Whether kata-deploy runs `shim` with the Rust runtime: dragonball, cloud-hypervisor and every `*-runtime-rs`. */
export function isRuntimeRsShim(shim: string): boolean {
  return shim === 'dragonball' || shim === 'cloud-hypervisor' || shim.endsWith('-runtime-rs');
}

/** The Go and Rust shims of a static release (KATA.md §1.2). */
export const KATA_GO_SHIM = '/opt/kata/bin/containerd-shim-kata-v2';
export const KATA_RUST_SHIM = '/opt/kata/runtime-rs/bin/containerd-shim-kata-v2';

/** Where the tarball keeps a shim's configuration: Go in `share/defaults/kata-containers/`, runtime-rs in its `runtime-rs/` (3.3.0+). */
export function kataDeployConfigPath(shim: string): string {
  return `/opt/kata/share/defaults/kata-containers/${isRuntimeRsShim(shim) ? 'runtime-rs/' : ''}configuration-${shim}.toml`;
}

/**
 * The runtime handler kata-deploy writes for `shim` (e.g. `qemu` → `kata-qemu`), for Kata `version` (3.8+: it writes
 * `runtime_path`; 3.30+: `container_annotations`).
 */
export function kataDeployRuntime(shim: string, version = '3.32.0'): RuntimeSpec {
  const [major, minor] = version.split('.').map((part) => Number.parseInt(part, 10));
  const atLeast = (maj: number, min: number) => major > maj || (major === maj && minor >= min);
  return {
    name: `kata-${shim}`,
    runtime_type: `io.containerd.kata-${shim}.v2`,
    ...(atLeast(3, 8) ? { runtime_path: isRuntimeRsShim(shim) ? KATA_RUST_SHIM : KATA_GO_SHIM } : {}),
    privileged_without_host_devices: true,
    pod_annotations: ['io.katacontainers.*'],
    ...(atLeast(3, 30) ? { container_annotations: ['io.kubernetes.container.terminationMessage*'] } : {}),
    options: { ConfigPath: kataDeployConfigPath(shim) },
  };
}
