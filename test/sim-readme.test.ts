// Every sentence of README.md's "The simulated fleet: what is real, what is simulated", and the tests that prove it
// (the sim's own tests, `katafleet sim` through the CLI; they run in their own files; this file checks that the table
// is complete and that every named test exists).
import { fold, missingProofTests, readmeSentences, unprovenSentences, type Proof } from './helpers/proof-table';

const lifecycle = 'up prints the inventory and each address; the node answers over ssh; kubectl sees the nodes Ready; down leaves no process, mount, lease or file';

export const proofs: Proof[] = [
  { sentence: 'Tests and the demo run against a fleet that exists on one machine.', tests: { 'sim-lifecycle.test.ts': [lifecycle] } },
  {
    sentence: 'Real: each node\'s own loopback address and OpenSSH server',
    tests: {
      'sim-node.test.ts': [
        'answers as itself over SSH: its host kernel, its hostname, its containerd config, an active containerd',
        'writes an inventory that the playbook loader accepts, with a known_hosts that ssh verifies strictly',
        'keeps each node to itself: packages, config and modules of one node are not seen by another node or the machine',
        'installs Kata from the mirror\'s release tarball as upstream\'s manual install does; kata-runtime check passes; the guest kernel differs; removing /opt/kata takes it all away',
      ],
      'kube-fleet.test.ts': ['lists every worker as a Ready node, locally and with kubectl over SSH on the control-plane host'],
    },
  },
  {
    sentence: 'Simulated: the Kata VM itself (no KVM here)',
    tests: {
      'sim-node.test.ts': ['gives kata-runtime check the real failure message when the node has no virtualization', 'loads a patched config with a kata runtime after `systemctl restart containerd`: its CRI reports the handler'],
      'kube-fleet.test.ts': ['shows the Kata guest kernel in uname -r inside the kata pod, and the node\'s kernel in a runc pod', 'schedules a kata pod only onto a labelled node, never runs it there without Kata, and runs it once the runtime is patched in and containerd restarted'],
    },
  },
  {
    sentence: 'Fault switches (no virtualization, missing `/dev/kvm`',
    tests: {
      'sim-faults.test.ts': [
        'no-virtualization (set at start): no vmx, kvm_intel does not load, no /dev/kvm',
        'no-kvm-device: /dev/kvm disappears; kata-runtime check says the system is capable but cannot create VMs',
        'vhost-vsock-busy: modprobe vhost_vsock fails with "Device or resource busy"; kata-runtime check reports it',
        'package-repo-unreachable: apt-get install fails as with a dead mirror, and works again afterwards',
        'containerd-refuses-start: the next restart fails and leaves the unit failed; the one after succeeds',
        'command-hangs: systemctl restart hangs until the switch is turned off, then completes',
        'sshd-down: connections are refused until sshd is back',
        'sshd-frozen (set at start): TCP connects but the SSH banner never comes; thawed it answers',
        'host-key-changed: ssh refuses the node against the fleet known_hosts; switched off it is trusted again',
        'max-sessions-2: a third concurrent session on one connection is refused',
      ],
      'sim-lifecycle.test.ts': ['fault switches from the command line reach the running fleet'],
    },
  },
  {
    sentence: 'Nodes are Debian 12-like unless `katafleet sim up --os NODE=OS` makes one Fedora 40-like',
    tests: {
      'sim-os-cli.test.ts': [
        'sim up --os node-2=fedora starts a Fedora 40-like node (dnf and rpm, no apt) beside a Debian one',
        'lists the operating systems in its --help',
      ],
    },
  },
  { sentence: 'a bad value exits with status 2, naming the flag and the choices, and starts nothing', tests: { 'sim-os-cli.test.ts': ['refuses bad --os values with exit 2, naming the flag, the value and the choices, and starts nothing'] } },
  {
    sentence: 'A Fedora node\'s rpm database has Fedora\'s release package, so dnf finds `$releasever` (40)',
    tests: { 'sim-os-cli.test.ts': ['dnf on the Fedora node finds $releasever (40) in the rpm database: makecache prints no "Unable to detect release version"'] },
  },
];

/** Sentences that promise no behaviour. */
export const unproven: { sentence: string; why: string }[] = [
  { sentence: 'Details: [sim/README.md](sim/README.md) and [sim/KUBERNETES.md](sim/KUBERNETES.md).', why: 'a pointer to other documents' },
];

describe('README "The simulated fleet: what is real, what is simulated"', () => {
  it('has a proving test named for every sentence, but the ones listed as unproven', () => {
    expect(unprovenSentences(readmeSentences('## The simulated fleet: what is real, what is simulated'), proofs)).toEqual(unproven.map((entry) => fold(entry.sentence)));
  });

  it('names only tests that exist, in the files named', () => {
    expect(missingProofTests(proofs)).toEqual([]);
  });
});
