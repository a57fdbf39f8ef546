// Invariant: the monitor turns what nodes answer into the published snapshot — roles of `auto` nodes from
// pg_is_in_recovery(), lag from WAL positions (a replica stuck while the primary moves on passes max_lag, opens its
// breaker and is excluded; caught up, it is back after its trials), unreachable nodes excluded at once and their
// breaker opened after `failures` checks, reconnection attempts backing off exponentially (with jitter, capped),
// authentication problems reported without excluding the node; and from traffic: only the node's own failures
// count. Nodes are scripted fakes behind the monitor's connection interface; the clock is the test's.
import { describe, expect, test } from "bun:test";
import { LiveNodes } from "../../src/cluster/live.ts";
import type { RequestSample } from "../../src/cluster/observe.ts";
import { SnapshotHolder, type NodeSnapshot } from "../../src/cluster/state.ts";
import { configFrom } from "../../src/config/load.ts";
import type { Config, NodeConfig } from "../../src/config/types.ts";
import { PgError } from "../../src/errors.ts";
import { silentLogger } from "../../src/log.ts";
import type { CheckConnection } from "../../src/monitor/connection.ts";
import { formatLsn } from "../../src/monitor/lag.ts";
import { Monitor } from "../../src/monitor/monitor.ts";
import { CheckError, PING_SQL, PROBE_SQL, REPLICATION_SQL, type Row } from "../../src/monitor/probe.ts";
import { eventually } from "../support/wait.ts";

/** What a fake node answers. */
interface FakeNode {
  standby: boolean;
  lsn: number;
  sinceReplay: number | null;
  /** Refuse every query as a node that is down, or as one that refuses the monitor's login. */
  fail: "down" | "blind" | null;
  /** performance.now() of every query. */
  calls: number[];
}

function fakeNode(standby: boolean, lsn = 1_000): FakeNode {
  return { standby, lsn, sinceReplay: standby ? 3_600 : null, fail: null, calls: [] };
}

class FakeConnection implements CheckConnection {
  connects = 1;
  constructor(private readonly n: FakeNode) {}

  async query(text: string): Promise<Row[]> {
    this.n.calls.push(performance.now());
    if (this.n.fail === "down") throw new CheckError("connect ECONNREFUSED", "down");
    if (this.n.fail === "blind") throw new CheckError('password authentication failed for user "mon" (28P01)', "blind", "28P01");
    const base = { standby: this.n.standby, lsn: formatLsn(this.n.lsn), since_replay: this.n.sinceReplay };
    if (text === PING_SQL) return [base];
    if (text === PROBE_SQL) return [{ ...base, receive_lsn: formatLsn(this.n.lsn), replay_paused: this.n.standby ? false : null, connections: 3, active: 1, max_connections: 100, cluster_name: "" }];
    if (text === REPLICATION_SQL) return [];
    throw new Error(`unexpected query ${text}`);
  }

  reset(): void {}
  async close(): Promise<void> {}
}

interface Rig {
  monitor: Monitor;
  holder: SnapshotHolder;
  nodes: Record<string, FakeNode>;
  clock: { now: number; mono: number };
  node(name: string): NodeSnapshot;
  config: Config;
}

function rig(fakes: Record<string, FakeNode>, extra: Record<string, unknown> = {}, random = () => 0.5): Rig {
  const config = configFrom({
    nodes: Object.keys(fakes).map((name, i) => ({ name, port: 5432 + i })),
    users: [{ name: "mon", password: "pw" }],
    ...extra,
  });
  const clock = { now: 1_000_000, mono: 1_000 };
  const holder = new SnapshotHolder({ at: 0, version: 0, nodes: [], primary: null });
  const monitor = new Monitor({
    config,
    holder,
    lives: new LiveNodes(config),
    log: silentLogger,
    clock: { now: () => clock.now, mono: () => clock.mono },
    random,
    connect: (n: NodeConfig) => new FakeConnection(fakes[n.name]!),
  });
  return { monitor, holder, nodes: fakes, clock, config, node: (name) => holder.current.nodes.find((n) => n.name === name)! };
}

/** Time passes, then every node is pinged once. */
async function tickAndPing(r: Rig, ms: number): Promise<void> {
  r.clock.now += ms;
  r.clock.mono += ms;
  await r.monitor.burst(1);
}

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

  test("reconnection attempts back off exponentially up to reconnect_max (jitter 50-100%: here its floor)", async () => {
    const r = rig({ p: fakeNode(false) }, { monitor: { ping_interval: "10ms", reconnect_max: "80ms" } }, () => 0);
    const p = r.nodes.p!;
    p.fail = "down";
    await r.monitor.start();
    try {
      await eventually("six attempts", () => p.calls.length >= 7, 10_000, 5);
      const gaps = p.calls.slice(1, 7).map((t, i) => t - p.calls[i]!);
      // Half of 10, 20, 40, 80, 80, 80 ms (timers may fire late, never early).
      [5, 10, 20, 40, 40, 40].forEach((floor, i) => expect(gaps[i]!).toBeGreaterThanOrEqual(floor - 1));
      expect(gaps[3]!).toBeGreaterThan(gaps[0]! * 1.5);
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
