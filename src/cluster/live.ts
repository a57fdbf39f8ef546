/**
 * The live, mutable side of each node, next to the immutable snapshot: what pgroute observed of it (latency window,
 * moving average, failures), its circuit breaker, and the pools whose load it carries. The monitor writes these;
 * balancing strategies read `inFlight` and `ewmaMs` at pick time, which a snapshot could not keep current.
 */
import type { Config } from "../config/types.ts";
import type { LiveLoad } from "./balance.ts";
import { Breaker } from "./breaker.ts";
import { Signal } from "./signal.ts";
import { Ewma, LatencyWindow } from "./window.ts";

/** A pool's load on its node (src/pool/pool.ts implements it). */
export interface LoadSource {
  /** Server connections leased to clients (or being reset). */
  readonly busy: number;
  /** Clients waiting for a connection. */
  readonly waiting: number;
}

export class NodeLive implements LiveLoad {
  /** Latency and failures of the requests pgroute sent there. */
  observed: LatencyWindow;
  /** Round trips of the monitor's pings. */
  pings: LatencyWindow;
  readonly ewma: Ewma;
  readonly breaker: Breaker;
  /**
   * The WAL position the node has replayed (a replica) as the monitor last read it, in bytes; -1 while unknown.
   * Read-your-writes sends a session's read only to replicas at or past its last write (src/session/consistency.ts);
   * the monitor refreshes it between snapshots (`consistency.lsn_poll_interval`), so it lives here, not in one.
   */
  replayLsn = -1;
  private pools: LoadSource[] = [];

  constructor(readonly name: string, config: Config) {
    this.observed = new LatencyWindow(config.health.window_ms);
    this.pings = new LatencyWindow(config.health.window_ms);
    this.ewma = new Ewma(config.balance.latency_decay_ms);
    this.breaker = new Breaker(config.breaker);
  }

  configure(config: Config): void {
    if (this.observed.windowMs !== config.health.window_ms) {
      this.observed = new LatencyWindow(config.health.window_ms);
      this.pings = new LatencyWindow(config.health.window_ms);
    }
    this.ewma.decay = config.balance.latency_decay_ms;
    this.breaker.configure(config.breaker);
  }

  attach(pool: LoadSource): void {
    this.pools = [...this.pools, pool];
  }

  detach(pool: LoadSource): void {
    this.pools = this.pools.filter((p) => p !== pool);
  }

  get inFlight(): number {
    let n = 0;
    for (const p of this.pools) n += p.busy + p.waiting;
    return n;
  }

  get waiting(): number {
    let n = 0;
    for (const p of this.pools) n += p.waiting;
    return n;
  }

  get ewmaMs(): number {
    return this.ewma.value;
  }
}

/** Every node's {@link NodeLive}, by name. */
export class LiveNodes {
  private readonly byName = new Map<string, NodeLive>();
  /** Fired when the monitor read newer replay positions (reads waiting for a replica to catch up look again). */
  readonly replay = new Signal();
  private config: Config;

  constructor(config: Config) {
    this.config = config;
    for (const n of config.nodes) this.get(n.name);
  }

  /** The node's live figures, if it is configured (the hot path: a request may finish after its node was removed). */
  find(name: string): NodeLive | undefined {
    return this.byName.get(name);
  }

  get(name: string): NodeLive {
    let live = this.byName.get(name);
    if (!live) {
      live = new NodeLive(name, this.config);
      this.byName.set(name, live);
    }
    return live;
  }

  /** A reloaded config: settings applied, removed nodes forgotten. */
  configure(config: Config): void {
    this.config = config;
    const names = new Set(config.nodes.map((n) => n.name));
    for (const [name, live] of this.byName) {
      if (names.has(name)) live.configure(config);
      else this.byName.delete(name);
    }
    for (const n of config.nodes) this.get(n.name);
  }
}
