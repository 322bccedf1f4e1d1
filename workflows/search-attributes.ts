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
  // Temporal's SQL visibility store (the dev server's SQLite) allows only 3 Int attributes per namespace,
  // so drift results are lists of node names: filterable (`KatafleetDriftedNodes = "worker-3"`) and countable.
  driftedNodes: defineSearchAttributeKey('KatafleetDriftedNodes', 'KEYWORD_LIST'),
  repairedNodes: defineSearchAttributeKey('KatafleetRepairedNodes', 'KEYWORD_LIST'),
  unreachableNodes: defineSearchAttributeKey('KatafleetUnreachableNodes', 'KEYWORD_LIST'),
} as const;

export const allSearchAttributes = Object.values(searchAttributes);
