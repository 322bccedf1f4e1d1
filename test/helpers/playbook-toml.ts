// Playbook texts the CLI tests write, so that each test states only its steps.

/** A playbook `name` that rolls out one node at a time with no pause, of `steps` (each a TOML `[[steps]]` table). */
export function oneAtATimePlaybook(name: string, ...steps: string[]): string {
  return `
[playbook]
name = "${name}"

[rollout]
canary = 1
wave_size = 1
pause_between_waves = "0s"
${steps.join('')}`;
}

/**
 * kata.toml's containerd and restart steps (no Kubernetes), as `[[steps]]` tables; `annotations` (a TOML array's
 * items) gives the kata runtime `pod_annotations`, which changes the runtime and so the playbook's sha256.
 */
export function containerdRestartSteps(annotations?: string): string {
  return `
[[steps]]
id = "containerd"
kind = "containerd-patch"
config_path = "/etc/containerd/config.toml"

[[steps.runtimes]]
name = "kata"
runtime_type = "io.containerd.kata.v2"
${annotations === undefined ? '' : `pod_annotations = [${annotations}]\n`}
[[steps]]
id = "restart"
kind = "service-restart"
service = "containerd"
wait_for_handlers = ["kata"]
`;
}

/** {@link containerdRestartSteps} in a playbook `name` that rolls out one node at a time. */
export function containerdRestartPlaybook(name: string, annotations = ''): string {
  return oneAtATimePlaybook(name, containerdRestartSteps(annotations));
}
