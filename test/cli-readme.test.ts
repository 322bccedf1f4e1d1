// Every sentence of README.md's "The command line" and "Playbooks and inventories", and the tests that prove it
// through the public CLI (they run in their own files; this file checks that the tables are complete and that every
// named test exists).
import { fold, missingProofTests, readmeSentences, unprovenSentences, type Proof } from './helpers/proof-table';

const quiet = 'prints the failed node as one line with its step and reason, no stack; the worker log has JSON lines';
const seed = 'kata follows the seed procedure, in order';

export const proofs: Proof[] = [
  // "The command line"
  {
    sentence: '`katafleet up` stops the API, the worker and the dev server it started on Ctrl-C or SIGTERM within 10 s',
    tests: { 'shutdown.test.ts': ['stops API, worker and its dev server on one %s, and leaves no process', 'stops at once when signalled twice quickly, and leaves no process'] },
  },
  { sentence: 'A dev server started on its own with `katafleet server` keeps running until `katafleet server stop`', tests: { 'shutdown.test.ts': ['stops a dev server started by `katafleet server` in another terminal'] } },
  { sentence: 'The terminal stays readable', tests: { 'quiet-terminal.test.ts': [quiet] } },
  { sentence: 'The worker writes one JSON line per event', tests: { 'quiet-terminal.test.ts': [quiet, 'writes only lines at or above its level', 'refuses --log-level %p naming the accepted values'] } },
  { sentence: 'A failure a step expects (a typed failure', tests: { 'quiet-terminal.test.ts': ['writes a transient failure that a retry may fix as one info line with its type and first line, no stack', 'keeps the stack of an unexpected error (a bug), at its level'] } },
  { sentence: 'Errors name the file, the place and the fix, and exit with status 2 without starting anything', tests: { 'cli.test.ts': ['reports a step-kind typo, a missing field and a bad TOML line together, with file, place and fix, exit 2'] } },
  {
    sentence: '`patch-config` prints the patched containerd config',
    tests: { 'cli.test.ts': ['prints the patched config, and with the result as input changes nothing (exit 0)', 'prints a unified diff with --diff', 'refuses a config with the CRI plugin disabled, with the reason and exit 2'] },
  },
  // "Playbooks and inventories"
  { sentence: 'Shipped playbooks: `playbooks/kata.toml`', tests: { 'playbook-shipped.test.ts': ['are kata, kata-uninstall and gvisor', seed] } },
  { sentence: 'A bare name (`kata`) refers to them.', tests: { 'playbook-shipped.test.ts': ['reads a bare name as a shipped playbook and anything else as a path'] } },
  { sentence: 'The reference for every key is in [playbooks/README.md]', tests: { 'playbook-shipped.test.ts': ['%s validates on its own and against the example inventory'] } },
  {
    sentence: '`kata.toml` installs Kata the way upstream ships it, from its static release tarball',
    tests: { 'release-tarball-shipped.test.ts': ['installs Kata 3.32.0 from the github.com URL through the mirror, checked against the pinned sha256'], 'playbook-shipped.test.ts': [seed] },
  },
  {
    sentence: 'No Debian or Ubuntu archive carries a Kata package; `package-repo` adds a signed repository of your own',
    tests: { 'package-repo.test.ts': ['refuses a key whose fingerprint is not the pinned one before anything is written (PackageRepoKeyMismatch)', 'adds the repository with a signed-by= keyring, installs the pinned package from it, and records one undo; drift-free'] },
  },
  { sentence: 'The sha256 that `kata.toml` pins is that of the simulated fleet\'s tarball', tests: { 'playbook-shipped.test.ts': ['kata pins the sha256 of the tarball the simulated mirror serves (built reproducibly: the same bytes on every build)'] } },
];

/** Sentences that promise no behaviour. */
export const unproven: { sentence: string; why: string }[] = [
  { sentence: '**Verified on real machines: nothing yet**', why: 'says what has not been verified' },
  { sentence: 'How katafleet edits containerd\'s config (every config version, drop-ins, refusals) is in [activities/CONTAINERD.md](activities/CONTAINERD.md).', why: 'a pointer to another document' },
  { sentence: 'What it runs as root on a node, and the sudoers file a non-root login user needs, is in [docs/node-privileges.md](docs/node-privileges.md).', why: 'a pointer to another document' },
];

describe('README "The command line" and "Playbooks and inventories"', () => {
  it('has a proving test named for every sentence, but the ones listed as unproven', () => {
    const sentences = [...readmeSentences('## The command line'), ...readmeSentences('## Playbooks and inventories')];
    const unprovenNow = unprovenSentences(sentences, proofs);
    expect(unprovenNow).toEqual(unprovenNow.filter((sentence) => unproven.some((entry) => sentence.includes(fold(entry.sentence)))));
    expect(unproven.filter((entry) => !unprovenNow.some((sentence) => sentence.includes(fold(entry.sentence))))).toEqual([]);
  });

  it('names only tests that exist, in the files named', () => {
    expect(missingProofTests(proofs)).toEqual([]);
  });
});
