// Invariant: a read bound to a WAL position goes only to replicas that replayed it (none: null, then the primary —
// after waiting up to `wait` for one to catch up), and a retried read avoids the node it failed on; an unbound read
// picks as before, with no allocation. A write waits for a primary while none can be reached — no primary known, or
// connecting fails as an outage does — up to primary_wait_timeout, then gets 57P03; other failures (a wrong
// password) reach it at once.
import { describe, expect, test } from "bun:test";
import { LiveNodes } from "../../src/cluster/live.ts";
import { SnapshotHolder } from "../../src/cluster/state.ts";
import { Topology } from "../../src/cluster/topology.ts";
import { configFrom } from "../../src/config/load.ts";
import type { NodeConfig } from "../../src/config/types.ts";
import { PgError, errors } from "../../src/errors.ts";
import { assemble, emptyState, type NodeState } from "../../src/monitor/assemble.ts";
import { PoolGroup, type ReadBound } from "../../src/pool/group.ts";
import type { Pool } from "../../src/pool/pool.ts";
import type { ServerConn } from "../../src/pool/server.ts";
import { eventually } from "../support/wait.ts";

/** A primary `p` and replicas r1, r2 (replayed up to 100 and 200), all checked and healthy. */
function cluster() {
  const config = configFrom({
    nodes: [{ name: "p", role: "primary" }, { name: "r1", role: "replica", port: 5433 }, { name: "r2", role: "replica", port: 5434 }],
    users: [{ name: "u", password: "pw" }],
  });
  const lives = new LiveNodes(config);
  const states = new Map<string, NodeState>(config.nodes.map((n) => [n.name, { ...emptyState(n, lives.get(n.name)), reachable: true, checkedAt: 1, lagBytes: 0, lagSeconds: 0, standby: n.role === "replica" }]));
  lives.get("r1").replayLsn = 100;
  lives.get("r2").replayLsn = 200;
  const holder = new SnapshotHolder({ at: 0, version: 0, nodes: [], primary: null });
  let version = 0;
  const publish = () => holder.publish(assemble({ config, states: [...states.values()], now: 1, mono: 1, version: ++version, passive: false, trialsOut: () => false }));
  publish();
  const topology = new Topology({ holder, lives, balance: config.balance, onTrial: () => {}, random: () => 0.5 });
  return { config, lives, states, topology, publish };
}

const bound = (minLsn: number, avoid: string | null = null, waitMs = 0): ReadBound => ({ minLsn, waitMs, avoid });

describe("replica picks", () => {
  test("only replicas at or past the position; none: null; an avoided node is skipped; unbound reads use both", () => {
    const { topology } = cluster();
    const picks = (n: number, min = 0, avoid: string | null = null) => Array.from({ length: n }, () => topology.pickReplica(undefined, min, avoid)?.name ?? "none");
    expect(new Set(picks(4))).toEqual(new Set(["r1", "r2"]));
    expect(picks(3, 150)).toEqual(["r2", "r2", "r2"]);
    expect(picks(2, 100)).toEqual(expect.arrayContaining(["r1", "r2"]));
    expect(picks(1, 201)).toEqual(["none"]);
    expect(picks(3, 0, "r1")).toEqual(["r2", "r2", "r2"]);
    expect(picks(1, 150, "r2")).toEqual(["none"]);
  });
});

/** A pool that leases at once, or fails with `error`. */
class FakePool {
  error: PgError | null = null;
  leases = 0;
  attempts = 0;
  constructor(readonly node: NodeConfig) {}
  async acquire(): Promise<ServerConn> {
    this.attempts++;
    if (this.error) throw this.error;
    this.leases++;
    return { node: this.node } as unknown as ServerConn;
  }
  tryAcquire(): ServerConn | null {
    return null;
  }
  release(): void {}
}

function group(waitMs: number) {
  const c = cluster();
  const pools = new Map<string, FakePool>();
  const poolOf = (n: NodeConfig) => {
    let p = pools.get(n.name);
    if (!p) pools.set(n.name, (p = new FakePool(n)));
    return p;
  };
  for (const n of c.config.nodes) poolOf(n);
  const g = new PoolGroup(c.topology, (n) => poolOf(n) as unknown as Pool, null, () => ({ waitMs, retryMs: 10 }));
  return { ...c, g, pools };
}

describe("reads bound to a position", () => {
  test("no replica has replayed it: the primary at once without `wait`; with it, the replica that catches up", async () => {
    const { g, lives } = group(0);
    expect((await g.acquire("replica", bound(300))).conn.node.name).toBe("p");
    const waiting = g.acquire("replica", bound(300, null, 5_000));
    lives.get("r1").replayLsn = 300;
    lives.replay.fire();
    const got = await waiting;
    expect([got.conn.node.name, got.target]).toEqual(["r1", "replica"]);
  });

  test("a replica that does not catch up within `wait`: the primary after it", async () => {
    const { g } = group(0);
    const t0 = performance.now();
    const got = await g.acquire("replica", bound(300, null, 60));
    expect(got.conn.node.name).toBe("p");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(55);
  });
});

describe("writes while no primary can be reached", () => {
  test("no primary known: the write waits for one", async () => {
    const { g, states, publish } = group(5_000);
    Object.assign(states.get("p")!, { reachable: false, failures: 3, error: "connection refused" });
    publish();
    const waiting = g.acquire("primary");
    Object.assign(states.get("r1")!, { standby: false, node: { ...states.get("r1")!.node, role: "auto" } });
    publish();
    expect((await waiting).conn.node.name).toBe("r1");
  });

  test("the primary refuses connections (an outage): wait, then 57P03 naming the last failure", async () => {
    const { g, pools } = group(80);
    pools.get("p")!.error = errors.unreachable("p", "connect ECONNREFUSED 127.0.0.1:5432");
    const t0 = performance.now();
    const err = (await g.acquire("primary").catch((e: unknown) => e)) as PgError;
    expect(performance.now() - t0).toBeGreaterThanOrEqual(75);
    expect([err.code, err.message, err.detail]).toEqual(["57P03", "no primary node is available (waited 80 ms for one)", 'could not connect to node "p": connect ECONNREFUSED 127.0.0.1:5432']);
  });

  test("the primary answers again within the wait: the write goes through", async () => {
    const { g, pools } = group(5_000);
    pools.get("p")!.error = errors.unreachable("p", "connect ECONNREFUSED");
    const waiting = g.acquire("primary");
    await eventually("a second attempt", () => pools.get("p")!.attempts >= 2);
    pools.get("p")!.error = null;
    expect((await waiting).conn.node.name).toBe("p");
  });

  test("a failure that is not an outage (a wrong password) reaches the client at once", async () => {
    const { g, pools } = group(5_000);
    pools.get("p")!.error = new PgError("28P01", 'password authentication failed for user "u"', "FATAL");
    const err = (await g.acquire("primary").catch((e: unknown) => e)) as PgError;
    expect(err.code).toBe("28P01");
  });
});
