// `katafleet sim up --os NODE=OS`: RPM-family nodes from the command line (README "The simulated fleet"), the bad
// values it refuses (exit 2, the flag, the value and the choices, nothing started), and the Fedora node's dnf finding
// its release version in the rpm database as on a real Fedora 40 (no "Unable to detect release version").
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInventory } from '../playbooks/load';
import { sshRun } from '../sim/ssh-run';
import { parseNodeOs } from '../cli/sim';

const root = join(__dirname, '..');
/** `katafleet sim ...` through bin/katafleet.js, as a user runs it: exit code and output. */
function katafleetSim(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(root, 'bin', 'katafleet.js'), 'sim', ...args], { cwd: root, encoding: 'utf8', timeout: 300_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
}

const fedoraNodeTitle = 'sim up --os node-2=fedora starts a Fedora 40-like node (dnf and rpm, no apt) beside a Debian one';
const releaseverTitle = 'dnf on the Fedora node finds $releasever (40) in the rpm database: makecache prints no "Unable to detect release version"';
const badOsTitle = 'refuses bad --os values with exit 2, naming the flag, the value and the choices, and starts nothing';

describe('katafleet sim up --os', () => {
  let dir: string;
  let fleet: { identityFile: string; knownHostsPath: string };
  let fedora: { address: string; port: number };
  let debian: { address: string; port: number };
  const onNode = (node: { address: string; port: number }, command: string) => sshRun(fleet, node, command);

  beforeAll(async () => {
    dir = join(await mkdtemp(join(tmpdir(), 'kf-sim-os-')), 'fleet');
  });
  afterAll(async () => {
    await katafleetSim('down', '--dir', dir);
  }, 120_000);

  it(badOsTitle, async () => {
    const cases: [string[], RegExp][] = [
      [['--os', 'node-1=centos'], /^katafleet sim up: --os node-1=centos: expected one of debian \| fedora \| opensuse, got "centos"$/m],
      [['--os', 'node-1=Fedora'], /--os node-1=Fedora: expected one of debian \| fedora \| opensuse, got "Fedora"/],
      [['--os', 'fedora'], /^katafleet sim up: --os expects NODE=OS \(e\.g\. node-2=fedora\), got "fedora"$/m],
      [['--os', 'node-1='], /--os expects NODE=OS/],
      [['--os', '=fedora'], /--os expects NODE=OS/],
      [['--os', 'node-3=fedora'], /--os node-3=fedora: no node "node-3" in this fleet \(its nodes are node-1 … node-2; --nodes sets how many\)/],
      [['--os', 'node-0=fedora'], /no node "node-0" in this fleet/],
      [['--os', 'control-plane=fedora'], /no node "control-plane" in this fleet/],
      [['--os', 'node-1=fedora;rm -rf /'], /expected one of debian \| fedora \| opensuse, got "fedora;rm -rf \/"/],
      [['--os', 'node-1=fedora', '--os', 'node-1=opensuse'], /--os node-1=opensuse: node-1 already has an --os; give each node at most one/],
      [['--os'], /--os/],
    ];
    for (const [args, message] of cases) {
      const result = await katafleetSim('up', '--nodes', '2', '--no-kubernetes', '--dir', dir, ...args);
      expect({ args, code: result.code, stdout: result.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(result.stderr).toMatch(message);
      expect(existsSync(dir)).toBe(false);
    }
  }, 300_000);

  it('parses --os values into each node\'s package manager (pure)', () => {
    expect(parseNodeOs(['node-2=fedora', 'node-3=opensuse', 'node-1=debian'], 3)).toEqual({ 'node-1': 'apt', 'node-2': 'dnf', 'node-3': 'zypper' });
    expect(parseNodeOs([], 3)).toEqual({});
    expect(() => parseNodeOs(['node-1=__proto__'], 1)).toThrow(/expected one of debian \| fedora \| opensuse, got "__proto__"/);
    expect(() => parseNodeOs(['node-01=fedora'], 3)).toThrow(/no node "node-01"/);
  });

  it('lists the operating systems in its --help', async () => {
    const help = await katafleetSim('--help');
    expect(help.stdout + help.stderr).toMatch(/--os NODE=OS/);
    expect(help.stdout + help.stderr).toMatch(/fedora +Fedora 40-like: dnf and rpm, no apt/);
    expect(help.stdout + help.stderr).toMatch(/opensuse +openSUSE Leap 15\.6-like: zypper and rpm, no apt/);
  });

  it(fedoraNodeTitle, async () => {
    const up = await katafleetSim('up', '--nodes', '2', '--os', 'node-2=fedora', '--no-kubernetes', '--dir', dir);
    expect({ code: up.code, stderr: up.stderr }).toEqual({ code: 0, stderr: '' });
    const inventory = await loadInventory(join(dir, 'inventory.toml'));
    const address = (name: string) => ({ address: inventory.nodes.find((node) => node.name === name)!.address, port: 22 });
    fleet = { identityFile: join(dir, 'id_ed25519'), knownHostsPath: join(dir, 'known_hosts') };
    fedora = address('node-2');
    debian = address('node-1');
    const probe = 'grep ^ID= /etc/os-release; for tool in dnf rpm apt-get dpkg; do command -v $tool >/dev/null && echo "$tool yes" || echo "$tool no"; done';
    expect((await onNode(fedora, probe)).stdout).toBe('ID=fedora\ndnf yes\nrpm yes\napt-get no\ndpkg no\n');
    // A Debian node keeps the machine's /usr, where setup installed dnf and rpm for the RPM-family nodes.
    expect((await onNode(debian, probe)).stdout).toMatch(/^ID=debian\n(.|\n)*apt-get yes\ndpkg yes\n$/);
  }, 400_000);

  it(releaseverTitle, async () => {
    const provides = await onNode(fedora, 'rpm -q --whatprovides system-release --qf "%{NAME} %{VERSION}\\n"');
    expect(provides.stdout).toBe('fedora-release-server 40\n');
    const makecache = await onNode(fedora, 'dnf makecache 2>&1; echo "exit $?"');
    expect(makecache.stdout).not.toContain('Unable to detect release version');
    expect(makecache.stdout).toMatch(/exit 0\n$/);
    const releasever = await onNode(fedora, 'python3 -c "import dnf.rpm; print(dnf.rpm.detect_releasever(\'/\'))"');
    expect(releasever.stdout).toBe('40\n');
  }, 300_000);
});
