// Invariant: the monitor turns what nodes answer into the published snapshot — roles of `auto` nodes from
// pg_is_in_recovery(), lag from WAL positions (a replica stuck while the primary moves on passes max_lag, opens its
// breaker and is excluded; caught up, it is back after its trials), unreachable nodes excluded at once and their
// breaker opened after `failures` checks, reconnection attempts backing off exponentially (with jitter, capped),
// authentication problems reported without excluding the node; and from traffic: only the node's own failures
// count. Nodes are scripted fakes behind the monitor's connection interface; the clock is the test's.
import { describe, expect, test } from "bun:test";
import type { RequestSample } from "../../src/cluster/observe.ts";
import { configFrom } from "../../src/config/load.ts";
import { PgError } from "../../src/errors.ts";
import { fakeNode, rig, tickAndPing } from "../support/monitor-fakes.ts";
import { eventually } from "../support/wait.ts";

describe("roles and lag", () => {
  test("auto nodes get their role from pg_is_in_recovery(); a caught-up replica lags 0 however old its last commit", async () => {
    const r = rig({ a: fakeNode(false), b: fakeNode(true) });
    expect(r.node("a").role).toBe("unknown");
    await r.monitor.round();
    expect(r.holder.current.primary).toBe("a");
    expect(r.node("b")).toMatchObject({ role: "replica", standby: true, reachable: true, lagBytes: 0, lagSeconds: 0, readable: true, connections: 3, activeQueries: 1, maxConnections: 100, load: 0.01 });
  });

  test("a replica stuck while the primary writes passes max_lag, opens its breaker and is excluded; caught up, it comes back", async () => {
    const r = rig({ p: fakeNode(false, 1_000), s: fakeNode(true, 1_000) }, { balance: { max_lag: "1s" } });
    await r.monitor.round();
    r.nodes.s!.sinceReplay = 0.1;
    for (let t = 1; t <= 5; t++) {
      r.nodes.p!.lsn += 500; // the primary writes; the replica replays nothing
      await tickAndPing(r, 300);
    }
    const stuck = r.node("s");
    expect(stuck.lagBytes).toBe(2_500);
    expect(stuck.lagSeconds).toBeCloseTo(1.2, 5); // since the primary was first seen past its position
    expect(stuck).toMatchObject({ readable: false, breaker: { state: "open", reason: "lag 1.2 s > max_lag 1 s" }, excludedBecause: "breaker open: lag 1.2 s > max_lag 1 s" });
    expect(r.node("p")).toMatchObject({ readable: true, excludedBecause: null }); // reads fall back to the primary
    r.nodes.s!.lsn = r.nodes.p!.lsn;
    await tickAndPing(r, 300);
    // Half-open (a trial may go there), closed after `half_open_trials` (3) good checks.
    expect(r.node("s")).toMatchObject({ lagBytes: 0, lagSeconds: 0, readable: true, breaker: { state: "half-open" } });
    await tickAndPing(r, 300);
    await tickAndPing(r, 300);
    expect(r.node("s").breaker.state).toBe("half-open");
    await tickAndPing(r, 300);
    expect(r.node("s")).toMatchObject({ readable: true, breaker: { state: "closed" } });
  });
});

describe("failures", () => {
  test("an unreachable replica is excluded at once; `failures` failed checks open its breaker", async () => {
    const r = rig({ p: fakeNode(false), s: fakeNode(true) });
    await r.monitor.round();
    r.nodes.s!.fail = "down";
    await tickAndPing(r, 100);
    expect(r.node("s")).toMatchObject({ reachable: false, readable: false, excludedBecause: "unreachable: connect ECONNREFUSED", breaker: { state: "closed" } });
    await tickAndPing(r, 100);
    await tickAndPing(r, 100);
    expect(r.node("s").breaker).toMatchObject({ state: "open", reason: "3 consecutive failures (last: connect ECONNREFUSED)" });
  });

  test("a monitor that cannot log in says so, and does not take the node out", async () => {
    const r = rig({ p: fakeNode(false), s: fakeNode(true) });
    await r.monitor.round();
    r.nodes.s!.fail = "blind";
    await tickAndPing(r, 100);
    expect(r.node("s")).toMatchObject({ reachable: false, readable: true, error: 'password authentication failed for user "mon" (28P01)', breaker: { state: "closed" } });
  });

  test("reconnection attempts: `failover.failures` - 1 at the usual pace, then backing off exponentially up to reconnect_max (jitter 50-100%: here its floor)", async () => {
    const r = rig({ p: fakeNode(false) }, { monitor: { ping_interval: "10ms", reconnect_max: "80ms" } }, () => 0);
    const p = r.nodes.p!;
    p.fail = "down";
    await r.monitor.start();
    try {
      await eventually("eight attempts", () => p.calls.length >= 9, 10_000, 5);
      const gaps = p.calls.slice(1, 9).map((t, i) => t - p.calls[i]!);
      // 10, 10 (down after the third failure), then half of 10, 20, 40, 80, 80, 80 ms (timers may fire late, never early).
      [10, 10, 5, 10, 20, 40, 40, 40].forEach((floor, i) => expect(gaps[i]!).toBeGreaterThanOrEqual(floor - 1));
      expect(gaps[5]!).toBeGreaterThan(gaps[2]! * 1.5);
    } finally {
      await r.monitor.stop();
    }
  });
});

describe("traffic", () => {
  const sample = (failed: boolean, errorCode: string | null): RequestSample => ({ target: "replica", kind: "read", fingerprint: "select ?", reason: "read_only", startedAt: 0, ms: 1, failed, errorCode, txEnd: true });

  test("only the node's own failures count: lost connections open the breaker, SQL errors do not", async () => {
    const r = rig({ p: fakeNode(false), s: fakeNode(true) });
    await r.monitor.round();
    const s = r.config.nodes[1]!;
    for (let i = 0; i < 10; i++) r.monitor.request(s, sample(true, "22012"));
    r.monitor.publish();
    expect(r.node("s")).toMatchObject({ breaker: { state: "closed" }, observed: { errorRate: 0, requests: 10 } });
    for (let i = 0; i < 3; i++) r.monitor.request(s, sample(true, "08006"));
    expect(r.node("s")).toMatchObject({ readable: false, breaker: { state: "open", reason: "3 consecutive failures (last: 08006 on a request)" } });
  });

  test("a refused server login opens the breaker at once; a wrong password does not", async () => {
    const r = rig({ p: fakeNode(false), s: fakeNode(true) });
    await r.monitor.round();
    const s = r.config.nodes[1]!;
    r.monitor.loginFailed(s, new PgError("28P01", "password authentication failed", "FATAL"));
    expect(r.node("s").breaker.state).toBe("closed");
    r.monitor.loginFailed(s, new PgError("08001", 'could not connect to node "s": connection refused', "FATAL"));
    expect(r.node("s")).toMatchObject({ readable: false, breaker: { state: "open", reason: 'login failed: could not connect to node "s": connection refused' } });
  });
});

describe("reload", () => {
  test("added nodes appear, removed ones go, moved ones start afresh; the others keep what was learned", async () => {
    const r = rig({ p: fakeNode(false), s: fakeNode(true), t: fakeNode(true) });
    await r.monitor.round();
    r.nodes.u = fakeNode(true);
    const next = configFrom({
      nodes: [{ name: "p", port: 5432 }, { name: "s", port: 5433 }, { name: "t", port: 6000 }, { name: "u", port: 5435 }],
      users: [{ name: "mon", password: "pw" }],
    });
    r.monitor.reconfigure(next);
    expect(r.holder.current.nodes.map((n) => [n.name, n.role, n.reachable])).toEqual([
      ["p", "primary", true],
      ["s", "replica", true],
      ["t", "unknown", false],
      ["u", "unknown", false],
    ]);
    await r.monitor.round();
    expect(r.holder.current.nodes.map((n) => n.role)).toEqual(["primary", "replica", "replica", "replica"]);
    r.monitor.reconfigure(configFrom({ nodes: [{ name: "p", port: 5432 }], users: [{ name: "mon", password: "pw" }] }));
    expect(r.holder.current.nodes.map((n) => n.name)).toEqual(["p"]);
  });
});
