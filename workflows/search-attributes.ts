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
  /** The nodes a rollout or drift run works on: the API refuses a second rollout on a busy node (409). */
  nodes: defineSearchAttributeKey('KatafleetNodes', 'KEYWORD_LIST'),
  // Temporal's SQL visibility store (the dev server's SQLite) allows only 3 Int attributes per namespace,
  // so a drift run's results are one list of "<state>:<node>" entries, e.g. `KatafleetDrift = "drifted:worker-3"`,
  // with state in-sync | drifted | repaired | unreachable.
  drift: defineSearchAttributeKey('KatafleetDrift', 'KEYWORD_LIST'),
} as const;

export const allSearchAttributes = Object.values(searchAttributes);
