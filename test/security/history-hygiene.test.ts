// What goes into Temporal history from node files and command output (review finding M1), checked on the exact
// payloads Temporal's failure converter makes. The end-to-end proof is history-secrets.test.ts.
import { DefaultFailureConverter, defaultPayloadConverter } from '@temporalio/common';
import { parseToml } from '../../activities/containerd-config/data';
import { commandFailedMessage, failureDetails, type CommandResult } from '../../activities/ssh';
import { permanentFailure } from '../../activities/steps/step-runtime';

const secret = 'PLANTED-hash-$y$j9T$SALT$ROOTHASH';

/** Everything Temporal would store for this error, as text. */
function stored(error: Error): string {
  return JSON.stringify(new DefaultFailureConverter().errorToFailure(error, defaultPayloadConverter));
}

function thrown(run: () => unknown): Error {
  try {
    run();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

describe('parse errors of node files', () => {
  it.each([
    ['a shadow-like file', `root:${secret}:19700:0:99999:7:::\ndaemon:*:19700::::::\n`, '1:6'],
    ['an unquoted value', `version = 2\npassword = ${secret}\n`, '2:12'],
    ['an unknown escape', `version = 2\npassword = "\\q${secret}"\n`, '2:14'],
    ['a duplicate key', `password = "${secret}"\npassword = "${secret}"\n`, '2:'],
  ])('keep line:col and a fixed reason, never the text, for %s', (_what, text, place) => {
    const error = thrown(() => parseToml(text, '/etc/containerd/config.toml on node w-1'));
    expect(error.message).toContain(`/etc/containerd/config.toml on node w-1:${place}`);
    expect(error.cause).toBeUndefined();
    const failure = permanentFailure('ContainerdConfigInvalid', error.message, error);
    expect(stored(failure)).not.toContain('PLANTED');
  });
});

describe('command output in failures', () => {
  const result = (stderr: string): CommandResult => ({
    host: 'w-1', address: '127.0.1.1', command: 'containerd config dump', exitCode: 1, signal: null, stdout: `${secret}\n${'y'.repeat(20_000)}`, stderr, durationMs: 5,
  });

  it('details keep at most the last 4 KiB of stdout and of stderr', () => {
    const details = failureDetails(result(`${secret}\n${'x'.repeat(10_000)}\nfailed`));
    expect(Buffer.byteLength(details.stdout)).toBeLessThanOrEqual(4096 + 3);
    expect(Buffer.byteLength(details.stderr)).toBeLessThanOrEqual(4096 + 3);
    expect(details.stderr.endsWith('failed')).toBe(true);
    expect(JSON.stringify(details)).not.toContain('PLANTED');
  });

  it('the message says the output was cut to its last 4 KiB', () => {
    const message = commandFailedMessage(result(`${secret}\n${'x'.repeat(10_000)}\nfailed`));
    expect(message).toContain('\n(stderr, last 4 KiB)\n…');
    expect(message).not.toContain('PLANTED');
    expect(commandFailedMessage(result('short\n'))).not.toContain('last 4 KiB');
  });
});
