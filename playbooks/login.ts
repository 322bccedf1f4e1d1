/**
 * The worker's side of credential profiles: a node target names where its login is kept (a profile of a
 * credentials file, or the `[ssh]` settings of the operator's inventory file), and the worker reads it from
 * there. A target never carries a key path or a known_hosts path of its own, so a workflow started straight on
 * Temporal cannot make the worker use a key or write a known_hosts file of its choosing; it can only point at
 * files that belong to the worker's user (or root) and that nobody else can write.
 */
import { statSync } from 'node:fs';
import type { CredentialRef, KubeconfigRef } from '../activities/node-types';
import { loginOf, parseCredentials, profileScopeProblem, readTrustedFile, untrustedFileReason, type Login } from './credentials';
import { parseInventory } from './load';
import { resolveNodeSsh } from './schema';

/** A profile named for a node address its `hosts` do not cover: refused before anything reaches the node. */
export class ProfileScopeError extends Error {
  override name = 'ProfileScopeError';
}

/** Parsed files by path, valid while the file's identity, size and mtime stay the same. */
const cache = new Map<string, { stamp: string; value: unknown }>();

function cached<T>(file: string, parse: (text: string) => T): T {
  const stat = statSync(file);
  const stamp = `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
  const hit = cache.get(file);
  if (hit?.stamp === stamp) return hit.value as T;
  const value = parse(readTrustedFile(file));
  cache.set(file, { stamp, value });
  return value;
}

/**
 * The login for node `node.name` as `ref` says where to find it. A profile logs in only to the addresses its
 * `hosts` cover ({@link ProfileScopeError} otherwise). An inventory's own login is bound to the
 * address (and port) that inventory gives the node: a target that names the inventory but another address is
 * refused, so the operator's key for one fleet does not travel to hosts the inventory does not list.
 * @throws Error whose message names the file and the fix (the caller turns it into a permanent failure)
 */
export function loginFor(ref: CredentialRef, node: { name: string; address: string; port: number }): Login {
  const login = findLogin(ref, node);
  refuseExposedKey(login.identityFile);
  return login;
}

/** A private key that group or others can read is refused, as OpenSSH refuses it; a missing one is left to the SSH layer's message. */
function refuseExposedKey(file: string): void {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch {
    return;
  }
  if ((mode & 0o077) !== 0) throw new Error(`the private key ${file} can be read by group or others (mode ${(mode & 0o777).toString(8)}): chmod 600 ${file}`);
}

function findLogin(ref: CredentialRef, node: { name: string; address: string; port: number }): Login {
  const nodeName = node.name;
  if ('profile' in ref) {
    const credentials = cached(ref.file, (text) => parseCredentials(text, ref.file));
    const profile = credentials.profiles[ref.profile];
    if (!profile) throw new Error(`no credential profile named "${ref.profile}" in ${ref.file} — add [profiles.${ref.profile}] there`);
    const outOfScope = profileScopeProblem(ref.profile, profile, node.address, ref.file);
    if (outOfScope) throw new ProfileScopeError(outOfScope);
    return loginOf(profile);
  }
  const inventory = cached(ref.inventory, (text) => parseInventory(text, ref.inventory));
  const listed = inventory.nodes.find((candidate) => candidate.name === nodeName);
  if (!listed) throw new Error(`${ref.inventory} has no node named "${nodeName}"`);
  const ssh = resolveNodeSsh(inventory, listed);
  if (listed.address !== node.address || ssh.port !== node.port) {
    throw new Error(`${ref.inventory} lists node ${nodeName} at ${listed.address} port ${ssh.port}, not at ${node.address} port ${node.port}; start the rollout again from the inventory`);
  }
  if (ssh.profile !== undefined) throw new Error(`${ref.inventory}: node ${nodeName} uses credential profile "${ssh.profile}"; start the rollout again so that it names the profile`);
  if (!ssh.identity_file) {
    throw new Error(`Node ${nodeName} has no identity_file: katafleet's SSH pool logs in with a key file, not the SSH agent — set identity_file in the inventory's [ssh] table or for this node, or use a credential profile`);
  }
  return { user: ssh.user, identityFile: ssh.identity_file, knownHosts: ssh.known_hosts, sudo: ssh.sudo, trustOnFirstUse: ssh.trust_on_first_use };
}

/**
 * The kubeconfig (and, from an inventory, the kubectl) the worker uses for `ref`. The kubeconfig must be a regular
 * file owned by the worker's user (or root) that nobody else can write, like a credentials file: it says which API
 * server to trust and which token to send.
 * @throws Error whose message names the file and the fix (the caller turns it into a permanent failure)
 */
export function kubeconfigFor(ref: KubeconfigRef): { kubeconfig: string; kubectl?: string } {
  let found: { kubeconfig?: string; kubectl?: string };
  let where: string;
  if ('profile' in ref) {
    const profile = cached(ref.file, (text) => parseCredentials(text, ref.file)).profiles[ref.profile];
    if (!profile) throw new Error(`no credential profile named "${ref.profile}" in ${ref.file} — add [profiles.${ref.profile}] there`);
    found = { kubeconfig: profile.kubeconfig };
    where = `[profiles.${ref.profile}] of ${ref.file}`;
  } else {
    const kubernetes = cached(ref.inventory, (text) => parseInventory(text, ref.inventory)).kubernetes;
    if (kubernetes?.control_plane !== undefined || kubernetes?.profile !== undefined) {
      throw new Error(`${ref.inventory} no longer names a kubeconfig on the worker in [kubernetes]; start the rollout again from the inventory`);
    }
    found = { kubeconfig: kubernetes?.kubeconfig, kubectl: kubernetes?.kubectl === 'kubectl' ? undefined : kubernetes?.kubectl };
    where = `[kubernetes] of ${ref.inventory}`;
  }
  if (found.kubeconfig === undefined) throw new Error(`${where} has no kubeconfig — add kubeconfig = "<file on the worker>" there`);
  let stat;
  try {
    stat = statSync(found.kubeconfig);
  } catch (error) {
    throw new Error(`the kubeconfig ${found.kubeconfig} (${where}) cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}) — create it, or fix the path`);
  }
  if (!stat.isFile()) throw new Error(`the kubeconfig ${found.kubeconfig} (${where}) is not a regular file`);
  const untrusted = untrustedFileReason(stat);
  if (untrusted) throw new Error(`the kubeconfig ${found.kubeconfig} ${untrusted}`);
  return { kubeconfig: found.kubeconfig, ...(found.kubectl ? { kubectl: found.kubectl } : {}) };
}
