/**
 * A replica's health score, 0–100: each signal is mapped to a part between its good threshold (100) and its bad
 * one (0), linearly between, and the score is the weighted mean of the parts (weights and thresholds in
 * `[health]`). A signal not known yet scores 100: a replica is not punished for what nobody measured. Pure.
 *
 * | part    | signal                                                                       | 100 at / 0 at            |
 * |---------|------------------------------------------------------------------------------|--------------------------|
 * | lag     | replication lag in time                                                      | lag_good / lag_bad       |
 * | latency | p99 of the requests pgroute sent there (else of the monitor's pings)         | latency_good / _bad      |
 * | errors  | share of requests that failed for the node's sake                           | 0 / error_rate_bad       |
 * | load    | CPU busy from `monitor.cpu_query`, else active backends / max_connections    | load_good / load_bad     |
 * | queue   | clients waiting in pgroute for the node + queries active on it               | queue_good / queue_bad   |
 * | breaker | closed / half-open / open                                                    | 100 / 50 / 0             |
 */
import type { HealthConfig } from "../config/types.ts";
import type { BreakerState, ScoreParts } from "./state.ts";

export interface ScoreInput {
  readonly lagSeconds: number | null;
  readonly p99Ms: number | null;
  readonly errorRate: number;
  readonly load: number | null;
  readonly queue: number;
  readonly breaker: BreakerState;
}

/** 100 at or below `good`, 0 at or above `bad`, linear between; 100 for an unknown value. */
export function linear(value: number | null, good: number, bad: number): number {
  if (value === null || value <= good) return 100;
  if (value >= bad) return 0;
  return (100 * (bad - value)) / (bad - good);
}

const BREAKER_PART: Record<BreakerState, number> = { closed: 100, "half-open": 50, open: 0 };

/** The score (rounded to an integer) and its parts (to one decimal). */
export function scoreReplica(i: ScoreInput, h: HealthConfig): { score: number; parts: ScoreParts } {
  const parts: ScoreParts = {
    lag: round1(linear(i.lagSeconds === null ? null : i.lagSeconds * 1000, h.lag_good_ms, h.lag_bad_ms)),
    latency: round1(linear(i.p99Ms, h.latency_good_ms, h.latency_bad_ms)),
    errors: round1(linear(i.errorRate, 0, h.error_rate_bad)),
    load: round1(linear(i.load, h.load_good, h.load_bad)),
    queue: round1(linear(i.queue, h.queue_good, h.queue_bad)),
    breaker: BREAKER_PART[i.breaker],
  };
  const total = h.weight_lag + h.weight_latency + h.weight_errors + h.weight_load + h.weight_queue + h.weight_breaker;
  const sum =
    h.weight_lag * parts.lag +
    h.weight_latency * parts.latency +
    h.weight_errors * parts.errors +
    h.weight_load * parts.load +
    h.weight_queue * parts.queue +
    h.weight_breaker * parts.breaker;
  return { score: Math.round(sum / total), parts };
}

/** The primary's score: 100 while it answers, 0 when it does not (it is never balanced, only reported). */
export function primaryScore(reachable: boolean): { score: number; parts: ScoreParts } {
  const v = reachable ? 100 : 0;
  return { score: v, parts: { lag: v, latency: v, errors: v, load: v, queue: v, breaker: v } };
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
