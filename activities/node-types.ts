// Plain data exchanged between nodeWorkflow and the step activities. Types only: workflows import
// this file, so it must stay free of runtime code.
import type { Step } from '../playbooks/schema';

/** Everything needed to reach one node over SSH; resolved from the inventory outside workflows. */
export interface NodeTarget {
  /** Kubernetes node name. */
  name: string;
  address: string;
  port: number;
  user: string;
  /** Absolute path of the private key on the worker's machine; absent = SSH agent. */
  identityFile?: string;
  /** Absolute path of the known_hosts file host keys are checked against. */
  knownHosts: string;
  sudo: boolean;
  trustOnFirstUse: boolean;
  maxSessions: number;
  connectTimeoutMs: number;
}

/** kubectl on a control-plane host over SSH: how Kubernetes steps reach the API. */
export interface KubernetesTarget {
  host: NodeTarget;
  kubectl: string;
  kubeconfig?: string;
}

/** What a step activity receives. */
export interface StepRequest<S extends Step = Step> {
  /** Identifies the nodeWorkflow run (stable across activity retries and worker restarts): names backups. */
  runId: string;
  rolloutId: string;
  node: NodeTarget;
  kubernetes?: KubernetesTarget;
  step: S;
  /** `rollout.drain` of the playbook, the default for service-restart's cordon/drain. */
  drain: boolean;
}

/**
 * How to take back what one step changed, recorded by the workflow after the step succeeded
 * (and so kept in its history across crashes). Run newest first on failure or abort.
 */
export type Undo =
  | {
      kind: 'restore-containerd-config';
      stepId: string;
      configPath: string;
      /** Backup of the original next to it; absent = there was no config, so restoring deletes it. */
      backupPath?: string;
      /** sha256 (hex) of the original bytes; the restored file must have it. */
      sha256?: string;
      /** Drop-in file this step created (drop-in mode); deleted on undo. */
      createdDropIn?: string;
      service: string;
    }
  | { kind: 'remove-packages'; stepId: string; packages: string[]; manager: 'apt' | 'dnf' | 'zypper' }
  | { kind: 'remove-node-labels'; stepId: string; keys: string[] }
  | { kind: 'uncordon-node'; stepId: string }
  /**
   * A small file a step wrote (e.g. the modules-load.d list): restore it from its backup on the node, byte for byte
   * (sha256 checked), or delete it if there was none. Never the content itself: that would be kept in history.
   */
  | { kind: 'restore-file'; stepId: string; path: string; backupPath?: string; sha256?: string }
  /**
   * A Kata release `release-tarball` installed: switch `/opt/kata` back to `previous` (absent = remove it), remove the
   * links and the version directory this run created (activities/steps/release-tarball.ts).
   */
  | { kind: 'remove-release'; stepId: string; version: string; previous?: string; createdVersionDir: boolean; createdLinks: string[] };

/** What a step activity returns. */
export interface StepOutcome {
  /** false when the node already was in the step's desired state (nothing was written). */
  changed: boolean;
  /** One line for people: what was found or done. */
  summary: string;
  /** How to take it back; present only when this run changed something that can be undone. */
  undo?: Undo;
  /** Findings worth showing in results (hostKernel, guestKernel, backupPath, ...). */
  facts?: Record<string, string>;
}

/** Result of one undo. */
export interface UndoOutcome {
  stepId: string;
  kind: Undo['kind'];
  ok: boolean;
  summary: string;
}

/** What the read-only drift check of one node receives. */
export interface DriftCheckRequest {
  node: NodeTarget;
  kubernetes?: KubernetesTarget;
  /** The playbook's steps: the desired state is what they would establish. */
  steps: Step[];
}

/** The drift check's finding for one node. */
export interface DriftCheck {
  node: string;
  state: 'in-sync' | 'drifted' | 'unreachable';
  /** What differs from the desired state, one short phrase each, e.g. `package kata-containers is not installed`. */
  drifted: string[];
  /** Why the node could not be checked (state `unreachable`). */
  error?: string;
}
