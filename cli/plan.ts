import { checkPlaybookAgainstInventory, loadInventory, loadPlaybook } from '../playbooks/load';
import type { Inventory, Playbook } from '../playbooks/schema';
import { planWaves } from '../workflows/waves';
import { parseCommandArgs, requireOption, type Command } from './command';

export const planCommand: Command = {
  name: 'plan',
  summary: 'show the waves, nodes and steps a rollout would run, in order (changes nothing)',
  usage: `Usage: katafleet plan PLAYBOOK --inventory FILE

Prints the rollout settings, the waves (canary first) with their nodes, and the steps every node runs.
Nothing is contacted and nothing is started.`,
  async run(args) {
    const { values, positionals } = parseCommandArgs(this, args, { inventory: { type: 'string', short: 'i' } }, { min: 1, max: 1 });
    const playbook = await loadPlaybook(positionals[0]);
    const inventory = await loadInventory(requireOption(this, values.inventory, '--inventory FILE'));
    checkPlaybookAgainstInventory(playbook, inventory);
    process.stdout.write(formatPlan(playbook, inventory));
    return 0;
  },
};

/** The plan as text: pure, so tests and the API can show the same thing. */
export function formatPlan(playbook: Playbook, inventory: Inventory): string {
  const targets = inventory.nodes.filter((node) => node.role !== 'control-plane').map((node) => node.name);
  const waves = planWaves(targets, playbook.rollout);
  const byName = new Map(inventory.nodes.map((node) => [node.name, node]));
  const rollout = playbook.rollout;
  const lines = [
    `Playbook  ${playbook.playbook.name} (${playbook.source.file})`,
    `          ${playbook.playbook.description}`,
    `Inventory ${inventory.source.file}: ${targets.length} nodes`,
    `Rollout   canary ${rollout.canary}, waves of ${rollout.wave_size}, failure budget ${rollout.failure_budget}` +
      `${rollout.pause_between_waves ? `, pause ${rollout.pause_between_waves} between waves` : ''}` +
      `${rollout.approval_after_canary ? ', approval after canary' : ''}${rollout.drain ? ', drain before restart' : ''}`,
    '',
    `Waves (${waves.length})`,
  ];
  waves.forEach((wave, index) => {
    const label = index === 0 && rollout.canary > 0 ? `${index + 1} canary` : `${index + 1}`;
    lines.push(`  ${label.padEnd(9)} ${wave.map((name) => `${name} (${byName.get(name)?.address ?? '?'})`).join(', ')}`);
  });
  lines.push('', `Steps on every node (${playbook.steps.length}), in order`);
  const idWidth = Math.max(...playbook.steps.map((step) => step.id.length));
  playbook.steps.forEach((step, index) => {
    const timing = step.timeout ? `timeout ${step.timeout}` : '';
    lines.push(`  ${String(index + 1).padStart(2)}. ${step.id.padEnd(idWidth)}  ${step.kind.padEnd(17)} ${timing}`.trimEnd());
  });
  return `${lines.join('\n')}\n`;
}
