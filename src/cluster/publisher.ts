/**
 * Publishes what the {@link Topology} knows into the cluster snapshot: configured and learned roles (through
 * the operator's overrides), whether logins to a node fail, whether it is drained. It measures nothing itself —
 * lag, load and scores stay unknown (null, score 100, breaker closed) — and republishes whenever the topology or
 * the overrides change. The health monitor replaces it with snapshots built from real checks.
 */
import type { NodeConfig } from "../config/types.ts";
import type { Logger } from "../log.ts";
import type { Overrides } from "./overrides.ts";
import { SnapshotHolder, type ClusterSnapshot, type NodeSnapshot } from "./state.ts";
import type { Topology } from "./topology.ts";

const FULL_SCORE = Object.freeze({ lag: 100, latency: 100, errors: 100, load: 100, breaker: 100 });
const CLOSED = Object.freeze({ state: "closed", reason: null, until: null } as const);
const NOTHING_OBSERVED = Object.freeze({ p99Ms: null, errorRate: 0, requests: 0, waiting: 0 });

export class TopologyPublisher {
  readonly holder: SnapshotHolder;
  private version = 0;

  constructor(
    private readonly topology: Topology,
    private readonly overrides: Overrides,
    private readonly log: () => Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.holder = new SnapshotHolder(this.build());
    topology.onChange = () => this.publish();
    overrides.subscribe(() => this.publish());
  }

  /** Builds and publishes a new snapshot, logging nodes whose role or reachability changed. */
  publish(): void {
    const prev = this.holder.current;
    const next = this.build();
    for (const n of next.nodes) {
      const before = prev.nodes.find((p) => p.name === n.name);
      if (!before) continue;
      if (before.role !== n.role) this.log().info("node_role", { node: n.name, role: n.role, was: before.role });
      if (before.reachable !== n.reachable) this.log()[n.reachable ? "info" : "warn"](n.reachable ? "node_up" : "node_down", { node: n.name });
    }
    this.holder.publish(next);
  }

  private build(): ClusterSnapshot {
    const nodes = this.topology.nodes.map((n) => this.node(n));
    const chosen = this.overrides.primary;
    const primary = nodes.find((n) => n.name === chosen && n.role === "primary") ?? nodes.find((n) => n.role === "primary");
    return { at: this.now(), version: ++this.version, nodes, primary: primary?.name ?? null };
  }

  private node(n: NodeConfig): NodeSnapshot {
    const role = this.topology.roleOf(n);
    const reachable = this.topology.up(n);
    const drained = this.topology.drained(n);
    const excludedBecause = drained ? "drained by an operator" : !reachable ? "logins failing" : role === "unknown" ? "role not known yet" : null;
    return {
      name: n.name,
      node: n,
      zone: n.zone,
      role,
      reachable,
      lagBytes: null,
      lagSeconds: null,
      lsn: null,
      activeQueries: null,
      connections: null,
      maxConnections: null,
      load: null,
      observed: NOTHING_OBSERVED,
      score: 100,
      scoreParts: FULL_SCORE,
      breaker: CLOSED,
      readable: excludedBecause === null,
      excludedBecause,
      checkedAt: null,
      error: null,
    };
  }
}
