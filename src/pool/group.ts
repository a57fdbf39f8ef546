/**
 * The pools of one (user, database), one per node, and the choice of node for a lease: the primary for writes,
 * a replica for reads — the one the configured balancing strategy picks among those the cluster snapshot says
 * may take reads (src/cluster/topology.ts). Nodes with `role = "auto"` get their role from the monitor (or their
 * first server login); until a primary is known, candidates are tried in config order. Nothing is leased while
 * the {@link PauseGate} is closed, and nothing on a node an operator drained.
 *
 * `zone` (optional everywhere) is the client's zone for zone-aware reads; without it, `balance.prefer_zone`.
 */
import type { NodeConfig } from "../config/types.ts";
import { PgError } from "../errors.ts";
import type { Topology } from "../cluster/topology.ts";
import type { PauseGate } from "./gate.ts";
import type { Pool } from "./pool.ts";
import type { ServerConn, ServerCredentials } from "./server.ts";

export type Target = "primary" | "replica";

export class PoolGroup {
  private readonly pools = new Map<NodeConfig, Pool>();

  constructor(
    private readonly topology: Topology,
    /** Creates the pool of this group on `node`. */
    private readonly createPool: (node: NodeConfig) => Pool,
    /** PAUSE/RESUME: leases wait while it is closed. */
    private readonly gate: PauseGate | null = null,
  ) {}

  private poolOn(node: NodeConfig): Pool {
    let p = this.pools.get(node);
    if (!p) {
      p = this.createPool(node);
      this.pools.set(node, p);
    }
    return p;
  }

  /** Whether a read of a client in the default zone has a replica to go to (asked for every statement). */
  get replicaAvailable(): boolean {
    return this.topology.replicaAvailable();
  }

  /** Whether a read of a client in `zone` has a replica to go to. */
  replicaAvailableIn(zone: string): boolean {
    return this.topology.replicaAvailable(zone);
  }

  /** The pool whose ParameterStatus values clients see at login: the primary's, or the first candidate's. */
  primaryPool(): Pool {
    return this.poolOn(this.topology.primaryCandidates()[0] ?? this.topology.nodes[0]!);
  }

  updateCredentials(c: ServerCredentials): void {
    for (const n of this.topology.nodes) this.poolOn(n).updateCredentials(c);
  }

  /** A connection leased at once when an idle one is ready on the right node, else null (then use `acquire`). */
  tryAcquire(target: Target, zone?: string): { conn: ServerConn; pool: Pool; target: Target } | null {
    if (this.gate?.paused) return null;
    // Only a replica actually used takes its turn: otherwise `acquire`, which follows, would skip it, and a client
    // reading one statement at a time would always land on the same replica.
    const node = target === "replica" ? this.topology.peekReplica(zone) : this.topology.primary();
    if (!node) return null;
    const pool = this.poolOn(node);
    const conn = pool.tryAcquire();
    if (conn && target === "replica") this.topology.takePeeked();
    return conn ? { conn, pool, target } : null;
  }

  /**
   * Leases a connection on a node of the wanted kind. A read whose replica cannot be reached tries one more
   * replica, then the primary (its login failure has told the monitor, which takes the replica out of the
   * picks); with no replica left it goes to the primary. Writes never go to a replica.
   */
  async acquire(target: Target, zone?: string): Promise<{ conn: ServerConn; pool: Pool; target: Target }> {
    const paused = this.gate?.pass();
    if (paused) await paused;
    if (target === "replica") {
      let tried: NodeConfig | null = null;
      for (let attempt = 0; attempt < 2; attempt++) {
        const node = this.topology.pickReplica(zone);
        if (!node || node === tried) break;
        tried = node;
        const pool = this.poolOn(node);
        try {
          return { conn: await pool.acquire(), pool, target };
        } catch (err) {
          // pgroute's own checkout timeout (53300 ERROR) is the client's answer; a server that failed costs it nothing.
          if (err instanceof PgError && err.code === "53300" && err.severity === "ERROR") throw err;
          if (err instanceof PgError) this.topology.acquireFailed(node, err);
        }
      }
    }
    let last: unknown = null;
    for (const node of this.topology.primaryCandidates()) {
      const pool = this.poolOn(node);
      let conn: ServerConn;
      try {
        conn = await pool.acquire();
      } catch (err) {
        last = err;
        continue;
      }
      if (this.topology.roleOf(node) === "primary") return { conn, pool, target: "primary" };
      // A node of unknown role turned out to be a standby: remember it, keep looking.
      pool.release(conn);
    }
    if (last) throw last;
    const drained = this.topology.drainedPrimary();
    if (drained) throw new PgError("57P03", `the primary node "${drained.name}" is drained: it takes no new transactions`, "FATAL", undefined, "An operator drained it (pgroute admin); ENABLE it, or set another node's role to primary.");
    throw new PgError("08001", "no primary node is known", "FATAL");
  }
}
