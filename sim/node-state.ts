// What a simulated node's container runtime looks like right now, read from the host side (no SSH):
// the running containerd's CRI view (crictl info over the node's socket), the shims on the node's
// PATH, and the guest kernel of the installed sandbox packages. The Kubernetes simulation uses it to
// decide Node Ready and whether a pod with a RuntimeClass can run.
import { execFile } from 'node:child_process';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { SimNode } from './fleet';
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
  /** containerd-shim-*-v* binaries on the node's PATH (what containerd can start). */
  shims: string[];
  /** Guest kernel of the installed Kata package (`uname -r` inside a Kata pod), if installed. */
  guestKernel?: string;
  /** Kernel each sandboxing shim shows its pods, by shim name (kata: its guest kernel, runsc: gVisor's). */
  guestKernels: Record<string, string>;
  /** `uname -r` on the node. */
  hostKernel: string;
}

// The node's PATH: private dirs (mapped into the node's directory) and the machine's.
const nodePath = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const privateRoots = ['/usr/local/bin', '/opt', '/root', '/tmp', '/home', '/run', '/var/lib/containerd'];

/** Host path of a path as the node sees it (only private directories differ). */
export function hostPathOf(node: Pick<SimNode, 'dir'>, pathInNode: string): string {
  const root = privateRoots.find((r) => pathInNode === r || pathInNode.startsWith(`${r}/`));
  if (root) return join(node.dir, 'fs', pathInNode);
  if (pathInNode === '/usr/local/sbin' || pathInNode.startsWith('/usr/local/sbin/')) return join(node.dir, '..', '..', 'sbin', pathInNode.slice('/usr/local/sbin'.length));
  return pathInNode;
}

/** Follows symlinks the way the node would (absolute targets inside the node's view). */
async function existsInNode(node: Pick<SimNode, 'dir'>, pathInNode: string, depth = 0): Promise<boolean> {
  if (depth > 8) return false;
  const host = hostPathOf(node, pathInNode);
  try {
    const target = await readlink(host);
    const next = isAbsolute(target) ? target : resolve(pathInNode, '..', target);
    return existsInNode(node, next, depth + 1);
  } catch {
    return stat(host).then((s) => s.isFile(), () => false);
  }
}

async function installedShims(node: SimNode): Promise<string[]> {
  const found = new Set<string>();
  for (const dir of nodePath) {
    const entries = await readdir(hostPathOf(node, dir)).catch(() => [] as string[]);
    for (const entry of entries) {
      if (/^containerd-shim-[a-z0-9]+-v\d+$/.test(entry) && (await existsInNode(node, `${dir}/${entry}`))) found.add(entry);
    }
  }
  return [...found].sort();
}

interface CriInfo {
  status?: { conditions?: { type: string; status: boolean }[]; runtimeHandlers?: { name: string }[] };
  config?: { containerd?: { runtimes?: Record<string, { runtimeType?: string }> } };
}

async function criInfo(node: SimNode): Promise<CriInfo | undefined> {
  try {
    const { stdout } = await run(crictlPath, ['--runtime-endpoint', `unix://${node.containerdSocket}`, '--timeout', '3s', 'info'], {
      env: nodeProcessEnv,
      timeout: 10_000,
      maxBuffer: 8 << 20,
    });
    return JSON.parse(stdout) as CriInfo;
  } catch {
    return undefined;
  }
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
  const guestKernel = (await readFile(hostPathOf(node, '/opt/kata/share/kata-containers/guest-kernel-version'), 'utf8').catch(() => '')).trim() || undefined;
  const guestKernels: Record<string, string> = {};
  if (guestKernel && shims.includes('containerd-shim-kata-v2')) guestKernels['containerd-shim-kata-v2'] = guestKernel;
  if (shims.includes('containerd-shim-runsc-v1')) guestKernels['containerd-shim-runsc-v1'] = gvisorKernel;
  return {
    containerdActive: info !== undefined,
    handlers: [...handlers].sort(),
    runtimeTypes,
    shims,
    guestKernel,
    guestKernels,
    hostKernel: node.hostKernel,
  };
}
