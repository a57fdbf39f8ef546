/**
 * Mirroring's counters, per statement fingerprint and in total, and the read-only view of them that metrics and
 * the admin API publish ({@link MirrorSnapshot}). Pure bookkeeping: no I/O, no clock.
 */
import type { Difference } from "./tally.ts";

/** Counters of one fingerprint (or of all). */
export interface MirrorCounts {
  /** Requests chosen by sampling (queued or dropped). */
  sampled: number;
  /** Sampled but not queued: the queue was full. */
  dropped: number;
  /** Run on the shadow. */
  sent: number;
  /** Both results in and compared. */
  compared: number;
  /** Both results in, but not comparable: a row of the primary's was too large to be looked at (over 1 MiB). */
  uncomparable: number;
  /** Compared and different, in total and by the first difference found. */
  mismatches: number;
  mismatch_error: number;
  mismatch_row_count: number;
  mismatch_checksum: number;
  /** The shadow could not answer: unreachable, login refused, connection lost, a session setting it refused. */
  shadow_errors: number;
  /** The shadow did not answer within `mirror.timeout`. */
  timeouts: number;
}

/** Latencies of the compared requests. */
export interface MirrorLatency {
  /** Mean time the primary took (from sending the request to its ReadyForQuery), ms. */
  primary_ms_avg: number | null;
  /** Mean time the shadow took, ms. */
  shadow_ms_avg: number | null;
  /**
   * Shadow time over primary time, as an exponentially weighted moving average (weight 0.1 for the newest
   * request), so it follows a change (a new index) within some tens of requests; null before the first.
   */
  latency_ratio: number | null;
}

export interface FingerprintStats extends MirrorCounts, MirrorLatency {
  /** The normalized statement (literals as `?`, comments dropped), or "(other)" past the tracked maximum. */
  fingerprint: string;
}

/** What `Mirror.snapshot()` returns. */
export interface MirrorSnapshot {
  /** A shadow URL is configured and the fraction is above 0. */
  enabled: boolean;
  /** `host:port/database` of the shadow (never its credentials), or null. */
  shadow: string | null;
  fraction: number;
  writes: boolean;
  /** Sampled requests waiting for the shadow, and the most that may. */
  queue: { depth: number; capacity: number };
  /** Requests running on the shadow now, and the most that may. */
  in_flight: number;
  concurrency: number;
  totals: MirrorCounts & MirrorLatency;
  /** One entry per fingerprint seen, most sampled first. */
  fingerprints: FingerprintStats[];
}

/** Fingerprints tracked one by one; the rest are counted together under {@link OTHER}. */
export const MAX_FINGERPRINTS = 1000;
export const OTHER = "(other)";
const EWMA_WEIGHT = 0.1;

class Entry {
  readonly counts: MirrorCounts = {
    sampled: 0,
    dropped: 0,
    sent: 0,
    compared: 0,
    uncomparable: 0,
    mismatches: 0,
    mismatch_error: 0,
    mismatch_row_count: 0,
    mismatch_checksum: 0,
    shadow_errors: 0,
    timeouts: 0,
  };
  private primaryMs = 0;
  private shadowMs = 0;
  private timed = 0;
  private ratio: number | null = null;

  latency(primaryMs: number, shadowMs: number): void {
    this.primaryMs += primaryMs;
    this.shadowMs += shadowMs;
    this.timed++;
    // A request the primary answered in under a microsecond would make the ratio meaningless: floor it.
    const r = shadowMs / Math.max(primaryMs, 0.001);
    this.ratio = this.ratio === null ? r : this.ratio + EWMA_WEIGHT * (r - this.ratio);
  }

  view(): MirrorCounts & MirrorLatency {
    return {
      ...this.counts,
      primary_ms_avg: this.timed > 0 ? round(this.primaryMs / this.timed) : null,
      shadow_ms_avg: this.timed > 0 ? round(this.shadowMs / this.timed) : null,
      latency_ratio: this.ratio === null ? null : round(this.ratio),
    };
  }
}

const round = (x: number) => Math.round(x * 1000) / 1000;

export type Counter = Exclude<keyof MirrorCounts, "mismatches" | `mismatch_${Difference}`>;

export class MirrorStats {
  private readonly total = new Entry();
  private readonly byFingerprint = new Map<string, Entry>();

  private entry(fingerprint: string): Entry {
    let e = this.byFingerprint.get(fingerprint);
    if (!e) {
      // Past the maximum, new fingerprints share one entry (created even then: it is the one more).
      if (this.byFingerprint.size >= MAX_FINGERPRINTS && fingerprint !== OTHER) return this.entry(OTHER);
      e = new Entry();
      this.byFingerprint.set(fingerprint, e);
    }
    return e;
  }

  count(fingerprint: string, what: Counter): void {
    this.total.counts[what]++;
    this.entry(fingerprint).counts[what]++;
  }

  /** A comparison's outcome, with the latencies of both sides. */
  compared(fingerprint: string, difference: Difference | null, primaryMs: number, shadowMs: number): void {
    for (const e of [this.total, this.entry(fingerprint)]) {
      e.counts.compared++;
      if (difference) {
        e.counts.mismatches++;
        e.counts[`mismatch_${difference}`]++;
      }
      e.latency(primaryMs, shadowMs);
    }
  }

  totals(): MirrorCounts & MirrorLatency {
    return this.total.view();
  }

  fingerprints(): FingerprintStats[] {
    const out: FingerprintStats[] = [];
    for (const [fingerprint, e] of this.byFingerprint) out.push({ fingerprint, ...e.view() });
    return out.sort((a, b) => b.sampled - a.sampled || (a.fingerprint < b.fingerprint ? -1 : 1));
  }
}
