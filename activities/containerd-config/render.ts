import type { RuntimeSpec } from '../../playbooks/runtime-spec';

/** How the file being edited writes things, so that added tables look like their neighbours. */
export interface TomlStyle {
  /** Quote for keys that need quoting (plugin ids) and for string values. */
  quote: '"' | "'";
  /** Whitespace before a runtime's `[...runtimes.NAME]` header. */
  headerIndent: string;
  /** Whitespace before the runtime's keys. */
  keyIndent: string;
  /** Whitespace before `[...runtimes.NAME.options]`. */
  optionsHeaderIndent: string;
  /** Whitespace before the option keys. */
  optionsKeyIndent: string;
  /** A blank line between a runtime's keys and its `.options` header. */
  blankBeforeOptions: boolean;
}

export const plainStyle: TomlStyle = {
  quote: '"',
  headerIndent: '',
  keyIndent: '  ',
  optionsHeaderIndent: '',
  optionsKeyIndent: '  ',
  blankBeforeOptions: false,
};

export type TomlData = { [key: string]: TomlValue };
export type TomlValue = string | number | boolean | TomlValue[] | TomlData;

/** The table data a runtime spec stands for, exactly as a TOML parser returns it from the rendered text. */
export function runtimeData(runtime: RuntimeSpec): TomlData {
  const data: TomlData = { runtime_type: runtime.runtime_type };
  if (runtime.runtime_path !== undefined) data.runtime_path = runtime.runtime_path;
  if (runtime.privileged_without_host_devices !== undefined) data.privileged_without_host_devices = runtime.privileged_without_host_devices;
  if (runtime.pod_annotations !== undefined) data.pod_annotations = [...runtime.pod_annotations];
  if (runtime.container_annotations !== undefined) data.container_annotations = [...runtime.container_annotations];
  if (runtime.snapshotter !== undefined) data.snapshotter = runtime.snapshotter;
  if (runtime.options !== undefined && Object.keys(runtime.options).length > 0) data.options = { ...runtime.options };
  return data;
}

/**
 * The lines of one runtime: `[PATH.NAME]` with its keys, then `[PATH.NAME.options]` if it has options.
 * Every line ends with a newline.
 */
export function renderRuntime(runtimesPath: readonly string[], runtime: RuntimeSpec, style: TomlStyle): string {
  const header = (path: readonly string[]) => `[${path.map((k) => tomlKey(k, style.quote)).join('.')}]`;
  const table = [...runtimesPath, runtime.name];
  const { options, ...keys } = runtimeData(runtime);
  let out = `${style.headerIndent}${header(table)}\n`;
  for (const [key, value] of Object.entries(keys)) out += `${style.keyIndent}${tomlKey(key, style.quote)} = ${tomlValue(value, style.quote)}\n`;
  if (options !== undefined) {
    if (style.blankBeforeOptions) out += '\n';
    out += `${style.optionsHeaderIndent}${header([...table, 'options'])}\n`;
    for (const [key, value] of Object.entries(options)) out += `${style.optionsKeyIndent}${tomlKey(key, style.quote)} = ${tomlValue(value, style.quote)}\n`;
  }
  return out;
}

export function tomlKey(key: string, quote: '"' | "'"): string {
  return /^[A-Za-z0-9_-]+$/.test(key) ? key : tomlString(key, quote);
}

/** A literal string in the file's quote style when it can hold the text, otherwise a basic string with escapes. */
export function tomlString(text: string, quote: '"' | "'"): string {
  const needsEscapes = /[\u0000-\u0008\u000a-\u001f\u007f']/.test(text);
  if (quote === "'" && !needsEscapes) return `'${text}'`;
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\t';
    else if (code < 0x20 || code === 0x7f) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

function tomlValue(value: TomlValue, quote: '"' | "'"): string {
  if (typeof value === 'string') return tomlString(value, quote);
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') {
    if (Number.isNaN(value)) return 'nan';
    if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => tomlValue(v, quote)).join(', ')}]`;
  return `{ ${Object.entries(value).map(([k, v]) => `${tomlKey(k, quote)} = ${tomlValue(v, quote)}`).join(', ')} }`;
}
