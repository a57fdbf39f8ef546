/**
 * The pools of one (user, database), one per node, and the choice of node for a lease: the primary for writes,
 * a replica (in turn, by weight) for reads. Nodes with `role = "auto"` are classified by their first server
 * connection; until a primary is known, candidates are tried in config order. Nothing is leased while the
 * {@link PauseGate} is closed, and nothing on a node an operator drained.
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

  get replicaAvailable(): boolean {
    return this.topology.replicaAvailable;
  }

  /** The pool whose ParameterStatus values clients see at login: the primary's, or the first candidate's. */
  primaryPool(): Pool {
    return this.poolOn(this.topology.primaryCandidates()[0] ?? this.topology.nodes[0]!);
  }

  updateCredentials(c: ServerCredentials): void {
    for (const n of this.topology.nodes) this.poolOn(n).updateCredentials(c);
  }

  /** A connection leased at once when an idle one is ready on the right node, else null (then use `acquire`). */
  tryAcquire(target: Target): { conn: ServerConn; pool: Pool; target: Target } | null {
    if (this.gate?.paused) return null;
    // Only a replica actually used takes its turn: otherwise `acquire`, which follows, would skip it, and a client
    // reading one statement at a time would always land on the same replica.
    const node = target === "replica" ? this.topology.peekReplica() : this.topology.primary();
    if (!node) return null;
    const pool = this.poolOn(node);
    const conn = pool.tryAcquire();
    if (conn && target === "replica") this.topology.pickReplica();
    return conn ? { conn, pool, target } : null;
  }

  /** Leases a connection on a node of the wanted kind; reads fall back to the primary when no replica is up. */
  async acquire(target: Target): Promise<{ conn: ServerConn; pool: Pool; target: Target }> {
    const paused = this.gate?.pass();
    if (paused) await paused;
    if (target === "replica") {
      const node = this.topology.pickReplica();
      if (node) {
        const pool = this.poolOn(node);
        try {
          return { conn: await pool.acquire(), pool, target };
        } catch (err) {
          // A replica that cannot be reached costs the client nothing: its read goes to the primary.
          if (!(err instanceof PgError) || err.code !== "53300") this.topology.failed(node);
          else throw err;
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
