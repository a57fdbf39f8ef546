/**
 * One cluster snapshot from what the monitor knows of each node: roles, lag, activity, what pgroute observed,
 * breakers, and from those the score and whether reads may go there. Pure (times are passed in), so the rules of
 * readability are tested without a cluster; the monitor calls it after every change and publishes the result.
 */
import type { Overrides } from "../cluster/overrides.ts";
import type { Config, NodeConfig } from "../config/types.ts";
import type { NodeLive } from "../cluster/live.ts";
import { lagExcess, lagLimit } from "../cluster/plan.ts";
import { primaryScore, scoreReplica } from "../cluster/score.ts";
import type { ClusterSnapshot, NodeRole, NodeSnapshot, ReplicationView } from "../cluster/state.ts";
import { formatLsn } from "./lag.ts";
import type { ReplicationRow } from "./probe.ts";
import { NO_HINTS, elect, isDown, roleOf } from "./roles.ts";

export { roleOf } from "./roles.ts";

/** What the monitor knows of one node (mutable, monitor-owned). */
export interface NodeState {
  node: NodeConfig;
  live: NodeLive;
  /** null: not known (never checked, or the monitor cannot check it: authentication, privileges). */
  reachable: boolean | null;
  error: string | null;
  checkedAt: number | null;
  standby: boolean | null;
  lsn: number | null;
  replayPaused: boolean | null;
  lagBytes: number | null;
  lagSeconds: number | null;
  activity: { active: number; connections: number; maxConnections: number } | null;
  cpu: number | null;
  clusterName: string | null;
  /** Primary: its walsenders' view of the standbys. */
  replication: readonly ReplicationRow[] | null;
  pingMs: number | null;
  /** Checks failed in a row (the node could not be reached); `failover.failures` of them and it is down. */
  failures: number;
  /** Primary: the timeline it writes WAL on (src/monitor/roles.ts prefers the later one); null when unknown. */
  timeline: number | null;
}

export function emptyState(node: NodeConfig, live: NodeLive): NodeState {
  return {
    node,
    live,
    reachable: null,
    error: null,
    checkedAt: null,
    standby: null,
    lsn: null,
    replayPaused: null,
    lagBytes: null,
    lagSeconds: null,
    activity: null,
    cpu: null,
    clusterName: null,
    replication: null,
    pingMs: null,
    failures: 0,
    timeline: null,
  };
}

/** The primary's walsender row for replica `s`, matched by application_name (the node's name or its cluster_name). */
export function walsenderOf(s: NodeState, primary: NodeState | undefined): ReplicationRow | null {
  const rows = primary?.replication;
  if (!rows) return null;
  return rows.find((r) => r.applicationName === s.node.name || (s.clusterName !== null && s.clusterName !== "" && r.applicationName === s.clusterName)) ?? null;
}

export interface AssembleInput {
  readonly config: Config;
  readonly states: readonly NodeState[];
  /** Epoch ms. */
  readonly now: number;
  /** The monotonic clock the live windows use. */
  readonly mono: number;
  readonly version: number;
  /** The monitor does not check nodes (disabled, or no credentials): reachability is not known. */
  readonly passive: boolean;
  /** Replicas whose half-open breaker has handed out every trial. */
  readonly trialsOut: (s: NodeState) => boolean;
  /** Operators' decisions, which win over what nodes report: roles set by hand, drained nodes. */
  readonly overrides?: Overrides;
  /**
   * The primary the monitor elected (src/monitor/roles.ts, with its outside hints and the incumbent), null for
   * none; absent: elected here without them.
   */
  readonly elected?: string | null;
}

/** The primary by the election rules alone (no hints, no incumbent); see src/monitor/roles.ts. */
export function primaryOf(states: readonly NodeState[], failures: number): NodeState | undefined {
  return elect(states, { failures, hinted: NO_HINTS, incumbent: null });
}

export function assemble(i: AssembleInput): ClusterSnapshot {
  const { config, mono } = i;
  const o = i.overrides;
  // A role set by hand wins over what the node reports, and there is one primary: the one named by hand, if any.
  const effectiveRole = (s: NodeState): NodeRole => o?.roleOf(s.node.name) ?? roleOf(s);
  const chosen = o?.primary ?? null;
  const failures = config.failover.failures;
  const elected = (): NodeState | undefined => {
    // Set to replica by hand: no longer the primary, whatever the monitor elected.
    if (i.elected !== undefined && (i.elected === null || o?.roleOf(i.elected) !== "replica")) return i.states.find((s) => s.node.name === i.elected);
    return elect(i.states, { failures, hinted: NO_HINTS, incumbent: null }, effectiveRole);
  };
  const primary = chosen !== null ? i.states.find((s) => s.node.name === chosen) : elected();
  const zone = config.balance.prefer_zone;
  const nodes: NodeSnapshot[] = i.states.map((s) => {
    const role = effectiveRole(s);
    const drained = o?.isDrained(s.node.name) ?? false;
    const live = s.live;
    const p99Ms = live.observed.quantile(mono, 0.99);
    const requests = live.observed.total;
    const errorRate = requests > 0 ? live.observed.failed / requests : 0;
    const probeP99Ms = live.pings.quantile(mono, 0.99);
    const load = s.cpu ?? (s.activity && s.activity.maxConnections > 0 ? s.activity.active / s.activity.maxConnections : null);
    const waiting = live.waiting;
    const breaker = live.breaker.view();
    const unreachable = s.reachable === false && !i.passive;
    const { score, parts } =
      role === "replica"
        ? scoreReplica({ lagSeconds: s.lagSeconds, p99Ms: p99Ms ?? probeP99Ms, errorRate, load, queue: waiting + (s.activity?.active ?? 0), breaker: breaker.state }, config.health)
        : primaryScore(s.reachable !== false);
    let healthy = false;
    let excludedBecause: string | null = null;
    let lagLimitMs: number | null = null;
    if (role === "replica") {
      const limit = lagLimit(config.balance, zone, s.node.zone);
      lagLimitMs = limit.ms;
      if (drained) excludedBecause = "drained by an operator";
      else if (unreachable) excludedBecause = `unreachable: ${s.error ?? "no answer"}`;
      else if (breaker.state === "open") excludedBecause = `breaker open: ${breaker.reason}`;
      else if (breaker.state === "half-open" && i.trialsOut(s)) excludedBecause = "breaker half-open: every trial is in flight";
      else if (score < config.health.min_score) excludedBecause = `score ${score} < min_score ${config.health.min_score}`;
      healthy = excludedBecause === null;
      excludedBecause ??= lagExcess(s.lagSeconds, s.lagBytes, limit, config.balance.max_lag_bytes);
    } else if (drained) excludedBecause = "drained by an operator";
    else if (role === "unknown") excludedBecause = s.error ? `role unknown: ${s.error}` : "role unknown (not checked yet)";
    const walsender = role === "replica" ? walsenderOf(s, primary) : null;
    return {
      name: s.node.name,
      node: s.node,
      zone: s.node.zone,
      role,
      reachable: s.reachable === true,
      lagBytes: role === "replica" ? s.lagBytes : null,
      lagSeconds: role === "replica" ? s.lagSeconds : null,
      lsn: s.lsn === null ? null : formatLsn(s.lsn),
      activeQueries: s.activity?.active ?? null,
      connections: s.activity?.connections ?? null,
      maxConnections: s.activity?.maxConnections ?? null,
      load,
      observed: { p99Ms, errorRate, requests, waiting, inFlight: live.inFlight },
      score,
      scoreParts: parts,
      breaker,
      readable: role === "replica" && excludedBecause === null,
      excludedBecause,
      drained,
      standby: s.standby,
      healthy,
      lagLimitMs,
      replayPaused: role === "replica" ? s.replayPaused : null,
      replication: walsender ? replicationView(walsender) : null,
      pingMs: s.pingMs,
      probeP99Ms,
      checkedAt: s.checkedAt,
      error: s.error,
    };
  });
  // The primary takes reads only when no replica can: say so, and say when it would.
  const anyReplica = nodes.some((n) => n.readable);
  const primaryName = primary && effectiveRole(primary) === "primary" ? primary.node.name : null;
  const withPrimary = nodes.map((n) => {
    if (n.role !== "primary") return n;
    const s = i.states.find((x) => x.node.name === n.name)!;
    const down = s.reachable === false && !i.passive;
    let excludedBecause: string | null;
    if (n.drained) excludedBecause = "drained by an operator";
    else if (isDown(s, failures) && !i.passive) excludedBecause = `down: ${s.failures} checks failed in a row (${n.error ?? "no answer"})`;
    else if (n.name !== primaryName) excludedBecause = primaryName === null ? "not the primary" : `not the primary: "${primaryName}" is${timelineNote(s, i.states.find((x) => x.node.name === primaryName))}`;
    else if (down) excludedBecause = `unreachable: ${n.error ?? "no answer"}`;
    else excludedBecause = anyReplica ? "reads go to the replicas while one can take them" : null;
    return { ...n, readable: excludedBecause === null, excludedBecause };
  });
  return { at: i.now, version: i.version, nodes: withPrimary, primary: primaryName };
}

/** " (timeline 3, this node's 2)" when both timelines are known and differ: why the other one won. */
function timelineNote(s: NodeState, winner: NodeState | undefined): string {
  const a = winner?.timeline ?? null;
  const b = s.timeline;
  return a !== null && b !== null && a !== b ? ` (timeline ${a}, this node's ${b})` : "";
}

function replicationView(r: ReplicationRow): ReplicationView {
  return { state: r.state, syncState: r.syncState, writeLagSeconds: r.writeLag, flushLagSeconds: r.flushLag, replayLagSeconds: r.replayLag };
}
