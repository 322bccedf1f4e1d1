// kwok's configuration for the simulated fleet: which Stages kwok plays. They replace kwok's default
// stages so that kwok and sim/kubelet-controller.ts never write the same fields:
// - kwok initialises a Node once (addresses, kubelet endpoint = kwok's server, capacity) and renews its Lease;
//   the controller alone writes its conditions, runtimeHandlers and kernel (no kwok heartbeat stage).
// - kwok starts a pod (Running, IPs, container statuses) only after the controller has created its sandbox
//   (annotation `katafleet.dev/sandbox: ready`), and deletes pods marked for deletion.
import { spawn } from 'node:child_process';
import { sandboxAnnotation } from './kubelet-controller';

const nodeInitialize = `
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: katafleet-node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: 'NotIn'
      values:
      - 'Running'
  next:
    statusTemplate: |
      addresses:
      - address: {{ NodeIP | Quote }}
        type: InternalIP
      - address: {{ .metadata.name | Quote }}
        type: Hostname
      {{ with NodePort }}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{ . }}
      {{ end }}
      allocatable:
        cpu: "4"
        ephemeral-storage: 100Gi
        memory: 16Gi
        pods: "110"
      capacity:
        cpu: "4"
        ephemeral-storage: 100Gi
        memory: 16Gi
        pods: "110"
      phase: Running
`;

const podReady = `
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: katafleet-pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchAnnotations:
      ${sandboxAnnotation}: ready
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Pending'
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values:
      - 'True'
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: PodReadyToStartContainers
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: ContainersReady
      {{ range .spec.readinessGates }}
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: {{ .conditionType | Quote }}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            finishedAt: {{ $now | Quote }}
            reason: Completed
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ $hostIPs := NodeIPsWith .spec.nodeName }}
      {{ with $hostIPs }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      {{ with $podIPs }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ or .status.startTime $now | Quote }}
`;

const podDelete = `
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: katafleet-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    delete: true
`;

/** The file given to `kwok --config`. */
export function kwokConfigYaml(): string {
  return [nodeInitialize, podReady, podDelete].map((s) => s.trim()).join('\n---\n') + '\n';
}

/**
 * `uname` as seen by `kubectl exec` in a simulated pod: kwok runs exec commands on the host with the
 * pod's Exec environment; this wrapper, first on kwok's PATH, reports the sandbox's kernel release
 * (`envName`) and the pod's hostname (`HOSTNAME`) in place of the host's, for any combination of flags.
 */
export function unameWrapper(realUname: string, envName: string): string {
  return `#!/bin/sh
# uname inside a katafleet simulated pod: kernel release and node name are the pod sandbox's.
real=${realUname}
[ -n "\${${envName}:-}" ] || exec "$real" "$@"
out=$("$real" "$@") || exit $?
printf '%s\\n' "$out" | awk -v rel="$("$real" -r)" -v node="$("$real" -n)" -v newrel="$${envName}" -v newnode="\${HOSTNAME:-$("$real" -n)}" \\
  '{ for (i = 1; i <= NF; i++) { if ($i == rel) $i = newrel; else if ($i == node) $i = newnode } print }'
`;
}

/**
 * Registers Nodes that only kwok looks after (initialised once and their Lease renewed by the stages above; no
 * simulated kubelet behind them, so no Ready condition: playbooks without a readiness gate), named as an
 * inventory names them, e.g. `worker-node-0001.prod.example.internal`: thousands of cheap Nodes for scale tests,
 * whose SSH steps are served by a few real hosts (sim/fleet.ts `aliases`). kwok manages Nodes annotated
 * `kwok.x-k8s.io/node: fake` (the selector sim/control-plane.ts starts it with), as in kwok's own "create a node"
 * example (kubernetes-sigs/kwok, site/content/en/docs/user/kwok-manage-nodes-and-pods.md, v0.8.0).
 */
export async function registerKwokNodes(kubectl: string, kubeconfig: string, nodes: { name: string; address: string }[]): Promise<void> {
  for (let start = 0; start < nodes.length; start += 500) {
    const items = nodes.slice(start, start + 500).map((node) => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: node.name,
        labels: { 'kubernetes.io/hostname': node.name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64', type: 'kwok' },
        annotations: { 'kwok.x-k8s.io/node': 'fake', 'katafleet.dev/ssh-address': node.address, 'node.alpha.kubernetes.io/ttl': '0' },
      },
      spec: {},
    }));
    await new Promise<void>((resolve, reject) => {
      const child = spawn(kubectl, [`--kubeconfig=${kubeconfig}`, 'create', '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`kubectl create of ${items.length} kwok Nodes exited ${code}: ${stderr.slice(-500)}`))));
      child.stdin.end(JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
    });
  }
}
