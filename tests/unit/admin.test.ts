// Invariant: the admin side's pure pieces do what the operator is told — fingerprints are counted exactly while
// tracked and the table never grows past its capacity (a statement that becomes busy later still gets in);
// overrides keep one primary and forget removed nodes; routing skips drained nodes and follows roles set by hand;
// PAUSE holds leases until RESUME; console commands split and tokenize like SQL; results pgroute writes parse as
// any server's would.
import { describe, expect, test } from "bun:test";
import { Readable } from "node:stream";
import { parse } from "pg-protocol";
import { FingerprintTable, percentileMs } from "../../src/admin/fingerprints.ts";
import { splitStatements, tokens } from "../../src/admin/console.ts";
import type { RequestSample } from "../../src/cluster/observe.ts";
import { Overrides } from "../../src/cluster/overrides.ts";
import { Topology } from "../../src/cluster/topology.ts";
import { LiveNodes } from "../../src/cluster/live.ts";
import { SnapshotHolder } from "../../src/cluster/state.ts";
import { configFrom } from "../../src/config/load.ts";
import { silentLogger } from "../../src/log.ts";
import { Monitor } from "../../src/monitor/monitor.ts";
import type { NodeConfig } from "../../src/config/types.ts";
import { PauseGate } from "../../src/pool/gate.ts";
import { Buckets } from "../../src/stats.ts";
import { resultSet } from "../../src/wire/results.ts";

const node = (name: string, role: NodeConfig["role"], port = 5432): NodeConfig => ({ name, host: "127.0.0.1", port, role, weight: 1, zone: "", sslmode: "disable" });
const sample = (fingerprint: string, ms = 1, failed = false): RequestSample => ({ target: "replica", kind: "read", fingerprint, reason: "read_only", startedAt: 0, ms, failed, txEnd: true, errorCode: failed ? "XX000" : null });

describe("FingerprintTable", () => {
  test("counts, errors, nodes and quantiles are exact while every fingerprint fits", () => {
    const t = new FingerprintTable(10, () => 1000);
    const a = node("a", "replica");
    for (let i = 1; i <= 100; i++) t.record(sample("select ?", i, i % 10 === 0), a);
    t.record(sample(""), a); // a request that ran no statement is not tracked
    const [e] = t.top();
    expect(t.size).toBe(1);
    expect(e).toMatchObject({ fingerprint: "select ?", count: 100, errors: 10, inherited: 0, kinds: { read: 100, write: 0, other: 0 } });
    expect(e!.nodes.get("a")).toBe(100);
    expect(e!.buckets.count).toBe(100);
    expect(percentileMs(e!.hdr, 50)).toBeCloseTo(50, 0);
    expect(percentileMs(e!.hdr, 99)).toBeCloseTo(99, 0);
    expect(e!.id).toMatch(/^[0-9a-f]{16}$/);
  });

  test("at capacity a new fingerprint replaces the lightest and inherits its weight; a late heavy hitter climbs in", () => {
    const t = new FingerprintTable(2);
    const a = node("a", "replica");
    for (let i = 0; i < 5; i++) t.record(sample("heavy"), a);
    t.record(sample("once"), a);
    t.record(sample("late"), a); // replaces "once" (weight 1), inheriting it
    expect(t.top().map((e) => [e.fingerprint, e.count, e.inherited])).toEqual([
      ["heavy", 5, 0],
      ["late", 1, 1],
    ]);
    t.record(sample("noise"), a); // the lightest is "late" (1 + 1): replaced
    for (let i = 0; i < 10; i++) t.record(sample("late"), a); // back in, each time evicting the lightest, then stays
    expect(t.size).toBe(2);
    expect(t.get("late")).toBeDefined();
    expect(t.get("heavy")?.count).toBe(5);
    expect(t.evicted).toBe(3);
  });

  test("resize keeps the heaviest", () => {
    const t = new FingerprintTable(3);
    const a = node("a", "replica");
    for (const [fp, n] of [["x", 3], ["y", 1], ["z", 2]] as const) for (let i = 0; i < n; i++) t.record(sample(fp), a);
    t.resize(2);
    expect(t.top().map((e) => e.fingerprint)).toEqual(["x", "z"]);
    expect([t.limit, t.evicted]).toEqual([2, 1]);
  });
});

describe("Buckets", () => {
  test("a value lands in the first bucket whose bound it does not exceed; above the last, +Inf", () => {
    const b = new Buckets([0.1, 1]);
    for (const v of [0.05, 0.1, 0.5, 1, 2]) b.observe(v);
    expect([...b.counts]).toEqual([2, 2, 1]);
    expect([b.count, b.sum]).toEqual([5, 3.65]);
  });
});

describe("Overrides and routing", () => {
  test("one primary set by hand at a time; auto clears; removed nodes are forgotten", () => {
    const o = new Overrides();
    let changes = 0;
    o.subscribe(() => changes++);
    o.setRole("a", "primary");
    o.setRole("b", "primary");
    expect([o.roleOf("a"), o.roleOf("b"), o.primary]).toEqual([null, "primary", "b"]);
    expect([o.drain("c"), o.drain("c"), o.isDrained("c")]).toEqual([true, false, true]);
    o.retain(new Set(["a"]));
    expect([o.roleOf("b"), o.isDrained("c"), o.primary]).toEqual([null, false, null]);
    expect(changes).toBe(4);
  });

  /** The monitor (not probing) folds `o` into its snapshots and republishes on every change, as in the proxy. */
  function withOverrides(o: Overrides) {
    const config = configFrom({
      nodes: [{ name: "p", role: "primary" }, { name: "r1", role: "replica", port: 6001 }, { name: "r2", role: "replica", port: 6002 }],
      users: [{ name: "u", password: "pw" }],
      balance: { strategy: "round_robin" },
    });
    const lives = new LiveNodes(config);
    const holder = new SnapshotHolder({ at: 0, version: 0, nodes: [], primary: null });
    const monitor = new Monitor({ config, holder, lives, log: silentLogger, overrides: o });
    const t = new Topology({ holder, lives, balance: config.balance, onTrial: (n) => monitor.trial(n) });
    o.subscribe(() => monitor.publish());
    monitor.publish();
    const byName = (name: string) => config.nodes.find((n) => n.name === name)!;
    return { t, holder, byName };
  }

  test("drained replicas get no reads; a drained primary none of the writes, and says so", () => {
    const o = new Overrides();
    const { t, holder } = withOverrides(o);
    o.drain("r1");
    expect(Array.from({ length: 4 }, () => t.pickReplica()?.name)).toEqual(["r2", "r2", "r2", "r2"]);
    expect(holder.current.nodes.find((n) => n.name === "r1")).toMatchObject({ drained: true, readable: false, excludedBecause: "drained by an operator" });
    o.drain("r2");
    expect([t.replicaAvailable(), t.pickReplica()]).toEqual([false, null]);
    o.drain("p");
    expect([t.primary(), t.primaryCandidates(), t.drainedPrimary()?.name]).toEqual([null, [], "p"]);
    o.enable("p");
    expect(t.primary()?.name).toBe("p");
  });

  test("a role set by hand wins over the configured one, for reads and for writes", () => {
    const o = new Overrides();
    const { t, byName, holder } = withOverrides(o);
    o.setRole("r1", "primary");
    expect([t.primary()?.name, t.roleOf(byName("r1")), holder.current.primary]).toEqual(["r1", "primary", "r1"]);
    expect(Array.from({ length: 3 }, () => t.pickReplica()?.name)).toEqual(["r2", "r2", "r2"]);
    o.setRole("p", "replica");
    expect(new Set(Array.from({ length: 4 }, () => t.pickReplica()?.name))).toEqual(new Set(["p", "r2"]));
    o.setRole("r1", "auto");
    o.setRole("p", "auto");
    expect(t.primary()?.name).toBe("p");
  });
});

describe("PauseGate", () => {
  test("open: no wait; closed: every lease waits until resume", async () => {
    const g = new PauseGate();
    expect(g.pass()).toBeNull();
    expect(g.pause(42)).toBe(true);
    expect([g.paused, g.pausedSince, g.pause()]).toEqual([true, 42, false]);
    let released = 0;
    const waits = [g.pass()!, g.pass()!].map((p) => p.then(() => released++));
    expect(g.waiters).toBe(2);
    await Promise.resolve();
    expect(released).toBe(0);
    expect(g.resume()).toBe(true);
    await Promise.all(waits);
    expect([released, g.paused, g.waiters, g.resume()]).toEqual([2, false, 0, false]);
  });
});

describe("console commands", () => {
  test("statements split at semicolons outside quotes; words keep quoted names whole", () => {
    expect(splitStatements(" SHOW NODES ; ;DRAIN \"a;b\"; ")).toEqual(["SHOW NODES", `DRAIN "a;b"`]);
    expect(splitStatements("  ")).toEqual([]);
    expect(tokens(`ROLE "Replica ""One""" 'primary'`)).toEqual(["ROLE", `Replica "One"`, "primary"]);
  });
});

describe("results pgroute writes", () => {
  test("RowDescription, DataRows and CommandComplete parse as a server's, NULL included", async () => {
    const bytes = resultSet(
      [
        { name: "name", type: "text" },
        { name: "n", type: "int8" },
        { name: "ms", type: "float8" },
        { name: "ok", type: "bool" },
      ],
      [
        ["a", 1, 1.5, true],
        [null, 0, null, false],
      ],
      "SHOW",
    );
    const got: unknown[] = [];
    // pg-protocol's parser, as node-postgres reads a server.
    await parse(Readable.from([Buffer.from(bytes)]), (m) => {
      const msg = m as unknown as { name: string; fields?: { name: string; dataTypeID: number }[]; text?: string };
      got.push(msg.name === "rowDescription" ? msg.fields!.map((f) => [f.name, f.dataTypeID]) : msg.name === "dataRow" ? (m as unknown as { fields: unknown[] }).fields : [msg.name, msg.text]);
    });
    expect(got).toEqual([
      [["name", 25], ["n", 20], ["ms", 701], ["ok", 16]],
      ["a", "1", "1.500", "t"],
      [null, "0", null, "f"],
      ["commandComplete", "SHOW"],
    ]);
  });
});
