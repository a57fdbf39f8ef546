/** Small statistics and formatting helpers for the report. */

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function min(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : Math.min(...xs);
}

export function max(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : Math.max(...xs);
}

/** `x` with `digits` decimals, or "-" for NaN/undefined. */
export function fmt(x: number | undefined, digits: number): string {
  return x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(digits);
}

/**
 * A plain-text table: the first row is the header; the first column and those listed in `left` are
 * left-aligned, the others right-aligned.
 */
export function table(rows: readonly (readonly string[])[], left: readonly number[] = []): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  const line = (r: readonly string[]) =>
    r.map((cell, c) => (c === 0 || left.includes(c) ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ").trimEnd();
  const [head, ...body] = rows;
  return [line(head!), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/** The fastest and the median of several rounds: the cost itself, and what a busy machine made of it. */
export interface Rounds {
  best: number;
  median: number;
}

/**
 * Nanoseconds per call of `body(i)` for i in [0, n), timed over `rounds` rounds after one untimed pass (JIT,
 * caches): in-process micro-benchmarks.
 */
export function timeLoop(n: number, rounds: number, body: (i: number) => void): Rounds {
  for (let i = 0; i < n; i++) body(i);
  const perRound: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < n; i++) body(i);
    perRound.push((Bun.nanoseconds() - t0) / n);
  }
  return bestAndMedian(perRound);
}

export function bestAndMedian(perRound: readonly number[]): Rounds {
  const sorted = [...perRound].sort((a, b) => a - b);
  return { best: sorted[0]!, median: sorted[Math.floor(sorted.length / 2)]! };
}
