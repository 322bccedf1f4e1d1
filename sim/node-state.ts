// What a simulated node's container runtime looks like right now, read from the host side (no SSH):
// the running containerd's CRI view (crictl info over the node's socket), the shims on the node's
// PATH, and the guest kernel of the installed sandbox packages. The Kubernetes simulation uses it to
// decide Node Ready and whether a pod with a RuntimeClass can run.
import { execFile } from 'node:child_process';
import { existsSync, lstatSync } from 'node:fs';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { SimNode } from './sim-node';
import { crictlPath, nodeProcessEnv } from './tools';
import { nodePaths } from './node-files';
import { gvisorKernel } from './packages';

const run = promisify(execFile);

export interface NodeRuntimeState {
  /** The service manager reports containerd active and its CRI answers. */
  containerdActive: boolean;
  /** Runtime handlers of the running containerd, as its CRI reports them (`crictl info`). */
  handlers: string[];
  /** handler → runtime_type (e.g. `io.containerd.kata.v2`) from the same CRI answer. */
  runtimeTypes: Record<string, string>;
  /** handler → its CRI `runtime_path` and whether a file is there (symlinks followed as on the node). */
  runtimePaths: Record<string, { path: string; exists: boolean }>;
  /** containerd-shim-*-v* binaries on the node's PATH (what containerd can start). */
  shims: string[];
  /** Guest kernel of the installed Kata package (`uname -r` inside a Kata pod), if installed. */
  guestKernel?: string;
  /** Kernel each sandboxing shim shows its pods, by shim name (kata: its guest kernel, runsc: gVisor's). */
  guestKernels: Record<string, string>;
  /** `uname -r` on the node. */
  hostKernel: string;
}

// The node's PATH (/bin and /sbin are links to /usr/bin and /usr/sbin on Debian 12).
const nodePath = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin'];
const privateRoots = ['/usr/local/bin', '/opt', '/root', '/tmp', '/home', '/run', '/var/lib/containerd', '/sys/module'];
const overlayRoots = ['/etc', '/var', '/usr'];
const mergedUsr: Record<string, string> = { '/bin': '/usr/bin', '/sbin': '/usr/sbin', '/lib': '/usr/lib', '/lib64': '/usr/lib64' };

const under = (path: string, root: string) => path === root || path.startsWith(`${root}/`);

/** A whiteout: how an overlay's upper layer records a file the node deleted. */
function isWhiteout(path: string): boolean {
  try {
    const s = lstatSync(path);
    return s.isCharacterDevice() && s.rdev === 0;
  } catch {
    return false;
  }
}

/**
 * Where a path as the node sees it lives on the machine: in the node's private directories, in the
 * upper layer of its /etc, /var or /usr overlay when the node changed it there, else the machine's own.
 * A path the node deleted maps to a path that does not exist.
 */
export function hostPathOf(node: Pick<SimNode, 'dir'>, pathInNode: string): string {
  const link = Object.keys(mergedUsr).find((l) => under(pathInNode, l));
  const path = link ? mergedUsr[link] + pathInNode.slice(link.length) : pathInNode;
  if (under(path, '/usr/local/sbin')) return join(node.dir, '..', '..', 'sbin', path.slice('/usr/local/sbin'.length));
  if (privateRoots.some((r) => under(path, r))) return join(node.dir, 'fs', path);
  const tree = overlayRoots.find((r) => under(path, r));
  if (tree) {
    const upper = join(node.dir, 'overlay', tree.slice(1), 'upper', path.slice(tree.length));
    if (isWhiteout(upper)) return join(node.dir, 'deleted-in-node', path);
    if (existsSync(upper)) return upper;
  }
  return path;
}

/** Entries of a directory as the node sees it (an overlay directory: upper and lower, minus whiteouts). */
async function readdirInNode(node: Pick<SimNode, 'dir'>, dirInNode: string): Promise<string[]> {
  const tree = overlayRoots.find((r) => under(dirInNode, r));
  const host = hostPathOf(node, dirInNode);
  if (!tree || host === dirInNode) return readdir(host).catch(() => []);
  const upperEntries = await readdir(host).catch(() => [] as string[]);
  const lowerEntries = await readdir(dirInNode).catch(() => [] as string[]);
  const visible = new Set([...lowerEntries, ...upperEntries]);
  for (const entry of upperEntries) if (isWhiteout(join(host, entry))) visible.delete(entry);
  return [...visible];
}

/**
 * The path with every symlink resolved the way the node would resolve it, component by component (absolute
 * targets inside the node's view: `/opt/kata` → `/opt/kata-releases/3.32.0/opt/kata`), or undefined after 40 links.
 */
export async function realPathInNode(node: Pick<SimNode, 'dir'>, pathInNode: string): Promise<string | undefined> {
  let parts = pathInNode.split('/').filter(Boolean);
  let done = '';
  for (let links = 0; parts.length > 0;) {
    const next = `${done}/${parts[0]}`;
    const target = await readlink(hostPathOf(node, next)).catch(() => undefined);
    if (target === undefined) {
      done = next;
      parts = parts.slice(1);
      continue;
    }
    if (++links > 40) return undefined;
    const resolved = isAbsolute(target) ? target : resolve(done || '/', target);
    parts = [...resolved.split('/').filter(Boolean), ...parts.slice(1)];
    done = '';
  }
  return done || '/';
}

/** Whether a regular file is at `pathInNode`, following symlinks the way the node would. */
async function existsInNode(node: Pick<SimNode, 'dir'>, pathInNode: string): Promise<boolean> {
  const real = await realPathInNode(node, pathInNode);
  return real !== undefined && stat(hostPathOf(node, real)).then((s) => s.isFile(), () => false);
}

async function installedShims(node: SimNode): Promise<string[]> {
  const found = new Set<string>();
  for (const dir of nodePath) {
    for (const entry of await readdirInNode(node, dir)) {
      if (/^containerd-shim-[a-z0-9]+-v\d+$/.test(entry) && (await existsInNode(node, `${dir}/${entry}`))) found.add(entry);
    }
  }
  return [...found].sort();
}

interface CriInfo {
  status?: { conditions?: { type: string; status: boolean }[]; runtimeHandlers?: { name: string }[] };
  config?: { containerd?: { runtimes?: Record<string, { runtimeType?: string; runtimePath?: string }> } };
}

/**
 * The running containerd's CRI view (`crictl info`), asked again only when it can have changed. containerd reads its
 * config (the CRI runtimes and handlers) once, when it starts (`cmd/containerd/command/main.go`: the config is loaded
 * before the server is made; nothing reloads it), and each start unlinks its socket and listens on a new one
 * (`pkg/sys/socket_unix.go` `CreateUnixSocket`, called by `GetLocalListener`), so the same socket file (device, inode,
 * change time) that still accepts a connection is the same containerd with the same config. A restart (a new socket) or a
 * containerd gone (refused, or no socket) asks crictl again. A `crictl info` per node every 2 s cost the process that
 * runs the simulation 22 s of its main thread in `spawn` alone at 100 nodes (bench/rollout-vs-floor.ts, profiled), and
 * the machine the crictl processes' CPU: the real kubelet asks its runtime over the CRI socket, on its own node.
 */
async function criInfo(node: SimNode): Promise<CriInfo | undefined> {
  const socket = await stat(node.containerdSocket).catch(() => undefined);
  const key = socket ? `${socket.dev}:${socket.ino}:${socket.ctimeMs}` : undefined;
  const cached = criInfoBySocket.get(node.containerdSocket);
  if (key !== undefined && cached?.key === key && (await acceptsConnection(node.containerdSocket))) return cached.info;
  criInfoBySocket.delete(node.containerdSocket);
  criInfoAsked.count += 1;
  try {
    const { stdout } = await run(crictlPath, ['--runtime-endpoint', `unix://${node.containerdSocket}`, '--timeout', '3s', 'info'], {
      env: nodeProcessEnv,
      timeout: 10_000,
      maxBuffer: 8 << 20,
    });
    const info = JSON.parse(stdout) as CriInfo;
    // Kept under the socket seen before the question: a restart in between leaves a key that no longer matches.
    if (key !== undefined) criInfoBySocket.set(node.containerdSocket, { key, info });
    return info;
  } catch {
    return undefined;
  }
}

/** The last CRI answer per containerd socket, with the socket's identity when it was asked. */
const criInfoBySocket = new Map<string, { key: string; info: CriInfo }>();

/** How many times `crictl info` was asked (tests check that an unchanged containerd is not asked again). */
export const criInfoAsked = { count: 0 };

/** Whether something listens on the unix socket (a connection accepted within 2 s, then closed). */
function acceptsConnection(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 2000);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export async function readNodeRuntimeState(node: SimNode): Promise<NodeRuntimeState> {
  const paths = nodePaths(node.dir);
  const serviceState = (await readFile(join(paths.services, 'containerd.state'), 'utf8').catch(() => '')).trim();
  const info = serviceState === 'active' ? await criInfo(node) : undefined;
  const runtimes = info?.config?.containerd?.runtimes ?? {};
  const handlers = new Set(Object.keys(runtimes));
  for (const h of info?.status?.runtimeHandlers ?? []) if (h.name) handlers.add(h.name);
  const runtimeTypes = Object.fromEntries(Object.entries(runtimes).map(([name, r]) => [name, r.runtimeType ?? '']));
  const shims = await installedShims(node);
  const kernelFile = await realPathInNode(node, '/opt/kata/share/kata-containers/guest-kernel-version');
  const guestKernel = kernelFile === undefined ? undefined : (await readFile(hostPathOf(node, kernelFile), 'utf8').catch(() => '')).trim() || undefined;
  // runtime_path (containerd >= 1.6): containerd runs that file and ignores the name runtime_type implies.
  const runtimePaths: Record<string, { path: string; exists: boolean }> = {};
  for (const [name, r] of Object.entries(runtimes)) {
    if (r.runtimePath) runtimePaths[name] = { path: r.runtimePath, exists: await existsInNode(node, r.runtimePath) };
  }
  const guestKernels: Record<string, string> = {};
  if (guestKernel && shims.includes('containerd-shim-kata-v2')) guestKernels['containerd-shim-kata-v2'] = guestKernel;
  if (shims.includes('containerd-shim-runsc-v1')) guestKernels['containerd-shim-runsc-v1'] = gvisorKernel;
  return {
    containerdActive: info !== undefined,
    handlers: [...handlers].sort(),
    runtimeTypes,
    runtimePaths,
    shims,
    guestKernel,
    guestKernels,
    hostKernel: node.hostKernel,
  };
}
