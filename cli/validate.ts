import { checkPlaybookAgainstInventory, loadInventory, loadPlaybook } from '../playbooks/load';
import { parseCommandArgs, type Command } from './command';

export const validateCommand: Command = {
  name: 'validate',
  summary: 'check a playbook (and an inventory) and report every problem at once',
  usage: `Usage: katafleet validate PLAYBOOK [--inventory FILE]

  PLAYBOOK           a file, or the name of a shipped playbook (kata, kata-uninstall, gvisor)
  --inventory FILE   also check the inventory and how it fits the playbook

Exit status: 0 valid, 2 invalid (every problem is listed with file, place and fix).`,
  async run(args) {
    const { values, positionals } = parseCommandArgs(this, args, { inventory: { type: 'string', short: 'i' } }, { min: 1, max: 1 });
    const playbook = await loadPlaybook(positionals[0]);
    let line = `${playbook.source.file}: valid playbook "${playbook.playbook.name}", ${playbook.steps.length} steps`;
    if (values.inventory) {
      const inventory = await loadInventory(values.inventory);
      checkPlaybookAgainstInventory(playbook, inventory);
      line += `; ${inventory.source.file}: valid inventory, ${inventory.nodes.length} nodes`;
    }
    process.stdout.write(`${line}\n`);
    return 0;
  },
};
