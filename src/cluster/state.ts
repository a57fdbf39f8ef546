/**
 * The live picture of the cluster: one immutable {@link ClusterSnapshot} published by the monitor (src/monitor/)
 * after every check, read by routing, balancing, metrics, the admin API and `pgroute check lag`. Nothing but the
 * monitor writes it; readers take `holder.current` and never see a half-updated picture.
 */
import type { NodeConfig } from "../config/types.ts";

export type NodeRole = "primary" | "replica" | "unknown";

/** A circuit breaker's state: `open` gets no traffic until `until`, `half-open` lets trial queries through. */
export type BreakerState = "closed" | "open" | "half-open";

export interface BreakerView {
  readonly state: BreakerState;
  /** Why it opened (e.g. "5 consecutive failures", "error rate 12% over 30 s", "lag 3.2 s > 1 s"); null when closed. */
  readonly reason: string | null;
  /** Epoch ms when an open breaker goes half-open; null otherwise. */
  readonly until: number | null;
}

/** How a replica's health score (0–100) was made, each part 0–100 before its weight. */
export interface ScoreParts {
  readonly lag: number;
  readonly latency: number;
  readonly errors: number;
  readonly load: number;
  /** Queue depth: clients waiting in pgroute for the node plus queries active on it. */
  readonly queue: number;
  readonly breaker: number;
}

/** A replica as its primary's walsender sees it (pg_stat_replication); lags in seconds, null when idle. */
export interface ReplicationView {
  readonly state: string | null;
  readonly syncState: string | null;
  readonly writeLagSeconds: number | null;
  readonly flushLagSeconds: number | null;
  readonly replayLagSeconds: number | null;
}

export interface NodeSnapshot {
  readonly name: string;
  readonly node: NodeConfig;
  readonly zone: string;
  readonly role: NodeRole;
  /** The last check reached the node. */
  readonly reachable: boolean;
  /** Replication lag of a replica behind the primary; null for the primary or when unknown. */
  readonly lagBytes: number | null;
  readonly lagSeconds: number | null;
  /** WAL position: current (primary) or replayed (replica), as `X/Y`; null when unknown. */
  readonly lsn: string | null;
  /** Backends running a query, and all client backends, from pg_stat_activity; max_connections of the node. */
  readonly activeQueries: number | null;
  readonly connections: number | null;
  readonly maxConnections: number | null;
  /** 0–1 CPU (or stand-in: active backends / max_connections) saturation; null when unknown. */
  readonly load: number | null;
  /** What pgroute itself observed of queries it sent here over the sliding window. */
  readonly observed: {
    readonly p99Ms: number | null;
    /** Share of requests that failed for the node's sake (src/cluster/faults.ts), not for their SQL. */
    readonly errorRate: number;
    readonly requests: number;
    /** Clients waiting in pgroute for a server connection to this node. */
    readonly waiting: number;
    /** pgroute's server connections in use on this node plus clients waiting for one. */
    readonly inFlight: number;
  };
  /** 0–100, with its breakdown (replicas; the primary scores 100 while reachable). */
  readonly score: number;
  readonly scoreParts: ScoreParts;
  readonly breaker: BreakerView;
  /** Whether reads may go here now, and if not why (e.g. "lag 1.4 s > max_lag 1 s", "breaker open", "unreachable"). */
  readonly readable: boolean;
  readonly excludedBecause: string | null;
  /** An operator drained the node: no new leases, reads or writes (running transactions finish). */
  readonly drained: boolean;
  /** What the node reports: pg_is_in_recovery() (or in_hot_standby at a server login); null before it was asked. */
  readonly standby: boolean | null;
  /**
   * A replica that may take reads whatever the client's zone: reachable, its breaker letting traffic through, its
   * score at least `health.min_score`. Lag limits aside: they depend on the client's zone (`readable` applies them
   * for `balance.prefer_zone`).
   */
  readonly healthy: boolean;
  /** The lag limit `readable` was judged against (max_lag, or max_lag_local/_remote for prefer_zone), ms; null for non-replicas. */
  readonly lagLimitMs: number | null;
  /** Replica: WAL replay is paused (pg_wal_replay_pause()); null when unknown. */
  readonly replayPaused: boolean | null;
  /** Replica: its primary's pg_stat_replication row, matched by application_name; null when none matched. */
  readonly replication: ReplicationView | null;
  /** The monitor's last ping round trip, and the p99 of its pings over the health window (or of a check's burst), ms. */
  readonly pingMs: number | null;
  readonly probeP99Ms: number | null;
  /** Epoch ms of the last successful check; null before the first. */
  readonly checkedAt: number | null;
  /** The last check's error message, if it failed. */
  readonly error: string | null;
}

export interface ClusterSnapshot {
  /** Epoch ms when it was made. */
  readonly at: number;
  /** Increments with every publication. */
  readonly version: number;
  readonly nodes: readonly NodeSnapshot[];
  /** The name of the node known to be the primary, or null while none is. */
  readonly primary: string | null;
}

/** Holds the current snapshot; the monitor publishes, everyone else reads `current` or subscribes. */
export class SnapshotHolder {
  private snapshot: ClusterSnapshot;
  private listeners: ((s: ClusterSnapshot) => void)[] = [];

  constructor(initial: ClusterSnapshot) {
    this.snapshot = initial;
  }

  get current(): ClusterSnapshot {
    return this.snapshot;
  }

  /** For the monitor only. */
  publish(next: ClusterSnapshot): void {
    this.snapshot = next;
    for (const l of this.listeners) l(next);
  }

  subscribe(l: (s: ClusterSnapshot) => void): () => void {
    this.listeners = [...this.listeners, l];
    return () => {
      this.listeners = this.listeners.filter((x) => x !== l);
    };
  }
}
