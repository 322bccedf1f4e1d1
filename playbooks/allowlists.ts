/**
 * Strict allowlists for every value that may reach a shell on a node or on the control-plane host:
 * names, addresses, packages, versions, paths, labels. A value passes only if it matches its
 * pattern; when it does not, the message says which character or form was refused and what is
 * allowed. Commands are still built with POSIX single quotes — the allowlist is the first wall.
 */
import { isIPv6 } from 'node:net';
import { z } from 'zod';

/** One kind of safe value. */
export interface Allowlist {
  /** The whole value must match. */
  pattern: RegExp;
  /** One allowed character, used to point at the first refused one. */
  char: RegExp;
  maxLength: number;
  /** What the value may look like, as a sentence fragment: "a package name holds only …". */
  rule: string;
  /** Further checks the pattern cannot express; returns the reason to refuse. */
  extra?: (value: string) => string | undefined;
  /** Whether the empty string is a valid value (Kubernetes label values may be empty). */
  allowEmpty?: boolean;
}

const shellMetacharacters = new Set([...';&|<>$`\\\'"*?(){}[]!#~^%=, \t']);

function describeCharacter(ch: string): string {
  if (ch === ' ') return 'a space';
  if (ch === '\t') return 'a tab';
  const code = ch.codePointAt(0) ?? 0;
  if (code < 0x20 || code === 0x7f) return `the control character U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  return JSON.stringify(ch);
}

function refusalReason(value: string, list: Allowlist): string | undefined {
  if (value === '') return 'it is empty';
  if (/[\r\n]/.test(value)) return 'it contains a line break, which would end a shell command';
  if (value.includes('$(')) return 'it contains "$(", a shell command substitution';
  if (value.includes('`')) return 'it contains a backtick, a shell command substitution';
  if (value.startsWith('-')) return 'it starts with "-", which a command would read as an option';
  const refusedCharacters = [...value].filter((ch) => !list.char.test(ch));
  const refused = refusedCharacters.find((ch) => shellMetacharacters.has(ch)) ?? refusedCharacters[0];
  if (refused !== undefined) {
    const uppercase = refused !== refused.toLowerCase() && list.char.test(refused.toLowerCase());
    const what = uppercase ? `the uppercase letter ${JSON.stringify(refused)}` : describeCharacter(refused);
    return shellMetacharacters.has(refused) ? `it contains ${what}, which a shell would interpret` : `it contains ${what}`;
  }
  if (value.length > list.maxLength) return `it is longer than ${list.maxLength} characters`;
  return undefined;
}

/** Why `value` is refused by `list`, or undefined when it is allowed. */
export function checkAllowlist(value: string, list: Allowlist): string | undefined {
  if (value === '' && list.allowEmpty) return undefined;
  if (list.pattern.test(value) && value.length <= list.maxLength) {
    const extra = list.extra?.(value);
    return extra === undefined ? undefined : `${quoteForMessage(value)} is refused: ${extra}; ${list.rule}`;
  }
  const reason = refusalReason(value, list);
  return reason === undefined
    ? `${quoteForMessage(value)} is not allowed: ${list.rule}`
    : `${quoteForMessage(value)} is refused: ${reason}; ${list.rule}`;
}

function quoteForMessage(value: string): string {
  const shown = JSON.stringify(value);
  return shown.length > 80 ? `${shown.slice(0, 77)}…"` : shown;
}

/** A string schema that admits only values of `list`. */
export function allowlisted(list: Allowlist) {
  return z.string().superRefine((value, ctx) => {
    const message = checkAllowlist(value, list);
    if (message !== undefined) ctx.addIssue({ code: 'custom', message });
  });
}

const label = '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?';
const labelMixedCase = '[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?';
const labelName = '[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?';
const ipv4Octet = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';

function noDotDotSegment(value: string): string | undefined {
  return value.split('/').includes('..') ? 'it contains a ".." segment' : undefined;
}

/** RFC 1123 label: step ids, handler names, playbook names, namespaces. */
export const dnsLabel: Allowlist = {
  pattern: new RegExp(`^${label}$`),
  char: /[a-z0-9-]/,
  maxLength: 63,
  rule: 'an RFC 1123 label holds only lowercase letters, digits and "-", starts and ends with a letter or digit, at most 63 characters',
};

/** RFC 1123 subdomain: Kubernetes node names and RuntimeClass names. */
export const dnsSubdomain: Allowlist = {
  pattern: new RegExp(`^${label}(\\.${label})*$`),
  char: /[a-z0-9.-]/,
  maxLength: 253,
  rule: 'an RFC 1123 subdomain holds only lowercase letters, digits, "-" and ".", each dot-separated part starts and ends with a letter or digit, at most 253 characters',
};

/** Debian or RPM package name. */
export const packageName: Allowlist = {
  pattern: /^[A-Za-z0-9][A-Za-z0-9+._-]*$/,
  char: /[A-Za-z0-9+._-]/,
  maxLength: 128,
  rule: 'a package name holds only letters, digits and "+", ".", "_", "-", and starts with a letter or digit',
};

/** Debian (`[epoch:]upstream[-revision]`) or RPM (`[epoch:]version[-release]`) version. */
export const packageVersion: Allowlist = {
  pattern: /^([0-9]+:)?[0-9][A-Za-z0-9.+~^_-]*$/,
  char: /[A-Za-z0-9.+~^_:-]/,
  maxLength: 128,
  rule: 'a package version looks like "3.2.0", "1:2.1-3" or "3.2.0~rc1": an optional "EPOCH:", then a digit, then letters, digits and ". + ~ ^ _ -"',
};

/**
 * The containerd config and its drop-ins: under `/etc/containerd/` (drop-ins usually in `/etc/containerd/conf.d/`),
 * ending `.toml`. Anything else could overwrite (or, through the backup, read) any root file on the node.
 */
export const CONTAINERD_DIR = '/etc/containerd/';
/** Where prereq-check persists kernel modules. */
export const MODULES_LOAD_DIR = '/etc/modules-load.d/';
/** The services a step may restart: containerd, and the two other units a Kata rollout can need. */
export const ALLOWED_SERVICES = ['containerd', 'kubelet', 'crio'] as const;
/**
 * Where Kata Containers (and the shims containerd runs) are installed: a runtime's path-valued options
 * (`BinaryName`, `ConfigPath`, `CriuPath`) must point under one of these. Sources: `reality/KATA.md`
 * (kata-static under `/opt/kata`, distro packages under `/usr/bin` and `/usr/share/defaults/kata-containers`,
 * the admin's `/etc/kata-containers`, kata-deploy 3.0–3.7 links in `/usr/local/bin`).
 */
export const INSTALL_PREFIXES = ['/opt/kata/', '/usr/bin/', '/usr/local/bin/', '/usr/share/defaults/kata-containers/', '/etc/kata-containers/'] as const;

/** The first of `prefixes` that `path` is strictly under, or undefined. */
export function underPrefix(path: string, prefixes: readonly string[]): string | undefined {
  return prefixes.find((prefix) => path.startsWith(prefix) && path.length > prefix.length);
}

function nodePathUnder(prefixes: readonly string[], suffix: string, what: string): Allowlist {
  const where = prefixes.map((prefix) => JSON.stringify(prefix)).join(' or ');
  return {
    pattern: /^\/[A-Za-z0-9._/-]+$/,
    char: /[A-Za-z0-9._/-]/,
    maxLength: 1024,
    rule: `${what} is an absolute path under ${where} ending "${suffix}", of letters, digits and ". _ / -", without ".." segments`,
    extra: (value) => noDotDotSegment(value)
      ?? (underPrefix(value, prefixes) === undefined ? `it is not under ${where}` : undefined)
      ?? (value.endsWith(suffix) && !value.endsWith(`/${suffix}`) ? undefined : `it does not end "${suffix}"`),
  };
}

/** containerd's main config (`config_path`), e.g. `/etc/containerd/config.toml`. */
export const containerdConfigPath: Allowlist = nodePathUnder([CONTAINERD_DIR], '.toml', 'a containerd config path');

/** A containerd drop-in (`drop_in_path`), e.g. `/etc/containerd/conf.d/katafleet.toml`. */
export const containerdDropInPath: Allowlist = nodePathUnder([CONTAINERD_DIR], '.toml', 'a containerd drop-in path');

/** prereq-check's `modules_load_file`, e.g. `/etc/modules-load.d/katafleet.conf`. */
export const modulesLoadFile: Allowlist = nodePathUnder([MODULES_LOAD_DIR], '.conf', 'a modules-load file');

/** A file of an installed runtime (a shim binary, a Kata configuration), e.g. `/opt/kata/bin/containerd-shim-kata-v2`. */
export const kataInstallPath: Allowlist = {
  ...nodePathUnder(INSTALL_PREFIXES, '', 'a runtime file'),
  rule: `a runtime file is an absolute path under ${INSTALL_PREFIXES.map((prefix) => JSON.stringify(prefix)).join(', ')}, of letters, digits and ". _ / -", without ".." segments`,
};

/** Absolute path on a node. */
export const absolutePath: Allowlist = {
  pattern: /^\/[A-Za-z0-9._/-]+$/,
  char: /[A-Za-z0-9._/-]/,
  maxLength: 1024,
  rule: 'an absolute path starts with "/" and holds only letters, digits and ". _ / -", without ".." segments',
  extra: noDotDotSegment,
};

/** A path on the machine running katafleet: absolute, relative to the inventory file, or `~/…`. */
export const localPath: Allowlist = {
  pattern: /^(~\/)?[A-Za-z0-9._/+][A-Za-z0-9._/+-]*$/,
  char: /[A-Za-z0-9._/+~-]/,
  maxLength: 1024,
  rule: 'a path holds only letters, digits and ". _ / + -" (absolute, relative to the inventory file, or starting with "~/")',
};

/** Kubernetes label key: optional DNS-subdomain prefix and "/", then a name of up to 63 characters. */
export const labelKey: Allowlist = {
  pattern: new RegExp(`^(${label}(\\.${label})*/)?${labelName}$`),
  char: /[A-Za-z0-9._/-]/,
  maxLength: 317,
  rule: 'a Kubernetes label key is an optional DNS prefix and "/" followed by a name of letters, digits, "-", "_", "." (at most 63 characters, starting and ending with a letter or digit)',
  extra: (value) => {
    const prefix = value.includes('/') ? value.slice(0, value.indexOf('/')) : '';
    return prefix.length > 253 ? 'its prefix is longer than 253 characters' : undefined;
  },
};

/** Kubernetes label value: empty, or a name of up to 63 characters. */
export const labelValue: Allowlist = {
  pattern: new RegExp(`^${labelName}$`),
  char: /[A-Za-z0-9._-]/,
  maxLength: 63,
  rule: 'a Kubernetes label value is empty or holds letters, digits, "-", "_", "." (at most 63 characters, starting and ending with a letter or digit)',
  allowEmpty: true,
};

/** Kernel module name. */
export const kernelModule: Allowlist = {
  pattern: /^[A-Za-z0-9][A-Za-z0-9_-]*$/,
  char: /[A-Za-z0-9_-]/,
  maxLength: 64,
  rule: 'a kernel module name holds only letters, digits, "_" and "-"',
};

/** CPU flag as listed in /proc/cpuinfo. */
export const cpuFlag: Allowlist = {
  pattern: /^[a-z0-9_]+$/,
  char: /[a-z0-9_]/,
  maxLength: 64,
  rule: 'a CPU flag (as in /proc/cpuinfo) holds only lowercase letters, digits and "_"',
};

/** systemd unit a step restarts: one of {@link ALLOWED_SERVICES} (any other unit, e.g. `reboot.target`, is refused). */
export const serviceName: Allowlist = {
  pattern: /^[A-Za-z0-9][A-Za-z0-9@._-]*$/,
  char: /[A-Za-z0-9@._-]/,
  maxLength: 256,
  rule: `a service is one of ${ALLOWED_SERVICES.map((name) => JSON.stringify(name)).join(', ')}`,
  extra: (value) => ((ALLOWED_SERVICES as readonly string[]).includes(value) ? undefined : 'it is not a service katafleet restarts'),
};

/** Container image reference, e.g. `docker.io/library/busybox:1.36.1` or one with `@sha256:…`. */
export const imageReference: Allowlist = {
  pattern: /^[a-z0-9][A-Za-z0-9._/:@-]*$/,
  char: /[A-Za-z0-9._/:@-]/,
  maxLength: 255,
  rule: 'an image reference holds only letters, digits and ". _ / : @ -", and starts with a lowercase letter or digit',
};

/** Kubernetes resource quantity, e.g. `250m`, `160Mi`, `1`. */
export const quantity: Allowlist = {
  pattern: /^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/,
  char: /[0-9.mkMGTPEi]/,
  maxLength: 32,
  rule: 'a Kubernetes quantity is a number with an optional suffix, e.g. "250m", "1", "160Mi", "2Gi"',
};

/** Login name for SSH. */
export const userName: Allowlist = {
  pattern: /^[A-Za-z_][A-Za-z0-9._-]*$/,
  char: /[A-Za-z0-9._-]/,
  maxLength: 32,
  rule: 'a user name holds only letters, digits and ". _ -", and starts with a letter or "_"',
};

/** A failure type (PascalCase), as activities throw them: `HostKeyMismatch`. */
export const failureType: Allowlist = {
  pattern: /^[A-Z][A-Za-z0-9]*$/,
  char: /[A-Za-z0-9]/,
  maxLength: 100,
  rule: 'a failure type is a PascalCase name such as "HostKeyMismatch"',
};

const ipv4 = new RegExp(`^${ipv4Octet}(\\.${ipv4Octet}){3}$`);
const hostname = new RegExp(`^${labelMixedCase}(\\.${labelMixedCase})*$`);

/** Node address: IPv4, IPv6 (no zone) or a DNS host name. */
export const nodeAddress: Allowlist = {
  pattern: /^[A-Za-z0-9.:-]+$/,
  char: /[A-Za-z0-9.:-]/,
  maxLength: 253,
  rule: 'an address is an IPv4 address ("10.0.0.12"), an IPv6 address ("fd00::12") or a host name ("worker-1.example.com")',
  extra: (value) => {
    if (value.includes(':')) return isIPv6(value) ? undefined : 'it is not a valid IPv6 address';
    if (/^[0-9.]+$/.test(value)) return ipv4.test(value) ? undefined : 'it is not a valid IPv4 address';
    return hostname.test(value) ? undefined : 'it is not a valid host name';
  },
};

/** Where `release-tarball` extracts Kata releases, one directory per version; `/opt/kata` becomes a symlink into it. */
export const KATA_RELEASES_DIR = '/opt/kata-releases/';
/** Where `release-tarball` puts its kata-manager-style links (`kata-runtime`, `containerd-shim-kata-v2`). */
export const KATA_LINK_DIR = '/usr/local/bin/';

/**
 * A Kata release version, e.g. `3.32.0` or `3.21.0-rc0`: the package-version grammar without an epoch, so
 * that it is also one path segment (`/opt/kata-releases/3.32.0/`) and one URL segment.
 */
export const kataVersion: Allowlist = {
  pattern: /^[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.+~^_-]*$/,
  char: /[A-Za-z0-9.+~^_-]/,
  maxLength: 64,
  rule: 'a Kata version looks like "3.32.0" or "3.21.0-rc0": MAJOR.MINOR.PATCH, then letters, digits and ". + ~ ^ _ -"',
};

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || /^127\.[0-9]+\.[0-9]+\.[0-9]+$/.test(host);
}

/** Why a release URL (expanded) is refused beyond its characters: scheme, credentials, the archive's suffix. */
function releaseUrlProblem(value: string): string | undefined {
  const problem = downloadUrlProblem(value);
  if (problem !== undefined) return problem;
  if (!/\.tar\.(xz|zst)$/.test(new URL(value).pathname)) return 'it does not end ".tar.xz" or ".tar.zst"';
  return undefined;
}

/**
 * A Kata release tarball's URL after expansion, e.g.
 * `https://github.com/kata-containers/kata-containers/releases/download/3.32.0/kata-static-3.32.0-amd64.tar.zst`:
 * https (http only to loopback), no credentials, ending `.tar.xz` or `.tar.zst`.
 */
export const releaseUrl: Allowlist = {
  pattern: /^https?:\/\/[A-Za-z0-9.:/_%+~-]+$/,
  char: /[A-Za-z0-9.:/_%+~-]/,
  maxLength: 2048,
  rule: 'a release URL is https://HOST/PATH (http:// only to 127.0.0.1 or localhost) ending ".tar.xz" or ".tar.zst", of letters, digits and ". : / _ % + ~ -"',
  extra: releaseUrlProblem,
};

/**
 * `release-tarball`'s `url` template: a {@link releaseUrl} in which `{version}`, `{arch}` and `{ext}` (`tar.xz`
 * below 3.21, `tar.zst` from 3.21) are replaced. The expansion is checked again with {@link releaseUrl}.
 */
export const releaseUrlTemplate: Allowlist = {
  pattern: /^https?:\/\/[A-Za-z0-9.:/_%+~{}-]+$/,
  char: /[A-Za-z0-9.:/_%+~{}-]/,
  maxLength: 2048,
  rule: 'a release URL template is https://HOST/PATH (http:// only to 127.0.0.1 or localhost) with the placeholders {version}, {arch} and {ext}, of letters, digits and ". : / _ % + ~ - { }"',
  extra: (value) => {
    const unknown = (value.match(/\{[^}]*\}/g) ?? []).find((p) => !['{version}', '{arch}', '{ext}'].includes(p));
    if (unknown !== undefined) return `it has the placeholder ${unknown}; only {version}, {arch} and {ext} exist`;
    if (/[{}]/.test(value.replace(/\{(version|arch|ext)\}/g, ''))) return 'it has a "{" or "}" outside a placeholder';
    return releaseUrlProblem(value.replace(/\{version\}/g, '3.32.0').replace(/\{arch\}/g, 'amd64').replace(/\{ext\}/g, 'tar.zst'));
  },
};

/**
 * Why a URL the worker or a node downloads from (a release tarball, a package repository or its key) is refused
 * beyond its characters: not a URL, credentials in it, a scheme other than https (http only to loopback, for tests).
 */
function downloadUrlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'it is not a URL';
  }
  if (url.username || url.password) return 'it carries credentials';
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) return 'it is plain http to a host other than loopback (only https, or http to 127.0.0.1 / localhost for tests)';
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return `its scheme ${JSON.stringify(url.protocol)} is neither https nor http to loopback`;
  return undefined;
}

/**
 * `package-repo`'s repository and key URLs, e.g. OBS's
 * `https://download.opensuse.org/repositories/home:/katacontainers:/releases:/x86_64:/stable/Debian_12/`: https (http
 * only to loopback), no credentials, no spaces or shell characters (the URL is written into an apt source line).
 */
export const repoUrl: Allowlist = {
  pattern: /^https?:\/\/[A-Za-z0-9.:/_%+~-]+$/,
  char: /[A-Za-z0-9.:/_%+~-]/,
  maxLength: 2048,
  rule: 'a repository URL is https://HOST/PATH (http:// only to 127.0.0.1 or localhost), of letters, digits and ". : / _ % + ~ -"',
  extra: downloadUrlProblem,
};

/** An apt suite (`bookworm`, `stable`) or a flat repository's path (`/`, `./`). */
export const aptSuite: Allowlist = {
  pattern: /^(\.?\/|[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9._-]+)*\/?)$/,
  char: /[A-Za-z0-9./_-]/,
  maxLength: 128,
  rule: 'a suite is a codename like "bookworm", or "/" for a flat repository (as OBS publishes them)',
  extra: (value) => (value.split('/').includes('..') ? 'it has a ".." segment' : undefined),
};

/** An OpenPGP v4 key fingerprint: 40 hex digits (spaces between groups allowed, as gpg prints them). */
export const keyFingerprint: Allowlist = {
  pattern: /^[0-9A-Fa-f]{4}( {0,2}[0-9A-Fa-f]{4}){9}$/,
  char: /[0-9A-Fa-f ]/,
  maxLength: 50,
  rule: 'a key fingerprint is 40 hex digits, e.g. "5C4A 3E1F …" as `gpg --show-keys` prints it (the short key id is not enough)',
};

/** Where `package-repo` writes apt sources and keys: `/etc/apt/sources.list.d/katafleet-NAME.list`, `/etc/apt/keyrings/katafleet-NAME.asc`. */
export const APT_SOURCES_DIR = '/etc/apt/sources.list.d/';
export const APT_KEYRINGS_DIR = '/etc/apt/keyrings/';
/** Where `package-repo` writes dnf repositories: `/etc/yum.repos.d/katafleet-NAME.repo` (dnf.conf(5) reposdir). */
export const YUM_REPOS_DIR = '/etc/yum.repos.d/';
/** Where `package-repo` writes zypper repositories: `/etc/zypp/repos.d/katafleet-NAME.repo` (zypp.conf reposdir). */
export const ZYPP_REPOS_DIR = '/etc/zypp/repos.d/';
/** Where `package-repo` keeps dnf/zypper repository keys: `/etc/pki/rpm-gpg/RPM-GPG-KEY-katafleet-NAME` (Fedora's key folder). */
export const RPM_KEYS_DIR = '/etc/pki/rpm-gpg/';
