// Every sentence of README.md's "Running on a Temporal cluster", and the tests that prove it through the public CLI
// (test/cluster-two-workers.test.ts runs the cluster; this file checks that the table is complete and proves the
// search-attribute commands, which need no server).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { allSearchAttributes } from '../workflows/search-attributes';
import { runKatafleet } from './helpers/cli';
import { fold, missingProofTests, unprovenSentences, type Proof } from './helpers/proof-table';

const twoWorkers = 'a worker SIGKILLed while it runs an activity: the rollout completes on the other, each node patched exactly once';
const upPrints = 'up prints TEMPORAL_ADDRESS, and the cluster has katafleet\'s search attributes on its SQL visibility store';

export const proofs: Proof[] = [
  { sentence: 'Fleets beyond one machine run on a Temporal cluster with several `katafleet worker` processes', tests: { 'cluster-two-workers.test.ts': [twoWorkers] } },
  { sentence: 'To try that on one machine, `npx katafleet cluster up` starts a local one', tests: { 'cluster-two-workers.test.ts': [upPrints, twoWorkers] } },
  { sentence: 'It prints `TEMPORAL_ADDRESS=...` for workers and the CLI', tests: { 'cluster-two-workers.test.ts': [upPrints] } },
  { sentence: '`npx katafleet cluster status` says what runs', tests: { 'cluster-two-workers.test.ts': [upPrints, 'down stops the server and PostgreSQL and leaves no process'] } },
  { sentence: '`npx katafleet cluster down` stops it and leaves no process', tests: { 'cluster-two-workers.test.ts': ['down stops the server and PostgreSQL and leaves no process'] } },
  {
    sentence: 'Bad flags exit 2 with the flag and the fix, and start nothing',
    tests: { 'cluster-two-workers.test.ts': ['refuses bad input with exit 2, naming the flag and the fix, and starts nothing', 'refuses a frontend port that is taken, naming it and the fix'] },
  },
  { sentence: 'A worker killed mid-rollout loses nothing', tests: { 'cluster-two-workers.test.ts': [twoWorkers] } },
  { sentence: '**Sizing.**', tests: { 'cluster-two-workers.test.ts': [twoWorkers] } },
  { sentence: 'A cluster of', tests: { 'cluster-two-workers.test.ts': [twoWorkers] } },
  { sentence: 'Plan one worker', tests: { 'cluster-two-workers.test.ts': [twoWorkers] } },
  { sentence: 'Each worker starts with `MALLOC_ARENA_MAX=2`', tests: { 'worker-launcher.test.ts': ['starts with MALLOC_ARENA_MAX=2 and --max-semi-space-size=2 from a clean environment, and says so on its first line', 'keeps a user\'s own MALLOC_ARENA_MAX=4 and NODE_OPTIONS semi-space, and warns that they are not katafleet\'s', 'sets neither with KATAFLEET_MEMORY_DEFAULTS=0, nor when node is started on bin/katafleet.js directly, and warns'] } },
  { sentence: 'A value in the worker\'s environment is kept, `KATAFLEET_MEMORY_DEFAULTS=0` sets neither', tests: { 'worker-launcher.test.ts': ['starts with MALLOC_ARENA_MAX=2 and --max-semi-space-size=2 from a clean environment, and says so on its first line', 'keeps a user\'s own MALLOC_ARENA_MAX=4 and NODE_OPTIONS semi-space, and warns that they are not katafleet\'s', 'sets neither with KATAFLEET_MEMORY_DEFAULTS=0, nor when node is started on bin/katafleet.js directly, and warns'] } },
  { sentence: 'Each worker also lets V8\'s old generation grow at most 30 %', tests: { 'scale-worker-memory.test.ts': ['is 30 % by default; V8\'s own factor lets the same garbage grow the old space more than twice as far'], 'worker-launcher.test.ts': ['starts with MALLOC_ARENA_MAX=2 and --max-semi-space-size=2 from a clean environment, and says so on its first line', 'says V8\'s own old-generation growth with KATAFLEET_HEAP_GROWING_PERCENT=0', 'refuses an invalid KATAFLEET_WORKFLOW_SEMI_SPACE_MB, KATAFLEET_HEAP_GROWING_PERCENT or KATAFLEET_MEMORY_DEFAULTS with exit 2, naming it and the fix, before it connects'] } },
  {
    sentence: '**A production cluster**',
    tests: { 'cluster-readme.test.ts': ['server --print-attributes prints one create command per katafleet search attribute, for TEMPORAL_NAMESPACE'], 'cluster-two-workers.test.ts': [upPrints] },
  },
  { sentence: 'has the details', tests: { 'cluster-readme.test.ts': ['has a proving test named for every sentence'] } },
  { sentence: '**Limits.**', tests: { 'cluster-two-workers.test.ts': [upPrints] } },
];

/** The prose sentences of the README's "Running on a Temporal cluster" section (code blocks and table rows left out). */
function sectionSentences(): string[] {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
  const start = readme.indexOf('## Running on a Temporal cluster');
  if (start < 0) throw new Error('README.md has no section "## Running on a Temporal cluster"');
  const end = readme.indexOf('\n## ', start + 1);
  const prose = readme.slice(start, end).split('\n').slice(1).join('\n').replace(/```[\s\S]*?```/g, '').split('\n').filter((line) => !line.startsWith('|')).join('\n');
  return prose.split(/\n\s*\n/).map(fold).flatMap((paragraph) => paragraph.split(/(?<=\.)(?<!e\.g\.)\s+(?=[A-Z`*[])/)).filter(Boolean);
}

describe('README "Running on a Temporal cluster"', () => {
  it('has a proving test named for every sentence', () => {
    expect(unprovenSentences(sectionSentences(), proofs)).toEqual([]);
  });

  it('names only tests that exist, in the files named', () => {
    expect(missingProofTests(proofs)).toEqual([]);
  });

  it('server --print-attributes prints one create command per katafleet search attribute, for TEMPORAL_NAMESPACE', async () => {
    const result = await runKatafleet('127.0.0.1:1', ['server', '--print-attributes']);
    expect(result.code).toBe(0);
    expect(result.stdout.trim().split('\n')).toEqual(
      allSearchAttributes.map((key) => expect.stringMatching(new RegExp(`^temporal operator search-attribute create --namespace default --name ${key.name} --type (Keyword|Int|KeywordList)$`))),
    );
  });
});
