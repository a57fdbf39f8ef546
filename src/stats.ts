/**
 * Counting on the serving path: plain numbers and fixed bucket arrays, bumped where things happen and turned into
 * Prometheus text only when /metrics is scraped (src/admin/metrics.ts). A prom-client `observe` costs about
 * 0.4 µs (it hashes its labels on every call); a bucket increment here costs under 0.01 µs — bench/metrics.ts.
 */

/** Upper bounds (seconds) of the latency buckets: 0.5 ms to 10 s, for queries and for checkout waits. */
export const LATENCY_BOUNDS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A histogram with fixed bounds: counts per bucket (not cumulative; the last is +Inf), their sum and count. */
export class Buckets {
  readonly counts: Float64Array;
  count = 0;
  sum = 0;

  constructor(readonly bounds: readonly number[] = LATENCY_BOUNDS) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** Records one value (seconds for latencies). */
  observe(v: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && v > bounds[i]!) i++;
    this.counts[i]!++;
    this.count++;
    this.sum += v;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
  }
}

/** What pgroute counts per node, shared by every pool on that node (so a retired pool's counts survive it). */
export class NodeCounters {
  /** Server connections opened (logged in) and closed. */
  opened = 0;
  closed = 0;
  /** Server logins that failed. */
  loginFailures = 0;
  /** Leases of a server connection; those that had to wait, and how long they waited (seconds). */
  checkouts = 0;
  readonly waits = new Buckets();
  /**
   * Session pooling relays bytes without classifying them: requests (Query, Sync, FunctionCall) and transactions
   * (a ReadyForQuery that leaves the connection idle) are counted from message headers only.
   */
  sessionRequests = 0;
  sessionTransactions = 0;
}
