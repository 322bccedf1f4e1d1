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
 * kata.toml's containerd and restart steps (no Kubernetes), one node at a time; `annotations` (a TOML array's items)
 * changes the runtime, and so the playbook's sha256.
 */
export function containerdRestartPlaybook(name: string, annotations = ''): string {
  return oneAtATimePlaybook(name, `
[[steps]]
id = "containerd"
kind = "containerd-patch"
config_path = "/etc/containerd/config.toml"

[[steps.runtimes]]
name = "kata"
runtime_type = "io.containerd.kata.v2"
pod_annotations = [${annotations}]

[[steps]]
id = "restart"
kind = "service-restart"
service = "containerd"
wait_for_handlers = ["kata"]
`);
}
