// kwok's configuration for the simulated fleet: which Stages kwok plays. They replace kwok's default
// stages so that kwok and sim/kubelet-controller.ts never write the same fields:
// - kwok initialises a Node once (addresses, kubelet endpoint = kwok's server, capacity) and renews its Lease;
//   the controller alone writes its conditions, runtimeHandlers and kernel (no kwok heartbeat stage).
// - kwok starts a pod (Running, IPs, container statuses) only after the controller has created its sandbox
//   (annotation `katafleet.dev/sandbox: ready`), and deletes pods marked for deletion.
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
