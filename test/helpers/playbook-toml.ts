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
