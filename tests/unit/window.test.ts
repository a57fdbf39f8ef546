// Invariant: the latency window reports a p99 at most 19% above the true one, counts requests and failures over
// the last `window` only (older slots slide out), forgets failures on demand; the moving average forgets at a rate
// in time, not per sample. Time is the test's own.
import { describe, expect, test } from "bun:test";
import { Ewma, LatencyWindow } from "../../src/cluster/window.ts";

describe("LatencyWindow", () => {
  test("p99 of a known distribution, within a bin (+19%)", () => {
    const w = new LatencyWindow(10_000);
    for (let i = 1; i <= 1000; i++) w.add(500, i / 10, false); // 0.1 … 100 ms
    const p99 = w.quantile(500, 0.99)!;
    expect(p99).toBeGreaterThanOrEqual(99);
    expect(p99).toBeLessThanOrEqual(99 * 1.19);
    expect(w.quantile(500, 0.5)!).toBeGreaterThanOrEqual(50);
    expect(w.quantile(500, 0.5)!).toBeLessThanOrEqual(50 * 1.19);
  });

  test("counts over the window only: old slots slide out", () => {
    const w = new LatencyWindow(1_000); // ten slots of 100 ms
    w.add(0, 5, true);
    w.add(50, 5, false);
    w.add(950, 500, false);
    w.sum(999);
    expect([w.total, w.failed]).toEqual([3, 1]);
    w.sum(1_050); // the first slot (0–99 ms) has left the window
    expect([w.total, w.failed]).toEqual([1, 0]);
    expect(w.quantile(1_050, 0.99)).toBeGreaterThanOrEqual(500);
    expect(w.quantile(5_000, 0.99)).toBeNull();
    // A slot reused after a full turn starts empty.
    w.add(2_000, 1, false);
    w.sum(2_000);
    expect(w.total).toBe(1);
  });

  test("failures can be forgotten, requests stay", () => {
    const w = new LatencyWindow(10_000);
    for (let i = 0; i < 10; i++) w.add(i, 1, i < 4);
    w.forgetFailures();
    w.sum(10);
    expect([w.total, w.failed]).toEqual([10, 0]);
  });

  test("extremes land in the first and last bins", () => {
    const w = new LatencyWindow(10_000);
    w.add(0, 0, false);
    expect(w.quantile(0, 0.99)!).toBeLessThan(0.02);
    w.add(0, 10_000_000, false);
    expect(w.quantile(0, 0.99)!).toBeGreaterThan(300_000);
  });
});

describe("Ewma", () => {
  test("the first sample is the average; later ones weigh by the time since the previous", () => {
    const e = new Ewma(1_000);
    expect(Number.isNaN(e.value)).toBe(true);
    e.add(0, 10);
    expect(e.value).toBe(10);
    e.add(1_000, 20); // one time constant later: weight 1 - 1/e
    expect(e.value).toBeCloseTo(10 * Math.exp(-1) + 20 * (1 - Math.exp(-1)), 9);
    e.add(1_000, 1_000); // no time passed: no weight
    expect(e.value).toBeCloseTo(10 * Math.exp(-1) + 20 * (1 - Math.exp(-1)), 9);
  });

  test("a slow spell is forgotten at the same pace however many samples arrive", () => {
    const sparse = new Ewma(1_000);
    const dense = new Ewma(1_000);
    sparse.add(0, 50);
    dense.add(0, 50);
    sparse.add(2_000, 1);
    for (let t = 1; t <= 2_000; t++) dense.add(t, 1);
    expect(Math.abs(sparse.value - dense.value)).toBeLessThan(0.01);
  });
});
