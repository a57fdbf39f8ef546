// Invariant: a replica's score is the weighted mean of its parts, each 100 at its good threshold, 0 at its bad
// one and linear between; unknown signals cost nothing; with the default [health] and [breaker] settings the
// design's example holds: A (30 ms lag, 40% load, no errors) scores high, B (200 ms lag, 3% errors) is
// excluded, C (60 ms lag, 55% load) gets less weight than A.
import { describe, expect, test } from "bun:test";
import { Breaker } from "../../src/cluster/breaker.ts";
import { linear, primaryScore, scoreReplica, type ScoreInput } from "../../src/cluster/score.ts";
import { configFrom } from "../../src/config/load.ts";

const config = configFrom({ nodes: [{ name: "p" }], users: [{ name: "u", password: "pw" }] });
const H = config.health;
const healthy: ScoreInput = { lagSeconds: 0, p99Ms: 2, errorRate: 0, load: 0.05, queue: 0, breaker: "closed" };

describe("parts", () => {
  test("linear between good and bad, clamped, unknown scores 100", () => {
    expect(linear(5, 10, 20)).toBe(100);
    expect(linear(15, 10, 20)).toBe(50);
    expect(linear(25, 10, 20)).toBe(0);
    expect(linear(null, 10, 20)).toBe(100);
  });

  test("each signal against its thresholds", () => {
    const { parts } = scoreReplica({ lagSeconds: 0.1275, p99Ms: 510, errorRate: 0.025, load: 0.6, queue: 55, breaker: "half-open" }, H);
    expect(parts).toEqual({ lag: 50, latency: 50, errors: 50, load: 50, queue: 50, breaker: 50 });
  });

  test("a healthy idle replica scores 100; nothing known scores 100", () => {
    expect(scoreReplica(healthy, H).score).toBe(100);
    expect(scoreReplica({ lagSeconds: null, p99Ms: null, errorRate: 0, load: null, queue: 0, breaker: "closed" }, H).score).toBe(100);
  });

  test("the score is the weighted mean of the parts", () => {
    // Lag alone at 0: 100 − weight_lag share (30 of 100).
    expect(scoreReplica({ ...healthy, lagSeconds: 1 }, H).score).toBe(70);
    expect(scoreReplica({ ...healthy, breaker: "open" }, H).score).toBe(95);
    const lagOnly = { ...H, weight_latency: 0, weight_errors: 0, weight_load: 0, weight_queue: 0, weight_breaker: 0 };
    expect(scoreReplica({ ...healthy, lagSeconds: 0.1275 }, lagOnly).score).toBe(50);
  });

  test("the primary scores 100 while it answers", () => {
    expect(primaryScore(true).score).toBe(100);
    expect(primaryScore(false).score).toBe(0);
  });
});

describe("the design's example, with the default settings", () => {
  const a = scoreReplica({ lagSeconds: 0.03, p99Ms: 5, errorRate: 0, load: 0.4, queue: 0, breaker: "closed" }, H);
  const c = scoreReplica({ lagSeconds: 0.06, p99Ms: 5, errorRate: 0, load: 0.55, queue: 0, breaker: "closed" }, H);

  test("A: 30 ms lag, 40% load, no errors → a high score", () => {
    expect(a.score).toBeGreaterThanOrEqual(85);
  });

  test("B: 200 ms lag, 3% of its requests failing → its breaker opens: excluded", () => {
    const b = new Breaker(config.breaker);
    expect(b.errorRate(0, 3, 100, H.window_ms)).toBe(true);
    expect(b.view()).toMatchObject({ state: "open", reason: "error rate 3% over 10 s > 2%" });
    expect(scoreReplica({ lagSeconds: 0.2, p99Ms: 5, errorRate: 0.03, load: 0.8, queue: 0, breaker: "open" }, H).score).toBeLessThan(50);
  });

  test("C: 60 ms lag, 55% load → less weight than A", () => {
    expect(c.score).toBeLessThan(a.score - 5);
    expect(c.parts.lag).toBeLessThan(a.parts.lag);
  });
});
