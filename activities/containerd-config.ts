/**
 * The containerd config patcher: pure functions from a config file's bytes and the runtimes a playbook adds to
 * the patched bytes. Edits are minimal (the runtime tables are appended, every other byte stays) and verified by
 * re-parsing. The decisions and the evidence behind them are in `activities/CONTAINERD.md`.
 */
import type { RuntimeSpec } from '../playbooks/runtime-spec';
import { cloneData, dataDifferences, dataEqual, deletePath, getPath, isTable, parseToml, setPath, verifyEdit } from './containerd-config/data';
import { appendBlock, appendToArray, insertBlock, cutSpans, insertLineAfter, samePath, startsWith, tableSpans } from './containerd-config/edit';
import {
  ContainerdConfigConflict,
  ContainerdConfigError,
  ContainerdConfigUnsupported,
  ContainerdCriDisabled,
} from './containerd-config/errors';
import { plainStyle, renderRuntime, runtimeData, tomlString, type TomlData, type TomlStyle } from './containerd-config/render';
import { scanToml, type TomlHeader, type TomlLayout } from './containerd-config/scan';

export * from './containerd-config/errors';
export { unifiedDiff } from './unified-diff';

export interface PatchOptions {
  /** Overwrite an existing runtime of the same name that has other settings (otherwise: `ContainerdConfigConflict`). */
  replace?: boolean;
  /**
   * `in-place` (default) appends the runtime tables to this file. `drop-in` (containerd ≥ 2.0, config version 3 or 4)
   * leaves the runtimes to a separate file ({@link PatchOutcome} `dropIn`) and only makes sure this file's `imports`
   * includes it.
   */
  mode?: 'in-place' | 'drop-in';
  /** Absolute path of the drop-in file. @default '/etc/containerd/conf.d/katafleet.toml' */
  dropInPath?: string;
  /** The file's name in messages. @default 'config.toml' */
  file?: string;
}

/** Extra result of `mode: 'drop-in'`: the file to write next to the main config (compare it with the node's copy). */
export interface DropIn {
  path: string;
  content: string;
}

/**
 * The result for the main config. `version` is the file's `version` key after the edit (undefined when it has
 * none); `pluginPath` is the runtimes table the runtimes live under. In drop-in mode `status` describes the main
 * config only; the runtimes are in `dropIn`.
 */
export type PatchOutcome = (
  | { status: 'patched'; content: string; version: number | undefined; pluginPath: string[]; added: string[]; replaced: string[]; removed?: string[] }
  | { status: 'unchanged'; content: string; version: number | undefined; pluginPath: string[] }
) & { dropIn?: DropIn };

export const defaultDropInPath = '/etc/containerd/conf.d/katafleet.toml';

/** The CRI plugin id that owns `containerd.runtimes`, by config version. */
const criRuntimePlugin: Record<1 | 2 | 3 | 4, string> = {
  1: 'cri',
  2: 'io.containerd.grpc.v1.cri',
  3: 'io.containerd.cri.v1.runtime',
  4: 'io.containerd.cri.v1.runtime',
};

/** Plugin ids whose absence leaves Kubernetes without a CRI (in 2.x `io.containerd.grpc.v1.cri` requires both cri.v1 plugins). */
const criPluginIds = ['cri', 'io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.runtime', 'io.containerd.cri.v1.images'];

/** containerd's own default runtime, written out where containerd 1.x would otherwise drop it. */
const runcRuntime: RuntimeSpec = { name: 'runc', runtime_type: 'io.containerd.runc.v2' };

type ConfigVersion = 1 | 2 | 3 | 4;

interface Config {
  file: string;
  text: string;
  data: TomlData;
  layout: TomlLayout;
}

interface Schema {
  /** The version that decides the plugin ids: the `version` key, or what the content shows when there is none. */
  version: ConfigVersion;
  /** The `version` key as written. */
  declared: number | undefined;
  runtimesPath: string[];
}

/**
 * Adds `runtimes` to a containerd config. Returns the new bytes, or `unchanged` (same bytes) when every runtime is
 * already there with exactly these settings. Throws {@link ContainerdConfigError} when it must refuse.
 *
 * @example
 * const outcome = patchContainerdConfig(fs.readFileSync('/etc/containerd/config.toml', 'utf8'),
 *   [{ name: 'kata', runtime_type: 'io.containerd.kata.v2' }]);
 */
export function patchContainerdConfig(original: string, runtimes: readonly RuntimeSpec[], options: PatchOptions = {}): PatchOutcome {
  return withLineEndingsOf(original, (text) => patchLf(text, runtimes, options));
}

function patchLf(original: string, runtimes: readonly RuntimeSpec[], options: PatchOptions): PatchOutcome {
  const config = readConfig(original, options.file);
  assertDistinctNames(runtimes, config.file);
  if (runtimes.length === 0) {
    const version = config.data.version;
    return { status: 'unchanged', content: original, version: typeof version === 'number' ? version : undefined, pluginPath: [] };
  }
  assertCriEnabled(config);
  if (isEmptyConfig(config)) {
    if (options.mode === 'drop-in') {
      throw new ContainerdConfigError(
        ContainerdConfigUnsupported,
        `${config.file}: the config is empty, so there is no main config to add \`imports\` to; use mode "in-place", which writes a complete version 2 config`,
      );
    }
    return patchEmptyConfig(config, runtimes);
  }
  const schema = schemaOf(config);
  if (options.mode === 'drop-in') return patchWithDropIn(config, schema, runtimes, options);
  assertCriConfiguredHere(config, schema);
  return patchInPlace(config, schema, runtimes, options.replace ?? false);
}

/**
 * Removes the named runtimes' tables (for uninstall): the exact lines of `[...runtimes.NAME]` and its sub-tables,
 * with the comment paragraph standing right above them. Removing what {@link patchContainerdConfig} appended gives
 * back the original bytes. Names that are not configured are ignored.
 */
export function removeRuntimes(original: string, names: readonly string[], options: Pick<PatchOptions, 'file'> = {}): PatchOutcome {
  return withLineEndingsOf(original, (text) => removeLf(text, names, options));
}

function removeLf(original: string, names: readonly string[], options: Pick<PatchOptions, 'file'>): PatchOutcome {
  const config = readConfig(original, options.file);
  if (isEmptyConfig(config)) return { status: 'unchanged', content: original, version: undefined, pluginPath: runtimesPathOf(2) };
  const schema = schemaOf(config);
  const present = names.filter((name) => getPath(config.data, [...schema.runtimesPath, name]) !== undefined);
  const unchanged = { status: 'unchanged', content: original, version: schema.declared, pluginPath: schema.runtimesPath } as const;
  if (present.length === 0) return unchanged;

  let text = original;
  const expected = cloneData(config.data);
  for (const name of present) {
    const target = [...schema.runtimesPath, name];
    const layout = scanToml(text);
    assertOnlyTables(config.file, layout, target, 'remove');
    text = cutSpans(text, tableSpans(text, layout, target, true));
    deletePath(expected, target);
  }
  pruneImplicitTables(expected, scanToml(text), schema.runtimesPath);
  verifyEdit(text, expected, config.file, `runtimes ${present.join(', ')} removed`);
  return { status: 'patched', content: text, version: schema.declared, pluginPath: schema.runtimesPath, added: [], replaced: [], removed: present };
}

/**
 * A drop-in file for containerd ≥ 2.0's `imports` that holds only the runtime tables. containerd 2.x merges
 * imported plugin tables key by key into the main config and keeps its built-in `runc`.
 * Version 3 is right for main configs of version 3 and 4 (containerd migrates an import up to the main version).
 */
export function renderDropIn(runtimes: readonly RuntimeSpec[], version: 2 | 3): string {
  assertDistinctNames(runtimes, 'drop-in');
  const runtimesPath = runtimesPathOf(version);
  const tables = runtimes.map((runtime) => renderRuntime(runtimesPath, runtime, plainStyle)).join('\n');
  return `# Written by katafleet: container runtimes, merged into the main containerd config through its \`imports\`.\nversion = ${version}\n\n${tables}`;
}

/**
 * The runtime handler names that the CRI plugin of this config offers Kubernetes, sorted. Includes containerd's
 * built-in `runc` where containerd keeps it: always on containerd 2.x (it merges the file's runtimes into its
 * defaults), on 1.x only when the file has no `runtimes` table (1.x replaces the built-in map with the file's).
 * On 1.x the deprecated `default_runtime` and `untrusted_workload_runtime` add the handlers `default` and
 * `untrusted`. Empty when the CRI plugin is disabled. Only this file is read: tables in `imports` are not seen.
 *
 * @param options.containerdMajor which containerd reads the file. @default 2 for config version 3/4, else 1
 */
export function runtimeHandlers(config: string, options: { containerdMajor?: 1 | 2; file?: string } = {}): string[] {
  const parsed = readConfig(config, options.file);
  if (disabledCriPlugin(parsed) !== undefined) return [];
  if (isEmptyConfig(parsed)) return ['runc'];
  const schema = schemaOf(parsed);
  const major = options.containerdMajor ?? (schema.version >= 3 ? 2 : 1);
  const runtimes = getPath(parsed.data, schema.runtimesPath);
  const handlers = new Set(isTable(runtimes) ? Object.keys(runtimes) : []);
  if (major === 2 || runtimes === undefined) handlers.add('runc');
  if (major === 1) {
    const containerdTable = schema.runtimesPath.slice(0, -1);
    if (hasRuntimeType(getPath(parsed.data, [...containerdTable, 'default_runtime']))) handlers.add('default');
    if (hasRuntimeType(getPath(parsed.data, [...containerdTable, 'untrusted_workload_runtime']))) handlers.add('untrusted');
  }
  return [...handlers].sort();
}

/** A file written with CRLF throughout is edited as LF and written back with CRLF, so added lines match it. */
function withLineEndingsOf(original: string, edit: (text: string) => PatchOutcome): PatchOutcome {
  if (!original.includes('\r\n') || /(^|[^\r])\n/.test(original)) return edit(original);
  const outcome = edit(original.replace(/\r\n/g, '\n'));
  return { ...outcome, content: outcome.content.replace(/\n/g, '\r\n') };
}

function hasRuntimeType(table: unknown): boolean {
  return isTable(table) && typeof table.runtime_type === 'string' && table.runtime_type !== '';
}

function readConfig(text: string, file = 'config.toml'): Config {
  const data = parseToml(text, file);
  return { file, text, data, layout: scanToml(text) };
}

function isEmptyConfig(config: Config): boolean {
  return Object.keys(config.data).length === 0;
}

function runtimesPathOf(version: ConfigVersion): string[] {
  return ['plugins', criRuntimePlugin[version], 'containerd', 'runtimes'];
}

/**
 * The config version: the `version` key (0 counts as 1, as in containerd), or for a file without one (a v1 config
 * or a drop-in) what its plugin ids show. containerd 2.x migrates a version-less import to the main config's
 * version, so a drop-in that already uses `io.containerd.cri.v1.runtime` (corpus 18) is a version 3 file.
 */
function schemaOf(config: Config): Schema {
  const declared = config.data.version;
  if (declared === undefined) {
    const plugins = isTable(config.data.plugins) ? Object.keys(config.data.plugins) : [];
    const version = plugins.some((id) => id.startsWith('io.containerd.cri.v1.')) ? 3 : plugins.includes(criRuntimePlugin[2]) ? 2 : 1;
    return { version, declared: undefined, runtimesPath: runtimesPathOf(version) };
  }
  const line = topLevelKey(config.layout, 'version')?.line ?? 1;
  if (typeof declared !== 'number' || !Number.isInteger(declared)) {
    throw new ContainerdConfigError(ContainerdConfigUnsupported, `${config.file}:${line}: version must be an integer from 1 to 4, got ${JSON.stringify(declared)}; containerd would refuse this file`);
  }
  if (declared < 0 || declared > 4) {
    throw new ContainerdConfigError(
      ContainerdConfigUnsupported,
      `${config.file}:${line}: config version ${declared} is not one katafleet knows (1 and 2: containerd 1.x, 3: containerd 2.0-2.2, 4: containerd 2.3+); patch this file by hand or update katafleet`,
    );
  }
  const version = Math.max(declared, 1) as ConfigVersion;
  return { version, declared, runtimesPath: runtimesPathOf(version) };
}

function disabledCriPlugin(config: Config): string | undefined {
  const disabled = config.data.disabled_plugins;
  return Array.isArray(disabled) ? criPluginIds.find((id) => disabled.includes(id)) : undefined;
}

function assertCriEnabled(config: Config): void {
  const id = disabledCriPlugin(config);
  if (id === undefined) return;
  const line = topLevelKey(config.layout, 'disabled_plugins')?.line ?? 1;
  const what = id === 'io.containerd.cri.v1.images' ? 'the CRI image service is off, and the CRI plugin needs it' : 'the CRI plugin is off';
  throw new ContainerdConfigError(
    ContainerdCriDisabled,
    `${config.file}:${line}: disabled_plugins contains "${id}": ${what}, so Kubernetes cannot use any runtime handler; remove "${id}" from disabled_plugins first`,
  );
}

/**
 * A main config that configures no CRI plugin itself but imports other files keeps its CRI settings there
 * (Talos: `/etc/cri/conf.d/cri.toml`, corpus 14): runtimes appended here would live apart from the settings
 * they belong with, in a file the distribution may regenerate. Refuse and name the imports.
 */
function assertCriConfiguredHere(config: Config, schema: Schema): void {
  const imports = config.data.imports;
  if (!Array.isArray(imports) || imports.length === 0) return;
  const plugins = config.data.plugins;
  const configuresCri = isTable(plugins) && Object.keys(plugins).some((id) => criPluginIds.includes(id));
  if (configuresCri) return;
  const line = topLevelKey(config.layout, 'imports')?.line ?? 1;
  const names = imports.map((name) => JSON.stringify(name)).join(', ');
  const remedy =
    schema.version >= 3
      ? `use mode "drop-in" to add the runtimes as a separate file in imports, or patch ${names} itself`
      : `patch ${names} itself (containerd 1.x replaces a whole plugin table with an imported one, so a drop-in cannot add to it)`;
  throw new ContainerdConfigError(
    ContainerdConfigUnsupported,
    `${config.file}:${line}: this file configures no CRI plugin itself; its CRI settings come from imports ${names}, so runtimes appended here would live apart from them; ${remedy}`,
  );
}

function assertDistinctNames(runtimes: readonly RuntimeSpec[], file: string): void {
  const seen = new Set<string>();
  for (const { name } of runtimes) {
    if (seen.has(name)) throw new ContainerdConfigError(ContainerdConfigConflict, `${file}: the playbook adds runtime "${name}" twice; keep one`);
    seen.add(name);
  }
}

interface RuntimePlan {
  add: RuntimeSpec[];
  replace: RuntimeSpec[];
}

/** Which runtimes are new, which replace an existing one; `ContainerdConfigConflict` for a different one without `replace`. */
function planRuntimes(config: Config, schema: Schema, runtimes: readonly RuntimeSpec[], replace: boolean, remedy: string): RuntimePlan {
  const plan: RuntimePlan = { add: [], replace: [] };
  for (const runtime of runtimes) {
    const target = [...schema.runtimesPath, runtime.name];
    const existing = getPath(config.data, target);
    if (existing === undefined) plan.add.push(runtime);
    else if (dataEqual(withoutEmptyOptions(existing), runtimeData(runtime))) continue;
    else if (replace) plan.replace.push(runtime);
    else {
      const header = config.layout.headers.find((h) => samePath(h.path, target));
      const place = header ? `${config.file}:${header.line}` : config.file;
      throw new ContainerdConfigError(
        ContainerdConfigConflict,
        `${place}: runtime "${runtime.name}" already exists with other settings (${describeDifferences(existing, runtimeData(runtime))}); ${remedy}`,
      );
    }
  }
  return plan;
}

/** An empty `[...runtimes.NAME.options]` table means the same as none. */
function withoutEmptyOptions(table: unknown): unknown {
  if (!isTable(table) || !isTable(table.options) || Object.keys(table.options).length > 0) return table;
  const rest = { ...table };
  delete rest.options;
  return rest;
}

function describeDifferences(existing: unknown, wanted: TomlData): string {
  const shown = (value: unknown) => (value === undefined ? 'unset' : JSON.stringify(value));
  return dataDifferences(wanted, existing)
    .map((key) => `${key} is ${shown(getPath(isTable(existing) ? existing : {}, key.split('.')))}, the playbook wants ${shown(getPath(wanted, key.split('.')))}`)
    .join('; ');
}

function patchInPlace(config: Config, schema: Schema, runtimes: readonly RuntimeSpec[], replace: boolean): PatchOutcome {
  const plan = planRuntimes(config, schema, runtimes, replace, 'set replace = true on the containerd-patch step to overwrite it, or give the playbook runtime another name');
  if (plan.add.length === 0 && plan.replace.length === 0) {
    return { status: 'unchanged', content: config.text, version: schema.declared, pluginPath: schema.runtimesPath };
  }
  let text = config.text;
  const expected = cloneData(config.data);
  for (const runtime of plan.replace) {
    const target = [...schema.runtimesPath, runtime.name];
    const layout = scanToml(text);
    assertOnlyTables(config.file, layout, target, 'replace');
    const style = styleOf({ ...config, text, layout }, schema.runtimesPath, runtime.name);
    text = cutSpans(text, tableSpans(text, layout, target, false), renderRuntime(schema.runtimesPath, runtime, style));
    setPath(expected, target, runtimeData(runtime));
  }
  const added = plan.add.map((runtime) => runtime.name);
  if (plan.add.length > 0) {
    for (const runtime of plan.add) assertAppendable(config, [...schema.runtimesPath, runtime.name]);
    // containerd 1.x decodes a `runtimes` table into a new map (pelletier/go-toml v1), dropping the built-in runc.
    const keepRunc = schema.version <= 2 && getPath(config.data, schema.runtimesPath) === undefined && !added.includes('runc');
    const style = styleOf(config, schema.runtimesPath, undefined);
    const blocks = plan.add.map((runtime) => `${style.headerIndent}# Added by katafleet: runtime handler "${runtime.name}".\n${renderRuntime(schema.runtimesPath, runtime, style)}`);
    if (keepRunc) {
      blocks.unshift(
        `${style.headerIndent}# Added by katafleet: containerd's built-in "runc", written out because containerd 1.x forgets its\n` +
          `${style.headerIndent}# built-in runtimes as soon as the file defines any (and then fails on default_runtime_name = "runc").\n` +
          renderRuntime(schema.runtimesPath, runcRuntime, style),
      );
      added.unshift('runc');
      setPath(expected, [...schema.runtimesPath, 'runc'], runtimeData(runcRuntime));
    }
    const siblings = tableSpans(text, scanToml(text), schema.runtimesPath, false);
    text = insertBlock(text, siblings.length > 0 ? Math.max(...siblings.map((span) => span.end)) : undefined, blocks.join('\n'));
    for (const runtime of plan.add) setPath(expected, [...schema.runtimesPath, runtime.name], runtimeData(runtime));
  }
  const replaced = plan.replace.map((runtime) => runtime.name);
  verifyEdit(text, expected, config.file, `runtimes ${[...added, ...replaced].join(', ')} added`);
  return { status: 'patched', content: text, version: schema.declared, pluginPath: schema.runtimesPath, added, replaced };
}

/**
 * An empty (or missing, or comments-only) config means containerd's built-in defaults. A file holding only the
 * new runtime would replace the built-in runtimes on containerd 1.x, and the CRI plugin would then fail on its
 * default `default_runtime_name = "runc"`. So the result keeps runc explicitly, in a version 2 file that
 * containerd 1.3+ reads and containerd 2.x migrates.
 */
function patchEmptyConfig(config: Config, runtimes: readonly RuntimeSpec[]): PatchOutcome {
  const schema: Schema = { version: 2, declared: 2, runtimesPath: runtimesPathOf(2) };
  const all = runtimes.some((runtime) => runtime.name === 'runc') ? runtimes : [runcRuntime, ...runtimes];
  const header =
    '# Written by katafleet: this config was empty, so containerd ran on its built-in defaults. Those include\n' +
    '# the runtime "runc", which is written out below: containerd 1.x replaces its built-in runtimes with the\n' +
    '# ones in this file, and the CRI plugin would fail without the default runtime "runc".\n' +
    'version = 2\n\n';
  const text = appendBlock(config.text, header + all.map((runtime) => renderRuntime(schema.runtimesPath, runtime, plainStyle)).join('\n'));
  const expected: TomlData = { version: 2 };
  for (const runtime of all) setPath(expected, [...schema.runtimesPath, runtime.name], runtimeData(runtime));
  verifyEdit(text, expected, config.file, 'a version 2 config written for an empty one');
  return { status: 'patched', content: text, version: 2, pluginPath: schema.runtimesPath, added: all.map((runtime) => runtime.name), replaced: [] };
}

/**
 * Drop-in mode (containerd ≥ 2.0): the runtimes go to their own file, and this file's `imports` gains its path
 * unless an existing import (or glob) already covers it. containerd 1.x replaces a whole plugin table with an
 * imported one instead of merging it, so version 1 and 2 files are refused.
 */
function patchWithDropIn(config: Config, schema: Schema, runtimes: readonly RuntimeSpec[], options: PatchOptions): PatchOutcome {
  if (schema.declared === undefined || schema.version < 3) {
    const what = schema.declared === undefined ? 'has no version key (a version 1 file or itself a drop-in)' : `is version ${schema.declared}`;
    throw new ContainerdConfigError(
      ContainerdConfigUnsupported,
      `${config.file}: drop-in mode needs a main config of version 3 or 4 (containerd ≥ 2.0), but this one ${what}; containerd 1.x replaces a whole plugin table with an imported one, which would drop this file's CRI settings; use mode "in-place"`,
    );
  }
  const path = options.dropInPath ?? defaultDropInPath;
  if (!/^\/[A-Za-z0-9._/-]+$/.test(path) || path.split('/').includes('..')) {
    throw new ContainerdConfigError(ContainerdConfigUnsupported, `drop-in path ${JSON.stringify(path)} must be an absolute path of letters, digits, ".", "_", "-" and "/"`);
  }
  planRuntimes(
    config,
    schema,
    runtimes,
    false,
    `containerd merges a drop-in key by key into this table, so the two would mix; remove it from ${config.file} first, or use mode "in-place" with replace = true`,
  );
  const dropIn = { path, content: renderDropIn(runtimes, 3) };
  const imports = config.data.imports;
  const covered = Array.isArray(imports) && imports.some((pattern) => typeof pattern === 'string' && importCovers(pattern, path));
  if (covered) return { status: 'unchanged', content: config.text, version: schema.declared, pluginPath: schema.runtimesPath, dropIn };

  const item = tomlString(path, styleOf(config, schema.runtimesPath, undefined).quote);
  const importsKey = topLevelKey(config.layout, 'imports');
  const versionKey = topLevelKey(config.layout, 'version');
  let text: string;
  if (importsKey) {
    if (!Array.isArray(imports) || config.text[importsKey.valueStart] !== '[') {
      throw new ContainerdConfigError(ContainerdConfigUnsupported, `${config.file}:${importsKey.line}: imports must be an array of file paths`);
    }
    text = appendToArray(config.text, importsKey.valueStart, importsKey.valueEnd, item);
  } else if (versionKey) {
    text = insertLineAfter(config.text, versionKey.lineEnd, `imports = [${item}]`);
  } else {
    throw new ContainerdConfigError(ContainerdConfigUnsupported, `${config.file}: the version key is not a plain top-level line; add imports = ["${path}"] by hand`);
  }
  const expected = cloneData(config.data);
  expected.imports = [...(Array.isArray(imports) ? imports : []), path];
  verifyEdit(text, expected, config.file, `"${path}" added to imports`);
  return {
    status: 'patched',
    content: text,
    version: schema.declared,
    pluginPath: schema.runtimesPath,
    added: runtimes.map((runtime) => runtime.name),
    replaced: [],
    dropIn,
  };
}

/** Whether an `imports` entry names `path`: containerd globs entries containing `*` (Go filepath.Glob), else compares cleaned paths. */
function importCovers(pattern: string, path: string): boolean {
  if (!pattern.includes('*')) return pattern.replace(/\/+/g, '/').replace(/\/\.\//g, '/') === path;
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') source += '[^/]*';
    else if (c === '?') source += '[^/]';
    else if (c === '[') {
      const close = pattern.indexOf(']', i + 1);
      if (close === -1) return false;
      source += `[${pattern.slice(i + 1, close)}]`;
      i = close;
    } else if (c === '\\' && i + 1 < pattern.length) source += `\\${pattern[++i]}`;
    else source += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${source}$`).test(path);
}

/** Refuses when a key/value line (dotted key or inline table) defines `target` or one of its tables: only [table] sections are edited. */
function assertOnlyTables(file: string, layout: TomlLayout, target: readonly string[], verb: 'remove' | 'replace'): void {
  for (const kv of layout.keyValues) {
    const full = [...kv.table, ...kv.key];
    if (startsWith(full, target) && !startsWith(kv.table, target)) {
      throw new ContainerdConfigError(
        ContainerdConfigUnsupported,
        `${file}:${kv.line}: ${dotted(target)} is written with a dotted key or an inline table (${dotted(kv.key)} = ...); katafleet only edits [table] sections: rewrite it as [${dotted(target)}] to let katafleet ${verb} it`,
      );
    }
  }
}

/** Refuses when an ancestor of `target` is not a table that a `[target]` header can extend (an inline table, an array, a scalar). */
function assertAppendable(config: Config, target: readonly string[]): void {
  for (let depth = 1; depth < target.length; depth++) {
    const path = target.slice(0, depth);
    const value = getPath(config.data, path);
    if (value === undefined) return;
    const definedBy = config.layout.keyValues.find((kv) => samePath([...kv.table, ...kv.key], path));
    if (isTable(value) && definedBy === undefined) continue;
    const header = config.layout.headers.find((h) => samePath(h.path, path));
    const line = definedBy?.line ?? header?.line;
    const what = isTable(value) ? 'an inline table' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    throw new ContainerdConfigError(
      ContainerdConfigUnsupported,
      `${config.file}${line === undefined ? '' : `:${line}`}: ${dotted(path)} is ${what}, so no [${dotted(target)}] section can be added to it; rewrite ${dotted(path)} as [table] sections first`,
    );
  }
}

/** After removals: a table that is now empty and was only implied by the removed headers disappears from the parse. */
function pruneImplicitTables(expected: TomlData, layout: TomlLayout, runtimesPath: readonly string[]): void {
  for (let depth = runtimesPath.length; depth > 0; depth--) {
    const path = runtimesPath.slice(0, depth);
    const table = getPath(expected, path);
    const declared = layout.headers.some((header) => samePath(header.path, path));
    if (isTable(table) && Object.keys(table).length === 0 && !declared) deletePath(expected, path);
  }
}

/**
 * How the file writes runtime tables: the runtime being replaced, else the first other runtime, else the last table of
 * the file gives the indentation; the CRI plugin headers (or any quoted header key) give the quote.
 */
function styleOf(config: Config, runtimesPath: readonly string[], name: string | undefined): TomlStyle {
  const { headers, keyValues } = config.layout;
  const pluginHeader = headers.find((h) => h.quote !== undefined && h.path[0] === 'plugins' && criPluginIds.includes(h.path[1]));
  const quote = (pluginHeader ?? headers.find((h) => h.quote !== undefined))?.quote ?? '"';
  const runtimeHeaders = headers.filter((h) => h.kind === 'table' && h.path.length === runtimesPath.length + 1 && startsWith(h.path, runtimesPath));
  const model = runtimeHeaders.find((h) => h.path[runtimesPath.length] === name) ?? runtimeHeaders[0] ?? headers[headers.length - 1];
  if (model === undefined) return { ...plainStyle, quote };
  const keyIndentOf = (header: TomlHeader | undefined) => keyValues.find((kv) => header !== undefined && samePath(kv.table, header.path))?.indent;
  const headerIndent = model.indent;
  const keyIndent = keyIndentOf(model) ?? `${headerIndent}  `;
  const step = keyIndent.startsWith(headerIndent) ? keyIndent.slice(headerIndent.length) : '';
  const options = runtimeHeaders.includes(model) ? headers.find((h) => samePath(h.path, [...model.path, 'options'])) : undefined;
  const optionsHeaderIndent = options?.indent ?? keyIndent;
  const optionsKeyIndent = keyIndentOf(options) ?? `${optionsHeaderIndent}${step}`;
  const blankBeforeOptions = options !== undefined && /\n[ \t]*\n[ \t]*$/.test(config.text.slice(0, options.lineStart));
  return { quote, headerIndent, keyIndent, optionsHeaderIndent, optionsKeyIndent, blankBeforeOptions };
}

function topLevelKey(layout: TomlLayout, key: string) {
  return layout.keyValues.find((kv) => kv.table.length === 0 && kv.key.length === 1 && kv.key[0] === key);
}

function dotted(path: readonly string[]): string {
  return path.map((key) => (/^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key))).join('.');
}
