/** An existing runtime of the same name has other settings and the playbook did not ask to replace it. */
export const ContainerdConfigConflict = 'ContainerdConfigConflict';
/** `disabled_plugins` switches the CRI plugin off: no runtime handler can be used by Kubernetes. */
export const ContainerdCriDisabled = 'ContainerdCriDisabled';
/** The config is valid but shaped in a way the patcher refuses to edit (unknown version, CRI only in an import, inline tables). */
export const ContainerdConfigUnsupported = 'ContainerdConfigUnsupported';
/** The config is not valid TOML, or a value containerd reads has the wrong type. */
export const ContainerdConfigInvalid = 'ContainerdConfigInvalid';
/** The edited text does not re-parse to the original data plus exactly the intended keys. */
export const ContainerdPatchVerificationFailed = 'ContainerdPatchVerificationFailed';

export type ContainerdConfigFailureType =
  | typeof ContainerdConfigConflict
  | typeof ContainerdCriDisabled
  | typeof ContainerdConfigUnsupported
  | typeof ContainerdConfigInvalid
  | typeof ContainerdPatchVerificationFailed;

/** Every failure type, e.g. for `nonRetryableErrorTypes` in a retry policy: none of them can be fixed by retrying. */
export const containerdConfigFailureTypes: readonly ContainerdConfigFailureType[] = [
  ContainerdConfigConflict,
  ContainerdCriDisabled,
  ContainerdConfigUnsupported,
  ContainerdConfigInvalid,
  ContainerdPatchVerificationFailed,
];

/**
 * A refusal of the containerd config patcher. Check `type` (not `instanceof`): the message says what is wrong,
 * where, and what to do.
 */
export class ContainerdConfigError extends Error {
  override readonly name = 'ContainerdConfigError';

  constructor(
    readonly type: ContainerdConfigFailureType,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
