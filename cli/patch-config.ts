import { readFile } from 'node:fs/promises';
import { patchContainerdConfig, removeRuntimes, unifiedDiff } from '../activities/containerd-config';
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
    const names = step.runtimes.map((runtime) => runtime.name);
    const outcome =
      step.action === 'remove'
        ? removeRuntimes(original, names, { file: configFile })
        : patchContainerdConfig(original, step.runtimes, { replace: step.replace, mode: step.mode, dropInPath: step.drop_in_path, file: configFile });
    if (values.diff) {
      process.stdout.write(outcome.status === 'unchanged' ? '' : unifiedDiff(original, outcome.content, configFile, `${configFile} (patched)`));
    } else {
      process.stdout.write(outcome.content);
    }
    if (outcome.dropIn) process.stdout.write(`\n# ---- drop-in file ${outcome.dropIn.path} ----\n${outcome.dropIn.content}`);
    const verb = step.action === 'remove' ? 'removes' : 'adds';
    const changed = outcome.status === 'patched' ? [...outcome.added, ...outcome.replaced, ...(outcome.removed ?? [])] : [];
    process.stderr.write(outcome.status === 'unchanged' ? `${configFile}: nothing to change (${names.join(', ')} already ${step.action === 'remove' ? 'absent' : 'present'})\n` : `${configFile}: ${verb} ${changed.join(', ')}\n`);
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
