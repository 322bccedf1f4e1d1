// Plain data exchanged between nodeWorkflow and the step activities. Types only: workflows import
// this file, so it must stay free of runtime code.
import type { Step } from '../playbooks/schema';
import type { DesiredState } from './desired-state';

/**
 * Where the worker reads a node's login (user, private key, known_hosts, sudo, trust on first use): a profile
 * of a credentials file, or the `[ssh]` settings of the operator's inventory file. Never the key or known_hosts
 * path itself; the worker reads only files owned by its user (or root) that nobody else can write.
 */
export type CredentialRef =
  /** `[profiles.<profile>]` of the credentials file `file` (absolute). */
  | { profile: string; file: string }
  /** The SSH settings for this node in the inventory file `inventory` (absolute), as the CLI was given it. */
  | { inventory: string; node: string };

/** Everything needed to reach one node over SSH; resolved from the inventory outside workflows. */
export interface NodeTarget {
  /** Kubernetes node name. */
  name: string;
  address: string;
  port: number;
  maxSessions: number;
  connectTimeoutMs: number;
  /** Where the worker finds the login for this node. */
  credentials: CredentialRef;
}

/**
 * Where the worker finds the kubeconfig it runs kubectl with: the `kubeconfig` of a credential profile, or the
 * `[kubernetes] kubeconfig` of the operator's inventory file. Never the path itself, for the reason
 * {@link CredentialRef} gives.
 */
export type KubeconfigRef =
  /** `[profiles.<profile>] kubeconfig` of the credentials file `file` (absolute). */
  | { profile: string; file: string }
  /** `[kubernetes] kubeconfig` of the inventory file `inventory` (absolute). */
  | { inventory: string };

/** How Kubernetes steps reach the API: kubectl on the worker with its own kubeconfig, or kubectl over SSH on a host. */
export interface KubernetesTarget {
  /** kubectl runs on this host over SSH; absent = kubectl runs on the worker with `worker`'s kubeconfig. */
  host?: NodeTarget;
  /** kubectl on `host`; on the worker `KATAFLEET_KUBECTL` (else `kubectl` on PATH) is used. */
  kubectl: string;
  /** kubeconfig on `host`. */
  kubeconfig?: string;
  /** Where the worker's kubeconfig is named, when kubectl runs on the worker. */
  worker?: KubeconfigRef;
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
  /** The step's position in the playbook (orders the journal's entries). */
  stepIndex?: number;
  /**
   * Write the step's intent to the journal on the node before each side effect, and hold the node's
   * lock. Set by nodeWorkflow runs that recover from the journal; absent in histories recorded before.
   */
  journal?: boolean;
  /**
   * Set on a journaling run's first step (patch `node-prepare-in-first-step`): the step makes the run's check before
   * its first step itself (quarantine marker, journals left behind; NodeNeedsPrepare when there is anything) and
   * checks every step of the run (`steps`) first, as the prepareNode activity did.
   */
  firstOfRun?: { steps: Step[] };
  /**
   * Set on a journaling run's last step (patch `node-commit-in-last-step`): once the step succeeded, it commits the
   * run under the same lock (what the commitRun activity does: the journal becomes an applied record with these
   * undos, newest first, after the step's own; the desired state is written) and releases the node's lease.
   */
  commitAfter?: { undos: Undo[]; desired?: DesiredState };
  /**
   * Attempts this step already had before this activity (patch `node-step-runs`: a step that failed inside a run of
   * steps has its first attempt there, so its own activity's attempt 1 is the step's attempt 2). The step sees its
   * attempt as the activity's plus this: leases, candidates and pod names stay apart from the earlier attempt's.
   */
  attemptsBefore?: number;
}

/**
 * A run of a node's consecutive steps in one activity (patch `node-step-runs`): each step runs as its own activity
 * would (its timeout, its attempt, its lease rank), one after the other, so the workflow makes one round trip per run
 * instead of one per step. The first failure ends the run: {@link StepRunResult.failed}.
 */
export interface StepRunRequest {
  runId: string;
  rolloutId: string;
  node: NodeTarget;
  kubernetes?: KubernetesTarget;
  drain: boolean;
  /** The steps, in order; the first is the playbook's step `firstIndex`. */
  steps: Step[];
  firstIndex: number;
  /** As {@link StepRequest.firstOfRun}, for the first step of the run of steps. */
  firstOfRun?: { steps: Step[] };
  /** As {@link StepRequest.commitAfter}, for the last step; the run's own undos go before these. */
  commitAfter?: { undos: Undo[]; desired?: DesiredState };
}

/** What a run of steps did: the outcome of each step that succeeded, in order, then the failure that ended it, if any. */
export interface StepRunResult {
  outcomes: StepOutcome[];
  /** How long each step of {@link outcomes} took, ms. */
  durationsMs?: number[];
  failed?: {
    /** The playbook's index of the step that failed (the one after the last outcome). */
    index: number;
    type?: string;
    message: string;
    /** The failure said no retry can fix it (an ApplicationFailure's nonRetryable). */
    nonRetryable: boolean;
    /** The run was cancelled (a rollout abort): the step stopped, or did not start. */
    cancelled?: boolean;
  };
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
      /**
       * sha256 of the config this run wrote: the undo restores only while the config still has these bytes
       * (or already the original's), never over a file someone changed since katafleet wrote it.
       */
      writtenSha256?: string;
      service: string;
    }
  | {
      kind: 'remove-packages';
      stepId: string;
      packages: string[];
      manager: 'apt' | 'dnf' | 'zypper';
      /** This run's marker file listing the packages (deleted with them; other runs' markers are left). */
      marker?: string;
    }
  | { kind: 'remove-node-labels'; stepId: string; keys: string[] }
  /** Uncordons the Node only while katafleet's cordon annotation names `owner` (this run): never someone else's cordon. */
  | { kind: 'uncordon-node'; stepId: string; owner?: string }
  /** Puts back labels a `node-label` remove took off (key → value they had). */
  | { kind: 'restore-node-labels'; stepId: string; labels: Record<string, string> }
  /** Installs again, at the versions they had, packages a `package-install` remove took off. */
  | { kind: 'reinstall-packages'; stepId: string; packages: { name: string; version: string }[]; manager: 'apt' | 'dnf' | 'zypper' }
  /**
   * A small file a step wrote (e.g. the modules-load.d list): restore it from its backup on the node, byte for byte
   * (sha256 checked), or delete it if there was none. Never the content itself: that would be kept in history.
   */
  | { kind: 'restore-file'; stepId: string; path: string; backupPath?: string; sha256?: string }
  /**
   * A Kata release `release-tarball` installed: switch `/opt/kata` back to `previous` (absent = remove it), remove the
   * links and the version directory this run created (activities/steps/release-tarball.ts).
   */
  | { kind: 'remove-release'; stepId: string; version: string; previous?: string; createdVersionDir: boolean; createdLinks: string[]; createdReleasesDir?: boolean }
  /**
   * Undo of package-repo: purge the packages this run installed, then the source and key file it created, and (dnf,
   * zypper) the key it imported into the rpm database. `manager` absent = apt.
   */
  | { kind: 'remove-package-repo'; stepId: string; packages: string[]; marker?: string; source?: string; key?: string; manager?: 'apt' | 'dnf' | 'zypper'; rpmKey?: string }
  /** Undo of a release-tarball removal: move the trees set aside back, `/opt/kata` → `previous` and the links again. */
  | { kind: 'restore-release'; stepId: string; aside: string; previous?: string; links: string[] };

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
  /**
   * With {@link StepRequest.commitAfter}: the run was committed (`desiredError` says why the desired state could not
   * be written). Absent: it was not, and the run's commitRun activity does it.
   */
  committed?: { desiredError?: string };
}

/** Result of one undo. */
export interface UndoOutcome {
  stepId: string;
  kind: Undo['kind'];
  ok: boolean;
  summary: string;
}

/**
 * `/var/lib/katafleet/quarantine.json` on a node: katafleet left it in a state it could not take back
 * (or does not know); every run refuses the node until `katafleet node release NODE`.
 */
export interface QuarantineMarker {
  rolloutId: string;
  runId: string;
  /** What went wrong, for people. */
  reason: string;
  /** The exact manual fix, ending with the release command. */
  fix: string;
  /** When (ISO 8601). */
  since: string;
}

/** What the recovery of a run's journal found and did. */
export interface RecoveryResult {
  /** Each undo run, newest step first. */
  outcomes: UndoOutcome[];
  /** Set when an undo was refused for good (the node changed since katafleet wrote it, a backup is gone): quarantine. */
  refused?: { stepId: string; reason: string; fix: string };
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
