import { SshFailureType, sshFailure } from './failure-types';

/**
 * Characters a value may contain to be put into a remote command: none of them means anything to a POSIX shell
 * inside single quotes, which is how every value is put in. `~` and `^` are in because package versions use them
 * (`3.2.0~rc1`, `1.0^git`) and quoting keeps them literal (no tilde expansion). Spaces, quotes, `$`, backticks,
 * `;`, `|`, `&`, redirections, globs and newlines are all refused.
 *
 * The playbook schema's allowlists (`playbooks/allowlists.ts`) admit only values this also admits, so a playbook
 * that validates never fails here at run time (`test/security/allowlists-subset.test.ts`).
 */
export const SAFE_SHELL_VALUE = /^[A-Za-z0-9@%+=:,./_~^-]+$/;

/** An option such as `-n` or `--now=yes`: a leading dash, then safe characters. */
const SAFE_FLAG = /^--?[A-Za-z0-9][A-Za-z0-9@%+=:,./_~^-]*$/;

const commandBrand: unique symbol = Symbol('katafleet.Command');
const flagBrand: unique symbol = Symbol('katafleet.Flag');

/**
 * A remote command that is safe to hand to the node's shell. Only {@link sh}, {@link cmd} and {@link sudo} make one,
 * so a raw string (which might hold `; rm -rf /`) cannot reach {@link SshPool.run}.
 */
export interface Command {
  readonly [commandBrand]: true;
  /** What the remote shell parses: every interpolated value single-quoted. */
  readonly text: string;
  /** The same command for people (messages, logs): values unquoted, which is unambiguous because they are allowlisted. */
  readonly display: string;
}

/** A value that may start with `-`: made only by {@link flag}, so options are always a deliberate choice. */
export interface Flag {
  readonly [flagBrand]: true;
  readonly value: string;
}

/** What may be interpolated into {@link sh} or passed as an argument to {@link cmd}. */
export type ShellArg = string | number | Flag | Command | readonly (string | number | Flag)[];

/** True when `value` may be interpolated into a command (see {@link SAFE_SHELL_VALUE}; no leading `-`). */
export function isSafeShellValue(value: string): boolean {
  return SAFE_SHELL_VALUE.test(value) && !value.startsWith('-');
}

/** The message for a refused value: what, why, and what to do. Pure, so the playbook validator can reuse it. */
export function unsafeShellValueMessage(value: string, context: string): string {
  const shown = JSON.stringify(value);
  const why = value === ''
    ? 'it is empty'
    : value.startsWith('-') && SAFE_SHELL_VALUE.test(value)
      ? 'it starts with "-" and would be read as an option'
      : `it contains ${describeUnsafeCharacters(value)}`;
  return `Refusing to put ${shown} into the command ${context}: ${why}. ` +
    'Values may contain only letters, digits and @%+=:,./_~^- and must not start with "-"; fix the value in the inventory or playbook.';
}

function describeUnsafeCharacters(value: string): string {
  const unsafe = [...new Set([...value].filter((ch) => !SAFE_SHELL_VALUE.test(ch)))];
  return unsafe.map((ch) => JSON.stringify(ch)).join(', ');
}

/**
 * Marks `value` as an option, the only way to interpolate something starting with `-`.
 *
 * @example cmd('systemctl', [flag('--now'), 'enable', unit])
 */
export function flag(value: string): Flag {
  if (!SAFE_FLAG.test(value)) {
    throw sshFailure(SshFailureType.UnsafeShellValue,
      `Refusing the option ${JSON.stringify(value)}: an option is "-" or "--" followed by letters, digits and @%+=:,./_~^-.`);
  }
  return { [flagBrand]: true, value };
}

/** POSIX single quotes: the shell takes everything inside literally; a `'` becomes `'\''`. */
export function quote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function makeCommand(text: string, display: string): Command {
  return { [commandBrand]: true, text, display };
}

function isCommand(arg: unknown): arg is Command {
  return typeof arg === 'object' && arg !== null && commandBrand in arg;
}

function isFlag(arg: unknown): arg is Flag {
  return typeof arg === 'object' && arg !== null && flagBrand in arg;
}

/** Renders one interpolated argument as `{ text, display }`, refusing anything off the allowlist. */
function renderArg(arg: ShellArg, context: () => string): { text: string; display: string } {
  if (isCommand(arg)) return { text: arg.text, display: arg.display };
  if (isFlag(arg)) return { text: quote(arg.value), display: arg.value };
  if (Array.isArray(arg)) {
    const parts = arg.map((item: string | number | Flag) => renderArg(item, context));
    return { text: parts.map((p) => p.text).join(' '), display: parts.map((p) => p.display).join(' ') };
  }
  const value = String(arg);
  if (!isSafeShellValue(value)) {
    throw sshFailure(SshFailureType.UnsafeShellValue, unsafeShellValueMessage(value, context()));
  }
  return { text: quote(value), display: value };
}

/**
 * Builds a {@link Command} from a template: the literal parts are trusted code, every `${value}` is checked
 * against the allowlist and single-quoted. Arrays expand to several arguments; a nested Command is inserted as is.
 *
 * @example sh`test -e ${path} && cat ${path}`
 * @throws ApplicationFailure of type `UnsafeShellValue` (non-retryable) for a value off the allowlist.
 */
export function sh(literals: TemplateStringsArray, ...args: ShellArg[]): Command {
  const context = () => `sh\`${literals.join('${…}')}\``;
  let text = literals[0];
  let display = literals[0];
  args.forEach((arg, i) => {
    const rendered = renderArg(arg, context);
    text += rendered.text + literals[i + 1];
    display += rendered.display + literals[i + 1];
  });
  return makeCommand(text, display);
}

/**
 * Builds a {@link Command} running `program` with `args`, each checked and single-quoted.
 *
 * @example cmd('kata-runtime', ['check'])
 */
export function cmd(program: string, args: readonly (string | number | Flag)[] = []): Command {
  const context = () => `${program} ${args.map((a) => (isFlag(a) ? a.value : String(a))).join(' ')}`.trim();
  const rendered = renderArg([program, ...args], context);
  return makeCommand(rendered.text, rendered.display);
}

/**
 * The PATH every root command runs with, set by katafleet itself rather than left to sudo's `secure_path` (RHEL's
 * lacks /usr/local/bin, where kata-manager and the release-tarball step link `kata-runtime`) or to sshd's default.
 * Only root-owned system folders, so it gives root nothing the login user could plant.
 */
export const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The root helper of narrow sudo mode (`deploy/kf-root`), the only program the shipped sudoers file allows. */
export const KF_ROOT = '/usr/local/libexec/katafleet/kf-root';

/**
 * The folder of narrow mode's shims (`deploy/install.sh` makes them): one per program katafleet runs as root
 * (`cat`, `tee`, `mv`, `systemctl`, `apt-get`, ...), each `exec sudo -n kf-root <its name> "$@"`.
 */
export const KF_ROOT_SHIMS = '/usr/local/libexec/katafleet/bin';

/**
 * How a login that is not root gets root: `true` runs every root command as `sudo -n sh -c` (sudoers must allow
 * `sh`: unrestricted root); `"narrow"` runs the command as the login user with the {@link KF_ROOT_SHIMS} first in
 * PATH, so only its single programs reach root, each through `sudo -n kf-root`, which checks its arguments against
 * katafleet's allowlists; `false` runs as the login user.
 */
export type SudoMode = boolean | 'narrow';

/**
 * Runs `command` as root through `sudo -n` (never prompts: fails at once if a password would be needed).
 * The whole command goes to `sh -c`, so pipes and `&&` run as root too, not only their first part; PATH is
 * {@link ROOT_PATH}, whatever sudo's `secure_path` says.
 */
export function sudo(command: Command): Command {
  return makeCommand(`sudo -n sh -c ${quote(`PATH=${ROOT_PATH}; export PATH; ${command.text}`)}`, `sudo -n ${command.display}`);
}

/**
 * Narrow sudo mode: `command` runs as the login user, whose shell keeps the logic (`&&`, `if`, pipes) and finds
 * the programs that need root as {@link KF_ROOT_SHIMS} shims, each one call of `sudo -n kf-root PROGRAM ARGS`.
 * Redirections run as the user, so a root file is written with `tee FILE`, never `> FILE`.
 */
export function narrowSudo(command: Command): Command {
  return makeCommand(`PATH=${KF_ROOT_SHIMS}:${ROOT_PATH}; export PATH; ${command.text}`, `kf-root ${command.display}`);
}

/**
 * `prelude` (trusted shell text built by katafleet itself, e.g. the program probe's) run before `command` in the same
 * remote shell; shown to people as `command` alone.
 */
export function withPrelude(prelude: string, command: Command): Command {
  return makeCommand(`${prelude}${command.text}`, command.display);
}

/**
 * Makes the node itself stop `command` after `seconds` (TERM, then KILL 5 s later) with timeout(1), falling back to
 * no deadline where timeout(1) is missing. Closing the channel does not stop a remote command, and sshd ignores
 * signal requests for root sessions, so this is what stops a hung command for sure. It also keeps the command
 * under `sh` (POSIX), whatever the user's login shell is.
 */
export function withDeadline(command: Command, seconds: number): Command {
  const inner = quote(command.text);
  const limit = String(Math.max(1, Math.ceil(seconds)));
  return makeCommand(
    `if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 ${limit} sh -c ${inner}; else exec sh -c ${inner}; fi`,
    command.display,
  );
}
