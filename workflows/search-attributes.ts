import { defineSearchAttributeKey } from '@temporalio/common';

/**
 * Typed search attributes that katafleet workflows set, so that rollouts and drift runs can be
 * filtered in the Temporal UI's list (e.g. `KatafleetPhase = "halted"`). The dev server started
 * by `katafleet server` registers them; on an existing cluster run `katafleet server --print-attributes`
 * for the `temporal operator search-attribute create` commands.
 */
export const searchAttributes = {
  phase: defineSearchAttributeKey('KatafleetPhase', 'KEYWORD'),
  playbook: defineSearchAttributeKey('KatafleetPlaybook', 'KEYWORD'),
  /** The node a nodeWorkflow works on, so the UI can list one node's history. */
  node: defineSearchAttributeKey('KatafleetNode', 'KEYWORD'),
  /** The rollout (or drift run) that started a nodeWorkflow. */
  rolloutId: defineSearchAttributeKey('KatafleetRolloutId', 'KEYWORD'),
  nodesTotal: defineSearchAttributeKey('KatafleetNodesTotal', 'INT'),
  nodesDone: defineSearchAttributeKey('KatafleetNodesDone', 'INT'),
  nodesFailed: defineSearchAttributeKey('KatafleetNodesFailed', 'INT'),
  /**
   * No longer set: rollouts started before issue 13 listed every node name here, which Temporal refuses past
   * 2 KiB (about 50 FQDN names). Still registered so that those runs stay readable; the busy check (409) reads a
   * running rollout's nodes from its input instead (api/rollout-service.ts).
   */
  nodes: defineSearchAttributeKey('KatafleetNodes', 'KEYWORD_LIST'),
  // Temporal's SQL visibility store (the dev server's SQLite) allows only 3 Int attributes per namespace, so a
  // drift run's outcomes are one bounded keyword list: each outcome present and `outcome=count`, e.g.
  // `KatafleetDrift = "drifted"` (driftAttributeValues in workflows/drift.ts); its counts also go to
  // KatafleetNodesTotal/Done/Failed. Runs recorded before issue 13 hold "<outcome>:<node>" entries.
  drift: defineSearchAttributeKey('KatafleetDrift', 'KEYWORD_LIST'),
} as const;

export const allSearchAttributes = Object.values(searchAttributes);
