import { parsePlaybook, PlaybookError } from '../playbooks/load';

/** A small valid playbook; tests replace pieces of it. */
const validPlaybook = `[playbook]
name = "demo"

[rollout]
canary = 1
wave_size = 2

[[steps]]
id = "install"
kind = "package-install"
packages = [{ name = "kata-containers", version = "3.2.0" }]

[[steps]]
id = "containerd"
kind = "containerd-patch"

[[steps.runtimes]]
name = "kata"
runtime_type = "io.containerd.kata.v2"

[[steps]]
id = "runtime-class"
kind = "runtime-class"
name = "kata"
handler = "kata"

[[steps]]
id = "verify"
kind = "verification-pod"
runtime_class = "kata"
`;

/** The error's message lines when parsing `text` fails; fails the test when it parses. */
function problemLines(text: string, file = 'demo.toml'): string[] {
  try {
    parsePlaybook(text, file);
  } catch (error) {
    expect((error as Error).name).toBe('PlaybookError');
    return (error as Error).message.split('\n');
  }
  throw new Error('expected the playbook to be refused');
}

const edit = (from: string, to: string) => {
  expect(validPlaybook).toContain(from);
  return validPlaybook.replace(from, to);
};

describe('a valid playbook', () => {
  it('parses, with defaults filled in and its source recorded', () => {
    const playbook = parsePlaybook(validPlaybook, 'demo.toml');
    expect(playbook.rollout).toEqual({ canary: 1, wave_size: 2, failure_budget: 0, pause_between_waves: '0s', approval_after_canary: false, drain: false, rollback_for: '1h' });
    expect(playbook.steps.map((step) => step.kind)).toEqual(['package-install', 'containerd-patch', 'runtime-class', 'verification-pod']);
    expect(playbook.steps[1]).toMatchObject({ action: 'add', config_path: '/etc/containerd/config.toml', mode: 'in-place', replace: false, timeout: '2m' });
    expect(playbook.steps[2]).toMatchObject({ api_version: 'node.k8s.io/v1', node_selector: {} });
    expect(playbook.source).toEqual({ file: 'demo.toml', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
  });

  it('gets all rollout defaults when [rollout] is left out', () => {
    const playbook = parsePlaybook(edit('[rollout]\ncanary = 1\nwave_size = 2\n', ''), 'demo.toml');
    expect(playbook.rollout).toEqual({ canary: 1, wave_size: '25%', failure_budget: 0, pause_between_waves: '0s', approval_after_canary: false, drain: false, rollback_for: '1h' });
  });
});

describe('TOML syntax errors', () => {
  it('are reported as FILE:LINE:COL with 1-based line and column', () => {
    // Line 6 is `wave_size = 2`; breaking it puts the error at its 13th column.
    expect(problemLines(edit('wave_size = 2', 'wave_size = = 2'))).toEqual([
      'demo.toml:6:13: Unexpected character, expecting string, number, datetime, boolean, inline array or inline table',
    ]);
  });

  it('say how to fix an unquoted word', () => {
    expect(problemLines(edit('handler = "kata"', 'handler = kata'))).toContain(
      'demo.toml:25:11: Unexpected character, expecting string, number, datetime, boolean, inline array or inline table — text needs quotes: put the value of handler in double quotes ("...")',
    );
  });

  it('report a key defined twice', () => {
    expect(problemLines(edit('canary = 1', 'canary = 1\ncanary = 2'))).toEqual(['demo.toml:6:11: Can\'t redefine existing key']);
  });

  it('are reported together with the schema errors of the rest of the file', () => {
    const text = edit('kind = "package-install"', 'kind = "pakage-install"')
      .replace('[[steps.runtimes]]\nname = "kata"\nruntime_type = "io.containerd.kata.v2"\n', '')
      .replace('wave_size = 2', 'wave_size = "25%');
    expect(problemLines(text)).toEqual([
      'demo.toml:6:17: Unterminated string',
      'demo.toml: steps[0].kind: expected one of prereq-check | package-install | package-repo | release-tarball | containerd-patch | service-restart | readiness-gate | node-label | runtime-class | verification-pod | rollback, got "pakage-install" (did you mean "package-install"?)',
      'demo.toml: steps[1].runtimes: required',
    ]);
  });

  it('report every broken line when each can be left out on its own', () => {
    const text = edit('wave_size = 2', 'wave_size = 2%').replace('handler = "kata"', 'handler = "kata');
    expect(problemLines(text)).toEqual([
      'demo.toml:6:14: Unexpected character, expected only whitespace or comments till end of line',
      'demo.toml:25:16: Unterminated string',
    ]);
  });

  it('do not turn a left-out line into a "required" problem', () => {
    // Left out, the first step would also lack an id; that is not reported as a second problem.
    const lines = problemLines(edit('id = "install"', 'id = install-kata'));
    expect(lines).toEqual(['demo.toml:9:8: Unexpected character, expected "inf", "+inf" or "-inf" — text needs quotes: put the value of id in double quotes ("...")']);
  });

  it('still report the same key missing in another step', () => {
    const text = edit('kind = "package-install"', 'kind = package-install').replace('kind = "verification-pod"\n', '');
    expect(problemLines(text)).toEqual([
      'demo.toml:10:8: Unexpected character, expecting string, number, datetime, boolean, inline array or inline table — text needs quotes: put the value of kind in double quotes ("...")',
      'demo.toml: steps[3].kind: required: one of prereq-check | package-install | package-repo | release-tarball | containerd-patch | service-restart | readiness-gate | node-label | runtime-class | verification-pod | rollback',
    ]);
  });

  it('stop at a broken table header instead of guessing', () => {
    expect(problemLines(edit('[[steps]]\nid = "containerd"', '[[steps]\nid = "containerd"'))).toEqual([
      'demo.toml:13:9: Unexpected character, expected whitespace, . or ]',
    ]);
  });

  it('stop when leaving a line out would cut a multi-line value in half', () => {
    const text = edit('packages = [{ name = "kata-containers", version = "3.2.0" }]', 'packages = [\n  { name = "kata-containers", version = 3.2.0 },\n]');
    expect(problemLines(text)).toHaveLength(1);
    expect(problemLines(text)[0]).toMatch(/^demo\.toml:12:44: Invalid character, expected whitespace, comma \(,\) or close bracket \(\]\)$/);
  });
});

describe('schema errors', () => {
  it('name an unknown step kind, list the kinds and suggest the closest', () => {
    expect(problemLines(edit('kind = "verification-pod"', 'kind = "verify-pod"'))).toEqual([
      'demo.toml: steps[3].kind: expected one of prereq-check | package-install | package-repo | release-tarball | containerd-patch | service-restart | readiness-gate | node-label | runtime-class | verification-pod | rollback, got "verify-pod" (did you mean "verification-pod"?)',
    ]);
  });

  it('give no suggestion when no kind is close', () => {
    expect(problemLines(edit('kind = "verification-pod"', 'kind = "reboot-everything"'))[0]).toMatch(/got "reboot-everything"$/);
  });

  it('report a missing kind', () => {
    expect(problemLines(edit('kind = "verification-pod"\n', ''))).toEqual([
      'demo.toml: steps[3].kind: required: one of prereq-check | package-install | package-repo | release-tarball | containerd-patch | service-restart | readiness-gate | node-label | runtime-class | verification-pod | rollback',
    ]);
  });

  it('report missing fields as required', () => {
    expect(problemLines(edit('[playbook]\nname = "demo"\n', '[playbook]\n'))).toEqual(['demo.toml: playbook.name: required']);
    expect(problemLines(edit('runtime_type = "io.containerd.kata.v2"\n', ''))).toEqual(['demo.toml: steps[1].runtimes[0].runtime_type: required']);
  });

  it('report unknown keys with the key that was probably meant', () => {
    expect(problemLines(edit('canary = 1', 'canry = 1'))).toEqual(['demo.toml: rollout.canry: unknown key (did you mean "canary"?)']);
    expect(problemLines(edit('handler = "kata"', 'handler = "kata"\nhandlr = "kata"'))).toEqual(['demo.toml: steps[2].handlr: unknown key (did you mean "handler"?)']);
  });

  it('list the known keys when no key is close', () => {
    expect(problemLines(edit('canary = 1', 'colour = "blue"'))).toEqual([
      'demo.toml: rollout.colour: unknown key (known keys: canary, wave_size, failure_budget, pause_between_waves, approval_after_canary, drain, max_parallel, max_parallel_rollback, rollback_for)',
    ]);
  });

  it('report an unknown top-level table', () => {
    expect(problemLines(`${validPlaybook}\n[rollot]\ncanary = 1\n`)).toEqual(['demo.toml: rollot: unknown key (did you mean "rollout"?)']);
  });

  it('report wrong types with what was found', () => {
    expect(problemLines(edit('canary = 1', 'canary = "one"'))).toEqual(['demo.toml: rollout.canary: expected a number, got "one"']);
    expect(problemLines(edit('canary = 1', 'canary = 1.5'))).toEqual(['demo.toml: rollout.canary: expected a whole number, got 1.5']);
    expect(problemLines(edit('canary = 1', 'canary = -1'))).toEqual(['demo.toml: rollout.canary: must be at least 0, got -1']);
    expect(problemLines(edit('canary = 1', 'drain = "yes"'))).toEqual(['demo.toml: rollout.drain: expected true or false, got "yes"']);
  });

  it('report a value of neither allowed type', () => {
    expect(problemLines(edit('wave_size = 2', 'wave_size = true'))).toEqual(['demo.toml: rollout.wave_size: expected a number or a string, got true']);
  });

  it('report a bad wave size', () => {
    expect(problemLines(edit('wave_size = 2', 'wave_size = "150%"'))).toEqual(['demo.toml: rollout.wave_size: must be a percentage from "1%" to "100%"']);
  });

  it('report a bad choice with the allowed values', () => {
    expect(problemLines(edit('kind = "containerd-patch"', 'kind = "containerd-patch"\nmode = "dropin"'))).toEqual([
      'demo.toml: steps[1].mode: expected one of "in-place" | "drop-in", got "dropin" (did you mean "drop-in"?)',
    ]);
  });

  it('report a bad duration with the expected form', () => {
    expect(problemLines(edit('canary = 1', 'pause_between_waves = "5 minutes"'))).toEqual([
      'demo.toml: rollout.pause_between_waves: must be a duration such as "500ms", "30s", "5m", "1h" or "1m30s"',
    ]);
    expect(problemLines(edit('canary = 1', 'rollback_for = "until it works"'))).toEqual([
      'demo.toml: rollout.rollback_for: must be a duration such as "500ms", "30s", "5m", "1h" or "1m30s"',
    ]);
  });

  it('explain why only node.k8s.io/v1 is accepted for a RuntimeClass', () => {
    expect(problemLines(edit('handler = "kata"', 'handler = "kata"\napi_version = "node.k8s.io/v1beta1"'))).toEqual([
      'demo.toml: steps[2].api_version: must be "node.k8s.io/v1": node.k8s.io/v1beta1 was removed in Kubernetes 1.25 (and v1alpha1 before it); RuntimeClass has been GA as node.k8s.io/v1 since 1.20 — change it or leave it out',
    ]);
  });

  it('report an empty list that needs entries', () => {
    expect(problemLines(edit('packages = [{ name = "kata-containers", version = "3.2.0" }]', 'packages = []'))).toEqual(['demo.toml: steps[0].packages: must not be empty']);
  });

  it('refuses relative and escaping paths on the node', () => {
    expect(problemLines(edit('kind = "containerd-patch"', 'kind = "containerd-patch"\nconfig_path = "etc/containerd/config.toml"'))).toEqual([
      'demo.toml: steps[1].config_path: "etc/containerd/config.toml" is not allowed: a containerd config path is an absolute path under "/etc/containerd/" ending ".toml", of letters, digits and ". _ / -", without ".." segments',
    ]);
    expect(problemLines(edit('kind = "containerd-patch"', 'kind = "containerd-patch"\nconfig_path = "/etc/containerd/../shadow"'))).toEqual([
      'demo.toml: steps[1].config_path: "/etc/containerd/../shadow" is refused: it contains a ".." segment; a containerd config path is an absolute path under "/etc/containerd/" ending ".toml", of letters, digits and ". _ / -", without ".." segments',
    ]);
  });
});

describe('cross-checks', () => {
  it('report a step id used twice', () => {
    expect(problemLines(edit('id = "verify"', 'id = "install"'))).toEqual([
      'demo.toml: steps[3].id: "install" is already the id of steps[0]; step ids must be unique — rename one',
    ]);
  });

  it('report a RuntimeClass handler that no containerd-patch step adds', () => {
    expect(problemLines(edit('handler = "kata"', 'handler = "kata-qemu"'))).toEqual([
      'demo.toml: steps[2].handler: no containerd-patch step adds a runtime "kata-qemu"; handlers added: kata — add it to a containerd-patch step\'s [[steps.runtimes]]',
    ]);
  });

  it('report a verification pod naming an unknown RuntimeClass', () => {
    expect(problemLines(edit('runtime_class = "kata"', 'runtime_class = "kat"'))).toEqual([
      'demo.toml: steps[3].runtime_class: no runtime-class step creates "kat" (did you mean "kata"?) — add a runtime-class step before this one, or name one that exists',
    ]);
  });

  it('report a verification pod that runs before its RuntimeClass exists', () => {
    const verify = '[[steps]]\nid = "verify"\nkind = "verification-pod"\nruntime_class = "kata"\n';
    const reordered = validPlaybook.replace(verify, '').replace('[[steps]]\nid = "runtime-class"', `${verify}\n[[steps]]\nid = "runtime-class"`);
    expect(problemLines(reordered)).toEqual([
      'demo.toml: steps[2].runtime_class: runtime class "kata" is only created later, by steps[3]; move this verification-pod after it',
    ]);
  });

  it('suggest the handler that was probably meant', () => {
    expect(problemLines(edit('handler = "kata"', 'handler = "kaat"'))[0]).toContain('no containerd-patch step adds a runtime "kaat" (did you mean "kata"?)');
  });

  it('report handlers waited for that no step adds', () => {
    const text = `${validPlaybook}\n[[steps]]\nid = "restart"\nkind = "service-restart"\nwait_for_handlers = ["kata", "runsc"]\n`;
    expect(problemLines(text)).toEqual([
      'demo.toml: steps[4].wait_for_handlers[1]: no containerd-patch step adds a runtime "runsc"; handlers added: kata — add it to a containerd-patch step\'s [[steps.runtimes]]',
    ]);
  });

  it('require a pinned version for installs', () => {
    expect(problemLines(edit('{ name = "kata-containers", version = "3.2.0" }', '{ name = "kata-containers" }'))).toEqual([
      'demo.toml: steps[0].packages[0].version: required when action = "install": pin the exact version, e.g. { name = "kata-containers", version = "3.2.0" }',
    ]);
  });

  it('report all cross-check problems at once', () => {
    const text = edit('id = "verify"', 'id = "install"').replace('handler = "kata"', 'handler = "gvisor"').replace('runtime_class = "kata"', 'runtime_class = "gvisor"');
    expect(problemLines(text)).toHaveLength(3);
  });
});

describe('PlaybookError', () => {
  it('carries every problem as {file, path, message} and joins them into its message', () => {
    let caught: unknown;
    try {
      parsePlaybook(edit('canary = 1', 'canry = 1').replace('kind = "verification-pod"', 'kind = "verify"'), 'x.toml');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(PlaybookError);
    const error = caught as PlaybookError;
    expect(error.name).toBe('PlaybookError');
    expect(error.problems.map(({ file, path }) => `${file} ${path}`)).toEqual(['x.toml rollout.canry', 'x.toml steps[3].kind']);
    expect(error.message).toBe(error.problems.map((problem) => `${problem.file}: ${problem.path}: ${problem.message}`).join('\n'));
  });
});

describe('a misspelt key', () => {
  it('is reported once, not also as the missing key it was meant to be', () => {
    expect(problemLines(edit('runtime_type = "io', 'runtme_type = "io'))).toEqual([
      'demo.toml: steps[1].runtimes[0].runtme_type: unknown key (did you mean "runtime_type"?)',
    ]);
  });
});
