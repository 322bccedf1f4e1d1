import { describeRelease, NodeServiceError, releaseNode } from '../api/node-routes';
import { loadInventory } from '../playbooks/load';
import { withTemporalClient } from '../worker/connection';
import { parseCommandArgs, requireOption, UsageError, type Command } from './command';

export const nodeCommand: Command = {
  name: 'node',
  summary: 'act on one node: release it from quarantine',
  usage: `Usage:
  katafleet node release NODE --inventory FILE     lift NODE's quarantine

A node is quarantined (phase needs-attention) when katafleet could not take back what a run changed on it, or
found it in an unknown state; every rollout and drift repair refuses it until it is released. Fix the node by
hand first, as the quarantine's message says, then release it: this removes /var/lib/katafleet/quarantine.json
and sets aside the journals left on the node. It runs under the node's lock, so not while a run works on it.`,
  async run(args) {
    const [sub, ...rest] = args;
    if (sub !== 'release') throw new UsageError(sub ? `katafleet node: unknown sub-command "${sub}"` : 'katafleet node: which sub-command?', this.usage);
    const { values, positionals } = parseCommandArgs(this, rest, { inventory: { type: 'string', short: 'i' } }, { min: 1, max: 1 });
    const inventory = await loadInventory(requireOption(this, values.inventory, '--inventory FILE'));
    if (!inventory.nodes.some((node) => node.name === positionals[0])) {
      throw new UsageError(`${inventory.source.file}: no node "${positionals[0]}" in the inventory (nodes: ${inventory.nodes.map((n) => n.name).join(', ')}); name a node of the inventory`);
    }
    try {
      const result = await withTemporalClient((client) => releaseNode(client, inventory, positionals[0]));
      process.stdout.write(`${describeRelease(result)}\n`);
      return 0;
    } catch (err) {
      if (err instanceof NodeServiceError) {
        process.stderr.write(`${err.message}\n`);
        return 1;
      }
      throw err;
    }
  },
};
