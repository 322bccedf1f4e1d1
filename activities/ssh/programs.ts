/**
 * The program probe: which absolute path each program katafleet runs has on a node, found once per SSH connection
 * with `command -v` under the PATH root commands run with, so that commands call `/usr/bin/systemctl` rather than
 * whatever a PATH lookup finds later (sudo's `secure_path`, a login shell's profile). The probe rides on the first
 * root command a connection sends (no extra round trip); its answer lives and dies with the connection.
 */
import { randomBytes } from 'node:crypto';
import { quote, SAFE_SHELL_VALUE } from './quote';

/**
 * Every program a step kind may need by path, probed together (one `command -v` each, in one shell): the steps
 * pick theirs from the answer ({@link NodeShell.programs}), so a program only another kind needs never fails a step.
 */
export const PROBED_PROGRAMS = [
  'systemctl', 'journalctl', 'crictl', 'containerd', 'ps',
  'tar', 'xz', 'zstd', 'sha256sum', 'curl', 'wget',
  'ln', 'mv', 'rm', 'mkdir', 'chmod', 'readlink', 'tee', 'rmdir',
  'cat', 'cp', 'sync', 'touch', 'chown', 'flock', 'modprobe',
  'apt-get', 'apt-cache', 'dpkg-query', 'rpm', 'dnf', 'zypper',
] as const;

/** A program of {@link PROBED_PROGRAMS}. */
export type ProbedProgram = (typeof PROBED_PROGRAMS)[number];

/** What the probe of one connection found: program → absolute path; a program it did not find is absent. */
export interface ProgramPaths {
  /** The PATH the probe searched (the one root commands run with). */
  readonly searched: string;
  readonly paths: ReadonlyMap<string, string>;
}

/** What the pool needs to probe a connection: the PATH to search (the root commands' own). */
export interface ProgramProbeRequest {
  path: string;
}

/**
 * The probe's shell text, run before a command in the same remote shell: a subshell (its PATH does not leak) that
 * prints `program<TAB>path` per program found, then the end marker on a line of its own. Pure.
 */
export function probeScript(path: string, marker: string): string {
  return `(PATH=${quote(path)}; for p in ${PROBED_PROGRAMS.join(' ')}; do w=$(command -v "$p" 2>/dev/null) && printf '%s\\t%s\\n' "$p" "$w"; done) 2>/dev/null; echo ${quote(marker)}\n`;
}

/** A fresh end marker for one probe (so no command's output can fake it). */
export function probeMarker(): string {
  return `@@katafleet-probe-${randomBytes(6).toString('hex')}`;
}

/**
 * Splits a probed command's stdout into the probe's answer and the command's own output. `paths` is undefined when
 * the marker is missing (the command was cut short before the probe finished). Only absolute paths of safe
 * characters count: a shell builtin, alias or function (no `/`) or an odd path is "not found". Pure.
 */
export function splitProbe(stdout: string, marker: string, searched: string): { paths?: ProgramPaths; rest: string } {
  const end = stdout.indexOf(`${marker}\n`);
  if (end < 0) return { rest: stdout };
  const paths = new Map<string, string>();
  for (const line of stdout.slice(0, end).split('\n')) {
    const tab = line.indexOf('\t');
    if (tab < 0) continue;
    const name = line.slice(0, tab);
    const path = line.slice(tab + 1);
    if ((PROBED_PROGRAMS as readonly string[]).includes(name) && path.startsWith('/') && SAFE_SHELL_VALUE.test(path)) paths.set(name, path);
  }
  return { paths: { searched, paths }, rest: stdout.slice(end + marker.length + 1) };
}

/**
 * The message of a program a step needs that the node lacks: node, program, where it was looked for, the fix, and
 * that nothing was changed. Pure.
 */
export function programMissingMessage(node: string, missing: readonly string[], searched: string, step: string): string {
  const fixes = missing.map((program) => programFix[program] ?? `install ${program}`).join('; ');
  return `Node ${node}: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not on the node (searched ${searched} as root), and ${step} needs ${missing.length === 1 ? 'it' : 'them'}: ` +
    `${fixes}, or put ${missing.length === 1 ? 'it' : 'them'} in one of those directories, then run again; nothing was changed`;
}

/** How to get each program on Debian/Ubuntu and RHEL-family nodes. */
const programFix: Record<string, string> = {
  crictl: "install crictl (cri-tools, as kubeadm's packages bring it)",
  zstd: 'install zstd (apt-get install zstd / dnf install zstd): Kata 3.21+ releases are .tar.zst',
  xz: 'install xz (apt-get install xz-utils / dnf install xz)',
  tar: 'install tar',
  sha256sum: 'install coreutils',
  systemctl: 'katafleet manages services through systemd; a node without systemctl cannot run this step',
  journalctl: 'install systemd (journalctl)',
  containerd: 'install containerd',
  ps: 'install procps',
  flock: 'install util-linux (flock): the node lock needs it',
  modprobe: 'install kmod (modprobe)',
  'apt-get': 'install apt, or set manager to the package manager the node has',
  'apt-cache': 'install apt, or set manager to the package manager the node has',
  'dpkg-query': 'install dpkg, or set manager to the package manager the node has',
  rpm: 'install rpm, or set manager to the package manager the node has',
  dnf: 'install dnf, or set manager to the package manager the node has',
  zypper: 'install zypper, or set manager to the package manager the node has',
  cat: 'install coreutils',
  cp: 'install coreutils',
  sync: 'install coreutils',
  touch: 'install coreutils',
  chown: 'install coreutils',
  chmod: 'install coreutils',
  mkdir: 'install coreutils',
  mv: 'install coreutils',
  rm: 'install coreutils',
  rmdir: 'install coreutils',
  ln: 'install coreutils',
  tee: 'install coreutils',
  readlink: 'install coreutils',
};
