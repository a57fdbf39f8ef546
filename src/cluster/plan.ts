/**
 * Which replicas a read may go to, built once per published snapshot so a pick only reads arrays. Per client
 * zone: the healthy replicas of that zone within the local lag limit (`local`), and the healthy replicas elsewhere
 * within the remote limit (`spill`), used only while `local` is empty. Without a client zone, every healthy replica
 * within `max_lag`. Lag limits and their wording live here too, so the snapshot's `readable` and the plan agree.
 */
import type { BalanceConfig } from "../config/types.ts";
import { CandidateSet, type Candidate } from "./balance.ts";
import type { LiveNodes } from "./live.ts";
import type { ClusterSnapshot, NodeSnapshot } from "./state.ts";

/** The limit that applies to a replica in `nodeZone` for a client in `clientZone` ("": unknown), and its key. */
export function lagLimit(b: BalanceConfig, clientZone: string, nodeZone: string): { ms: number; key: string } {
  if (clientZone === "") return { ms: b.max_lag_ms, key: "max_lag" };
  if (nodeZone === clientZone) return b.max_lag_local_ms === undefined ? { ms: b.max_lag_ms, key: "max_lag" } : { ms: b.max_lag_local_ms, key: "max_lag_local" };
  return b.max_lag_remote_ms === undefined ? { ms: b.max_lag_ms, key: "max_lag" } : { ms: b.max_lag_remote_ms, key: "max_lag_remote" };
}

/** The largest lag any client accepts: past it, a replica's breaker opens. */
export function loosestLag(b: BalanceConfig): { ms: number; key: string } {
  let best = { ms: b.max_lag_ms, key: "max_lag" };
  if (b.max_lag_local_ms !== undefined && b.max_lag_local_ms > best.ms) best = { ms: b.max_lag_local_ms, key: "max_lag_local" };
  if (b.max_lag_remote_ms !== undefined && b.max_lag_remote_ms > best.ms) best = { ms: b.max_lag_remote_ms, key: "max_lag_remote" };
  return best;
}

/** Why a replica this far behind is too stale under `limit` (and `max_lag_bytes`), or null when it is fresh enough. Unknown lag passes. */
export function lagExcess(lagSeconds: number | null, lagBytes: number | null, limit: { ms: number; key: string }, maxBytes: number | undefined): string | null {
  if (lagSeconds !== null && lagSeconds * 1000 > limit.ms) return `lag ${formatSeconds(lagSeconds)} > ${limit.key} ${formatSeconds(limit.ms / 1000)}`;
  if (maxBytes !== undefined && lagBytes !== null && lagBytes > maxBytes) return `lag ${formatBytes(lagBytes)} > max_lag_bytes ${formatBytes(maxBytes)}`;
  return null;
}

/** "350 ms", "1.4 s", "2 min 5 s". */
export function formatSeconds(s: number): string {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${Math.round(s * 10) / 10} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** "512 B", "1.5 KiB", "20.0 MiB". */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** The candidates of one client zone. */
export interface ZonePlan {
  /** Replicas in the zone (or every replica, without a zone); null when none may take reads. */
  readonly local: CandidateSet | null;
  /** Replicas elsewhere, for when `local` is null. */
  readonly spill: CandidateSet | null;
}

/** Every zone's candidates for one snapshot. Zones not seen yet are built on first use and kept. */
export class ReadPlan {
  private readonly zones = new Map<string, ZonePlan>();
  private readonly replicas: readonly NodeSnapshot[];

  constructor(
    snapshot: ClusterSnapshot,
    private readonly lives: LiveNodes,
    private readonly balance: BalanceConfig,
    previous?: ReadPlan,
  ) {
    this.replicas = snapshot.nodes.filter((n) => n.role === "replica" && n.healthy);
    // The zones in use are built now, carrying the strategies' counters over (no reference to `previous` is kept).
    if (previous) for (const [zone, before] of previous.zones) this.build(zone, before);
  }

  forZone(zone: string): ZonePlan {
    return this.zones.get(zone) ?? this.build(zone, undefined);
  }

  private build(zone: string, before: ZonePlan | undefined): ZonePlan {
    const plan = {
      local: this.set(zone, (n) => zone === "" || n.zone === zone, before?.local),
      spill: zone === "" ? null : this.set(zone, (n) => n.zone !== zone, before?.spill),
    };
    this.zones.set(zone, plan);
    return plan;
  }

  private set(zone: string, where: (n: NodeSnapshot) => boolean, before: CandidateSet | null | undefined): CandidateSet | null {
    const list: Candidate[] = [];
    for (const n of this.replicas) {
      if (!where(n) || lagExcess(n.lagSeconds, n.lagBytes, lagLimit(this.balance, zone, n.zone), this.balance.max_lag_bytes) !== null) continue;
      list.push({ node: n.node, weight: n.node.weight, effective: (n.node.weight * n.score) / 100, live: this.lives.get(n.name), trial: n.breaker.state === "half-open" });
    }
    return list.length === 0 ? null : new CandidateSet(list, before ?? undefined);
  }
}
