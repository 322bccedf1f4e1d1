/**
 * Fault switches of a simulated node: each one makes the node fail the way a real host does.
 * Set them at start (`startFleet({ faults: { 'node-2': ['sshd-down'] } })`, `katafleet sim up --fault
 * node-2=sshd-down`) or while the fleet runs (`fleet.setFault`, `katafleet sim fault node-2 sshd-down on`).
 */
export const faults = {
  'no-virtualization': 'CPU without vmx/svm in /proc/cpuinfo: kvm_intel/kvm_amd are unloaded and fail to load, /dev/kvm is gone',
  'no-kvm-device': '/dev/kvm is missing (virtualization and modules are fine)',
  'vhost-vsock-busy': 'vhost_vsock is unloaded and `modprobe vhost_vsock` fails with "Device or resource busy"',
  'package-repo-unreachable': "the node's package mirror refuses connections: apt-get update/install fail as with a dead mirror",
  'containerd-refuses-start': 'the next start of containerd fails (containerd exits 1, the unit is failed); one-shot, it clears itself once used',
  'containerd-killmode-default': "containerd's unit lacks upstream's KillMode=process (a custom unit): systemd's default control-group applies, and a restart of containerd kills its running containers' shims",
  'command-hangs': 'systemctl start/stop/restart/reload hang (on every unit) until the switch is turned off',
  'sshd-down': 'sshd is stopped: connections are refused',
  'sshd-frozen': 'sshd is stopped with SIGSTOP: TCP connects, the SSH handshake never comes',
  'host-key-changed': 'sshd presents a different host key than the one in the fleet known_hosts',
  'max-sessions-2': 'sshd allows 2 sessions per connection (MaxSessions 2) instead of 10',
} as const;

export type Fault = keyof typeof faults;

export const faultNames = Object.keys(faults) as Fault[];

export function isFault(value: string): value is Fault {
  return Object.hasOwn(faults, value);
}

/** Unknown fault name: lists the known ones. */
export class UnknownFault extends Error {
  override readonly name = 'UnknownFault';
  constructor(value: string, where: string) {
    super(`${where}: unknown fault "${value}"; expected one of ${faultNames.join(' | ')}`);
  }
}

export function parseFault(value: string, where: string): Fault {
  if (!isFault(value)) throw new UnknownFault(value, where);
  return value;
}
