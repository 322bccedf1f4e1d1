// Every sentence of README.md's "The HTTP API", and the tests that prove it through the public HTTP API or CLI (they
// run in their own files; this file checks that the table is complete and that every named test exists).
import { fold, missingProofTests, readmeSentences, unprovenSentences, type Proof } from './helpers/proof-table';

const upCreates = 'katafleet up creates .katafleet (mode 700) with a 64-hex-digit api-token (mode 600) and audits to .katafleet/audit.log';
const realStart = 'the same POST with the token does start a rollout (so the refusals above were refusals of a real start)';

export const proofs: Proof[] = [
  { sentence: '`katafleet api` (or `katafleet up`) serves it.', tests: { 'api-transport.test.ts': [upCreates, 'warns loudly when it listens beyond loopback without TLS, and creates .katafleet mode 700'] } },
  { sentence: '**The token is root on the fleet**', tests: { 'api-auth.test.ts': [realStart] } },
  {
    sentence: 'Every request but `/healthz` needs `Authorization: Bearer <token>`',
    tests: { 'api-auth.test.ts': ['never reaches a handler without the token, whatever the spelling (${spellings.length} request targets × GET, HEAD, OPTIONS, POST)', 'answers an unknown route 401 without a token (not 404: which paths exist stays hidden) and 404 with it', 'guards every route: control, schedules and the OpenAPI document need the token'] },
  },
  { sentence: '`/openapi.json` needs the token too, unless `--public-openapi`.', tests: { 'api-auth.test.ts': ['answers /healthz without a token, and /openapi.json only when told to make it public'] } },
  { sentence: 'The token comes from `KATAFLEET_API_TOKEN` or `--token-file`', tests: { 'api-transport.test.ts': ['must have at least 32 characters; the message gives the fix', 'is refused by the CLI when short, or when its file is readable by others or not yours (exit 2)'] } },
  { sentence: 'Without a token the API refuses to start, unless `--insecure-no-auth` on loopback.', tests: { 'api.test.ts': ['refuses to build without a token unless told to run without authentication'], 'api-transport.test.ts': ['is refused by the CLI when short, or when its file is readable by others or not yours (exit 2)'] } },
  { sentence: '`katafleet up` creates `.katafleet/api-token` (mode 600) in `.katafleet` (mode 700).', tests: { 'api-transport.test.ts': [upCreates] } },
  {
    sentence: 'Requests name playbooks and inventories by **name**, never by path',
    tests: { 'api-input.test.ts': ['reads a named playbook from --playbooks-dir and a named inventory from --inventories-dir', 'refuses paths and malformed names with 400 naming the field and the rule', 'the named-file loader refuses paths on its own too (behind the API schema), with the same answer'] },
  },
  {
    sentence: 'Only regular files of at most 1 MiB inside the folder are read',
    tests: { 'api-input.test.ts': ['gives one answer for a missing name, a symlink out of the folder (to a file or to /proc/self/environ) and a dangling one', 'answers a FIFO, a folder and a file over 1 MiB in the folder with 400 at once, and /dev/zero without reading it (timings printed)'] },
  },
  { sentence: 'Or send them inline (`playbook_toml`, `inventory_toml`, at most 1 MiB; bodies are limited to 1 MiB).', tests: { 'api-input.test.ts': ['refuses a body over 1 MiB (413) and starts nothing'], 'api.test.ts': ['answers an invalid playbook with 400 and the same messages as the CLI'] } },
  {
    sentence: 'Inventories sent through the API name nodes and addresses only',
    tests: { 'credentials.test.ts': ['requires a profile, and names the defined ones when the profile is unknown', 'puts the profile name into the workflow input, never a key or known_hosts path'] },
  },
  { sentence: 'An inventory that sets `identity_file`, `known_hosts`, `trust_on_first_use`, `user` or `sudo` gets 400 naming the key.', tests: { 'credentials.test.ts': ['refuses an inventory that sets %s with 400 naming the key and the fix, and starts nothing', 'refuses a node\'s own login keys too'] } },
  {
    sentence: 'A profile logs in only to the node addresses its `hosts` cover',
    tests: {
      'credentials.test.ts': ['refuses, at load, an inventory node whose address its profile does not cover'],
      'security/profile-scope.test.ts': ['nodeWorkflow fails with CredentialProfileRefused, naming the profile, its hosts and the address', 'rolloutWorkflow reports the node failed with the same reason'],
    },
  },
  { sentence: 'Error messages name the file, line, column and key, never a line of the file.', tests: { 'api-input.test.ts': ['never echoes a file line: an env file in the folder gets line:col and the key only'] } },
  { sentence: 'A 500 answers `internal error` with a request id', tests: { 'api-transport.test.ts': ['answers an internal error with a generic 500 and a request id; the detail goes to the log'] } },
  { sentence: 'TLS: `--tls-cert FILE --tls-key FILE` serve HTTPS', tests: { 'api-transport.test.ts': ['serves HTTPS with --tls-cert and --tls-key, without the warning', 'warns loudly when it listens beyond loopback without TLS, and creates .katafleet mode 700'] } },
  { sentence: '`Host` headers other than', tests: { 'api-transport.test.ts': ['answers 127.0.0.1, localhost, [::1] and configured names, with or without a port', 'refuses any other name with 421, before authentication'] } },
  {
    sentence: '`GET /v1/rollouts/{id}` carries the rollout\'s `canary`',
    tests: { 'rollout-outside-cli.test.ts': ['--follow, status and GET /v1/rollouts/{id} label the first wave "canary" only when the rollout has a canary'] },
  },
  { sentence: 'Every state-changing request (and every refused one) appends a JSON line', tests: { 'api-transport.test.ts': ['writes one audit line per state-changing request: time, token id, method, route, rollout, request id, outcome', upCreates] } },
];

/** Sentences that promise no behaviour. */
export const unproven: { sentence: string; why: string }[] = [
  { sentence: 'More in [SECURITY.md](SECURITY.md).', why: 'a pointer to another document' },
];

describe('README "The HTTP API"', () => {
  it('has a proving test named for every sentence, but the ones listed as unproven', () => {
    expect(unprovenSentences(readmeSentences('## The HTTP API'), proofs)).toEqual(unproven.map((entry) => fold(entry.sentence)));
  });

  it('names only tests that exist, in the files named', () => {
    expect(missingProofTests(proofs)).toEqual([]);
  });
});
