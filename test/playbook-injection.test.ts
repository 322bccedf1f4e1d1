import { parseInventory, parsePlaybook } from '../playbooks/load';

/**
 * Every value that may reach a shell on a node is checked by an allowlist. These are the classic
 * ways to smuggle a command into one, and the reason each must give.
 */
const attacks: { form: string; value: string; reason: string }[] = [
  { form: 'a command after ";"', value: 'x; rm -rf /', reason: 'it contains ";", which a shell would interpret' },
  { form: 'a command substitution $(…)', value: 'x$(reboot)', reason: 'it contains "$(", a shell command substitution' },
  { form: 'a backtick substitution', value: 'x`reboot`', reason: 'it contains a backtick, a shell command substitution' },
  { form: 'a line break', value: 'x\nreboot', reason: 'it contains a line break, which would end a shell command' },
  { form: 'a leading "-" (an option)', value: '-oProxyCommand=reboot', reason: 'it starts with "-", which a command would read as an option' },
  { form: 'a pipe', value: 'x|reboot', reason: 'it contains "|", which a shell would interpret' },
  { form: 'a redirection', value: 'x>/etc/passwd', reason: 'it contains ">", which a shell would interpret' },
  { form: 'a variable', value: 'x${IFS}y', reason: 'it contains "$", which a shell would interpret' },
  { form: 'a quote', value: "x'y", reason: `it contains "'", which a shell would interpret` },
];

const playbookWith = (step: string) => `[playbook]\nname = "demo"\n\n[[steps]]\nid = "s"\n${step}\n`;

/** Where a value goes in a playbook or inventory, and the path the error names. */
const playbookFields: { field: string; path: string | ((value: string) => string); text: (value: string) => string; safe?: string }[] = [
  { field: 'step id', path: 'steps[0].id', text: (v) => playbookWith('kind = "rollback"').replace('id = "s"', `id = ${JSON.stringify(v)}`) },
  { field: 'package name', path: 'steps[0].packages[0].name', text: (v) => playbookWith(`kind = "package-install"\npackages = [{ name = ${JSON.stringify(v)}, version = "1.0" }]`) },
  { field: 'package version', path: 'steps[0].packages[0].version', text: (v) => playbookWith(`kind = "package-install"\npackages = [{ name = "kata-containers", version = ${JSON.stringify(`3${v}`)} }]`) },
  { field: 'config path', path: 'steps[0].config_path', text: (v) => playbookWith(`kind = "rollback"\nconfig_path = ${JSON.stringify(`/etc/containerd/${v}.toml`)}`) },
  { field: 'kernel module', path: 'steps[0].modules[0]', text: (v) => playbookWith(`kind = "prereq-check"\nmodules = [${JSON.stringify(v)}]`) },
  { field: 'CPU flag', path: 'steps[0].cpu_flags[0]', text: (v) => playbookWith(`kind = "prereq-check"\ncpu_flags = [${JSON.stringify(v)}]`) },
  { field: 'service name', path: 'steps[0].service', text: (v) => playbookWith(`kind = "service-restart"\nservice = ${JSON.stringify(v)}`), safe: 'containerd' },
  { field: 'label key', path: (v) => `steps[0].labels.${JSON.stringify(`example.com/${v}`)}`, text: (v) => playbookWith(`kind = "node-label"\nlabels = { ${JSON.stringify(`example.com/${v}`)} = "true" }`) },
  { field: 'label value', path: 'steps[0].labels."example.com/x"', text: (v) => playbookWith(`kind = "node-label"\nlabels = { "example.com/x" = ${JSON.stringify(v)} }`) },
  { field: 'image', path: 'steps[0].image', text: (v) => playbookWith(`kind = "verification-pod"\nruntime_class = "kata"\nimage = ${JSON.stringify(`busybox${v}`)}`) },
  { field: 'overhead quantity', path: 'steps[0].overhead.memory', text: (v) => playbookWith(`kind = "runtime-class"\nname = "kata"\nhandler = "kata"\noverhead = { memory = ${JSON.stringify(`1${v}`)} }`), safe: 'Mi' },
  { field: 'runtime name', path: 'steps[0].runtimes[0].name', text: (v) => playbookWith(`kind = "containerd-patch"\n\n[[steps.runtimes]]\nname = ${JSON.stringify(v)}\nruntime_type = "io.containerd.kata.v2"`) },
  { field: 'runtime snapshotter', path: 'steps[0].runtimes[0].snapshotter', text: (v) => playbookWith(`kind = "containerd-patch"\n\n[[steps.runtimes]]\nname = "kata"\nruntime_type = "io.containerd.kata.v2"\nsnapshotter = ${JSON.stringify(v)}`) },
];

const inventoryWith = (node: string) => `[[nodes]]\n${node}\n`;

const inventoryFields: typeof playbookFields = [
  { field: 'node name', path: 'nodes[0].name', text: (v) => inventoryWith(`name = ${JSON.stringify(v)}\naddress = "10.0.0.1"`) },
  { field: 'node address', path: 'nodes[0].address', text: (v) => inventoryWith(`name = "n"\naddress = ${JSON.stringify(`10.0.0.1${v}`)}`) },
  { field: 'ssh user', path: 'nodes[0].ssh.user', text: (v) => inventoryWith(`name = "n"\naddress = "10.0.0.1"\nssh = { user = ${JSON.stringify(v)} }`) },
  { field: 'kubeconfig path', path: 'kubernetes.kubeconfig', text: (v) => `[kubernetes]\ncontrol_plane = "n"\nkubeconfig = ${JSON.stringify(`/root/${v}`)}\n\n${inventoryWith('name = "n"\naddress = "10.0.0.1"')}` },
  { field: 'identity file', path: 'ssh.identity_file', text: (v) => `[ssh]\nidentity_file = ${JSON.stringify(v)}\n\n${inventoryWith('name = "n"\naddress = "10.0.0.1"')}` },
];

function problems(parse: (text: string, file: string) => unknown, text: string): { path: string; message: string }[] {
  try {
    parse(text, 'f.toml');
  } catch (error) {
    expect((error as Error).name).toBe('PlaybookError');
    return (error as { problems: { path: string; message: string }[] }).problems;
  }
  return [];
}

/** A leading "-" only reaches the start of values that the field does not prefix. */
const reachesStart = (field: string) => !['package version', 'config path', 'label key', 'image', 'overhead quantity', 'node address', 'kubeconfig path'].includes(field);

describe.each([
  ...playbookFields.map((entry) => ({ ...entry, parse: parsePlaybook })),
  ...inventoryFields.map((entry) => ({ ...entry, parse: parseInventory })),
])('the $field', ({ field, path, text, parse, safe: safeValue }) => {
  it('accepts a safe value in the same place', () => {
    const safe = safeValue ?? 'safe';
    const at = typeof path === 'string' ? path : path(safe);
    expect(problems(parse, text(safe)).filter((problem) => problem.path === at)).toEqual([]);
  });

  it.each(attacks.filter((attack) => reachesStart(field) || !attack.value.startsWith('-')))('refuses $form', ({ value, reason }) => {
    const found = problems(parse, text(value));
    expect(found).toHaveLength(1);
    expect(found[0].path).toBe(typeof path === 'string' ? path : path(value));
    expect(found[0].message).toContain(reason);
  });
});

describe('refusal messages', () => {
  it('show the value, the reason and what is allowed', () => {
    const [problem] = problems(parsePlaybook, playbookFields[1].text('curl; rm -rf /'));
    expect(problem.message).toBe(
      '"curl; rm -rf /" is refused: it contains ";", which a shell would interpret; a package name holds only letters, digits and "+", ".", "_", "-", and starts with a letter or digit',
    );
  });

  it('accept real package versions', () => {
    for (const version of ['3.2.0', '1:2.1-3', '3.2.0~rc1', '2.6.1-1.el9', '20240212.0']) {
      expect(problems(parsePlaybook, playbookWith(`kind = "package-install"\npackages = [{ name = "kata-containers", version = "${version}" }]`))).toEqual([]);
    }
  });

  it('accept real label keys and values', () => {
    expect(problems(parsePlaybook, playbookWith('kind = "node-label"\nlabels = { "katacontainers.io/kata-runtime" = "true", zone = "", "node.kubernetes.io/instance-type" = "m5.large" }'))).toEqual([]);
  });
});
