// Invariant: bench statistics are exact order statistics of what was recorded (nearest rank), a figure over rounds
// is the median with its min and max, a round's counts and latencies are the sum of its threads', and the ratio to
// direct is median over median.
import { describe, expect, test } from "bun:test";
import type { WorkerResult } from "../../src/bench/protocol.ts";
import { addCounts, joinLatencies, replicaShare, roundResult, summarize } from "../../src/bench/results.ts";
import { BINS_PER_DECADE, binLowerMs, binOf, Histogram, median, quantile, spread, summarizeLatencies } from "../../src/bench/stats.ts";

function worker(over: Partial<WorkerResult>): WorkerResult {
  return { transactions: 0, statements: 0, errors: 0, errorCodes: {}, rollbacks: 0, probes: 0, elapsedMs: 1000, latencies: new Uint32Array(0), ...over };
}

describe("quantiles", () => {
  test("nearest rank: the smallest value with at least q·n values at or below it", () => {
    const xs = Uint32Array.from({ length: 100 }, (_, i) => i + 1); // 1..100
    expect(quantile(xs, 0.5)).toBe(50);
    expect(quantile(xs, 0.95)).toBe(95);
    expect(quantile(xs, 0.99)).toBe(99);
    expect(quantile(xs, 1)).toBe(100);
    expect(quantile([7], 0.99)).toBe(7);
    expect(quantile([1, 2, 3], 0.5)).toBe(2);
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2);
    expect(quantile([], 0.5)).toBeNaN();
  });

  test("summarizeLatencies sorts µs and reports milliseconds", () => {
    const us = Uint32Array.from([5000, 1000, 3000, 2000, 4000]);
    const s = summarizeLatencies(us);
    expect(s).toEqual({ count: 5, mean: 3, p50: 3, p95: 5, p99: 5, max: 5 });
    expect([...us]).toEqual([1000, 2000, 3000, 4000, 5000]);
  });

  test("a round without transactions has NaN quantiles, not zeros", () => {
    const s = summarizeLatencies(new Uint32Array(0));
    expect(s.count).toBe(0);
    expect(s.p99).toBeNaN();
    expect(s.max).toBeNaN();
  });

  test("the p99 of 10,000 latencies with 1 % slow ones is the slowest fast one", () => {
    const us = new Uint32Array(10_000).fill(200);
    for (let i = 0; i < 100; i++) us[i * 100] = 50_000;
    const s = summarizeLatencies(us);
    expect(s.p99).toBe(0.2);
    expect(quantile(us, 0.9901)).toBe(50_000);
    expect(s.max).toBe(50);
  });
});

describe("median and spread over rounds", () => {
  test("odd and even counts; NaN rounds are left out", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
    expect(spread([10, Number.NaN, 30, 20])).toEqual({ median: 20, min: 10, max: 30 });
    expect(spread([Number.NaN])).toEqual({ median: Number.NaN, min: Number.NaN, max: Number.NaN });
  });
});

describe("histogram", () => {
  test("log-spaced bins, 20 per decade, with edges in ms", () => {
    expect(BINS_PER_DECADE).toBe(20);
    expect(binOf(0)).toBe(0);
    expect(binOf(1)).toBe(0);
    expect(binOf(10)).toBe(20);
    expect(binOf(999)).toBe(59);
    expect(binOf(1000)).toBe(60);
    expect(binOf(1e12)).toBe(159);
    expect(binLowerMs(60)).toBeCloseTo(1, 10);
    const h = new Histogram();
    h.add([1000, 1000, 1100, 1200, 10_000]); // 1100 µs is within 12 % of 1 ms: the same bin
    expect(h.total).toBe(5);
    const bins = h.bins();
    expect(bins.map((b) => b[2])).toEqual([3, 1, 1]);
    expect(bins[0]![0]).toBeCloseTo(1, 10);
    expect(bins[2]![0]).toBeCloseTo(10, 10);
  });
});

describe("rounds and targets", () => {
  test("a round adds its threads' counts and joins their latencies; tps over the slowest thread's time", () => {
    const a = worker({ transactions: 3, statements: 6, errors: 1, errorCodes: { "40001": 1 }, probes: 2, elapsedMs: 2000, latencies: Uint32Array.from([1000, 2000, 3000]) });
    const b = worker({ transactions: 1, statements: 2, errors: 2, errorCodes: { "40001": 1, ECONNRESET: 1 }, probes: 2, elapsedMs: 1500, latencies: Uint32Array.from([4000]) });
    expect(addCounts([a, b])).toEqual({ transactions: 4, statements: 8, errors: 3, errorCodes: { "40001": 2, ECONNRESET: 1 }, rollbacks: 0, probes: 4 });
    expect([...joinLatencies([a, b])]).toEqual([1000, 2000, 3000, 4000]);
    const h = new Histogram();
    const r = roundResult(1, [a, b], { primary: 2, replica1: 6 }, new Set(["replica1"]), h);
    expect(r.tps).toBe(2);
    expect(r.elapsedS).toBe(2);
    expect(r.latencyMs.p50).toBe(2);
    expect(r.latencyMs.max).toBe(4);
    expect(r.replicaShare).toBe(0.75);
    expect(h.total).toBe(4);
  });

  test("replica share is null when the servers counted nothing", () => {
    expect(replicaShare({ primary: 0, replica1: 0 }, new Set(["replica1"]))).toBeNull();
    expect(replicaShare({ primary: 5 }, new Set())).toBe(0);
  });

  test("summary: medians with ranges, errors summed, ratio to direct of the medians", () => {
    const h = new Histogram();
    const rounds = [100, 300, 200].map((tx, i) =>
      roundResult(i + 1, [worker({ transactions: tx, errors: 1, elapsedMs: 1000, latencies: Uint32Array.from([1000 * (i + 1)]) })], null, new Set(), h),
    );
    const s = summarize(rounds, 400);
    expect(s.tps).toEqual({ median: 200, min: 100, max: 300 });
    expect(s.latencyMs.p50).toEqual({ median: 2, min: 1, max: 3 });
    expect(s.errors).toBe(3);
    expect(s.vsDirect).toBe(0.5);
    expect(s.replicaShare).toBeNull();
    expect(summarize(rounds, null).vsDirect).toBeNull();
  });
});
