// One version grammar (and one character set) for the playbook schema and the SSH layer: every value the schema
// admits for something that reaches a node's shell must also pass the quote layer, or a validated playbook would
// fail on every node at run time (review finding L1: "3.2.0~rc1" validated, then UnsafeShellValue).
import { isSafeShellValue, sh } from '../../activities/ssh';
import * as allowlists from '../../playbooks/allowlists';
import { checkAllowlist, type Allowlist } from '../../playbooks/allowlists';

/** Lists whose values never reach a remote shell, and why. */
const notForTheShell: Record<string, string> = {
  localPath: 'a path on the machine running katafleet (key files, known_hosts); read by the worker, never sent to a node',
  failureType: 'a Temporal failure type name; never sent to a node',
  releaseUrlTemplate: 'a template with {placeholders}; only its expansion, checked with releaseUrl, reaches a node',
  keyFingerprint: 'checked by gpg on the worker; written to a node only inside a file, normalized (no spaces)',
};

const shellLists = Object.entries(allowlists)
  .filter((entry): entry is [string, Allowlist] => typeof entry[1] === 'object' && entry[1] !== null && 'pattern' in entry[1] && 'char' in entry[1])
  .filter(([name]) => !(name in notForTheShell));

/** Every printable ASCII character, plus a few look-alikes and controls. */
const candidates = [...Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)), '\n', '\t', '\0', 'а', '／', 'ｋ', '\u00a0'];

/** A valid example of each list, with the version grammar's edge cases. */
const examples: Record<string, string[]> = {
  dnsLabel: ['kata', 'kata-qemu'],
  dnsSubdomain: ['worker-1.example.com'],
  packageName: ['kata-containers', 'libc6+x'],
  packageVersion: ['3.2.0', '1:2.1-3', '3.2.0~rc1', '1.0^git', '2.6.1-1.el9', '20240212.0'],
  absolutePath: ['/etc/containerd/config.toml', '/opt/kata/bin/kata-runtime'],
  labelKey: ['katacontainers.io/kata-runtime'],
  labelValue: ['true'],
  kernelModule: ['vhost_vsock'],
  cpuFlag: ['vmx'],
  serviceName: ['containerd'],
  containerdConfigPath: ['/etc/containerd/config.toml'],
  containerdDropInPath: ['/etc/containerd/conf.d/katafleet.toml'],
  modulesLoadFile: ['/etc/modules-load.d/katafleet.conf'],
  kataVersion: ['3.32.0', '3.21.0-rc0', '3.2.0~rc1'],
  releaseUrl: ['https://github.com/kata-containers/kata-containers/releases/download/3.32.0/kata-static-3.32.0-amd64.tar.zst', 'http://127.0.0.1:8080/k/kata-static-3.20.0-arm64.tar.xz'],
  kataInstallPath: ['/opt/kata/share/defaults/kata-containers/configuration-qemu.toml'],
  repoUrl: ['https://download.opensuse.org/repositories/home:/katacontainers:/releases:/x86_64:/stable/Debian_12/', 'http://127.0.0.1:8080/obs/Release.key'],
  aptSuite: ['/', './', 'bookworm', 'bookworm-backports', 'stable/updates'],
  imageReference: ['docker.io/library/busybox:1.36.1', 'registry.k8s.io/pause@sha256:abc'],
  quantity: ['250m', '160Mi'],
  userName: ['deploy'],
  nodeAddress: ['10.0.0.12', 'fd00::12', 'Worker-1.example.com'],
};

describe('one grammar for the schema and the SSH layer', () => {
  it('checks every allowlist that reaches a shell (none is forgotten)', () => {
    expect(shellLists.map(([name]) => name).sort()).toEqual(Object.keys(examples).sort());
  });

  it.each(shellLists)('every character %s admits is one the quote layer admits', (_name, list) => {
    const admittedBySchema = candidates.filter((ch) => list.char.test(ch));
    const refusedByQuoteLayer = admittedBySchema.filter((ch) => !isSafeShellValue(`a${ch}`));
    expect(refusedByQuoteLayer).toEqual([]);
  });

  it.each(shellLists)('every valid example of %s validates and goes into a command unchanged', (name, list) => {
    for (const value of examples[name]) {
      expect(checkAllowlist(value, list)).toBeUndefined();
      expect(sh`echo ${value}`.display).toBe(`echo ${value}`);
    }
  });

  it.each(shellLists)('%s never admits a value the quote layer would read as an option', (name, list) => {
    for (const value of examples[name]) expect(checkAllowlist(`-${value}`, list)).toBeDefined();
  });

  it('puts "3.2.0~rc1" and "1.0^git" into a command inside single quotes, where a shell keeps them literal', () => {
    expect(sh`apt-cache show kata-containers=${'3.2.0~rc1'}`.text).toBe("apt-cache show kata-containers='3.2.0~rc1'");
    expect(sh`echo ${'~'}`.text).toBe("echo '~'");
    expect(sh`echo ${'1.0^git'}`.text).toBe("echo '1.0^git'");
  });
});
