import { homedir } from 'node:os';
import path from 'node:path';
import { checkPlaybookAgainstInventory, loadInventory, parseInventory, parsePlaybook } from '../playbooks/load';
import { resolveNodeSsh, rolloutNodes } from '../playbooks/schema';

const validInventory = `[ssh]
user = "root"
identity_file = "keys/id_ed25519"

[kubernetes]
control_plane = "cp-1"

[[nodes]]
name = "cp-1"
address = "10.0.0.10"
role = "control-plane"

[[nodes]]
name = "worker-1"
address = "10.0.0.11"

[[nodes]]
name = "worker-2"
address = "fd00::12"
ssh = { port = 2222, user = "ops", sudo = true }
`;

const edit = (from: string, to: string) => {
  expect(validInventory).toContain(from);
  return validInventory.replace(from, to);
};

function problemLines(text: string): string[] {
  try {
    parseInventory(text, 'fleet/inventory.toml');
  } catch (error) {
    expect((error as Error).name).toBe('PlaybookError');
    return (error as Error).message.split('\n');
  }
  throw new Error('expected the inventory to be refused');
}

describe('an inventory', () => {
  it('parses with SSH defaults and its source', () => {
    const inventory = parseInventory(validInventory, 'fleet/inventory.toml');
    expect(inventory.ssh).toMatchObject({ user: 'root', port: 22, sudo: false, trust_on_first_use: false, max_sessions: 4, connect_timeout: '20s' });
    expect(inventory.nodes.map((node) => [node.name, node.role])).toEqual([['cp-1', 'control-plane'], ['worker-1', 'worker'], ['worker-2', 'worker']]);
    expect(inventory.kubernetes).toEqual({ control_plane: 'cp-1', kubectl: 'kubectl' });
    expect(inventory.source.file).toBe('fleet/inventory.toml');
  });

  it('resolves relative paths against its own folder and ~/ against the home directory', () => {
    const inventory = parseInventory(validInventory, 'fleet/inventory.toml');
    expect(inventory.ssh.identity_file).toBe(path.resolve('fleet', 'keys/id_ed25519'));
    expect(inventory.ssh.known_hosts).toBe(path.join(homedir(), '.ssh/known_hosts'));
    const absolute = parseInventory(edit('identity_file = "keys/id_ed25519"', 'identity_file = "/etc/katafleet/id"'), '/srv/inventory.toml');
    expect(absolute.ssh.identity_file).toBe('/etc/katafleet/id');
  });

  it('gives each node its effective SSH settings: its own table over [ssh]', () => {
    const inventory = parseInventory(validInventory, 'fleet/inventory.toml');
    expect(resolveNodeSsh(inventory, inventory.nodes[1])).toMatchObject({ user: 'root', port: 22, sudo: false });
    expect(resolveNodeSsh(inventory, inventory.nodes[2])).toMatchObject({ user: 'ops', port: 2222, sudo: true, identity_file: inventory.ssh.identity_file });
  });

  it('rolls out to workers only, in inventory order', () => {
    expect(rolloutNodes(parseInventory(validInventory, 'i.toml')).map((node) => node.name)).toEqual(['worker-1', 'worker-2']);
  });

  it('accepts host names and the same address on different ports (simulated nodes)', () => {
    const text = edit('address = "fd00::12"', 'address = "10.0.0.11"').replace('address = "10.0.0.10"', 'address = "cp-1.example.internal"');
    expect(() => parseInventory(text, 'i.toml')).not.toThrow();
  });

  it('loads the example inventory', async () => {
    const inventory = await loadInventory('playbooks/examples/inventory.toml');
    expect(rolloutNodes(inventory).map((node) => node.name)).toEqual(['worker-1', 'worker-2', 'worker-3']);
    expect(inventory.ssh.known_hosts).toBe(path.resolve('playbooks/examples/keys/known_hosts'));
  });

  it('reports a missing file by name', async () => {
    await expect(loadInventory('no/such/inventory.toml')).rejects.toThrow('no/such/inventory.toml: no such file');
  });
});

describe('inventory problems', () => {
  it('report a node listed twice by name', () => {
    expect(problemLines(edit('name = "worker-2"', 'name = "worker-1"'))).toEqual([
      'fleet/inventory.toml: nodes[2].name: "worker-1" is already the name of nodes[1]; each node is listed once — remove or rename one',
    ]);
  });

  it('report a node listed twice by address and port', () => {
    const text = edit('address = "fd00::12"\nssh = { port = 2222, user = "ops", sudo = true }', 'address = "10.0.0.11"');
    expect(problemLines(text)).toEqual([
      'fleet/inventory.toml: nodes[2].address: 10.0.0.11 port 22 is already the address of nodes[1] ("worker-1"); a host is listed once — remove the duplicate, or give it its own address or ssh.port',
    ]);
  });

  it('report a control-plane host that is not a node', () => {
    expect(problemLines(edit('control_plane = "cp-1"', 'control_plane = "cp-2"'))).toEqual([
      'fleet/inventory.toml: kubernetes.control_plane: no [[nodes]] entry is named "cp-2" (did you mean "cp-1"?); add the host that runs kubectl as a node with role = "control-plane"',
    ]);
  });

  it('report bad addresses', () => {
    expect(problemLines(edit('address = "10.0.0.11"', 'address = "10.0.0.256"'))).toEqual([
      'fleet/inventory.toml: nodes[1].address: "10.0.0.256" is refused: it is not a valid IPv4 address; an address is an IPv4 address ("10.0.0.12"), an IPv6 address ("fd00::12") or a host name ("worker-1.example.com")',
    ]);
    expect(problemLines(edit('address = "fd00::12"', 'address = "fd00:::12"'))[0]).toContain('it is not a valid IPv6 address');
    expect(problemLines(edit('address = "fd00::12"', 'address = "fe80::1%eth0"'))[0]).toContain('it contains "%", which a shell would interpret');
  });

  it('report node names that are not Kubernetes node names', () => {
    expect(problemLines(edit('name = "worker-1"', 'name = "Worker_1"'))).toEqual([
      'fleet/inventory.toml: nodes[1].name: "Worker_1" is refused: it contains the uppercase letter "W"; an RFC 1123 subdomain holds only lowercase letters, digits, "-" and ".", each dot-separated part starts and ends with a letter or digit, at most 253 characters',
    ]);
  });

  it('report unknown keys in node ssh tables and bad values', () => {
    expect(problemLines(edit('ssh = { port = 2222, user = "ops", sudo = true }', 'ssh = { prot = 2222 }'))).toEqual([
      'fleet/inventory.toml: nodes[2].ssh.prot: unknown key (did you mean "port"?)',
    ]);
    expect(problemLines(edit('ssh = { port = 2222, user = "ops", sudo = true }', 'ssh = { port = 70000 }'))).toEqual([
      'fleet/inventory.toml: nodes[2].ssh.port: must be at most 65535, got 70000',
    ]);
    expect(problemLines(edit('role = "control-plane"', 'role = "master"'))).toEqual([
      'fleet/inventory.toml: nodes[0].role: expected one of "worker" | "control-plane", got "master"',
    ]);
  });

  it('report a missing node list', () => {
    expect(problemLines('[ssh]\nuser = "root"\n')).toEqual(['fleet/inventory.toml: nodes: required']);
  });
});

describe('a playbook paired with an inventory', () => {
  const kubernetesPlaybook = parsePlaybook(
    `[playbook]\nname = "label-only"\n\n[[steps]]\nid = "label"\nkind = "node-label"\nlabels = { "example.com/ready" = "true" }\n`,
    'label.toml',
  );
  const packagePlaybook = parsePlaybook(
    `[playbook]\nname = "pkg"\n\n[[steps]]\nid = "install"\nkind = "package-install"\npackages = [{ name = "htop", version = "3.2.2-2" }]\n`,
    'pkg.toml',
  );

  const pairingLines = (playbook: typeof kubernetesPlaybook, text: string) => {
    try {
      checkPlaybookAgainstInventory(playbook, parseInventory(text, 'i.toml'));
    } catch (error) {
      expect((error as Error).name).toBe('PlaybookError');
      return (error as Error).message.split('\n');
    }
    return [];
  };

  it('fits when the inventory gives everything the playbook needs', () => {
    expect(pairingLines(kubernetesPlaybook, validInventory)).toEqual([]);
  });

  it('needs [kubernetes] when a step uses the Kubernetes API', () => {
    expect(pairingLines(kubernetesPlaybook, edit('[kubernetes]\ncontrol_plane = "cp-1"\n', ''))).toEqual([
      'i.toml: kubernetes: required: label.toml steps[0] (label, node-label) uses the Kubernetes API — add [kubernetes] with kubeconfig = "FILE" (a kubeconfig on the worker, e.g. for deploy/rbac.yaml\'s ServiceAccount) or control_plane = "NODE", the node on which kubectl runs',
    ]);
    expect(pairingLines(packagePlaybook, edit('[kubernetes]\ncontrol_plane = "cp-1"\n', ''))).toEqual([]);
  });

  it('needs root or sudo on every worker', () => {
    expect(pairingLines(packagePlaybook, edit('user = "root"', 'user = "deploy"'))).toEqual([
      'i.toml: nodes[1]: worker-1 logs in as "deploy" without sudo, but pkg.toml changes system files — set sudo = true in [ssh] (or in this node\'s ssh table), or log in as root',
    ]);
  });

  it('needs at least one worker', () => {
    const onlyControlPlane = '[kubernetes]\ncontrol_plane = "cp-1"\n\n[[nodes]]\nname = "cp-1"\naddress = "10.0.0.10"\nrole = "control-plane"\n';
    expect(pairingLines(kubernetesPlaybook, onlyControlPlane)).toEqual(['i.toml: nodes: no node has role = "worker", so there is nothing to roll out to']);
  });

  it('names the files it was given for messages', () => {
    expect(() =>
      checkPlaybookAgainstInventory(packagePlaybook, parseInventory(edit('user = "root"', 'user = "deploy"'), 'i.toml'), { playbook: 'p.toml', inventory: 'inv.toml' }),
    ).toThrow(/^inv\.toml: nodes\[1\]: worker-1 logs in as "deploy" without sudo, but p\.toml changes/);
  });
});
