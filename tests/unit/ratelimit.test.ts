// Invariant: token buckets admit exactly `burst` at once and `rate` per second after that, on an injected clock;
// a request over a limit reserves its turn when it comes within max_wait and takes nothing otherwise; every
// bucket a request counts against is charged or none is; transaction starts are counted once per transaction.
import { describe, expect, test } from "bun:test";
import { configFrom } from "../../src/config/load.ts";
import { RateLimiter, TokenBucket, describeExceeded, limitOf, type Demand } from "../../src/policy/ratelimit.ts";
import { TransactionStarts, txEffect } from "../../src/policy/txstart.ts";

/** A clock the test moves by hand. */
function clock(start = 1_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

function limiter(ratelimit: Record<string, unknown>, users: Record<string, unknown>[] = [{ name: "app", password: "x" }]) {
  const c = clock();
  const config = configFrom({ nodes: [{ name: "p" }], users, ratelimit });
  return { l: new RateLimiter(config, c.now), ...c };
}

const demand = (over: Partial<Demand> = {}): Demand => ({ user: "app", address: "10.0.0.1", queries: ["select ?"], transactions: ["select ?"], ...over });

describe("TokenBucket", () => {
  test("starts full, refills at the rate, never beyond the burst", () => {
    const limit = { rate: 10, burst: 3 };
    const b = new TokenBucket(limit, 0);
    for (let i = 0; i < 3; i++) {
      b.refill(0);
      expect(b.waitFor(1)).toBe(0);
      b.take(1);
    }
    b.refill(0);
    expect(b.waitFor(1)).toBe(100); // one token every 100 ms
    b.refill(50);
    expect(b.waitFor(1)).toBeCloseTo(50);
    b.refill(10_000);
    expect(b.tokens).toBe(3);
  });

  test("a reservation drives it negative; a cancelled one comes back, capped at the burst", () => {
    const b = new TokenBucket({ rate: 1, burst: 1 }, 0);
    b.take(1);
    b.take(1); // reserved: the second token arrives after 1 s
    b.refill(0);
    expect(b.tokens).toBe(-1);
    expect(b.waitFor(1)).toBe(2000);
    b.give(1);
    b.give(5);
    expect(b.tokens).toBe(1);
  });

  test("a bucket used with a smaller burst is capped at once", () => {
    const b = new TokenBucket({ rate: 1, burst: 10 }, 0);
    b.limit = { rate: 1, burst: 2 };
    b.refill(0);
    expect(b.tokens).toBe(2);
  });

  test("limitOf: 0 is no limit; a burst of 0 is the rate rounded up, at least 1", () => {
    expect(limitOf(0, 5)).toBeNull();
    expect(limitOf(2.5, 0)).toEqual({ rate: 2.5, burst: 3 });
    expect(limitOf(0.1, 0)).toEqual({ rate: 0.1, burst: 1 });
    expect(limitOf(5, 20)).toEqual({ rate: 5, burst: 20 });
  });
});

describe("RateLimiter", () => {
  test("no limits configured: inactive, everything goes", () => {
    const { l } = limiter({});
    expect(l.active).toBe(false);
    for (let i = 0; i < 1000; i++) expect(l.admit(demand(), 0).kind).toBe("go");
    expect(l.admitConnection("10.0.0.1")).toBe(true);
  });

  test("per user: the burst at once, then one per 1/rate; another user has a bucket of its own", () => {
    const { l, advance } = limiter({ user_queries_per_second: 2, user_queries_burst: 3 });
    expect(l.active).toBe(true);
    for (let i = 0; i < 3; i++) expect(l.admit(demand(), 0).kind).toBe("go");
    const over = l.admit(demand(), 0);
    expect(over.kind).toBe("over");
    if (over.kind === "over") expect(over.exceeded).toEqual({ scope: "user", kind: "queries", key: "app", limit: { rate: 2, burst: 3 }, setting: "ratelimit.user_queries_per_second" });
    expect(l.admit(demand({ user: "other" }), 0).kind).toBe("go");
    advance(499);
    expect(l.admit(demand(), 0).kind).toBe("over");
    advance(1);
    expect(l.admit(demand(), 0).kind).toBe("go");
  });

  test("within max_wait a request reserves its turn: waiters are spaced at the rate, in arrival order", () => {
    const { l } = limiter({ user_queries_per_second: 10, user_queries_burst: 1 });
    expect(l.admit(demand(), 1000).kind).toBe("go");
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      const v = l.admit(demand(), 1000);
      expect(v.kind).toBe("wait");
      if (v.kind === "wait") waits.push(v.ms);
    }
    expect(waits).toEqual([100, 200, 300, 400, 500]);
    // Turns up to exactly max_wait are taken; the next would come 1100 ms from now: over, and nothing taken.
    for (let i = 0; i < 5; i++) expect(l.admit(demand(), 1000).kind).toBe("wait");
    expect(l.admit(demand(), 1000).kind).toBe("over");
    expect(l.admit(demand(), 1000).kind).toBe("over");
  });

  test("a cancelled reservation gives its tokens back", () => {
    const { l } = limiter({ user_queries_per_second: 1, user_queries_burst: 1 });
    expect(l.admit(demand(), 5000).kind).toBe("go");
    const v = l.admit(demand(), 5000);
    expect(v.kind === "wait" && v.ms).toBe(1000);
    if (v.kind === "wait") v.reservation.cancel();
    const again = l.admit(demand(), 5000);
    expect(again.kind === "wait" && again.ms).toBe(1000); // not 2000: the cancelled turn was given back
  });

  test("all or nothing: a request refused by one limit takes no token from the others", () => {
    const { l } = limiter({ user_queries_per_second: 100, user_queries_burst: 100, address_queries_per_second: 1, address_queries_burst: 1 });
    expect(l.admit(demand(), 0).kind).toBe("go");
    for (let i = 0; i < 50; i++) {
      const v = l.admit(demand(), 0);
      expect(v.kind === "over" && v.exceeded.scope).toBe("address");
    }
    // The user's bucket lost only the one token: 99 more from another address go.
    for (let i = 0; i < 99; i++) expect(l.admit(demand({ address: `10.0.1.${i}` }), 0).kind).toBe("go");
    expect(l.admit(demand({ address: "10.0.2.1" }), 0).kind).toBe("over");
  });

  test("per fingerprint: each statement shape has its bucket; a batch charges each shape for its statements", () => {
    const { l } = limiter({ fingerprint_queries_per_second: 1, fingerprint_queries_burst: 2 });
    expect(l.admit(demand({ queries: ["select ?", "select ?"] }), 0).kind).toBe("go");
    const v = l.admit(demand({ queries: ["select ?"] }), 0);
    expect(v.kind === "over" && v.exceeded).toMatchObject({ scope: "fingerprint", key: "select ?" });
    expect(l.admit(demand({ queries: ["select ? from t", "update t set a = ?"] }), 0).kind).toBe("go");
  });

  test("transactions per second count transaction starts, not statements", () => {
    const { l } = limiter({ user_transactions_per_second: 1, user_transactions_burst: 1 });
    expect(l.admit(demand({ queries: ["begin"], transactions: ["begin"] }), 0).kind).toBe("go");
    for (let i = 0; i < 20; i++) expect(l.admit(demand({ queries: ["select ?"], transactions: [] }), 0).kind).toBe("go");
    expect(l.admit(demand({ queries: ["select ?"], transactions: ["select ?"] }), 0).kind).toBe("over");
  });

  test("a user's own keys override the [ratelimit] user_* values; 0 exempts it", () => {
    const { l } = limiter({ user_queries_per_second: 1, user_queries_burst: 1 }, [
      { name: "app", password: "x" },
      { name: "batch", password: "x", queries_per_second: 5, queries_burst: 5 },
      { name: "admin", password: "x", queries_per_second: 0 },
    ]);
    expect(l.admit(demand({ user: "app" }), 0).kind).toBe("go");
    expect(l.admit(demand({ user: "app" }), 0).kind).toBe("over");
    for (let i = 0; i < 5; i++) expect(l.admit(demand({ user: "batch" }), 0).kind).toBe("go");
    const v = l.admit(demand({ user: "batch" }), 0);
    expect(v.kind === "over" && v.exceeded.setting).toBe("users[1].queries_per_second");
    for (let i = 0; i < 100; i++) expect(l.admit(demand({ user: "admin" }), 0).kind).toBe("go");
  });

  test("connections per address: the burst, then refused until a token comes back", () => {
    const { l, advance } = limiter({ connections_per_second: 0.5, connections_burst: 2 });
    expect(l.active).toBe(false); // statement limits are off; connection limits work on their own
    expect(l.admitConnection("10.0.0.1")).toBe(true);
    expect(l.admitConnection("10.0.0.1")).toBe(true);
    expect(l.admitConnection("10.0.0.1")).toBe(false);
    expect(l.admitConnection("10.0.0.2")).toBe(true);
    advance(2000);
    expect(l.admitConnection("10.0.0.1")).toBe(true);
    expect(l.admitConnection("10.0.0.1")).toBe(false);
  });

  test("a reload keeps the buckets' tokens and applies the new limits", () => {
    const { l } = limiter({ user_queries_per_second: 1, user_queries_burst: 5 });
    for (let i = 0; i < 5; i++) l.admit(demand(), 0);
    expect(l.admit(demand(), 0).kind).toBe("over");
    l.configure(configFrom({ nodes: [{ name: "p" }], users: [{ name: "app", password: "x" }], ratelimit: { user_queries_per_second: 1, user_queries_burst: 10 } }));
    expect(l.admit(demand(), 0).kind).toBe("over"); // still empty: a reload grants no fresh burst
    l.configure(configFrom({ nodes: [{ name: "p" }], users: [{ name: "app", password: "x" }] }));
    expect(l.active).toBe(false);
  });

  test("full buckets are forgotten once there are many", () => {
    const { l, advance } = limiter({ address_queries_per_second: 1000, address_queries_burst: 1 });
    for (let i = 0; i < 10_000; i++) l.admit(demand({ address: `a${i}` }), 0);
    expect(l.bucketCounts().address_queries).toBe(10_000);
    advance(10);
    l.admit(demand({ address: "new" }), 0);
    expect(l.bucketCounts().address_queries).toBe(1);
  });

  test("the 53400 text names the limit and where it is set", () => {
    const text = describeExceeded({ scope: "user", kind: "queries", key: "app", limit: { rate: 5, burst: 10 }, setting: "ratelimit.user_queries_per_second" }, 250);
    expect(text.message).toBe('pgroute: rate limit exceeded: user "app" is limited to 5 statements per second (burst 10)');
    expect(text.detail).toContain("250 ms");
    expect(text.hint).toContain("ratelimit.user_queries_per_second");
  });
});

describe("transaction starts", () => {
  test("statement effects from shape keys", () => {
    expect(txEffect("begin")).toBe("begin");
    expect(txEffect("begin isolation level serializable")).toBe("begin");
    expect(txEffect("start transaction read only")).toBe("begin");
    expect(txEffect("commit")).toBe("end");
    expect(txEffect("end transaction")).toBe("end");
    expect(txEffect("rollback")).toBe("end");
    expect(txEffect("abort")).toBe("end");
    expect(txEffect("prepare transaction ?")).toBe("end");
    expect(txEffect("rollback to savepoint a")).toBe("none");
    expect(txEffect("rollback to a")).toBe("none");
    expect(txEffect("commit and chain")).toBe("none");
    expect(txEffect("commit prepared ?")).toBe("none");
    expect(txEffect("select ?")).toBe("none");
    expect(txEffect("beginning_of_table")).toBe("none");
  });

  test("autocommit statements start one each; a transaction block counts once, however many statements", () => {
    const t = new TransactionStarts();
    expect(t.query("select ?")).toBe(1);
    expect(t.query("select ?")).toBe(1);
    expect(t.query("begin")).toBe(1);
    expect(t.query("select ?")).toBe(0);
    expect(t.query("update t set a = ?")).toBe(0);
    expect(t.query("commit")).toBe(0);
    expect(t.query("select ?; select ?")).toBe(1); // one implicit transaction
    expect(t.query("begin; select ?; commit; begin; select ?; commit")).toBe(2);
  });

  test("extended protocol: statements up to a Sync share one implicit transaction", () => {
    const t = new TransactionStarts();
    expect(t.execute("select ?")).toBe(1);
    expect(t.execute("select ?")).toBe(0);
    t.sync();
    expect(t.execute("select ?")).toBe(1);
    t.sync();
    expect(t.execute("begin")).toBe(1);
    t.sync();
    expect(t.execute("select ?")).toBe(0);
    t.sync();
  });

  test("the server's status corrects the guess; save/restore undo a refused request", () => {
    const t = new TransactionStarts();
    t.query("begin");
    t.settle(false); // the BEGIN failed, say
    expect(t.query("select ?")).toBe(1);
    const saved = t.save();
    t.query("begin");
    t.restore(saved);
    expect(t.query("select ?")).toBe(1);
  });
});
