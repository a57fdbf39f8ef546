// Invariant: roles follow the cluster. A node in recovery is never the primary (whatever its configured role); a
// primary that fails `failover.failures` checks in a row is down and no longer the primary; a node that leaves
// recovery is elected as soon as the monitor sees it — before the old primary is even down when that one cannot
// be reached — and of two nodes out of recovery the later timeline wins, so an old primary that comes back is
// reported as not the primary rather than given writes; Patroni's leader and the DNS name's addresses are
// preferred when they name a node; with `failover.promote`, the replica that replayed the most WAL is promoted once
// the primary is down; the fast replay poll keeps replicas' replay positions current between checks.
import { describe, expect, test } from "bun:test";
import type { Config } from "../../src/config/types.ts";
import { configFrom } from "../../src/config/load.ts";
import { LiveNodes } from "../../src/cluster/live.ts";
import { emptyState, type NodeState } from "../../src/monitor/assemble.ts";
import type { PatroniFetch } from "../../src/monitor/patroni.ts";
import { PROMOTE_SQL, REPLAY_SQL } from "../../src/monitor/probe.ts";
import { elect, roleOf, NO_HINTS } from "../../src/monitor/roles.ts";
import { fakeNode, rig, tickAndPing } from "../support/monitor-fakes.ts";
import { eventually } from "../support/wait.ts";

/** States of nodes a, b, c… with the given fields over an `auto` default. */
function states(spec: Record<string, Partial<NodeState> & { role?: "primary" | "replica" | "auto" }>): NodeState[] {
  const config: Config = configFrom({
    nodes: Object.entries(spec).map(([name, s], i) => ({ name, port: 5432 + i, role: s.role ?? "auto" })),
    users: [{ name: "u", password: "pw" }],
  });
  const lives = new LiveNodes(config);
  return config.nodes.map((n) => {
    const { role: _role, ...fields } = spec[n.name]!;
    return { ...emptyState(n, lives.get(n.name)), reachable: true, standby: false, ...fields };
  });
}

const electName = (s: NodeState[], hinted: ReadonlySet<string> = NO_HINTS, incumbent: string | null = null) => elect(s, { failures: 3, hinted, incumbent })?.node.name ?? null;

describe("roles and the election", () => {
  test("a node in recovery is a replica whatever its configured role; auto follows pg_is_in_recovery()", () => {
    const s = states({ a: { role: "primary", standby: true }, b: { role: "replica", standby: false }, c: { standby: null }, d: { standby: false } });
    expect(s.map(roleOf)).toEqual(["replica", "replica", "unknown", "primary"]);
  });

  test("down nodes are never elected; reachable before unreachable; hinted; later timeline; incumbent; configured primary; config order", () => {
    expect(electName(states({ a: { failures: 3 }, b: { standby: true } }))).toBeNull();
    expect(electName(states({ a: { failures: 2, reachable: false }, b: { standby: true } }))).toBe("a"); // not down yet
    expect(electName(states({ a: { failures: 1, reachable: false, timeline: 2 }, b: { timeline: 1 } }))).toBe("b");
    expect(electName(states({ a: { timeline: 3 }, b: { timeline: 2 } }), new Set(["b"]))).toBe("b");
    expect(electName(states({ a: { timeline: 2 }, b: { timeline: 3 } }), NO_HINTS, "a")).toBe("b");
    expect(electName(states({ a: { timeline: 2 }, b: { timeline: 2 } }), NO_HINTS, "b")).toBe("b");
    expect(electName(states({ a: { timeline: 2 }, b: { timeline: 2, role: "primary" } }))).toBe("b");
    expect(electName(states({ a: {}, b: {} }))).toBe("a");
  });
});

describe("the monitor follows a failover", () => {
  test("the primary is down after `failures` failed checks; until then it stays the primary, unreachable", async () => {
    const r = rig({ a: fakeNode(false), b: fakeNode(true) });
    await r.monitor.round();
    expect(r.holder.current.primary).toBe("a");
    r.nodes.a!.fail = "down";
    await tickAndPing(r, 100);
    await tickAndPing(r, 100);
    expect(r.holder.current.primary).toBe("a");
    expect(r.node("a")).toMatchObject({ reachable: false, excludedBecause: "unreachable: connect ECONNREFUSED" });
    await tickAndPing(r, 100);
    expect(r.holder.current.primary).toBeNull();
    expect(r.node("a")).toMatchObject({ role: "primary", readable: false, excludedBecause: "down: 3 checks failed in a row (connect ECONNREFUSED)" });
    // Back, still out of recovery on its timeline: the primary again.
    r.nodes.a!.fail = null;
    await tickAndPing(r, 100);
    expect(r.holder.current.primary).toBe("a");
  });

  test("a promoted replica is elected at once; the old primary, back out of recovery on an older timeline, is not the primary", async () => {
    const r = rig({ a: fakeNode(false, 1_000, 1), b: fakeNode(true, 1_000) });
    await r.monitor.round();
    r.nodes.a!.fail = "down";
    Object.assign(r.nodes.b!, { standby: false, timeline: 2 });
    await tickAndPing(r, 100);
    // One failed check of a, and b out of recovery: b (reachable) wins before a is down.
    expect(r.holder.current.primary).toBe("b");
    expect(r.node("b")).toMatchObject({ role: "primary", standby: false });
    r.nodes.a!.fail = null;
    await tickAndPing(r, 100);
    expect(r.holder.current.primary).toBe("b");
    expect(r.node("a")).toMatchObject({ role: "primary", readable: false, excludedBecause: 'not the primary: "b" is (timeline 2, this node\'s 1)' });
  });

  test("a configured primary that is in recovery gets no writes: another node out of recovery is the primary, or none", async () => {
    const r = rig({ a: fakeNode(true), b: fakeNode(true) }, { nodes: [{ name: "a", port: 5432, role: "primary" }, { name: "b", port: 5433 }] });
    await r.monitor.round();
    expect(r.holder.current.primary).toBeNull();
    expect(r.node("a").role).toBe("replica");
    r.nodes.b!.standby = false;
    await tickAndPing(r, 100);
    expect(r.holder.current.primary).toBe("b");
  });

  test("promote: once the primary is down, pg_promote() on the replica that replayed the most WAL, and it is elected", async () => {
    const r = rig({ a: fakeNode(false, 5_000), b: fakeNode(true, 4_000), c: fakeNode(true, 4_500) }, { monitor: { ping_interval: "10ms" }, failover: { failures: 2, promote: true } });
    await r.monitor.start();
    try {
      expect(r.holder.current.primary).toBe("a");
      r.nodes.a!.fail = "down";
      await eventually("c to be promoted and elected", () => r.holder.current.primary === "c", 5_000, 5);
      expect(r.nodes.c!.sent.filter((q) => q === PROMOTE_SQL)).toHaveLength(1);
      expect(r.nodes.b!.sent).not.toContain(PROMOTE_SQL);
    } finally {
      await r.monitor.stop();
    }
  });

  test("without promote, a lost primary leaves no primary (writes wait) until a node leaves recovery", async () => {
    const r = rig({ a: fakeNode(false), b: fakeNode(true) }, { monitor: { ping_interval: "10ms" }, failover: { failures: 2, search_interval: "5ms" } });
    await r.monitor.start();
    try {
      r.nodes.a!.fail = "down";
      await eventually("a to be down", () => r.node("a").excludedBecause?.startsWith("down:") ?? false, 5_000, 5);
      expect(r.holder.current.primary).toBeNull();
      expect(r.nodes.b!.sent).not.toContain(PROMOTE_SQL);
      Object.assign(r.nodes.b!, { standby: false, timeline: 2 });
      await eventually("b to be elected", () => r.holder.current.primary === "b", 5_000, 5);
    } finally {
      await r.monitor.stop();
    }
  });
});

describe("discovery", () => {
  /** Patroni's /cluster answer (3.0 shape) naming `leader`. */
  const clusterJson = (leader: string) => ({
    members: ["a", "b"].map((name, i) => ({
      name,
      role: name === leader ? "leader" : "replica",
      state: "running",
      api_url: `http://127.0.0.1:${8008 + i}/patroni`,
      host: "127.0.0.1",
      port: 5432 + i,
      timeline: 2,
      ...(name === leader ? {} : { lag: 0 }),
    })),
    scope: "demo",
  });

  test("two nodes out of recovery on one timeline: Patroni's leader is the primary", async () => {
    let leader = "b";
    const asked: string[] = [];
    const fetch: PatroniFetch = async (url) => {
      asked.push(url);
      return { status: 200, json: async () => clusterJson(leader) };
    };
    const r = rig({ a: fakeNode(false, 1_000, 2), b: fakeNode(false, 1_000, 2) }, { monitor: { ping_interval: "10ms" }, failover: { patroni: ["http://127.0.0.1:8008"], discovery_interval: "10ms" } }, () => 0.5, { failover: { fetch } });
    await r.monitor.start();
    try {
      await eventually("Patroni's leader to be the primary", () => r.holder.current.primary === "b", 5_000, 5);
      expect(asked[0]).toBe("http://127.0.0.1:8008/cluster");
      leader = "a";
      await eventually("the new leader to be the primary", () => r.holder.current.primary === "a", 5_000, 5);
    } finally {
      await r.monitor.stop();
    }
  });

  test("three nodes out of recovery on one timeline: the node the DNS name resolves to is the primary", async () => {
    const resolve = async (name: string) => (name === "primary.db.internal" ? ["10.0.0.3"] : []);
    const r = rig(
      { a: fakeNode(false, 1_000, 2), b: fakeNode(false, 1_000, 2), c: fakeNode(false, 1_000, 2) },
      {
        nodes: [
          { name: "a", host: "10.0.0.1" },
          { name: "b", host: "10.0.0.2" },
          { name: "c", host: "10.0.0.3" },
        ],
        monitor: { ping_interval: "10ms" },
        failover: { dns_name: "primary.db.internal", discovery_interval: "10ms" },
      },
      () => 0.5,
      { failover: { resolve } },
    );
    await r.monitor.start();
    try {
      await eventually("the DNS name's node to be the primary", () => r.holder.current.primary === "c", 5_000, 5);
    } finally {
      await r.monitor.stop();
    }
  });
});

describe("replay positions", () => {
  test("with a user in lsn mode, replicas' replay positions are read every lsn_poll_interval, between checks", async () => {
    const r = rig({ a: fakeNode(false, 9_000), b: fakeNode(true, 1_000) }, { monitor: { ping_interval: "1h", probe_interval: "1h" }, consistency: { mode: "lsn", lsn_poll_interval: "10ms" } });
    await r.monitor.start();
    try {
      expect(r.lives.get("b").replayLsn).toBe(1_000);
      expect(r.lives.get("a").replayLsn).toBe(-1); // the primary's position is not a replay position
      const woken = r.lives.replay.wait(5_000);
      r.nodes.b!.lsn = 8_000;
      expect(await woken).toBe(true);
      expect(r.lives.get("b").replayLsn).toBe(8_000);
      expect(r.nodes.a!.sent).not.toContain(REPLAY_SQL);
    } finally {
      await r.monitor.stop();
    }
  });

  test("without lsn mode nothing is polled until a session sets pgroute.min_lsn", async () => {
    const r = rig({ a: fakeNode(false), b: fakeNode(true) }, { monitor: { ping_interval: "1h", probe_interval: "1h" }, consistency: { lsn_poll_interval: "10ms" } });
    await r.monitor.start();
    try {
      const before = r.nodes.b!.sent.length;
      r.monitor.wantReplay();
      await eventually("a replay poll", () => r.nodes.b!.sent.slice(before).includes(REPLAY_SQL), 5_000, 5);
    } finally {
      await r.monitor.stop();
    }
  });
});
