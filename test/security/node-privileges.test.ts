// docs/node-privileges.md promises: "installs this exact file on a simulated node whose login user is not root and
// runs the node steps and their undos through it". This is that test: the sudoers block of the doc replaces the
// simulated node's NOPASSWD:ALL, then prereq-check, containerd-patch and service-restart run and are undone.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sh, SshPool } from '../../activities/ssh';
import { createNodeActivities } from '../../activities/node-activities';
import type { StepOutcome, StepRequest, Undo } from '../../activities/node-types';
import { loginFor } from '../../playbooks/login';
import type { Step } from '../../playbooks/schema';
import { checkStep } from '../../activities/step-policy';
import { sshNodeOf } from '../../activities/steps/node-shell';
import { startNodeFleet, type NodeFleet } from '../helpers/node-workflow';

const user = 'deploy';
let nodes: NodeFleet;
const pool = new SshPool({ connectTimeoutMs: 10_000 });

async function documentedSudoers(): Promise<string> {
  const doc = await readFile(join(__dirname, '..', '..', 'docs', 'node-privileges.md'), 'utf8');
  const block = /```sudoers\n([\s\S]*?)```/.exec(doc);
  if (!block) throw new Error('docs/node-privileges.md has no ```sudoers block');
  return block[1];
}

beforeAll(async () => {
  nodes = await startNodeFleet('privileges', { nodes: [{ name: 'p-1', containerd: '1.6' }], sshUser: user });
}, 180_000);

afterAll(async () => {
  await pool.closeAll();
  await nodes?.fleet.stop();
});

describe('the sudoers file of docs/node-privileges.md', () => {
  it('is all a non-root login user needs for the node steps and their undos', async () => {
    const target = nodes.targets['p-1'];
    const login = loginFor(target.credentials, target);
    expect(login.user).toBe(user);
    expect(login.sudo).toBe(true);
    const ssh = sshNodeOf(target);

    // Replace the simulated node's NOPASSWD:ALL with the documented file (checked by visudo first).
    await pool.run(ssh, sh`cat > /etc/sudoers.d/katafleet.new && chmod 0440 /etc/sudoers.d/katafleet.new && visudo -cf /etc/sudoers.d/katafleet.new && mv -f /etc/sudoers.d/katafleet.new /etc/sudoers.d/katafleet`,
      { stdin: await documentedSudoers() });
    await pool.run(ssh, sh`rm -f /etc/sudoers.d/90-${user}`);
    expect((await pool.run(ssh, sh`ls /etc/sudoers.d`)).stdout.split('\n')).not.toContain(`90-${user}`);
    // Only sh is allowed now: any other program through sudo is refused.
    const other = await pool.run(ssh, sh`sudo -n /usr/bin/id -u`, { asRoot: false, allowExitCodes: [0, 1] });
    expect(other.exitCode).toBe(1);
    expect((await pool.run(ssh, sh`id -u`)).stdout).toBe('0\n');

    const activities = createNodeActivities({ pool });
    const before = (await pool.run(ssh, sh`sha256sum /etc/containerd/config.toml`)).stdout;
    const request = <S extends Step>(step: Record<string, unknown>): StepRequest<S> =>
      ({ runId: 'privileges-0001', rolloutId: 'privileges', node: target, step: checkStep(step as unknown as S, target), drain: false });
    const undos: Undo[] = [];
    const keep = (outcome: StepOutcome) => { if (outcome.undo) undos.unshift(outcome.undo); return outcome; };
    keep(await activities.prereqCheck(request({ id: 'prereq', kind: 'prereq-check', cpu_flags: [], require_kvm: false, modules: ['vhost_net'] })));
    const patched = keep(await activities.containerdPatch(request({ id: 'containerd', kind: 'containerd-patch', runtimes: [{ name: 'kata', runtime_type: 'io.containerd.kata.v2' }] })));
    expect(patched.changed).toBe(true);
    await activities.serviceRestart(request({ id: 'restart', kind: 'service-restart' }));
    expect(undos.map((undo) => undo.kind)).toEqual(['restore-containerd-config', 'restore-file']);

    for (const undo of undos) expect((await activities.undoStep({ node: target, undo })).ok).toBe(true);
    expect((await pool.run(ssh, sh`sha256sum /etc/containerd/config.toml`)).stdout).toBe(before);
    expect((await pool.run(ssh, sh`test -e /etc/modules-load.d/katafleet.conf`, { allowExitCodes: [0, 1] })).exitCode).toBe(1);
  }, 300_000);
});
