// Host paths and services allowlisted by kind (review finding H2, playbook part): the schema refuses them with the
// field and what is allowed, and the activities refuse the same input again when it arrives without the schema.
import { parsePlaybook } from '../../playbooks/load';
import { checkStep, checkUndo, StepRefused } from '../../activities/step-policy';
import { createDriftActivities } from '../../activities/drift-check';
import { createNodeActivities } from '../../activities/node-activities';
import { SshPool } from '../../activities/ssh';
import type { NodeTarget, Undo } from '../../activities/node-types';
import type { Step } from '../../playbooks/schema';

const playbookWith = (step: string) => `[playbook]\nname = "demo"\n\n[[steps]]\nid = "s"\n${step}\n`;
const runtimeWith = (options: string) => playbookWith(`kind = "containerd-patch"\n\n[[steps.runtimes]]\nname = "kata"\nruntime_type = "io.containerd.kata.v2"\noptions = { ${options} }`);

function problemLines(text: string): string[] {
  try {
    parsePlaybook(text, 'p.toml');
  } catch (error) {
    return (error as Error).message.split('\n');
  }
  return [];
}

const node: NodeTarget = {
  name: 'worker-1', address: '127.0.1.1', port: 22, maxSessions: 4, connectTimeoutMs: 1000,
  credentials: { profile: 'sim', file: '/etc/katafleet/credentials.toml' },
};

function refusal(run: () => unknown): { type?: string; nonRetryable?: boolean; message: string } {
  try {
    run();
  } catch (err) {
    return err as { type?: string; nonRetryable?: boolean; message: string };
  }
  throw new Error('expected a refusal');
}

describe('node paths, services and runtime options in a playbook', () => {
  it.each([
    ['modules_load_file', 'kind = "prereq-check"\nmodules_load_file = "/etc/shadow"', 'steps[0].modules_load_file: "/etc/shadow" is refused: it is not under "/etc/modules-load.d/"'],
    ['modules_load_file suffix', 'kind = "prereq-check"\nmodules_load_file = "/etc/modules-load.d/x.sh"', 'steps[0].modules_load_file: "/etc/modules-load.d/x.sh" is refused: it does not end ".conf"'],
    ['config_path', 'kind = "containerd-patch"\nconfig_path = "/etc/shadow"\n[[steps.runtimes]]\nname = "k"\nruntime_type = "io.containerd.kata.v2"', 'steps[0].config_path: "/etc/shadow" is refused: it is not under "/etc/containerd/"'],
    ['drop_in_path', 'kind = "containerd-patch"\ndrop_in_path = "/etc/containerd/conf.d/../../cron.d/x.toml"\n[[steps.runtimes]]\nname = "k"\nruntime_type = "io.containerd.kata.v2"', 'steps[0].drop_in_path: "/etc/containerd/conf.d/../../cron.d/x.toml" is refused: it contains a ".." segment'],
    ['rollback config_path', 'kind = "rollback"\nconfig_path = "/root/.ssh/authorized_keys"', 'steps[0].config_path: "/root/.ssh/authorized_keys" is refused: it is not under "/etc/containerd/"'],
    ['service', 'kind = "service-restart"\nservice = "reboot.target"', 'steps[0].service: "reboot.target" is refused: it is not a service katafleet restarts; a service is one of "containerd", "kubelet", "crio"'],
  ])('refuses a hostile %s, naming the file, the field and what is allowed', (_field, step, expected) => {
    const lines = problemLines(playbookWith(step));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`p.toml: ${expected}`);
  });

  it.each([
    ['BinaryName = "/tmp/x"', 'steps[0].runtimes[0].options.BinaryName: "/tmp/x" is refused: it is not under "/opt/kata/" or "/usr/bin/" or "/usr/local/bin/"'],
    ['ConfigPath = "/dev/shm/anything"', 'steps[0].runtimes[0].options.ConfigPath: "/dev/shm/anything" is refused: it is not under'],
    ['BinaryName = "/opt/kata/../../tmp/x"', 'steps[0].runtimes[0].options.BinaryName: "/opt/kata/../../tmp/x" is refused: it contains a ".." segment'],
    ['Root = "/etc"', 'steps[0].runtimes[0].options.Root: "/etc" is refused: it is not under "/run/" or "/var/lib/"'],
    ['SystemdCgroup = "true"', 'steps[0].runtimes[0].options.SystemdCgroup: expected true or false, got "true"'],
    ['Shell = "/bin/sh"', 'steps[0].runtimes[0].options.Shell: unknown option "Shell": katafleet sets only BinaryName, ConfigPath'],
  ])('refuses the runtime option %s', (options, expected) => {
    const lines = problemLines(runtimeWith(options));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`p.toml: ${expected}`);
  });

  it('accepts the options kata-deploy and the runc and runsc shims write', () => {
    expect(problemLines(runtimeWith([
      'ConfigPath = "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml"',
      'BinaryName = "/usr/local/bin/runc"', 'SystemdCgroup = true', 'Root = "/run/containerd/runc"', 'NoPivotRoot = false',
      'IoUid = 0', 'IoGid = 0', 'TypeUrl = "io.containerd.runsc.v1.options"',
    ].join(', ')))).toEqual([]);
    expect(problemLines(runtimeWith('BinaryName = "runc"'))).toEqual([]);
    expect(problemLines(runtimeWith('ConfigPath = "/etc/kata-containers/configuration.toml"'))).toEqual([]);
    expect(problemLines(playbookWith('kind = "containerd-patch"\nmode = "drop-in"\ndrop_in_path = "/etc/containerd/conf.d/kata.toml"\n[[steps.runtimes]]\nname = "k"\nruntime_type = "io.containerd.kata.v2"'))).toEqual([]);
    expect(problemLines(playbookWith('kind = "service-restart"\nservice = "crio"'))).toEqual([]);
  });
});

describe('the activities check their input again (a workflow started straight on Temporal)', () => {
  const patchStep = (options: Record<string, string>) => ({
    id: 'containerd', kind: 'containerd-patch', timeout: '2m', action: 'add', config_path: '/etc/containerd/config.toml', mode: 'in-place',
    drop_in_path: '/etc/containerd/conf.d/katafleet.toml', replace: false, runtimes: [{ name: 'kata', runtime_type: 'io.containerd.kata.v2', options }],
  }) as unknown as Step;

  it('refuses a hostile step non-retryably as StepRefused, naming the step, the node, the field and the rule', () => {
    const err = refusal(() => checkStep(patchStep({ BinaryName: '/tmp/x' }), node));
    expect(err.type).toBe(StepRefused);
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toContain('Refusing step "containerd" ("containerd-patch") on node "worker-1": runtimes[0].options.BinaryName: "/tmp/x" is refused: it is not under "/opt/kata/"');
    expect(err.message).toContain('Nothing was sent to the node');
  });

  it('refuses the review\'s M2 input: modules_load_file "../../etc/shadow"', () => {
    const step = { id: 'p', kind: 'prereq-check', timeout: '2m', cpu_flags: [], require_kvm: false, modules: ['kvm'], modules_any_of: [], persist_modules: true, modules_load_file: '../../etc/shadow', run_kata_check: false };
    expect(refusal(() => checkStep(step as unknown as Step, node)).message).toContain('modules_load_file: "../../etc/shadow" is not allowed');
  });

  it('returns a valid step with its defaults', () => {
    expect(checkStep({ id: 'restart', kind: 'service-restart' } as unknown as Step, node)).toMatchObject({ service: 'containerd', timeout: '5m' });
  });

  it.each([
    [{ kind: 'restore-file', stepId: 'p', path: '/etc/shadow' }, 'undo.path: "/etc/shadow" is refused'],
    [{ kind: 'restore-file', stepId: 'p', path: '/etc/modules-load.d/katafleet.conf', backupPath: '/tmp/evil' }, 'undo.backupPath: "/tmp/evil" is not a katafleet backup'],
    [{ kind: 'restore-file', stepId: 'p', path: '/etc/modules-load.d/katafleet.conf', previous: 'root::0:0::/:/bin/sh' }, 'undo.previous: unknown key'],
    [{ kind: 'restore-containerd-config', stepId: 'c', configPath: '/etc/containerd/config.toml', service: 'reboot.target' }, 'undo.service: "reboot.target" is refused'],
    [{ kind: 'restore-containerd-config', stepId: 'c', configPath: '/etc/containerd/config.toml', backupPath: '/etc/shadow', service: 'containerd' }, 'undo.backupPath: "/etc/shadow" is not a katafleet backup'],
    [{ kind: 'remove-packages', stepId: 'i', packages: ['x; reboot'], manager: 'apt' }, 'undo.packages[0]: "x; reboot" is refused'],
  ])('refuses the hostile undo %j', (undo, expected) => {
    const err = refusal(() => checkUndo(undo as unknown as Undo, node));
    expect(err.type).toBe(StepRefused);
    expect(err.message).toContain(expected);
  });

  it('accepts the undo records the steps make', () => {
    const undo = { kind: 'restore-containerd-config', stepId: 'c', configPath: '/etc/containerd/config.toml', backupPath: '/etc/containerd/config.toml.katafleet-0f1e2d3c-4b5.bak', sha256: 'a'.repeat(64), service: 'containerd' } as Undo;
    expect(checkUndo(undo, node)).toEqual(undo);
  });
});

describe('the activity entry points', () => {
  // A node nobody listens on: a refusal must come before any connection, or these would fail with SshConnectFailed.
  const nowhere: NodeTarget = { ...node, address: '127.255.255.254', connectTimeoutMs: 500 };
  const pool = new SshPool({ connectTimeoutMs: 500 });
  afterAll(() => pool.closeAll());

  it('containerdPatch refuses a hostile step with StepRefused before connecting', async () => {
    const step = { id: 'c', kind: 'containerd-patch', timeout: '2m', action: 'add', config_path: '/etc/shadow', mode: 'in-place', drop_in_path: '/etc/containerd/conf.d/k.toml', replace: false, runtimes: [{ name: 'kata', runtime_type: 'io.containerd.kata.v2' }] };
    const failure = await createNodeActivities({ pool }).containerdPatch({ runId: 'r', rolloutId: 'r', node: nowhere, step: step as never, drain: false })
      .then(() => undefined, (err: { type?: string; message: string }) => err);
    expect(failure?.type).toBe(StepRefused);
    expect(failure?.message).toContain('config_path: "/etc/shadow" is refused');
  });

  it('a step activity refuses a step of another kind', async () => {
    const failure = await createNodeActivities({ pool }).prereqCheck({ runId: 'r', rolloutId: 'r', node: nowhere, step: { id: 'restart', kind: 'service-restart' } as never, drain: false })
      .then(() => undefined, (err: { type?: string; message: string }) => err);
    expect(failure?.type).toBe(StepRefused);
    expect(failure?.message).toContain('kind: must be "prereq-check"');
  });

  it('undoStep refuses a hostile undo record before connecting', async () => {
    const failure = await createNodeActivities({ pool }).undoStep({ node: nowhere, undo: { kind: 'restore-file', stepId: 'p', path: '/etc/passwd' } })
      .then(() => undefined, (err: { type?: string; message: string }) => err);
    expect(failure?.type).toBe(StepRefused);
  });

  it('the drift check re-validates the steps it reads', async () => {
    const failure = await createDriftActivities({ pool }).checkDrift({ node: nowhere, steps: [{ id: 'restart', kind: 'service-restart', service: 'reboot.target' } as never] })
      .then(() => undefined, (err: { type?: string; message: string }) => err);
    expect(failure?.type).toBe(StepRefused);
    expect(failure?.message).toContain('service: "reboot.target" is refused');
  });
});

