import { readFile } from 'node:fs/promises';
import { patchContainerdConfig, unifiedDiff } from '../activities/containerd-config';
import { loadPlaybook } from '../playbooks/load';
import type { Playbook } from '../playbooks/schema';
import { parseCommandArgs, requireOption, UsageError, type Command } from './command';

export const patchConfigCommand: Command = {
  name: 'patch-config',
  summary: "print a containerd config with the playbook's runtimes added (or a diff), offline",
  usage: `Usage: katafleet patch-config CONFIG --playbook PLAYBOOK [--diff]

  CONFIG             a containerd config.toml (/dev/null shows what a node without a config gets)
  --playbook FILE    the playbook whose containerd-patch step says what to add
  --diff             print a unified diff instead of the whole patched file

Exit status: 0 patched or already patched (then the output equals the input, or the diff is empty),
2 when the config must not be patched (the reason says why and what to do).`,
  async run(args) {
    const { values, positionals } = parseCommandArgs(this, args, { playbook: { type: 'string', short: 'p' }, diff: { type: 'boolean' } }, { min: 1, max: 1 });
    const playbook = await loadPlaybook(requireOption(this, values.playbook, '--playbook PLAYBOOK'));
    const step = containerdPatchStep(playbook);
    const configFile = positionals[0];
    const original = await readConfig(configFile);
    const outcome = patchContainerdConfig(original, step.runtimes, { replace: step.replace, mode: step.mode });
    if (values.diff) {
      process.stdout.write(outcome.status === 'unchanged' ? '' : unifiedDiff(original, outcome.content, configFile, `${configFile} (patched)`));
    } else {
      process.stdout.write(outcome.content);
    }
    process.stderr.write(outcome.status === 'unchanged' ? `${configFile}: already has ${step.runtimes.map((r) => r.name).join(', ')}; nothing to change\n` : `${configFile}: adds ${outcome.added.join(', ')}\n`);
    return 0;
  },
};

function containerdPatchStep(playbook: Playbook) {
  const step = playbook.steps.find((candidate) => candidate.kind === 'containerd-patch');
  if (!step || step.kind !== 'containerd-patch') {
    throw new UsageError(`${playbook.source.file}: has no containerd-patch step, so there is nothing to add to a containerd config`);
  }
  return step;
}

async function readConfig(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new UsageError(`${file}: no such file — pass an existing containerd config (or /dev/null for a node without one)`);
    }
    throw err;
  }
}
