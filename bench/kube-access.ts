// How the benchmarks give the worker the Kubernetes API: the control plane's kubeconfig in the fleet's credential
// profile (README "The API from the worker"), as an operator does for a rollout through the API. The inventory then
// says `[kubernetes] profile = ...`; the Kubernetes steps call the API server from the worker and start no kubectl.
import { chmod, copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { kubernetesBinaries } from '../sim/control-plane';
import { simProfile } from '../sim/inventory';

/** The kubectl the worker starts once per kubeconfig (to read it); set before the worker process starts. */
export function useBenchKubectl(): void {
  process.env.KATAFLEET_KUBECTL = join(kubernetesBinaries().binDir, 'kubectl');
}

/** A copy of the control plane's kubeconfig that the worker owns (mode 600), in `dir`. */
export async function workerKubeconfig(controlPlaneKubeconfig: string, dir: string): Promise<string> {
  const file = join(dir, 'worker.kubeconfig');
  await copyFile(controlPlaneKubeconfig, file);
  await chmod(file, 0o600);
  return file;
}

/** Adds that kubeconfig to the sim's profile of the fleet's credentials file (`fleetDir`/credentials.toml). */
export async function giveProfileTheKubeconfig(fleetDir: string, controlPlaneKubeconfig: string, dir: string): Promise<void> {
  useBenchKubectl();
  const credentials = join(fleetDir, 'credentials.toml');
  const kubeconfig = await workerKubeconfig(controlPlaneKubeconfig, dir);
  const text = await readFile(credentials, 'utf8');
  const header = `[profiles.${simProfile}]\n`;
  if (!text.includes(header)) throw new Error(`${credentials} has no ${header.trim()} table`);
  await writeFile(credentials, text.replace(header, `${header}kubeconfig = ${JSON.stringify(kubeconfig)}\n`));
}

/** The inventory's `[kubernetes]` table for the API from the worker. */
export const kubernetesThroughProfile = `[kubernetes]\nprofile = ${JSON.stringify(simProfile)}\n`;
