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
import { PoolGroup, type Lease, type ReadBound } from "../../src/pool/group.ts";
import type { Pool, PoolWaiter } from "../../src/pool/pool.ts";
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

/**
 * A pool that leases at once, or fails with `error`; with `hold` set, a lease by callback waits until the test
 * calls `serve` (a connection coming back) or `fail`.
 */
class FakePool {
  error: PgError | null = null;
  leases = 0;
  attempts = 0;
  released = 0;
  hold = false;
  private waiting: PoolWaiter[] = [];
  constructor(readonly node: NodeConfig) {}
  async acquire(): Promise<ServerConn> {
    this.attempts++;
    if (this.error) throw this.error;
    this.leases++;
    return { node: this.node } as unknown as ServerConn;
  }
  lease(to: PoolWaiter): void {
    if (this.hold) {
      this.attempts++;
      this.waiting.push(to);
      return;
    }
    this.acquire().then(
      (c) => to.granted(c, this as unknown as Pool),
      (e: PgError) => to.failed(e),
    );
  }
  get queued(): number {
    return this.waiting.length;
  }
  serve(): void {
    this.leases++;
    this.waiting.shift()!.granted({ node: this.node } as unknown as ServerConn, this as unknown as Pool);
  }
  fail(err: PgError): void {
    this.waiting.shift()!.failed(err);
  }
  tryAcquire(): ServerConn | null {
    return null;
  }
  release(): void {
    this.released++;
  }
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

/** `g.lease(…)` as a promise of the lease (or of the error), and whether it is settled yet. */
function leased(g: PoolGroup, target: "primary" | "replica", read?: ReadBound) {
  const state = { done: false };
  const result = new Promise<Lease>((resolve, reject) =>
    g.lease(target, read, undefined, {
      granted: (l) => {
        state.done = true;
        resolve(l);
      },
      failed: (e) => {
        state.done = true;
        reject(e);
      },
    }),
  );
  return { result, state };
}

describe("leases by callback (PoolGroup.lease: what a waiting session uses)", () => {
  test("a write waits in the known primary's pool and gets its connection when one comes back", async () => {
    const { g, pools } = group(0);
    const p = pools.get("p")!;
    p.hold = true;
    const w = leased(g, "primary");
    expect(p.queued).toBe(1);
    expect(w.state.done).toBe(false);
    p.serve();
    const got = await w.result;
    expect([got.conn.node.name, got.target, got.pool]).toEqual(["p", "primary", p as unknown as Pool]);
  });

  test("the node stopped being the primary while the write waited: its connection goes back, the write finds the new primary", async () => {
    const { g, pools, states, publish } = group(5_000);
    const p = pools.get("p")!;
    p.hold = true;
    const w = leased(g, "primary");
    // A failover: p is now a standby, r1 the primary.
    Object.assign(states.get("p")!, { standby: true });
    Object.assign(states.get("r1")!, { standby: false, node: { ...states.get("r1")!.node, role: "auto" } });
    publish();
    p.hold = false;
    p.serve();
    const got = await w.result;
    expect([got.conn.node.name, got.target]).toEqual(["r1", "primary"]);
    expect(p.released).toBe(1);
  });

  test("an outage while the write waited: it waits for the primary as configured; any other failure is its answer", async () => {
    const { g, pools } = group(5_000);
    const p = pools.get("p")!;
    p.hold = true;
    const w = leased(g, "primary");
    p.hold = false;
    p.error = errors.unreachable("p", "connect ECONNREFUSED");
    p.fail(p.error);
    await eventually("another attempt", () => p.attempts >= 3);
    expect(w.state.done).toBe(false);
    p.error = null;
    expect((await w.result).conn.node.name).toBe("p");

    p.hold = true;
    const refused = leased(g, "primary");
    p.fail(new PgError("28P01", 'password authentication failed for user "u"', "FATAL"));
    expect(((await refused.result.catch((e: unknown) => e)) as PgError).code).toBe("28P01");
  });

  test("a read waits in its replica's pool; 53300 there is its answer; a failed login sends it to the other replica, then the primary", async () => {
    const { g, pools } = group(0);
    for (const n of ["r1", "r2"]) pools.get(n)!.hold = true;
    const r = leased(g, "replica");
    const first = pools.get("r1")!.queued === 1 ? pools.get("r1")! : pools.get("r2")!;
    const other = first === pools.get("r1") ? pools.get("r2")! : pools.get("r1")!;
    expect(first.queued + other.queued).toBe(1);
    first.serve();
    const got = await r.result;
    expect([got.conn.node.name, got.target]).toEqual([first.node.name, "replica"]);

    const timedOut = leased(g, "replica", bound(0, other.node.name));
    first.fail(new PgError("53300", "no server connection available within checkout_timeout", "ERROR"));
    expect(((await timedOut.result.catch((e: unknown) => e)) as PgError).code).toBe("53300");

    // Whichever replica the read waits on fails to log in: the other one is tried (it fails too), then the primary.
    const moved = leased(g, "replica");
    const [at, next] = first.queued === 1 ? [first, other] : [other, first];
    const before = next.attempts;
    next.hold = false;
    next.error = errors.unreachable(next.node.name, "connect ECONNREFUSED");
    at.fail(errors.unreachable(at.node.name, "connect ECONNREFUSED"));
    const landed = await moved.result;
    expect([landed.conn.node.name, landed.target]).toEqual(["p", "primary"]);
    expect(next.attempts).toBe(before + 1);
  });

  test("paused, or no primary known: the lease takes the promise path and still arrives", async () => {
    const { g, states, publish } = group(5_000);
    Object.assign(states.get("p")!, { reachable: false, failures: 3, error: "connection refused" });
    publish();
    const w = leased(g, "primary");
    Object.assign(states.get("r1")!, { standby: false, node: { ...states.get("r1")!.node, role: "auto" } });
    publish();
    expect((await w.result).conn.node.name).toBe("r1");
  });
});
