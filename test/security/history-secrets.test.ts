// The proof for history hygiene (review finding M1): a full rollout through the public CLI
// (`katafleet rollout … --follow`) with a failure and a rollback on nodes whose files hold planted secrets, then every
// workflow history (`temporal workflow show --output json`, the installed CLI), the worker's log and the CLI's own
// output are searched: 0 occurrences of the fleet's SSH private key, or of any planted string.
//
// Planted on s-1: a modules-load file with a secret comment line (prereq-check backs it up and its undo restores
// it), a containerd config with a registry password (containerd-patch backs it up, the undo restores it), and a
// `kata-runtime` that fails with the secret at the start of its output, followed by more than 4 KiB (the failure
// keeps the last 4 KiB). On s-2: a containerd config that is not valid TOML, the secret on the offending line.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { startFleet, type Fleet } from '../../sim/fleet';
import { startDevServer, type RunningDevServer } from '../../worker/dev-server';
import { temporalCliPath } from '../../worker/temporal-cli';
import { startWorkerProcess, type WorkerProcess } from '../helpers/worker-process';
import { onNode } from '../rollout-helpers';
import { freeLoopbackPort } from '../../sim/addresses';

const run = promisify(execFile);
const repoRoot = join(__dirname, '..', '..');

const secrets = {
  modulesComment: 'PLANTED-modules-comment-7d1f0c',
  registryPassword: 'PLANTED-registry-password-93be44',
  commandOutput: 'PLANTED-command-output-5aa2e1',
  invalidToml: 'PLANTED-invalid-toml-c0ffee',
};

const modulesFile = '/etc/modules-load.d/katafleet.conf';
const config = '/etc/containerd/config.toml';

const playbook = `[playbook]
name = "secrets"

[rollout]
canary = 0
wave_size = "100%"
failure_budget = 2

[[steps]]
id = "prereq"
kind = "prereq-check"
cpu_flags = []
require_kvm = false
modules = ["vhost_net"]

[[steps]]
id = "containerd"
kind = "containerd-patch"

[[steps.runtimes]]
name = "kata"
runtime_type = "io.containerd.kata.v2"

[[steps]]
id = "kata-check"
kind = "prereq-check"
cpu_flags = []
require_kvm = false
persist_modules = false
run_kata_check = true
retry = { max_attempts = 1 }
`;

let dir: string;
let fleet: Fleet;
let server: RunningDevServer | undefined;
let worker: WorkerProcess | undefined;
let connection: Connection | undefined;


/** The base64 body of an OpenSSH private key, and each of its lines (any one of them in a history is a leak). */
function keyFragments(pem: string): string[] {
  const lines = pem.split('\n').filter((line) => line !== '' && !line.startsWith('-----'));
  return [lines.join(''), ...lines];
}

/** Every base64 `data` field of the shown histories, decoded. */
function decodedPayloads(json: string): string {
  return [...json.matchAll(/"data":\s*"([A-Za-z0-9+/=]+)"/g)].map((match) => Buffer.from(match[1], 'base64').toString('utf8')).join('\n');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kf-history-secrets-'));
  fleet = await startFleet({ nodes: [{ name: 's-1', containerd: '1.6' }, { name: 's-2', containerd: '1.6' }], dir: join(dir, 'fleet') });
  // s-1: a modules-load file and a valid containerd config holding secrets, and a kata-runtime failing with one.
  await onNode(fleet, 's-1', `printf '# ${secrets.modulesComment}\\nkvm\\n' > ${modulesFile}`);
  await onNode(fleet, 's-1', `printf '\\n[plugins."io.containerd.grpc.v1.cri".registry.configs."registry.example.com".auth]\\n  username = "ci"\\n  password = "${secrets.registryPassword}"\\n' >> ${config}`);
  await onNode(fleet, 's-1', [
    "cat > /usr/local/bin/kata-runtime <<'SCRIPT'",
    '#!/bin/sh',
    `echo "token ${secrets.commandOutput}" >&2`,
    "head -c 9000 /dev/zero | tr '\\0' x >&2",
    'echo >&2',
    'echo "ERROR: check failed" >&2',
    'exit 2',
    'SCRIPT',
    'chmod 755 /usr/local/bin/kata-runtime',
  ].join('\n'));
  // s-2: a config that is not TOML, with the secret on the offending line.
  await onNode(fleet, 's-2', `printf '# ${secrets.modulesComment}-2\\n' > ${modulesFile}`);
  await onNode(fleet, 's-2', `printf 'version = 2\\npassword = ${secrets.invalidToml}\\n' > ${config}`);
  server = await startDevServer({ dbFile: join(dir, 'temporal.db'), port: await freeLoopbackPort(), uiPort: await freeLoopbackPort() });
  worker = await startWorkerProcess(server.address, join(dir, 'worker.log'));
  connection = await Connection.connect({ address: server.address });
}, 240_000);

afterAll(async () => {
  await worker?.stop();
  await connection?.close().catch(() => undefined);
  await server?.stop();
  await fleet?.stop();
});

describe('history hygiene', () => {
  it('a rollout with a failure and a rollback leaves no file content, key or command secret in any history, the worker log or the CLI output', async () => {
    const before = {
      modules: await onNode(fleet, 's-1', `sha256sum ${modulesFile}`),
      config: await onNode(fleet, 's-1', `sha256sum ${config}`),
    };
    const kataCheckOutput = await onNode(fleet, 's-1', 'kata-runtime check 2>&1 || true');
    expect(kataCheckOutput).toContain(secrets.commandOutput);

    const playbookFile = join(dir, 'secrets.toml');
    await writeFile(playbookFile, playbook);
    const env = { ...process.env, TEMPORAL_ADDRESS: server!.address, TEMPORAL_NAMESPACE: 'default' };
    const cli = await run(process.execPath, [join(repoRoot, 'bin', 'katafleet.js'), 'rollout', playbookFile, '--inventory', fleet.inventoryPath, '--follow', '--request-id', 'secrets-1'],
      { cwd: repoRoot, env, maxBuffer: 64 * 1024 * 1024 }).then((out) => ({ ...out, code: 0 }), (err: { stdout: string; stderr: string; code: number }) => err);
    const cliOutput = `${cli.stdout}\n${cli.stderr}`;
    expect(cliOutput).toContain('s-1');
    expect(cliOutput).toContain('failed');

    // Both nodes failed and were rolled back: the planted files are back byte for byte.
    expect(await onNode(fleet, 's-1', `sha256sum ${modulesFile}`)).toBe(before.modules);
    expect(await onNode(fleet, 's-1', `sha256sum ${config}`)).toBe(before.config);
    expect(await onNode(fleet, 's-2', `cat ${modulesFile}`)).toContain(secrets.modulesComment);

    // Every workflow's history, as the installed temporal CLI shows it.
    const client = new Client({ connection: connection!, namespace: 'default' });
    const ids: string[] = [];
    for await (const execution of client.workflow.list()) ids.push(execution.workflowId);
    expect(ids).toEqual(expect.arrayContaining(['katafleet-node-s-1', 'katafleet-node-s-2']));
    const shown = ids.map((id) => execFileSync(temporalCliPath(), ['workflow', 'show', '--address', server!.address, '--workflow-id', id, '--output', 'json'],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })).join('\n');
    // Payloads (inputs, results, failure details, search attributes) are base64 in that JSON: search them decoded too.
    const histories = `${shown}\n${decodedPayloads(shown)}`;
    const workerLog = await readFile(join(dir, 'worker.log'), 'utf8');

    // The failures are there, with what people need: the type, line:col of the TOML error, the output's tail.
    expect(histories).toContain('ContainerdConfigInvalid');
    expect(histories).toMatch(/config\.toml on node s-2:2:\d+: /);
    expect(histories).toContain('CommandFailed');
    expect(histories).toContain('last 4 KiB');
    expect(histories).toContain('ERROR: check failed');
    expect(histories).toContain('restore-file');

    const key = await readFile(fleet.identityFile, 'utf8');
    const everything = { histories, workerLog, cliOutput };
    const found: string[] = [];
    for (const [where, text] of Object.entries(everything)) {
      for (const [name, secret] of Object.entries(secrets)) if (text.includes(secret)) found.push(`${name} in ${where}`);
      for (const fragment of keyFragments(key)) if (text.includes(fragment)) found.push(`the private key in ${where}`);
    }
    process.stdout.write(`history-secrets: ${ids.length} histories (${histories.length} bytes), worker log ${workerLog.length} bytes, CLI output ${cliOutput.length} bytes searched\n`);
    expect(found).toEqual([]);
  }, 600_000);
});
