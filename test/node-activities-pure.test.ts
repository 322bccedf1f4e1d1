// The pure parts of the step activities: parsing what nodes and kubectl print, building manifests and names.
import { parseCpuFlags, parseLoadedModules, modulesLoadFile } from '../activities/steps/prereq-check';
import { parseInstalled, versionMatches, packageMarkerPath } from '../activities/steps/package-install';
import { backupPathFor } from '../activities/steps/containerd-patch';
import { handlersFromConfigDump, handlersFromCrictlInfo } from '../activities/steps/service-restart';
import { describeHandlerCheck, passesGate } from '../activities/steps/readiness-gate';
import { runtimeClassManifest, sameRuntimeClass } from '../activities/steps/runtime-class';
import { latestWarning, verificationPodName } from '../activities/steps/verification-pod';
import { ReadinessGateStep, RuntimeClassStep } from '../playbooks/schema';
import { createNodeActivities } from '../activities/node-activities';
import { SshPool } from '../activities/ssh';
import type { StepRequest } from '../activities/node-types';
import { activityByKind, kindsWithoutNodeLock, NodeNeedsPrepare } from '../workflows/step-activities';

describe('reading a node', () => {
  it('finds the CPU flags of /proc/cpuinfo on x86 and arm64', () => {
    expect(parseCpuFlags('processor\t: 0\nflags\t\t: fpu vme vmx sse\n').has('vmx')).toBe(true);
    expect(parseCpuFlags('processor\t: 0\nFeatures\t: fp asimd evtstrm\n').has('asimd')).toBe(true);
    expect(parseCpuFlags('processor\t: 0\nflags\t\t: fpu vme sse\n').has('vmx')).toBe(false);
  });

  it('lists loaded modules from /proc/modules and writes modules-load.d one per line', () => {
    expect([...parseLoadedModules('kvm_intel 372736 0 - Live 0x0\nkvm 1142784 1 kvm_intel, Live 0x0\n')]).toEqual(['kvm_intel', 'kvm']);
    expect(modulesLoadFile(['kvm', 'vhost_vsock'])).toMatch(/^# Written by katafleet.*\nkvm\nvhost_vsock\n$/);
  });

  it('reads installed packages from dpkg-query, ignoring removed ones whose config files remain', () => {
    const installed = parseInstalled('kata-containers|ii |3.2.0\nold-tool|rc |1.0\n');
    expect([...installed]).toEqual([['kata-containers', '3.2.0']]);
  });

  it('matches pinned versions exactly with apt, and with or without the release with rpm', () => {
    expect(versionMatches('3.2.0', '3.2.0', 'apt')).toBe(true);
    expect(versionMatches('3.2.0-1', '3.2.0', 'apt')).toBe(false);
    expect(versionMatches('3.2.0-1.el9', '3.2.0', 'dnf')).toBe(true);
    expect(versionMatches('3.2.10-1', '3.2.1', 'dnf')).toBe(false);
  });

  it('names files for the run: the backup next to the config, the package marker under /var/lib/katafleet', () => {
    expect(backupPathFor('/etc/containerd/config.toml', '0f3c2a9e-5b1d-4c7e-9a42-6d8e1f0b7c35')).toBe('/etc/containerd/config.toml.katafleet-0f3c2a9e-5b1.bak');
    expect(packageMarkerPath('0f3c2a9e-5b1d-4c7e', 'install')).toBe('/var/lib/katafleet/installed-0f3c2a9e-5b1-install.packages');
  });

  it('reads the handlers of the running CRI from crictl info (config and runtimeHandlers) and of containerd config dump', () => {
    const info = JSON.stringify({ config: { containerd: { runtimes: { runc: {}, kata: {} } } }, runtimeHandlers: [{ name: '' }, { name: 'runc' }] });
    expect(handlersFromCrictlInfo(info)).toEqual(['kata', 'runc']);
    const dump = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n  runtime_type = "io.containerd.kata.v2"\n';
    expect(handlersFromConfigDump(dump)).toEqual(['kata', 'runc']);
  });
});

describe('reading Kubernetes', () => {
  const node = (ready: string, handlers?: string[]) => ({
    metadata: { name: 'worker-1' },
    status: { conditions: [{ type: 'Ready', status: ready }], ...(handlers ? { runtimeHandlers: handlers.map((name) => ({ name })) } : {}) },
  });

  it('passes the readiness gate only when Ready and, where runtimeHandlers is reported, listing the handlers', () => {
    expect(passesGate(node('True', ['runc', 'kata']), ['kata'])).toBe(true);
    expect(passesGate(node('True', ['runc']), ['kata'])).toBe(false);
    expect(passesGate(node('False', ['kata']), ['kata'])).toBe(false);
    // The kubelet reports it, so the node's CRI is not asked (even when it would say otherwise).
    expect(passesGate(node('True', ['runc']), ['kata'], ['runc', 'kata'])).toBe(false);
  });

  it('relies on the node\'s CRI where the kubelet does not report runtimeHandlers (containerd 1.x)', () => {
    expect(passesGate(node('True'), ['kata'], ['runc', 'kata'])).toBe(true);
    expect(passesGate(node('True'), ['kata'], ['runc'])).toBe(false);
    expect(passesGate(node('True'), ['kata'])).toBe(false);
    expect(passesGate(node('True'), [])).toBe(true);
    expect(describeHandlerCheck(node('True'), ['kata'], { active: true, stale: false, handlers: ['kata', 'runc'], handlerSource: 'crictl info' }))
      .toBe('status.runtimeHandlers not reported (it needs containerd >= 2.0 and Kubernetes >= 1.31), so kata checked on the node instead: crictl info lists kata, runc');
    expect(describeHandlerCheck(node('True'), [], undefined)).toBe('status.runtimeHandlers not reported (it needs containerd >= 2.0 and Kubernetes >= 1.31); Ready checked only');
    expect(describeHandlerCheck(node('True', ['kata']), ['kata'], undefined)).toBe('runtimeHandlers kata');
  });

  it('reports the newest Warning event of a pod', () => {
    const events = { items: [
      { type: 'Warning', reason: 'FailedScheduling', message: 'old', lastTimestamp: '2025-01-01T00:00:00Z' },
      { type: 'Normal', reason: 'Scheduled', message: 'ok', lastTimestamp: '2025-01-01T00:00:09Z' },
      { type: 'Warning', reason: 'FailedCreatePodSandBox', message: 'no runtime for "kata" is configured', lastTimestamp: '2025-01-01T00:00:05Z' },
    ] };
    expect(latestWarning(events)).toBe('FailedCreatePodSandBox: no runtime for "kata" is configured');
    expect(latestWarning({ items: [] })).toBeUndefined();
  });

  it('names verification pods per node, run and attempt, within the 253 characters of a pod name', () => {
    expect(verificationPodName('worker-1', '0f3c2a9e-5b1d', 2)).toBe('katafleet-verify-worker-1-0f3c2a9e-2');
    expect(verificationPodName('a'.repeat(250), '0f3c2a9e', 1).length).toBeLessThanOrEqual(253);
  });

  it('builds a node.k8s.io/v1 RuntimeClass with scheduling.nodeSelector and overhead.podFixed, and sees when the cluster has it already', () => {
    const step = RuntimeClassStep.parse({ id: 'rc', kind: 'runtime-class', name: 'kata', handler: 'kata', node_selector: { 'katacontainers.io/kata-runtime': 'true' }, overhead: { cpu: '250m', memory: '160Mi' } });
    const manifest = runtimeClassManifest(step);
    expect(manifest).toMatchObject({ apiVersion: 'node.k8s.io/v1', handler: 'kata', scheduling: { nodeSelector: { 'katacontainers.io/kata-runtime': 'true' } }, overhead: { podFixed: { cpu: '250m', memory: '160Mi' } } });
    expect(sameRuntimeClass(structuredClone(manifest), manifest)).toBe(true);
    expect(sameRuntimeClass({ ...manifest, overhead: { podFixed: { cpu: '500m', memory: '160Mi' } } }, manifest)).toBe(false);
  });
});

describe('a run whose first step holds no node lock', () => {
  // workflows/node.ts never folds the run's check into such a step; the activity refuses it anyway, from the same set.
  it.each([...kindsWithoutNodeLock])('a %s step asked to check the node before the run refuses with NodeNeedsPrepare, contacting nothing', async (kind) => {
    const step = kind === 'runtime-class' ? RuntimeClassStep.parse({ id: 'rc', kind, name: 'kata', handler: 'kata' }) : ReadinessGateStep.parse({ id: 'gate', kind });
    // Port 1 on loopback: nothing listens there, so any contact would fail with another type.
    const node = { name: 'worker-1', address: '127.0.0.1', port: 1, maxSessions: 4, connectTimeoutMs: 1_000, credentials: { profile: 'default', file: '/nonexistent/credentials.toml' } };
    const activities = createNodeActivities({ pool: new SshPool() }) as unknown as Record<string, (request: StepRequest) => Promise<unknown>>;
    const request: StepRequest = { runId: 'run-1', rolloutId: 'r', node, kubernetes: { kubectl: 'kubectl' }, step, drain: false, journal: true, firstOfRun: { steps: [step] } };
    await expect(activities[activityByKind[kind]](request)).rejects.toMatchObject({ type: NodeNeedsPrepare, nonRetryable: true });
  });
});
