/**
 * What transaction-pooled traffic did, learned from the relay's request reports ({@link RequestObserver}): per
 * node, requests and their latency by kind (read, write, other), failures and completed transactions; per query
 * fingerprint, the same in a bounded {@link FingerprintTable}. Everything is plain counting on the serving path —
 * a map lookup, a few increments and a bucket search per request (bench/metrics.ts); exposition happens at scrape.
 */
import type { Histogram } from "hdr-histogram-js";
import type { RequestKind, RequestObserver, RequestSample } from "../cluster/observe.ts";
import type { NodeConfig } from "../config/types.ts";
import { Buckets } from "../stats.ts";
import { FingerprintTable, latencyHistogram, recordMs } from "./fingerprints.ts";

export const KINDS: readonly RequestKind[] = ["read", "write", "other"];

/** One node's traffic. */
export interface NodeTraffic {
  /** Requests by kind, with their latency in seconds. */
  readonly requests: Record<RequestKind, Buckets>;
  /** Requests that ended in an error (or a rolled-back transaction). */
  failed: number;
  /** Transactions completed (autocommit requests and COMMIT/ROLLBACK). */
  transactions: number;
  /** All latencies, in µs, for quantiles. */
  readonly hdr: Histogram;
}

export class Traffic implements RequestObserver {
  private readonly nodes = new Map<string, NodeTraffic>();
  private readonly table: FingerprintTable;

  /**
   * `beforeRead`: called before anything is read, to bring in the reports still queued (the relay's reports reach
   * observers in batches: {@link Observers}), so what is read counts every request answered so far.
   */
  constructor(
    topQueries: number,
    private readonly beforeRead: () => void = () => {},
  ) {
    this.table = new FingerprintTable(topQueries);
  }

  /** Per-fingerprint statistics, with every request answered so far counted. */
  get fingerprints(): FingerprintTable {
    this.beforeRead();
    return this.table;
  }

  request(node: NodeConfig, sample: RequestSample): void {
    const t = this.nodes.get(node.name) ?? this.add(node.name);
    t.requests[sample.kind].observe(sample.ms / 1000);
    if (sample.failed) t.failed++;
    if (sample.txEnd) t.transactions++;
    recordMs(t.hdr, sample.ms);
    this.table.record(sample, node);
  }

  /** The traffic of node `name` (zeros when it has had none), with every request answered so far counted. */
  of(name: string): NodeTraffic {
    this.beforeRead();
    return this.nodes.get(name) ?? this.add(name);
  }

  private add(name: string): NodeTraffic {
    const t: NodeTraffic = {
      requests: { read: new Buckets(), write: new Buckets(), other: new Buckets() },
      failed: 0,
      transactions: 0,
      hdr: latencyHistogram(),
    };
    this.nodes.set(name, t);
    return t;
  }
}
