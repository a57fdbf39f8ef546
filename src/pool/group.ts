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
import { PgError, errors } from "../errors.ts";
import type { Topology } from "../cluster/topology.ts";
import type { PauseGate } from "./gate.ts";
import type { Pool, PoolWaiter } from "./pool.ts";
import type { ServerConn, ServerCredentials } from "./server.ts";

export type Target = "primary" | "replica";

const NO_WAIT = { waitMs: 0, retryMs: 0 };

export class PoolGroup {
  private readonly pools = new Map<NodeConfig, Pool>();

  constructor(
    private readonly topology: Topology,
    /** Creates the pool of this group on `node`. */
    private readonly createPool: (node: NodeConfig) => Pool,
    /** PAUSE/RESUME: leases wait while it is closed. */
    private readonly gate: PauseGate | null = null,
    /** How long a write waits for a primary, and how often it looks again (`[failover]`; read at each wait). */
    private readonly waits: () => { waitMs: number; retryMs: number } = () => NO_WAIT,
  ) {}

  private poolOn(node: NodeConfig): Pool {
    let p = this.pools.get(node);
    if (!p) {
      p = this.createPool(node);
      this.pools.set(node, p);
    }
    return p;
  }

  /**
   * A replica's pool could not lease: pgroute's own checkout timeout (53300 ERROR) is the client's answer (true);
   * a server that failed costs it nothing (the monitor is told, and the read goes on elsewhere).
   */
  replicaFailed(node: NodeConfig, err: PgError): boolean {
    if (err.code === "53300" && err.severity === "ERROR") return true;
    this.topology.acquireFailed(node, err);
    return false;
  }

  /** Whether `node` is the primary now. */
  isPrimary(node: NodeConfig): boolean {
    return this.topology.roleOf(node) === "primary";
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
  tryAcquire(target: Target, read: ReadBound = ANY_READ, zone?: string): Lease | null {
    if (this.gate?.paused) return null;
    // Only a replica actually used takes its turn: otherwise `acquire`, which follows, would skip it, and a client
    // reading one statement at a time would always land on the same replica.
    const node = target === "replica" ? this.topology.peekReplica(zone, read.minLsn, read.avoid) : this.topology.primary();
    if (!node) return null;
    const pool = this.poolOn(node);
    const conn = pool.tryAcquire();
    if (conn && target === "replica") this.topology.takePeeked();
    return conn ? { conn, pool, target } : null;
  }

  /**
   * {@link acquire} by callback: `to` is told of the lease later, never during this call. A write while the
   * primary is known, or a read with a replica to pick, waits in that node's pool queue directly — with more
   * clients than connections nearly every request waits, and a connection handed on then costs one call instead
   * of a chain of promises. Anything else (a pause, no known primary, no replica that may take the read yet)
   * takes {@link acquire}.
   */
  lease(target: Target, read: ReadBound = ANY_READ, zone: string | undefined, to: LeaseWaiter): void {
    if (!this.gate?.paused) {
      if (target === "primary") {
        const node = this.topology.primary();
        if (node !== null) return this.poolOn(node).lease(new PrimaryWait(this, node, to));
      } else {
        const node = this.topology.pickReplica(zone, read.minLsn, read.avoid);
        if (node !== null) return this.poolOn(node).lease(new ReplicaWait(this, node, read, zone, to));
      }
    }
    this.acquire(target, read, zone).then(to.granted, to.failed);
  }

  /**
   * Leases a connection on a node of the wanted kind. A read whose replica cannot be reached tries one more
   * replica, then the primary (its login failure has told the monitor, which takes the replica out of the
   * picks); with no replica left it goes to the primary. A read bound to a WAL position (`read`) goes only to
   * replicas that replayed it, waiting up to `read.waitMs` for one, else to the primary. Writes never go to a
   * replica; while no primary can be reached they wait for one (see {@link acquirePrimary}).
   */
  async acquire(target: Target, read: ReadBound = ANY_READ, zone?: string): Promise<Lease> {
    const paused = this.gate?.pass();
    if (paused) await paused;
    if (target === "replica") {
      const got = await this.acquireReplica(read, zone);
      if (got) return got;
    }
    return this.acquirePrimary();
  }

  /** What {@link acquire} does for a read after its first replica, `tried`, failed it: one more replica, else the primary. */
  async acquireAfter(tried: NodeConfig, read: ReadBound, zone: string | undefined): Promise<Lease> {
    return (await this.acquireReplica(read, zone, tried)) ?? this.acquirePrimary();
  }

  private async acquireReplica(read: ReadBound, zone: string | undefined, tried: NodeConfig | null = null): Promise<Lease | null> {
    const waitUntil = read.minLsn > 0 && read.waitMs > 0 ? Date.now() + read.waitMs : 0;
    for (let attempt = tried === null ? 0 : 1; attempt < 2; ) {
      const node = this.topology.pickReplica(zone, read.minLsn, read.avoid);
      if (!node) {
        // No replica has replayed the session's last write yet: wait a little for one, when allowed.
        const left = waitUntil - Date.now();
        if (left > 0 && this.topology.replicaAvailable(zone)) {
          await this.topology.replay.wait(left);
          continue;
        }
        return null;
      }
      if (node === tried) return null;
      tried = node;
      attempt++;
      const pool = this.poolOn(node);
      try {
        return { conn: await pool.acquire(), pool, target: "replica" };
      } catch (err) {
        if (!(err instanceof PgError)) continue;
        if (this.replicaFailed(node, err)) throw err;
      }
    }
    return null;
  }

  /**
   * A connection on the primary. While none can be reached — the primary is down and no other node has left
   * recovery yet, or connecting to it fails the way an outage does ({@link PgError.unreachable}, 57P01–57P03) —
   * the write waits, looking again at every new cluster snapshot and every `failover.search_interval`, up to
   * `failover.primary_wait_timeout`; then 57P03. Other failures (a wrong password, TLS verification, a full pool)
   * are the client's answer at once, as is a drained primary.
   */
  private async acquirePrimary(): Promise<Lease> {
    const { waitMs, retryMs } = this.waits();
    const deadline = Date.now() + waitMs;
    for (;;) {
      let last: unknown = null;
      for (const node of this.topology.primaryCandidates()) {
        const pool = this.poolOn(node);
        let conn: ServerConn;
        try {
          conn = await pool.acquire();
        } catch (err) {
          if (!(err instanceof PgError) || !outage(err)) throw err;
          last = err;
          continue;
        }
        if (this.topology.roleOf(node) === "primary") return { conn, pool, target: "primary" };
        // A node of unknown role turned out to be a standby: remember it, keep looking.
        pool.release(conn);
      }
      const drained = this.topology.drainedPrimary();
      if (drained) throw new PgError("57P03", `the primary node "${drained.name}" is drained: it takes no new transactions`, "FATAL", undefined, "An operator drained it (pgroute admin); ENABLE it, or set another node's role to primary.");
      const left = deadline - Date.now();
      if (left <= 0) {
        // No waiting configured: the failure as it is, as before failover support.
        if (waitMs <= 0) throw last ?? new PgError("08001", "no primary node is known", "FATAL");
        throw errors.noPrimary(waitMs, last instanceof Error ? last.message : null);
      }
      await this.topology.changed.wait(Math.min(left, retryMs));
    }
  }
}

/** A lease: the connection, its pool, and the kind of node it is on. */
export interface Lease {
  conn: ServerConn;
  pool: Pool;
  target: Target;
}

/** Who asked {@link PoolGroup.lease} for a connection. */
export interface LeaseWaiter {
  readonly granted: (lease: Lease) => void;
  readonly failed: (err: PgError) => void;
}

/**
 * A write waiting in the known primary's pool. What {@link PoolGroup.acquire} would do after the wait is done
 * here: a node that is no longer the primary when its connection comes gives it back, and a failure a failover
 * may fix ({@link outage}) is not the client's answer yet — both go on through `acquire`, which looks for the
 * primary again and waits for one as configured.
 */
class PrimaryWait implements PoolWaiter {
  constructor(
    private readonly group: PoolGroup,
    private readonly node: NodeConfig,
    private readonly to: LeaseWaiter,
  ) {}

  granted(conn: ServerConn, pool: Pool): void {
    if (this.group.isPrimary(this.node)) return this.to.granted({ conn, pool, target: "primary" });
    pool.release(conn);
    this.again();
  }

  failed(err: PgError): void {
    if (outage(err)) return this.again();
    this.to.failed(err);
  }

  private again(): void {
    this.group.acquire("primary").then(this.to.granted, this.to.failed);
  }
}

/**
 * What restricts the replica a read may go to. Read-your-writes (src/session/consistency.ts) binds a session's
 * reads to the WAL position of its last write; a read retried after its replica failed avoids that replica.
 */
export interface ReadBound {
  /** Only replicas that replayed this WAL position (bytes); 0: any. */
  readonly minLsn: number;
  /** How long to wait for such a replica before going to the primary. */
  readonly waitMs: number;
  /** The name of a node not to use (a read retried elsewhere); null: none. */
  readonly avoid: string | null;
}

/** No restriction. */
export const ANY_READ: ReadBound = Object.freeze({ minLsn: 0, waitMs: 0, avoid: null });

/** A failure a failover may fix: the server could not be reached, or says it is shutting down or not up yet. */
function outage(e: PgError): boolean {
  return e.unreachable || e.code === "57P01" || e.code === "57P02" || e.code === "57P03";
}

/**
 * A read waiting in the pool of the replica picked for it. After a failure, what {@link PoolGroup.acquire} would
 * do: 53300 is the client's answer, a server that failed has the read go on to one more replica, else the primary.
 */
class ReplicaWait implements PoolWaiter {
  constructor(
    private readonly group: PoolGroup,
    private readonly node: NodeConfig,
    private readonly read: ReadBound,
    private readonly zone: string | undefined,
    private readonly to: LeaseWaiter,
  ) {}

  granted(conn: ServerConn, pool: Pool): void {
    this.to.granted({ conn, pool, target: "replica" });
  }

  failed(err: PgError): void {
    if (this.group.replicaFailed(this.node, err)) return this.to.failed(err);
    this.group.acquireAfter(this.node, this.read, this.zone).then(this.to.granted, this.to.failed);
  }
}
