// Layering (issue 14, "Readable at a glance"): sim/ has no import circle, counting type imports (fleet, inventory and
// node-state share SimNode through sim/sim-node.ts), and playbooks/duration.ts, which playbooks, workflows and
// activities all use, imports nothing. Read with TypeScript's own pre-processor: no module is loaded.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import ts from 'typescript';

const root = resolve(__dirname, '..');

/** The relative imports of a file, resolved to repository paths (`sim/fleet.ts`). */
function localImports(file: string): string[] {
  const { importedFiles } = ts.preProcessFile(readFileSync(join(root, file), 'utf8'), true, true);
  return importedFiles
    .map((imported) => imported.fileName)
    .filter((name) => name.startsWith('.'))
    .map((name) => join(dirname(file), `${name}.ts`));
}

/** Every import circle among `files`, each as the path that closes it. */
function circles(files: string[], importsOf: (file: string) => string[] = localImports): string[][] {
  const found: string[][] = [];
  const done = new Set<string>();
  const visit = (file: string, path: string[]) => {
    const at = path.indexOf(file);
    if (at >= 0) return void found.push([...path.slice(at), file]);
    if (done.has(file)) return;
    for (const next of importsOf(file).filter((f) => files.includes(f))) visit(next, [...path, file]);
    done.add(file);
  };
  for (const file of files) visit(file, []);
  return found;
}

it('sim/ has no import circle, type imports included', () => {
  const files = readdirSync(join(root, 'sim')).filter((name) => name.endsWith('.ts')).map((name) => join('sim', name));
  expect(files).toContain(join('sim', 'fleet.ts'));
  expect(circles(files)).toEqual([]);
});

it('finds a circle when there is one (the check is not vacuous)', () => {
  const graph: Record<string, string[]> = { 'fleet.ts': ['inventory.ts', 'sim-node.ts'], 'inventory.ts': ['node-state.ts'], 'node-state.ts': ['fleet.ts'], 'sim-node.ts': [] };
  expect(circles(Object.keys(graph), (file) => graph[file])).toEqual([['fleet.ts', 'inventory.ts', 'node-state.ts', 'fleet.ts']]);
  expect(localImports(join('sim', 'inventory.ts'))).toContain(join('sim', 'sim-node.ts'));
});

it('playbooks/duration.ts, below playbooks, workflows and activities, imports nothing', () => {
  expect(localImports(join('playbooks', 'duration.ts'))).toEqual([]);
  expect(ts.preProcessFile(readFileSync(join(root, 'playbooks', 'duration.ts'), 'utf8'), true, true).importedFiles).toEqual([]);
});
