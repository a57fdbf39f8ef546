// Invariant: the transaction pool keeps its promises to clients — requests waiting for a connection are answered
// in order, each with its own reply, whether they came alone or several in one write; a client that cannot get a connection within
// checkout_timeout gets ERROR 53300 naming the timeout and the pool (in the extended protocol, followed by the skip
// to Sync Postgres does after any error) and can go on afterwards; a client beyond max_client_connections gets
// FATAL 53300; idle connections past idle_timeout leave pg_stat_activity; a connection past max_lifetime is
// replaced once idle, never mid-transaction; a backend terminated while idle in the pool is replaced before a
// client uses it; and a server login failure reaches clients as the server's own error, quickly.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import type { DevCluster } from "../../src/devcluster/index.ts";
import { testCluster } from "../support/cluster.ts";
import { backends, ownDatabase, waitFor, type OwnDatabase } from "../support/pool-db.ts";
import { eventually, pace } from "../support/wait.ts";
import { startPoolProxy } from "../support/pool-proxy.ts";
import { exchange, pbe, rawLogin, sync, views } from "../support/pool-raw.ts";
import type { TestProxy } from "../support/proxy.ts";
import { concat, query, serialize } from "../support/wire-frames.ts";

let cluster: DevCluster;
let db: OwnDatabase;

beforeAll(async () => {
  cluster = await testCluster();
  db = await ownDatabase(cluster, "pool_behave");
});
afterAll(async () => {
  await db?.drop();
});

/** A postgres.js client through `tp` (superuser), one connection. */
const connect = (tp: TestProxy, opts: postgres.Options<{}> = {}) => postgres(tp.url({ database: db.name }), { max: 1, onnotice: () => {}, ...opts });
const pidOf = async (sql: postgres.Sql) => (await sql`select pg_backend_pid() as pid`)[0]!.pid as number;

/** Runs `fn` with a proxy that is stopped afterwards, and with every backend it opened gone before the next test. */
async function withProxy(pool: Record<string, unknown>, extra: Record<string, unknown>, fn: (tp: TestProxy) => Promise<void>): Promise<void> {
  const tp = await startPoolProxy({ mode: "transaction", ...pool }, extra);
  try {
    await fn(tp);
  } finally {
    await tp.stop();
    await waitFor("the proxy's backends to close", () => backends(db.admin, db.name), (b) => b.length === 0);
  }
}

test("checkout_timeout: ERROR 53300 naming the timeout and the pool; the session is usable afterwards", async () => {
  await withProxy({ size: 1, checkout_timeout: "300ms" }, {}, async (tp) => {
    const holder = connect(tp);
    const waiter = connect(tp);
    try {
      // Both log in first (a login leases the connection briefly too).
      await pidOf(holder);
      await pidOf(waiter);
      await holder.unsafe("begin");
      await holder.unsafe("select 1");
      const started = Date.now();
      const err = (await waiter`select 1`.catch((e) => e)) as postgres.PostgresError;
      const waited = Date.now() - started;
      expect(err).toBeInstanceOf(postgres.PostgresError);
      expect({ code: err.code, severity: err.severity }).toEqual({ code: "53300", severity: "ERROR" });
      expect(err.message).toContain("checkout_timeout (300 ms)");
      expect(err.message).toContain(`pool "primary/postgres@${db.name}"`);
      expect(waited).toBeGreaterThanOrEqual(250);
      expect(waited).toBeLessThan(3000);
      await holder.unsafe("commit");
      expect([...(await waiter`select 'usable' as s`)]).toEqual([{ s: "usable" }]);
    } finally {
      await holder.end({ timeout: 1 });
      await waiter.end({ timeout: 1 });
    }
  });
});

test("checkout_timeout with waiters arriving one after another: each gets its own full wait; one served in time never fails later", async () => {
  await withProxy({ size: 1, checkout_timeout: "400ms" }, {}, async (tp) => {
    const [holder, first, second, served] = [connect(tp), connect(tp), connect(tp), connect(tp)];
    try {
      for (const c of [holder, first, second, served]) await pidOf(c);
      await holder.unsafe("begin");
      await holder.unsafe("select 1");
      const timed = async (sql: postgres.Sql) => {
        const started = Date.now();
        const result = await sql`select 'got it' as s`.then(
          (rows) => [...rows],
          (e: postgres.PostgresError) => e.code,
        );
        return { result, waited: Date.now() - started };
      };
      const a = timed(first);
      await pace(200); // the second one arrives while the first is still waiting
      const b = timed(second);
      const [ra, rb] = [await a, await b];
      expect(ra.result).toBe("53300");
      expect(rb.result).toBe("53300");
      // The second waited its own 400 ms, not just until the first one's deadline.
      for (const r of [ra, rb]) expect(r.waited).toBeGreaterThanOrEqual(350);
      for (const r of [ra, rb]) expect(r.waited).toBeLessThan(3000);
      // A third is handed the connection before its deadline and keeps it: no 53300 arrives afterwards.
      const c = timed(served);
      await pace(100);
      await holder.unsafe("commit");
      expect((await c).result).toEqual([{ s: "got it" }]);
      await pace(500);
      expect([...(await served`select 'still fine' as s`)]).toEqual([{ s: "still fine" }]);
    } finally {
      for (const c of [holder, first, second, served]) await c.end({ timeout: 1 });
    }
  });
});

test("Queries that wait for the only connection, sent alone or several in one write, each get their own answer, in order", async () => {
  await withProxy({ size: 1, checkout_timeout: "10s" }, {}, async (tp) => {
    const clients = await Promise.all(Array.from({ length: 12 }, () => rawLogin(tp.port, db.name)));
    const [holder, ...waiting] = clients;
    try {
      expect(views(await exchange(holder!, [query("begin")])).at(-1)).toEqual(["Z", "T"]);
      // Every client's Query now waits for the connection the holder keeps: half send one Query per write, half
      // three Queries in one write (each then a part of a larger read).
      const replies = waiting.map((raw, i) => {
        const texts = i % 2 === 0 ? [`client ${i}`] : [0, 1, 2].map((k) => `client ${i} query ${k}`);
        return exchange(raw, texts.map((t) => query(`select '${t}' as a`)), texts.length).then((ms) => ({ texts, rows: views(ms).filter((m) => m[0] === "D") }));
      });
      const pool = tp.proxy.allPools.find((p) => p.database === db.name)!;
      await eventually("every other client waiting for the connection", () => pool.waiting === waiting.length);
      expect(views(await exchange(holder!, [query("commit")])).at(-1)).toEqual(["Z", "I"]);
      for (const { texts, rows } of await Promise.all(replies)) expect(rows).toEqual(texts.map((t) => ["D", [t]]));
    } finally {
      for (const c of clients) c.close();
    }
  });
});

test("checkout_timeout in the extended protocol: the error at the Flush, then everything up to Sync is skipped, as after any error", async () => {
  await withProxy({ size: 1, checkout_timeout: "300ms" }, {}, async (tp) => {
    const holder = await rawLogin(tp.port, db.name);
    const waiter = await rawLogin(tp.port, db.name);
    try {
      expect(views(await exchange(holder, [query("begin")])).at(-1)).toEqual(["Z", "T"]);
      waiter.send(concat(...[...pbe("select 1"), serialize.flush()].map((b) => new Uint8Array(b))));
      const err = views([await waiter.next(3000)]);
      expect(err.map((m) => m.slice(0, 3))).toEqual([["E", "ERROR", "53300"]]);
      // What follows up to the Sync is skipped, and the Sync is answered.
      expect(views(await exchange(waiter, [...pbe("select 2"), sync()]))).toEqual([["Z", "I"]]);
      expect(views(await exchange(holder, [query("commit")])).at(-1)).toEqual(["Z", "I"]);
      expect(views(await exchange(waiter, [...pbe("select 3"), sync()]))).toEqual([["1"], ["2"], ["D", ["3"]], ["C", "SELECT 1"], ["Z", "I"]]);
    } finally {
      holder.close();
      waiter.close();
    }
  });
});

test("max_client_connections = 2: the third connection gets FATAL 53300; once one leaves, a new one gets in", async () => {
  await withProxy({ size: 2 }, { limits: { max_client_connections: 2 } }, async (tp) => {
    const a = connect(tp);
    const b = connect(tp);
    const c = connect(tp);
    try {
      await pidOf(a);
      await pidOf(b);
      const err = (await c`select 1`.catch((e) => e)) as postgres.PostgresError;
      expect({ code: err.code, severity: err.severity }).toEqual({ code: "53300", severity: "FATAL" });
      expect(err.message).toContain("too many clients");
      await a.end({ timeout: 1 });
      await waitFor("pgroute to count one client less", () => tp.proxy.clientCount, (n) => n < 2);
      expect(await pidOf(c)).toBeGreaterThan(0);
    } finally {
      await Promise.all([a, b, c].map((s) => s.end({ timeout: 1 })));
    }
  });
});

test("idle_timeout: idle server connections disappear from pg_stat_activity", async () => {
  await withProxy({ size: 3, idle_timeout: "400ms" }, {}, async (tp) => {
    const clients = [connect(tp), connect(tp), connect(tp)];
    try {
      // Three overlapping transactions need three server connections.
      await Promise.all(clients.map((c) => c.unsafe("begin")));
      await Promise.all(clients.map((c) => c.unsafe("select 1")));
      expect((await backends(db.admin, db.name)).length).toBe(3);
      await Promise.all(clients.map((c) => c.unsafe("commit")));
      await waitFor("idle backends to be closed", () => backends(db.admin, db.name), (b) => b.length === 0, 5000);
      expect(tp.proxy.allPools.find((p) => p.database === db.name)?.size).toBe(0);
      // Clients still connected simply get a new connection.
      expect(await pidOf(clients[0]!)).toBeGreaterThan(0);
    } finally {
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    }
  });
});

test("max_lifetime: a connection past it is replaced once idle, not mid-transaction", async () => {
  const LIFETIME_MS = 700;
  await withProxy({ size: 1, max_lifetime: `${LIFETIME_MS}ms`, idle_timeout: "1h" }, {}, async (tp) => {
    const sql = connect(tp);
    try {
      await sql.unsafe("begin");
      const first = await pidOf(sql);
      // Wait, inside the transaction, until the backend is older than max_lifetime by the server's own clock.
      await waitFor(
        "the backend to pass max_lifetime",
        async () => (await db.admin`select extract(epoch from now() - backend_start) * 1000 as age from pg_stat_activity where pid = ${first}`)[0]?.age as number,
        (age) => age > LIFETIME_MS + 100,
      );
      expect(await pidOf(sql)).toBe(first);
      await sql.unsafe("commit");
      const next = await pidOf(sql);
      expect(next).not.toBe(first);
      await waitFor("the expired backend to leave", () => backends(db.admin, db.name), (b) => !b.some((x) => x.pid === first));
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

test("a backend terminated while idle in the pool is detected (validate_after = 1ms) and the next query runs on a new one", async () => {
  await withProxy({ size: 2, validate_after: "1ms" }, {}, async (tp) => {
    const a = connect(tp);
    const b = connect(tp);
    try {
      await Promise.all([a.unsafe("begin"), b.unsafe("begin")]);
      const pids = [await pidOf(a), await pidOf(b)];
      await Promise.all([a.unsafe("commit"), b.unsafe("commit")]);
      const killed = await db.admin`select pg_terminate_backend(pid) as ok from pg_stat_activity where pid in ${db.admin(pids)}`;
      expect(killed.map((r) => r.ok)).toEqual([true, true]);
      await waitFor("the terminated backends to leave", () => backends(db.admin, db.name), (bs) => !bs.some((x) => pids.includes(x.pid)));
      // No error reaches the clients: pgroute notices (on validation, if not before) and opens new connections.
      const after = [await pidOf(a), await pidOf(b)];
      for (const p of after) expect(pids).not.toContain(p);
      const [row] = await a`select 'fine' as s`;
      expect(row!.s).toBe("fine");
    } finally {
      await a.end({ timeout: 1 });
      await b.end({ timeout: 1 });
    }
  });
});

describe("a server login that fails", () => {
  test("wrong server_password: the client gets the server's own 28P01, and so does a later client, quickly", async () => {
    // What Postgres itself says to this login.
    const direct = postgres(cluster.url(cluster.primary, { user: "postgres", password: "not-the-password", database: db.name }), {
      max: 1,
      onnotice: () => {},
    });
    const expected = (await direct`select 1`.catch((e) => e)) as postgres.PostgresError;
    await direct.end({ timeout: 1 });
    expect(expected.code).toBe("28P01");

    await withProxy(
      { size: 2, checkout_timeout: "5s" },
      { users: [{ name: "postgres", password: cluster.password, server_password: "not-the-password" }] },
      async (tp) => {
        for (let i = 0; i < 3; i++) {
          const sql = connect(tp);
          const started = Date.now();
          const err = (await sql`select 1`.catch((e) => e)) as postgres.PostgresError;
          const took = Date.now() - started;
          await sql.end({ timeout: 1 });
          expect({ code: err.code, severity: err.severity, message: err.message }).toEqual({
            code: expected.code,
            severity: "FATAL",
            message: expected.message,
          });
          // Well under the checkout timeout: the client is told at once, not left to time out.
          expect(took).toBeLessThan(2000);
        }
      },
    );
  });
});
