/**
 * What one remote command did: a flat, serializable record (it travels in Temporal histories and failure details).
 *
 * `exitCode === null` means the connection dropped before the command reported: it may or may not have run.
 */
export interface CommandResult {
  /** The node's inventory name, e.g. `worker-2`. */
  host: string;
  /** The address connected to, e.g. `127.0.1.3`. */
  address: string;
  /** The command as people read it (values unquoted, `sudo -n` shown when used). */
  command: string;
  exitCode: number | null;
  /** The signal that killed the command, as `SIGKILL`, or null. */
  signal: string | null;
  /** Complete output, byte for byte (never trimmed); capped by the pool's `maxOutputBytes`. */
  stdout: string;
  stderr: string;
  /** From the channel request to its close: the command's own time, without waiting for a channel slot or connecting. */
  durationMs: number;
}

/** How much output an error message carries. */
export const MESSAGE_TAIL_BYTES = 4096;

/** The last `maxBytes` of `text` (whole characters), prefixed with `…` when cut. */
export function tail(text: string, maxBytes: number = MESSAGE_TAIL_BYTES): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  // Skip UTF-8 continuation bytes so the cut never splits a character.
  let start = bytes.length - maxBytes;
  while (start < bytes.length && (bytes[start] & 0xc0) === 0x80) start++;
  return `…${bytes.subarray(start).toString('utf8')}`;
}

/**
 * The result as failure details carry it (they go into Temporal history): stdout and stderr cut to their last
 * {@link MESSAGE_TAIL_BYTES} each, because a command's output can hold file contents and credentials
 * (`containerd config dump`, `crictl info`) and history keeps everything for good.
 */
export function failureDetails(result: CommandResult): CommandResult {
  return { ...result, stdout: tail(result.stdout), stderr: tail(result.stderr) };
}

/** ssh2 reports signals without the prefix (`KILL`); people and OpenSSH write `SIGKILL`. */
export function normalizeSignal(signal: string | null | undefined): string | null {
  if (!signal) return null;
  return signal.startsWith('SIG') ? signal : `SIG${signal}`;
}
