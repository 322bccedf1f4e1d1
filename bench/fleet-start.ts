// Benchmark: start a simulated fleet of N nodes (default 20), print how long it took and the memory of
// each node (RSS of every process in the node's process tree: bash init, sshd, containerd, …), check
// that every node answers over SSH, then stop it.
//   npx tsx bench/fleet-start.ts [NODES]
import { readdir, readFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fleetNodeRecords, startFleet } from '../sim/fleet';
import { sshRun } from '../sim/ssh-run';

interface Proc {
  pid: number;
  ppid: number;
  rssKb: number;
  name: string;
}

async function processes(): Promise<Proc[]> {
  const procs: Proc[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    if (!status) continue;
    const field = (key: string) => new RegExp(`^${key}:\\s+(.*)$`, 'm').exec(status)?.[1] ?? '';
    procs.push({ pid: Number(entry), ppid: Number(field('PPid')), rssKb: parseInt(field('VmRSS') || '0', 10), name: field('Name') });
  }
  return procs;
}

function tree(root: number, all: Proc[]): Proc[] {
  const result: Proc[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    const proc = all.find((p) => p.pid === pid);
    if (proc) result.push(proc);
    for (const child of all.filter((p) => p.ppid === pid)) queue.push(child.pid);
  }
  return result;
}

async function main(): Promise<void> {
  const count = Number(process.argv[2] ?? 20);
  const dir = join(await mkdtemp(join(tmpdir(), 'kf-bench-')), 'fleet');
  const started = performance.now();
  const fleet = await startFleet({ nodes: count, dir });
  const startSeconds = (performance.now() - started) / 1000;
  try {
    const sshStarted = performance.now();
    const answers = await Promise.all(fleet.nodes.map((n) => sshRun(fleet, n, 'systemctl is-active containerd')));
    const sshSeconds = (performance.now() - sshStarted) / 1000;
    const failed = answers.filter((a) => a.stdout !== 'active\n');

    const all = await processes();
    const records = await fleetNodeRecords(fleet.dir);
    console.log(`${count} nodes started in ${startSeconds.toFixed(1)} s (target < 60 s)`);
    console.log(`every node answered \`systemctl is-active containerd\` over SSH in ${sshSeconds.toFixed(1)} s (all at once)${failed.length ? `; ${failed.length} did not: ${failed.map((f) => f.host).join(', ')}` : ''}`);
    console.log('');
    console.log('node       address     containerd  RSS MiB  processes');
    let total = 0;
    for (const record of records) {
      const procs = tree(record.initPid, all);
      const rss = procs.reduce((sum, p) => sum + p.rssKb, 0) / 1024;
      total += rss;
      const byName = new Map<string, number>();
      for (const p of procs) byName.set(p.name, (byName.get(p.name) ?? 0) + p.rssKb / 1024);
      const detail = [...byName].map(([name, mib]) => `${name} ${mib.toFixed(1)}`).join(', ');
      console.log(`${record.name.padEnd(10)} ${record.address.padEnd(11)} ${record.containerd.padEnd(11)} ${rss.toFixed(1).padStart(7)}  ${detail}`);
    }
    console.log('');
    console.log(`total ${total.toFixed(0)} MiB, ${(total / records.length).toFixed(1)} MiB per node on average`);
    if (failed.length > 0) process.exitCode = 1;
  } finally {
    const stopStarted = performance.now();
    await fleet.stop();
    console.log(`stopped in ${((performance.now() - stopStarted) / 1000).toFixed(1)} s`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
