/**
 * Who is the primary. A node's role is what it reports (`role = "auto"`: pg_is_in_recovery()) or what it is
 * configured as — except that a node in recovery is never a primary, whatever the config says: writes never go to
 * a standby. Among the nodes that may be the primary, one is elected: never one that is down (it failed
 * `failover.failures` checks in a row); one the monitor reaches before one it does not; one Patroni or the DNS
 * name points at; the later timeline (of two nodes out of recovery, the one promoted last — the other is a stale
 * primary, a split brain pgroute does not take part in); the primary elected before; the configured primary; the
 * first in config order. Pure, so the rules are tested without a cluster.
 */
import type { NodeRole } from "../cluster/state.ts";
import type { NodeState } from "./assemble.ts";

/** A node's role: as configured, or for `auto` as it reports itself; a node in recovery is a replica. */
export function roleOf(s: NodeState): NodeRole {
  if (s.node.role === "replica" || s.standby === true) return "replica";
  if (s.node.role === "primary") return "primary";
  return s.standby === null ? "unknown" : "primary";
}

export interface Election {
  /** Consecutive failed checks after which a node is down (`failover.failures`). */
  readonly failures: number;
  /** Nodes an outside source (Patroni's leader, the DNS name's addresses) names as the primary. */
  readonly hinted: ReadonlySet<string>;
  /** The node elected before, if any. */
  readonly incumbent: string | null;
}

/** Whether the node failed so many checks in a row that it is taken for down. */
export function isDown(s: NodeState, failures: number): boolean {
  return s.failures >= failures;
}

/** How much a node is preferred as the primary, most important first. */
function rank(s: NodeState, e: Election): readonly number[] {
  return [s.reachable === false ? 0 : 1, e.hinted.has(s.node.name) ? 1 : 0, s.timeline ?? -1, s.node.name === e.incumbent ? 1 : 0, s.node.role === "primary" ? 1 : 0];
}

function better(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! > b[i]!;
  return false;
}

/** The primary among `states` (`role`: the role each node is taken to have, overrides included); undefined when none may be. */
export function elect(states: readonly NodeState[], e: Election, role: (s: NodeState) => NodeRole = roleOf): NodeState | undefined {
  let best: NodeState | undefined;
  let bestRank: readonly number[] = [];
  for (const s of states) {
    if (role(s) !== "primary" || isDown(s, e.failures)) continue;
    const r = rank(s, e);
    if (!best || better(r, bestRank)) {
      best = s;
      bestRank = r;
    }
  }
  return best;
}

/** No outside hints. */
export const NO_HINTS: ReadonlySet<string> = new Set();
