/**
 * Per-query-fingerprint statistics with bounded cardinality: the busiest `capacity` normalized statements, kept
 * by the Space-Saving algorithm (Metwally et al., 2005). A statement not tracked yet replaces the entry with the
 * least weight and inherits that weight, so a statement that becomes busy later still climbs in, while counts,
 * errors, latency buckets and quantiles are only what was observed while tracked (exact for every statement that
 * has stayed in). Quantiles come from an HDR histogram (hdr-histogram-js, microseconds, 2 significant digits).
 */
import { build, type Histogram } from "hdr-histogram-js";
import type { RequestKind, RequestSample } from "../cluster/observe.ts";
import type { NodeConfig } from "../config/types.ts";
import { Buckets } from "../stats.ts";

/** The slowest latency the quantile histograms resolve (1 h, in µs); slower ones count as this. */
const MAX_MICROS = 3_600_000_000;

/** An HDR histogram of latencies in microseconds. */
export function latencyHistogram(): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: MAX_MICROS, numberOfSignificantValueDigits: 2 });
}

/** Records `ms` milliseconds into an HDR histogram of microseconds. */
export function recordMs(h: Histogram, ms: number): void {
  h.recordValue(Math.min(MAX_MICROS, Math.max(1, Math.round(ms * 1000))));
}

/**
 * The `p`th percentile of an HDR histogram of microseconds, in milliseconds; null when it is empty. HDR reports the
 * top of a value's bucket; capped at the largest value recorded, no quantile exceeds the maximum shown beside it.
 */
export function percentileMs(h: Histogram, p: number): number | null {
  return h.totalCount === 0 ? null : Math.min(h.getValueAtPercentile(p), h.maxValue) / 1000;
}

export interface FingerprintEntry {
  fingerprint: string;
  /** A short stable id of the fingerprint (hex), for metric labels. */
  id: string;
  /** Requests observed since it was tracked, and how many of them failed. */
  count: number;
  errors: number;
  /** Weight inherited from the entry it replaced: an upper bound of requests it had before it was tracked. */
  inherited: number;
  /** Requests by kind. */
  readonly kinds: Record<RequestKind, number>;
  /** Requests by node name. */
  readonly nodes: Map<string, number>;
  /** Latencies in seconds, in the Prometheus buckets. */
  readonly buckets: Buckets;
  /** Latencies in microseconds, for quantiles. */
  readonly hdr: Histogram;
  /** Epoch ms when it was tracked. */
  since: number;
}

export class FingerprintTable {
  private readonly byText = new Map<string, FingerprintEntry>();
  /** Entries replaced to make room for new statements. */
  evicted = 0;

  constructor(
    private capacity: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** How many fingerprints are tracked at most. */
  get limit(): number {
    return this.capacity;
  }

  /** A new capacity (a reload changed `admin.top_queries`); when smaller, the lightest entries go. */
  resize(capacity: number): void {
    this.capacity = capacity;
    if (this.byText.size <= capacity) return;
    const keep = [...this.byText.values()].sort((a, b) => b.count + b.inherited - (a.count + a.inherited)).slice(0, capacity);
    this.evicted += this.byText.size - keep.length;
    this.byText.clear();
    for (const e of keep) this.byText.set(e.fingerprint, e);
  }

  get size(): number {
    return this.byText.size;
  }

  /** Counts one completed request. Requests that ran no statement (fingerprint "") are not tracked. */
  record(sample: RequestSample, node: NodeConfig): void {
    const text = sample.fingerprint;
    if (text === "") return;
    const e = this.byText.get(text) ?? this.admit(text);
    e.count++;
    if (sample.failed) e.errors++;
    e.kinds[sample.kind]++;
    e.nodes.set(node.name, (e.nodes.get(node.name) ?? 0) + 1);
    e.buckets.observe(sample.ms / 1000);
    recordMs(e.hdr, sample.ms);
  }

  /** Entries by requests observed, busiest first (at most `limit`). */
  top(limit: number = this.capacity): FingerprintEntry[] {
    return [...this.byText.values()].sort((a, b) => b.count - a.count || a.fingerprint.localeCompare(b.fingerprint)).slice(0, limit);
  }

  /** The entry for `text`, if tracked. */
  get(text: string): FingerprintEntry | undefined {
    return this.byText.get(text);
  }

  /** A new entry, or the lightest one reused for `text` (it inherits the weight it replaces). */
  private admit(text: string): FingerprintEntry {
    if (this.byText.size < this.capacity) {
      const e: FingerprintEntry = {
        fingerprint: text,
        id: idOf(text),
        count: 0,
        errors: 0,
        inherited: 0,
        kinds: { read: 0, write: 0, other: 0 },
        nodes: new Map(),
        buckets: new Buckets(),
        hdr: latencyHistogram(),
        since: this.now(),
      };
      this.byText.set(text, e);
      return e;
    }
    let victim: FingerprintEntry | null = null;
    for (const e of this.byText.values()) if (!victim || e.count + e.inherited < victim.count + victim.inherited) victim = e;
    const e = victim!;
    this.byText.delete(e.fingerprint);
    this.evicted++;
    e.inherited += e.count;
    e.fingerprint = text;
    e.id = idOf(text);
    e.count = 0;
    e.errors = 0;
    e.kinds.read = e.kinds.write = e.kinds.other = 0;
    e.nodes.clear();
    e.buckets.reset();
    e.hdr.reset();
    e.since = this.now();
    this.byText.set(text, e);
    return e;
  }
}

/** 16 hex digits of a 64-bit hash of the text: stable across restarts and instances. */
function idOf(text: string): string {
  return Bun.hash.wyhash(text, 0n).toString(16).padStart(16, "0");
}
