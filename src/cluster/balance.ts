/**
 * Balancing strategies: which of the replicas that may take a read gets it. One interface, five implementations,
 * chosen by `balance.strategy`; every one passes the same table of tests (tests/unit/balance.test.ts).
 *
 * The candidates are built when a snapshot is published (src/cluster/plan.ts), never per read: a pick reads
 * arrays and a few live counters, and allocates nothing. `pick` does not change any state, so a caller that
 * cannot use the replica it was offered (no idle connection there) costs that replica nothing; `took` records the
 * pick that was used.
 */
import type { BalanceStrategy, NodeConfig } from "../config/types.ts";

/** A replica's live figures, read at pick time. */
export interface LiveLoad {
  /** pgroute's server connections in use on the node plus clients waiting for one. */
  readonly inFlight: number;
  /** Moving average of the latency pgroute observed there, ms; NaN before anything was observed. */
  readonly ewmaMs: number;
  /** The WAL position the replica has replayed, bytes; -1 (or absent) while unknown. */
  readonly replayLsn?: number;
}

/** One replica a read may go to. */
export interface Candidate {
  readonly node: NodeConfig;
  /** The configured weight. */
  readonly weight: number;
  /** Configured weight × health score / 100: what `weighted` apportions by. */
  readonly effective: number;
  readonly live: LiveLoad;
  /** Half-open breaker: a read sent here is a trial (see {@link Candidate} users). */
  readonly trial: boolean;
}

/** The replicas one kind of read may go to, with the strategies' running state (kept across rebuilds). */
export class CandidateSet {
  /** Smooth weighted round-robin counters, one per candidate. */
  readonly current: Float64Array;
  readonly totalEffective: number;
  readonly totalWeight: number;
  /** Next index for round-robin and for tie-breaking. */
  turn = 0;
  /** Subsets for restricted reads, by membership bitmask, made on first use (they keep their own counters). */
  private subsets: Map<number, CandidateSet> | null = null;

  constructor(readonly list: readonly Candidate[], previous?: CandidateSet) {
    this.current = new Float64Array(list.length);
    let e = 0;
    let w = 0;
    for (const c of list) {
      e += c.effective;
      w += c.weight;
    }
    this.totalEffective = e;
    this.totalWeight = w;
    if (previous) {
      // Same replicas in a new snapshot: carry the counters over, so proportions hold across publications.
      list.forEach((c, i) => {
        const j = previous.list.findIndex((p) => p.node.name === c.node.name);
        if (j >= 0) this.current[i] = previous.current[j]!;
      });
      this.turn = previous.turn;
    }
  }

  /** The subset with membership `mask`, made by `members` the first time it is asked for. */
  subset(mask: number, members: () => Candidate[]): CandidateSet {
    this.subsets ??= new Map();
    let s = this.subsets.get(mask);
    if (!s) {
      s = new CandidateSet(members());
      this.subsets.set(mask, s);
    }
    return s;
  }
}

/** Sets of more candidates than this are restricted without caching the subset (a bitmask holds 31). */
const MASK_BITS = 31;

/**
 * The candidates a read may use when it must see WAL position `minLsn` (0: any) and not go to the node named
 * `avoid` (null: none): the set itself when all qualify — one comparison per candidate, no allocation — else
 * the subset of those that do (built once per membership and kept with the set), or null when none does.
 */
export function restrict(set: CandidateSet, minLsn: number, avoid: string | null): CandidateSet | null {
  const list = set.list;
  let mask = 0;
  let all = true;
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    if ((minLsn > 0 && (c.live.replayLsn ?? -1) < minLsn) || c.node.name === avoid) all = false;
    else if (i < MASK_BITS) mask |= 1 << i;
  }
  if (all) return set;
  const keep = (c: Candidate) => !((minLsn > 0 && (c.live.replayLsn ?? -1) < minLsn) || c.node.name === avoid);
  if (list.length > MASK_BITS) {
    const kept = list.filter(keep);
    return kept.length === 0 ? null : new CandidateSet(kept);
  }
  if (mask === 0) return null;
  return set.subset(mask, () => list.filter(keep));
}

export interface Strategy {
  readonly name: BalanceStrategy;
  /** The index in `set.list` (non-empty) of the replica for the next read. Changes no state. */
  pick(set: CandidateSet): number;
  /** The read went to `set.list[i]`. */
  took(set: CandidateSet, i: number): void;
}

/**
 * `weighted`: smooth weighted round-robin (nginx's) over configured weight × health score — deterministic, and
 * exactly proportional over any run of picks. A set whose scores are all 0 falls back to the configured weights.
 */
class Weighted implements Strategy {
  readonly name = "weighted";

  private weightOf(set: CandidateSet, i: number): number {
    const c = set.list[i]!;
    return set.totalEffective > 0 ? c.effective : c.weight;
  }

  pick(set: CandidateSet): number {
    let best = 0;
    let bestValue = -Infinity;
    for (let i = 0; i < set.list.length; i++) {
      const v = set.current[i]! + this.weightOf(set, i);
      if (v > bestValue) {
        bestValue = v;
        best = i;
      }
    }
    return best;
  }

  took(set: CandidateSet, chosen: number): void {
    let total = 0;
    for (let i = 0; i < set.list.length; i++) {
      const w = this.weightOf(set, i);
      set.current[i]! += w;
      total += w;
    }
    set.current[chosen]! -= total;
  }
}

/** `least_connections`: the fewest server connections in use plus clients waiting; ties go round in turn. */
class LeastConnections implements Strategy {
  readonly name = "least_connections";

  pick(set: CandidateSet): number {
    const n = set.list.length;
    let best = 0;
    let least = Infinity;
    for (let k = 0; k < n; k++) {
      const i = (set.turn + k) % n;
      const load = set.list[i]!.live.inFlight;
      if (load < least) {
        least = load;
        best = i;
      }
    }
    return best;
  }

  took(set: CandidateSet, i: number): void {
    set.turn = (i + 1) % set.list.length;
  }
}

/**
 * `latency`: power of two choices — two distinct replicas at random, the one with the lower cost wins, cost being
 * the moving average of observed latency × (requests in flight + 1), as Finagle's peak-EWMA balancer does. A
 * replica with nothing observed yet costs 0, so it is tried. Random sampling keeps a slow replica in the draw
 * now and then, and the monitor's pings keep its average current when it gets no reads.
 */
class Latency implements Strategy {
  readonly name = "latency";

  constructor(private readonly random: () => number) {}

  private cost(c: Candidate): number {
    const ewma = c.live.ewmaMs;
    return (Number.isNaN(ewma) ? 0 : ewma) * (c.live.inFlight + 1);
  }

  pick(set: CandidateSet): number {
    const n = set.list.length;
    if (n === 1) return 0;
    const a = Math.floor(this.random() * n);
    let b = Math.floor(this.random() * (n - 1));
    if (b >= a) b++;
    const ca = this.cost(set.list[a]!);
    const cb = this.cost(set.list[b]!);
    return cb < ca ? b : a;
  }

  took(): void {}
}

/** `round_robin`: each replica in turn, weights ignored. */
class RoundRobin implements Strategy {
  readonly name = "round_robin";

  pick(set: CandidateSet): number {
    return set.turn % set.list.length;
  }

  took(set: CandidateSet, i: number): void {
    set.turn = (i + 1) % set.list.length;
  }
}

/** `random`: at random, in proportion to the configured weights. */
class Random implements Strategy {
  readonly name = "random";

  constructor(private readonly random: () => number) {}

  pick(set: CandidateSet): number {
    let r = this.random() * set.totalWeight;
    for (let i = 0; i < set.list.length; i++) {
      r -= set.list[i]!.weight;
      if (r < 0) return i;
    }
    return set.list.length - 1;
  }

  took(): void {}
}

/** The strategy named `name`; `random` is injected for tests (default Math.random). */
export function createStrategy(name: BalanceStrategy, random: () => number = Math.random): Strategy {
  switch (name) {
    case "weighted":
      return new Weighted();
    case "least_connections":
      return new LeastConnections();
    case "latency":
      return new Latency(random);
    case "round_robin":
      return new RoundRobin();
    case "random":
      return new Random(random);
  }
}
