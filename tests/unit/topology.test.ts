// Invariant: from a published snapshot, reads go only to replicas that are reachable, behind a breaker that lets
// traffic through, scoring at least min_score and within the lag limit for the client's zone (max_lag_local for
// its zone, max_lag_remote elsewhere); with prefer_zone they stay in that zone while it has such a replica and
// spill over otherwise; with none anywhere there is no replica (reads then go to the primary, which the snapshot
// marks readable). A half-open replica's pick is reported as a trial. Roles: configured, or as nodes report.
import { describe, expect, test } from "bun:test";
import { LiveNodes } from "../../src/cluster/live.ts";
import { SnapshotHolder, type ClusterSnapshot } from "../../src/cluster/state.ts";
import { Topology } from "../../src/cluster/topology.ts";
import { configFrom } from "../../src/config/load.ts";
import type { Config, NodeConfig } from "../../src/config/types.ts";
import { assemble, emptyState, type NodeState } from "../../src/monitor/assemble.ts";

interface World {
  config: Config;
  states: Map<string, NodeState>;
  holder: SnapshotHolder;
  topology: Topology;
  trials: string[];
  /** Publishes what `states` say now. */
  publish(passive?: boolean): ClusterSnapshot;
}

/** A primary and replicas `r1`… in the given zones, all checked, caught up and healthy. */
function world(zones: string[], extra: Record<string, unknown> = {}): World {
  const config = configFrom({
    nodes: [{ name: "p", role: "primary" }, ...zones.map((zone, i) => ({ name: `r${i + 1}`, role: "replica", port: 5433 + i, zone }))],
    users: [{ name: "u", password: "pw" }],
    ...extra,
  });
  const lives = new LiveNodes(config);
  const states = new Map(config.nodes.map((n) => [n.name, { ...emptyState(n, lives.get(n.name)), reachable: true, checkedAt: 1, lagBytes: 0, lagSeconds: 0, standby: n.role === "replica" }]));
  const holder = new SnapshotHolder({ at: 0, version: 0, nodes: [], primary: null });
  let version = 0;
  const publish = (passive = false) => {
    const s = assemble({ config, states: [...states.values()], now: 1_000, mono: 1_000, version: ++version, passive, trialsOut: (st) => st.live.breaker.state === "half-open" && !st.live.breaker.admits });
    holder.publish(s);
    return s;
  };
  publish();
  const trials: string[] = [];
  const topology = new Topology({ holder, lives, balance: config.balance, onTrial: (n) => trials.push(n.name), random: () => 0.5 });
  return { config, states, holder, topology, trials, publish };
}

function picks(t: Topology, n: number, zone?: string): string[] {
  return Array.from({ length: n }, () => t.pickReplica(zone)?.name ?? "none");
}

const byName = (s: ClusterSnapshot, name: string) => s.nodes.find((n) => n.name === name)!;

describe("which replicas take reads", () => {
  test("healthy replicas in turn; the primary only reports that it takes reads when none can", () => {
    const w = world(["", ""]);
    expect(new Set(picks(w.topology, 4))).toEqual(new Set(["r1", "r2"]));
    const s = w.holder.current;
    expect(byName(s, "p")).toMatchObject({ role: "primary", readable: false, excludedBecause: "reads go to the replicas while one can take them" });
    expect(byName(s, "r1")).toMatchObject({ role: "replica", readable: true, healthy: true, excludedBecause: null, lagLimitMs: 1_000 });
  });

  test("unreachable, breaker open, lag past max_lag or max_lag_bytes: excluded, and why", () => {
    const w = world(["", "", "", ""], { balance: { max_lag_bytes: "1MiB" } });
    Object.assign(w.states.get("r1")!, { reachable: false, error: "connection refused" });
    w.states.get("r2")!.live.breaker.trip(1_000, "login", "login failed: connection refused");
    Object.assign(w.states.get("r3")!, { lagSeconds: 1.4, lagBytes: 4096 });
    Object.assign(w.states.get("r4")!, { lagSeconds: 0.1, lagBytes: 2 * 1024 * 1024 });
    const s = w.publish();
    expect(s.nodes.map((n) => n.excludedBecause)).toEqual([
      null,
      "unreachable: connection refused",
      "breaker open: login failed: connection refused",
      "lag 1.4 s > max_lag 1 s",
      "lag 2.0 MiB > max_lag_bytes 1.0 MiB",
    ]);
    expect(s.nodes.map((n) => n.healthy)).toEqual([false, false, false, true, true]);
    // No replica left: the primary takes the reads.
    expect(byName(s, "p")).toMatchObject({ readable: true, excludedBecause: null });
    expect(w.topology.replicaAvailable()).toBe(false);
    expect(w.topology.pickReplica()).toBeNull();
  });

  test("a score under min_score excludes", () => {
    const w = world([""], { health: { min_score: 80 } });
    Object.assign(w.states.get("r1")!, { lagSeconds: 0.5, lagBytes: 10 }); // lag part 0: score 70
    expect(byName(w.publish(), "r1").excludedBecause).toBe("score 70 < min_score 80");
  });

  test("passive monitoring: an unreachable mark from a login is not an exclusion (its breaker is)", () => {
    const w = world([""]);
    Object.assign(w.states.get("r1")!, { reachable: false, error: "refused" });
    expect(byName(w.publish(true), "r1").readable).toBe(true);
  });
});

describe("zones", () => {
  test("prefer_zone keeps reads in the zone while it has a healthy replica, and spills over otherwise", () => {
    const w = world(["a", "b", "a"], { balance: { prefer_zone: "a" } });
    expect(new Set(picks(w.topology, 10))).toEqual(new Set(["r1", "r3"]));
    w.states.get("r1")!.live.breaker.trip(1_000, "login", "refused");
    Object.assign(w.states.get("r3")!, { reachable: false });
    w.publish();
    expect(new Set(picks(w.topology, 10))).toEqual(new Set(["r2"]));
    expect(byName(w.holder.current, "r2").readable).toBe(true);
  });

  test("the client's zone picks its own plan; without one, every zone's replicas take turns", () => {
    const w = world(["a", "b"]);
    expect(picks(w.topology, 3, "b")).toEqual(["r2", "r2", "r2"]);
    expect(new Set(picks(w.topology, 4))).toEqual(new Set(["r1", "r2"]));
  });

  test("max_lag_local and max_lag_remote apply by zone: a stale local replica gives way to a fresher remote one", () => {
    const w = world(["a", "b"], { balance: { prefer_zone: "a", max_lag_local: "500ms", max_lag_remote: "2s" } });
    Object.assign(w.states.get("r1")!, { lagSeconds: 0.8, lagBytes: 100 });
    Object.assign(w.states.get("r2")!, { lagSeconds: 1.5, lagBytes: 200 });
    const s = w.publish();
    expect(byName(s, "r1")).toMatchObject({ readable: false, healthy: true, excludedBecause: "lag 800 ms > max_lag_local 500 ms", lagLimitMs: 500 });
    expect(byName(s, "r2")).toMatchObject({ readable: true, lagLimitMs: 2_000 });
    expect(picks(w.topology, 3)).toEqual(["r2", "r2", "r2"]);
    // A client in zone b: r2 is local to it (500 ms: too stale), r1 remote (2 s: fine).
    expect(picks(w.topology, 2, "b")).toEqual(["r1", "r1"]);
  });
});

describe("half-open replicas", () => {
  test("a read sent there is reported as a trial; once every trial is out, it is excluded until results come", () => {
    const w = world([""]);
    const b = w.states.get("r1")!.live.breaker;
    b.trip(0, "login", "refused");
    b.tick(10_000);
    w.publish();
    expect(picks(w.topology, 1)).toEqual(["r1"]);
    expect(w.trials).toEqual(["r1"]);
    b.takeTrial(10_000);
    b.takeTrial(10_000);
    b.takeTrial(10_000);
    expect(byName(w.publish(), "r1").excludedBecause).toBe("breaker half-open: every trial is in flight");
  });
});

describe("roles", () => {
  function autoWorld(): { w: World; nodes: readonly NodeConfig[] } {
    const w = world([], { nodes: [{ name: "a" }, { name: "b", port: 5433 }] });
    for (const s of w.states.values()) s.standby = null;
    w.publish();
    return { w, nodes: w.config.nodes };
  }

  test("auto nodes are unknown until they report; until then every one is a primary candidate", () => {
    const { w, nodes } = autoWorld();
    expect(w.topology.primary()).toBeNull();
    expect(w.topology.primaryCandidates().map((n) => n.name)).toEqual(["a", "b"]);
    expect(byName(w.holder.current, "a").excludedBecause).toBe("role unknown (not checked yet)");
    w.states.get("a")!.standby = true;
    w.states.get("b")!.standby = false;
    w.publish();
    expect(w.topology.roleOf(nodes[0]!)).toBe("replica");
    expect(w.topology.primary()?.name).toBe("b");
    expect(w.topology.primaryCandidates().map((n) => n.name)).toEqual(["b"]);
    expect(w.holder.current.primary).toBe("b");
    expect(picks(w.topology, 2)).toEqual(["a", "a"]);
  });
});
