// Invariant: a breaker opens on `failures` in a row, on an error rate over the threshold (once the window holds
// `min_requests`), on a refused login or on lag past the limit; stays open for its cooldown (lag: until the lag is
// back); half-open hands out `half_open_trials` trials and closes after as many successes; a failed trial opens it
// again with the cooldown doubled up to `max_cooldown`; closing resets the cooldown. Time is the test's own.
import { describe, expect, test } from "bun:test";
import { Breaker } from "../../src/cluster/breaker.ts";
import type { BreakerConfig } from "../../src/config/types.ts";

const CFG: BreakerConfig = { failures: 3, error_rate: 0.02, min_requests: 20, cooldown_ms: 5_000, max_cooldown_ms: 20_000, half_open_trials: 2 };

function failTimes(b: Breaker, n: number, now: number, source: "request" | "check" = "request"): boolean[] {
  return Array.from({ length: n }, () => b.failure(now, source, "08006"));
}

describe("closed → open", () => {
  test("after `failures` consecutive failures; a success in between starts the count again", () => {
    const b = new Breaker(CFG);
    expect(failTimes(b, 2, 0)).toEqual([false, false]);
    b.success("request");
    expect(failTimes(b, 2, 0)).toEqual([false, false]);
    expect(b.failure(1_000, "request", "08006 on a request")).toBe(true);
    expect(b.view()).toEqual({ state: "open", reason: "3 consecutive failures (last: 08006 on a request)", until: 6_000 });
    expect(b.admits).toBe(false);
  });

  test("on an error rate over the threshold, once the window holds enough requests", () => {
    const b = new Breaker(CFG);
    expect(b.errorRate(0, 5, 19, 10_000)).toBe(false); // 26% but only 19 requests
    expect(b.errorRate(0, 2, 100, 10_000)).toBe(false); // 2% is not over 2%
    expect(b.errorRate(0, 3, 100, 10_000)).toBe(true);
    expect(b.view().reason).toBe("error rate 3% over 10 s > 2%");
  });

  test("at once on a refused login, or on lag (then with no deadline: it waits for the lag)", () => {
    const login = new Breaker(CFG);
    expect(login.trip(0, "login", "login failed: connection refused")).toBe(true);
    expect(login.view()).toEqual({ state: "open", reason: "login failed: connection refused", until: 5_000 });
    const lag = new Breaker(CFG);
    expect(lag.trip(0, "lag", "lag 1.4 s > max_lag 1 s")).toBe(true);
    expect(lag.view()).toEqual({ state: "open", reason: "lag 1.4 s > max_lag 1 s", until: null });
    expect(lag.trip(500, "lag", "lag 1.9 s > max_lag 1 s")).toBe(false);
    expect(lag.view().reason).toBe("lag 1.9 s > max_lag 1 s");
    expect(lag.tick(1_000_000)).toBe(false);
  });
});

describe("open → half-open → closed", () => {
  test("half-open when the cooldown ends, not before", () => {
    const b = new Breaker(CFG);
    failTimes(b, 3, 10_000);
    expect(b.deadline).toBe(15_000);
    expect(b.tick(14_999)).toBe(false);
    expect(b.state).toBe("open");
    expect(b.tick(15_000)).toBe(true);
    expect(b.view()).toEqual({ state: "half-open", reason: "3 consecutive failures (last: 08006)", until: null });
  });

  test("half-open hands out `half_open_trials` trials, and that many successes close it", () => {
    const b = new Breaker(CFG);
    failTimes(b, 3, 0);
    b.tick(5_000);
    expect(b.admits).toBe(true);
    expect(b.takeTrial(5_000)).toBe(false);
    expect(b.takeTrial(5_001)).toBe(true); // the last trial: it admits no more until results come
    expect(b.admits).toBe(false);
    expect(b.success("request")).toBe(false);
    expect(b.success("request")).toBe(true);
    expect(b.view()).toEqual({ state: "closed", reason: null, until: null });
  });

  test("trials that vanish (no result within a cooldown) are handed out again", () => {
    const b = new Breaker(CFG);
    failTimes(b, 3, 0);
    b.tick(5_000);
    b.takeTrial(6_000);
    b.takeTrial(6_000);
    expect(b.admits).toBe(false);
    expect(b.deadline).toBe(11_000);
    expect(b.tick(10_999)).toBe(false);
    expect(b.tick(11_000)).toBe(true);
    expect(b.admits).toBe(true);
    expect(b.state).toBe("half-open");
  });

  test("a failed trial opens it again with the cooldown doubled, up to max_cooldown; closing resets it", () => {
    const b = new Breaker(CFG);
    failTimes(b, 3, 0);
    let now = 0;
    const cooldowns: number[] = [];
    for (let k = 0; k < 4; k++) {
      now = b.deadline!;
      b.tick(now);
      expect(b.failure(now, "request", "08006")).toBe(true);
      cooldowns.push(b.deadline! - now);
    }
    expect(cooldowns).toEqual([10_000, 20_000, 20_000, 20_000]);
    b.tick(b.deadline!);
    b.success("request");
    b.success("request");
    expect(b.state).toBe("closed");
    failTimes(b, 3, 100_000);
    expect(b.deadline).toBe(105_000);
  });

  test("lag: half-open as soon as the lag is back within the limit; the monitor's checks may close it", () => {
    const b = new Breaker(CFG);
    b.trip(0, "lag", "lag 3 s > max_lag 1 s");
    expect(b.lagRecovered()).toBe(true);
    expect(b.state).toBe("half-open");
    b.success("check");
    expect(b.success("check")).toBe(true);
  });

  test("what traffic opened, only traffic closes: the monitor's checks do not count as trials", () => {
    const b = new Breaker(CFG);
    b.trip(0, "login", "login failed: connection refused");
    b.tick(5_000);
    for (let k = 0; k < 5; k++) expect(b.success("check")).toBe(false);
    expect(b.state).toBe("half-open");
    b.success("login");
    expect(b.success("request")).toBe(true);
  });

  test("what the checks opened, their successes close", () => {
    const b = new Breaker(CFG);
    failTimes(b, 3, 0, "check");
    b.tick(5_000);
    b.success("check");
    expect(b.success("check")).toBe(true);
  });

  test("a refused login while half-open opens it again with a doubled cooldown", () => {
    const b = new Breaker(CFG);
    b.trip(0, "login", "refused");
    b.tick(5_000);
    expect(b.trip(5_000, "login", "refused again")).toBe(true);
    expect(b.deadline).toBe(15_000);
  });
});
