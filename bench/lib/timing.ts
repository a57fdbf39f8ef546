/**
 * Timing loops for the in-process micro-benchmarks (bench/classify.ts, policy.ts, metrics.ts, balance.ts): each
 * figure is ns or µs per call, from a timed loop repeated over rounds after an untimed warm-up of the same loop.
 * `best` is the fastest round — the cost itself — and `median` what a busy machine made of it.
 */

export interface Figure {
  best: number;
  median: number;
}

export function figure(perRound: number[]): Figure {
  perRound.sort((a, b) => a - b);
  return { best: perRound[0]!, median: perRound[Math.floor(perRound.length / 2)]! };
}

/** ns per call of `body(i)` for i in [0, n): over `rounds` timed loops, after one untimed pass (JIT, caches). */
export function timeCalls(n: number, rounds: number, body: (i: number) => void): Figure {
  for (let i = 0; i < n; i++) body(i);
  const perRound: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < n; i++) body(i);
    perRound.push((Bun.nanoseconds() - t0) / n);
  }
  return figure(perRound);
}

/** µs per call of `body(i)` for i in [0, n), over `rounds`, after one untimed pass. */
export function measure(rounds: number, n: number, body: (i: number) => void): Figure {
  const ns = timeCalls(n, rounds, body);
  return { best: ns.best / 1000, median: ns.median / 1000 };
}

/** `best` and `median`, right-aligned. */
export const fmt = (f: Figure) => `${f.best.toFixed(2).padStart(8)} ${f.median.toFixed(2).padStart(8)}`;
