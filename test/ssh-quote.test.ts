import { execFileSync } from 'node:child_process';
import { cmd, flag, isSafeShellValue, quote, sh, sudo, SshFailureType, withDeadline } from '../activities/ssh';
import { narrowSudo } from '../activities/ssh/quote';

/** What a real POSIX shell makes of a command text: one line per argument it passes to printf. */
function argvSeenByShell(text: string): string[] {
  return execFileSync('sh', ['-c', `set -- ${text}; printf '%s\\n' "$@"`], { encoding: 'utf8' }).split('\n').slice(0, -1);
}

function refusal(build: () => unknown): { type?: string; nonRetryable?: boolean; message: string } {
  try {
    build();
  } catch (err) {
    return err as { type?: string; nonRetryable?: boolean; message: string };
  }
  throw new Error('expected the value to be refused');
}

describe('safe command building', () => {
  const attacks = ['; rm -rf /', '$(reboot)', '`reboot`', 'a\nreboot', 'x && reboot', 'a|b', '>/etc/passwd', '*', "it's", 'a b', ''];

  it.each(attacks)('refuses %j in a template, non-retryably, naming the value and the command', (value) => {
    const err = refusal(() => sh`cat ${value}`);
    expect(err.type).toBe(SshFailureType.UnsafeShellValue);
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toContain(JSON.stringify(value));
    expect(err.message).toContain('sh`cat ${…}`');
  });

  it.each(attacks)('refuses %j as an argument of cmd()', (value) => {
    expect(refusal(() => cmd('cat', [value])).type).toBe(SshFailureType.UnsafeShellValue);
  });

  it('refuses a value starting with "-" unless it is marked as a flag', () => {
    expect(refusal(() => sh`rm ${'-rf'}`).message).toContain('starts with "-" and would be read as an option');
    expect(sh`systemctl ${flag('--now')} enable ${'containerd'}`.display).toBe('systemctl --now enable containerd');
    expect(refusal(() => flag('--x;reboot')).type).toBe(SshFailureType.UnsafeShellValue);
  });

  it('explains which characters are not allowed', () => {
    expect(refusal(() => sh`cat ${'a;b$c'}`).message).toContain('it contains ";", "$"');
  });

  it('accepts the allowlist: paths, versions, key=value, addresses', () => {
    for (const value of ['/etc/containerd/config.toml', 'kata-containers=3.2.0-1', 'user@10.0.0.1:22', 'a,b%c+d']) {
      expect(isSafeShellValue(value)).toBe(true);
    }
  });

  it('single-quotes every value so the shell passes it through as one argument', () => {
    const command = cmd('printf', ['%s', '/etc/kata=1.0']);
    expect(command.text).toBe("'printf' '%s' '/etc/kata=1.0'");
    expect(argvSeenByShell(sh`${['/a/b', 'x=y']} ${flag('-n')}`.text)).toEqual(['/a/b', 'x=y', '-n']);
  });

  it('quotes any text POSIX-safely, including single quotes and newlines', () => {
    const nasty = "it's $(reboot)\n`x`";
    expect(argvSeenByShell(quote(nasty))).toEqual(["it's $(reboot)", '`x`']);
  });

  it('shows people the command without quotes, as in messages', () => {
    expect(cmd('kata-runtime', ['check']).display).toBe('kata-runtime check');
    expect(sh`test -e ${'/etc/x'} && cat ${'/etc/x'}`.display).toBe('test -e /etc/x && cat /etc/x');
  });

  it('nests commands without quoting them twice', () => {
    const inner = cmd('containerd', ['config', 'dump']);
    expect(sh`${inner} >/dev/null`.text).toBe("'containerd' 'config' 'dump' >/dev/null");
  });

  it('runs the whole command under sudo -n, pipes and all', () => {
    const wrapped = sudo(sh`cat ${'/etc/x'} | sha256sum`);
    expect(wrapped.display).toBe('sudo -n cat /etc/x | sha256sum');
    // With katafleet's own PATH, whatever sudo's secure_path says (RHEL's has no /usr/local/bin).
    expect(argvSeenByShell(wrapped.text)).toEqual(['sudo', '-n', 'sh', '-c', "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH; cat '/etc/x' | sha256sum"]);
  });

  it('narrow sudo runs the command as the user with the kf-root shims first in PATH', () => {
    const narrowed = narrowSudo(sh`cat ${'/etc/x'} | sha256sum`);
    expect(narrowed.display).toBe('kf-root cat /etc/x | sha256sum');
    expect(narrowed.text).toBe("PATH=/usr/local/libexec/katafleet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH; cat '/etc/x' | sha256sum");
  });

  it('puts a deadline on the node itself: timeout(1) stops the command, stdin still reaches it', () => {
    const slow = withDeadline(sh`cat; sleep 5`, 1);
    expect(slow.display).toBe('cat; sleep 5');
    const started = Date.now();
    const run = () => execFileSync('sh', ['-c', slow.text], { input: 'from stdin', encoding: 'utf8' });
    expect(run).toThrow(expect.objectContaining({ status: 124, stdout: 'from stdin' }));
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
