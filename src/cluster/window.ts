/**
 * What pgroute itself observed of a node, over a sliding window: request latency (for its p99), how many requests
 * failed for the node's sake, and a time-decayed moving average of latency for the latency strategy. Recording is
 * cheap enough for every request (a few array writes, no allocation); quantiles are computed when the monitor
 * publishes. Time is passed in (monotonic milliseconds), so tests drive it with their own clock.
 */

/** Histogram bins: 4 per octave from 2^-6 ms (bin 0 holds anything faster), so a quantile is within 19% above. */
const PER_OCTAVE = 4;
const MIN_LOG2 = -6;
const BINS = 100; // up to 2^(-6 + 99/4) ms ≈ 7 minutes; slower requests land in the last bin

function binOf(ms: number): number {
  if (!(ms > 2 ** MIN_LOG2)) return 0;
  const b = Math.ceil((Math.log2(ms) - MIN_LOG2) * PER_OCTAVE);
  return b >= BINS ? BINS - 1 : b;
}

/** The upper edge of a bin: the value a quantile falling in it reports. */
function upperEdge(bin: number): number {
  return 2 ** (MIN_LOG2 + bin / PER_OCTAVE);
}

/**
 * Counts over the last `windowMs`, kept in `slots` rotating slots (the window slides a slot at a time): requests,
 * failures and a latency histogram.
 */
export class LatencyWindow {
  readonly windowMs: number;
  private readonly slotMs: number;
  /** Which slot number (time / slotMs) each slot holds; -1 for never used. */
  private readonly slotOf: Float64Array;
  private readonly bins: Uint32Array;
  private readonly requests: Uint32Array;
  private readonly faults: Uint32Array;
  /** Totals of the last {@link sum} call. */
  total = 0;
  failed = 0;

  constructor(windowMs: number, private readonly slots = 10) {
    this.windowMs = windowMs;
    this.slotMs = windowMs / slots;
    this.slotOf = new Float64Array(slots).fill(-1);
    this.bins = new Uint32Array(slots * BINS);
    this.requests = new Uint32Array(slots);
    this.faults = new Uint32Array(slots);
  }

  private slot(now: number): number {
    const n = Math.floor(now / this.slotMs);
    const i = n % this.slots;
    if (this.slotOf[i] !== n) {
      this.slotOf[i] = n;
      this.requests[i] = 0;
      this.faults[i] = 0;
      this.bins.fill(0, i * BINS, (i + 1) * BINS);
    }
    return i;
  }

  private live(i: number, now: number): boolean {
    return this.slotOf[i]! > Math.floor(now / this.slotMs) - this.slots;
  }

  add(now: number, ms: number, failed: boolean): void {
    const i = this.slot(now);
    this.requests[i]!++;
    if (failed) this.faults[i]!++;
    this.bins[i * BINS + binOf(ms)]!++;
  }

  /** Sets {@link total} and {@link failed} to the counts over the window ending `now`. */
  sum(now: number): void {
    let total = 0;
    let failed = 0;
    for (let i = 0; i < this.slots; i++) {
      if (!this.live(i, now)) continue;
      total += this.requests[i]!;
      failed += this.faults[i]!;
    }
    this.total = total;
    this.failed = failed;
  }

  /** Forgets the failures in the window (a breaker that opened on them has dealt with them). */
  forgetFailures(): void {
    this.faults.fill(0);
  }

  /** The `q` quantile (0–1) of latency over the window, in ms; null with fewer than `min` samples. */
  quantile(now: number, q: number, min = 1): number | null {
    this.sum(now);
    if (this.total < min || this.total === 0) return null;
    const rank = Math.ceil(q * this.total);
    let seen = 0;
    for (let b = 0; b < BINS; b++) {
      for (let i = 0; i < this.slots; i++) if (this.live(i, now)) seen += this.bins[i * BINS + b]!;
      if (seen >= rank) return upperEdge(b);
    }
    return upperEdge(BINS - 1);
  }
}

/**
 * A moving average of latency that forgets at a fixed rate in time, not per sample (so a busy node and an idle one
 * age alike): each sample weighs 1 - e^(-Δt/τ), Δt being the time since the previous one.
 */
export class Ewma {
  /** Milliseconds; NaN before the first sample. */
  value = Number.NaN;
  private at = 0;

  constructor(private decayMs: number) {}

  set decay(ms: number) {
    this.decayMs = ms;
  }

  add(now: number, ms: number): void {
    if (Number.isNaN(this.value)) this.value = ms;
    else {
      const w = Math.exp(-Math.max(0, now - this.at) / this.decayMs);
      this.value = w * this.value + (1 - w) * ms;
    }
    this.at = now;
  }
}
